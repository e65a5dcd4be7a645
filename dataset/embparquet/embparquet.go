// Package embparquet reads Parquet files (one file, or a directory of *.parquet shards) whose
// rows carry an id, a caption and the two embeddings as list<float> columns (by default
// image_embedding and text_embedding).
package embparquet

import (
	"context"
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/storage"
)

func init() { dataset.Register(Format{}) }

// Default embedding column names.
const (
	ImageColumn = "image_embedding"
	TextColumn  = "text_embedding"
)

// Format is Parquet with embedding list columns.
type Format struct{}

func (Format) Name() string { return "parquet" }

// Detect wants Parquet whose first file has the default embedding columns, so Parquet of raw
// images (img2dataset) is not mistaken for it.
func (Format) Detect(ctx context.Context, p string) bool {
	fs, err := dataset.ShardFiles(ctx, p, ".parquet")
	if err != nil || len(fs) == 0 {
		return false
	}
	pf, err := metadata.OpenParquet(ctx, fs[0])
	if err != nil {
		return false
	}
	defer pf.Close()
	cols, err := pf.Columns()
	if err != nil {
		return false
	}
	have := map[string]bool{}
	for _, c := range cols {
		have[c] = true
	}
	return have[ImageColumn] && have[TextColumn]
}

func columns(o dataset.Options) (string, string) {
	img, txt := o.ImageColumn, o.TextColumn
	if img == "" {
		img = ImageColumn
	}
	if txt == "" {
		txt = TextColumn
	}
	return img, txt
}

func (f Format) Plan(ctx context.Context, p string, o dataset.Options) ([]dataset.Shard, error) {
	fs, err := dataset.ShardFiles(ctx, p, ".parquet")
	if err != nil {
		return nil, err
	}
	if len(fs) == 0 {
		return nil, fmt.Errorf("%s: no .parquet files", p)
	}
	imgCol, txtCol := columns(o)
	shards, err := dataset.PlanShards(ctx, fs, func(ctx context.Context, name string) (dataset.Shard, error) {
		pf, err := metadata.OpenParquet(ctx, name)
		if err != nil {
			return dataset.Shard{}, err
		}
		defer pf.Close()
		cols, err := pf.Columns()
		if err == nil {
			for _, want := range []string{imgCol, txtCol} {
				if _, err = dataset.PickColumn(name, cols, want, nil, "embedding"); err != nil {
					break
				}
			}
		}
		if err == nil {
			_, err = dataset.PickColumn(name, cols, o.IDColumn, dataset.IDColumns, "id")
		}
		if err == nil {
			_, err = dataset.PickColumn(name, cols, o.CaptionColumn, dataset.CaptionColumns, "caption")
		}
		if err == nil && o.SplitColumn != "" {
			_, err = dataset.PickColumn(name, cols, o.SplitColumn, nil, "split")
		}
		return dataset.Shard{Format: f.Name(), Rows: pf.Rows(), Files: map[string]string{"data": name}, Name: strings.TrimSuffix(storage.Base(name), ".parquet")}, err
	})
	if err != nil {
		return nil, err
	}
	dim := 0
	for _, sh := range shards {
		if dim != 0 {
			break
		}
		if sh.Rows > 0 {
			if dim, err = firstDim(ctx, sh, o); err != nil {
				return nil, err
			}
		}
	}
	if dim == 0 {
		return nil, fmt.Errorf("%s: no rows with an image embedding", p)
	}
	for i := range shards {
		shards[i].Dim = dim
	}
	return shards, nil
}

// firstDim is the length of the first non-null image embedding: the dataset's dimension.
func firstDim(ctx context.Context, sh dataset.Shard, o dataset.Options) (int, error) {
	dim := 0
	stop := fmt.Errorf("stop")
	err := readRows(ctx, sh, o, func(r dataset.Record) error {
		if len(r.Image) > 0 {
			dim = len(r.Image)
			return stop
		}
		return nil
	})
	if err != nil && err != stop {
		return 0, err
	}
	return dim, nil
}

func (Format) Read(ctx context.Context, sh dataset.Shard, o dataset.Options, emit func(dataset.Record) error) error {
	var n int64
	err := readRows(ctx, sh, o, func(r dataset.Record) error {
		n++
		if r.Err == "" {
			if len(r.Image) != sh.Dim {
				r.Err = fmt.Sprintf("image embedding has %d values, want %d", len(r.Image), sh.Dim)
			} else if len(r.Text) != sh.Dim {
				r.Err = fmt.Sprintf("text embedding has %d values, want %d", len(r.Text), sh.Dim)
			}
		}
		return emit(r)
	})
	if err != nil {
		return err
	}
	if n != sh.Rows {
		return fmt.Errorf("%s: read %d rows, footer says %d", sh.Files["data"], n, sh.Rows)
	}
	return nil
}

func readRows(ctx context.Context, sh dataset.Shard, o dataset.Options, emit func(dataset.Record) error) error {
	name := sh.Files["data"]
	pf, err := metadata.OpenParquet(ctx, name)
	if err != nil {
		return err
	}
	cols, err := pf.Columns()
	if err != nil {
		pf.Close()
		return err
	}
	idCol, err := dataset.PickColumn(name, cols, o.IDColumn, dataset.IDColumns, "id")
	if err != nil {
		pf.Close()
		return err
	}
	capCol, err := dataset.PickColumn(name, cols, o.CaptionColumn, dataset.CaptionColumns, "caption")
	if err != nil {
		pf.Close()
		return err
	}
	imgCol, txtCol := columns(o)
	want := []string{idCol, capCol, imgCol, txtCol}
	if o.SplitColumn != "" {
		want = append(want, o.SplitColumn)
	}
	rr, err := pf.Records(ctx, want)
	if err != nil {
		pf.Close()
		return err
	}
	defer rr.Release()
	var index int64
	for rr.Next() {
		rec := rr.RecordBatch()
		ids, idOK, err := metadata.StringColumn(name, rec, idCol)
		if err != nil {
			return err
		}
		caps, capOK, err := metadata.StringColumn(name, rec, capCol)
		if err != nil {
			return err
		}
		imgs, err := floatLists(name, rec, imgCol)
		if err != nil {
			return err
		}
		txts, err := floatLists(name, rec, txtCol)
		if err != nil {
			return err
		}
		var splits []string
		if o.SplitColumn != "" {
			if splits, _, err = metadata.StringColumn(name, rec, o.SplitColumn); err != nil {
				return err
			}
		}
		for i := range ids {
			r := dataset.Record{Index: index, ID: ids[i], Caption: caps[i], Image: imgs[i], Text: txts[i]}
			if splits != nil {
				r.Split = splits[i]
			}
			switch {
			case !idOK[i] || ids[i] == "":
				r.Err = "missing id"
			case !capOK[i]:
				r.Err = "missing caption"
			case caps[i] == "":
				r.Err = "empty caption"
			case imgs[i] == nil:
				r.Err = "missing image embedding"
			case txts[i] == nil:
				r.Err = "missing text embedding"
			}
			if err := emit(r); err != nil {
				return err
			}
			index++
		}
	}
	if err := rr.Err(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// floatLists returns each row's list as float32 (nil for a null list).
func floatLists(file string, rec arrow.RecordBatch, name string) ([][]float32, error) {
	idx := rec.Schema().FieldIndices(name)
	if len(idx) == 0 {
		return nil, fmt.Errorf("%s: no column %q", file, name)
	}
	col := rec.Column(idx[0])
	var offsets func(i int) (int64, int64)
	var values arrow.Array
	switch c := col.(type) {
	case *array.List:
		values, offsets = c.ListValues(), c.ValueOffsets
	case *array.LargeList:
		values, offsets = c.ListValues(), c.ValueOffsets
	case *array.FixedSizeList:
		values, offsets = c.ListValues(), c.ValueOffsets
	default:
		return nil, fmt.Errorf("%s: column %q is %s, want a list of floats", file, name, col.DataType())
	}
	var get func(j int64) float32
	switch v := values.(type) {
	case *array.Float32:
		get = func(j int64) float32 { return v.Value(int(j)) }
	case *array.Float64:
		get = func(j int64) float32 { return float32(v.Value(int(j))) }
	case *array.Float16:
		get = func(j int64) float32 { return v.Value(int(j)).Float32() }
	default:
		return nil, fmt.Errorf("%s: column %q holds %s, want float16, float32 or float64", file, name, values.DataType())
	}
	out := make([][]float32, col.Len())
	for i := range out {
		if col.IsNull(i) {
			continue
		}
		lo, hi := offsets(i)
		v := make([]float32, hi-lo)
		for j := lo; j < hi; j++ {
			if values.IsNull(int(j)) {
				v[j-lo] = float32(nan())
			} else {
				v[j-lo] = get(j)
			}
		}
		out[i] = v
	}
	return out, nil
}

func (Format) Metadata(ctx context.Context, sh dataset.Shard, o dataset.Options) (array.RecordReader, error) {
	return metadata.Open(ctx, sh.Files["data"])
}

// nan marks a null list element: validation then rejects the row as having a NaN.
func nan() float64 { var z float64; return z / z }
