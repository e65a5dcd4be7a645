// Package embparquet reads Parquet files (one file, or a dataset root with .parquet shards at
// any depth, in path order) whose rows carry an id, a caption and the two embeddings as list<float> columns (by default
// image_embedding and text_embedding).
//
// The dataset's dimension is the size the schema gives the embedding columns where it fixes
// one (fixed_size_list), else the length most rows' embeddings have: Plan reads the embedding
// columns until one length holds more than half of all rows. It never depends on one row, nor
// on where a row is. Rows of another length go to errors, their reason naming the row and both
// lengths.
package embparquet

import (
	"context"
	"fmt"
	"strings"
	"sync"

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
	fs, err := dataset.ShardFilesUnder(ctx, p, ".parquet")
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
	img, txt := o.ImageEmbeddingColumn, o.TextEmbeddingColumn
	if img == "" {
		img = ImageColumn
	}
	if txt == "" {
		txt = TextColumn
	}
	return img, txt
}

func (f Format) Plan(ctx context.Context, p string, o dataset.Options) ([]dataset.Shard, error) {
	fs, err := dataset.ShardFilesUnder(ctx, p, ".parquet")
	if err != nil {
		return nil, err
	}
	if len(fs) == 0 {
		return nil, fmt.Errorf("%s: no .parquet files", p)
	}
	if err := dataset.NoteUnreadUnder(ctx, f.Name(), p, func(file string) bool { return dataset.Ext(file, ".parquet") != "" }); err != nil {
		return nil, err
	}
	imgCol, txtCol := columns(o)
	embCols := []string{imgCol, txtCol}
	var mu sync.Mutex
	schemas := map[string]*arrow.Schema{}
	shards, err := dataset.PlanShards(ctx, fs, func(ctx context.Context, name string) (dataset.Shard, error) {
		pf, err := metadata.OpenParquet(ctx, name)
		if err != nil {
			return dataset.Shard{}, err
		}
		defer pf.Close()
		cols, err := pf.Columns()
		if err == nil {
			for _, want := range embCols {
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
		var schema *arrow.Schema
		if err == nil {
			schema, err = pf.Arrow.Schema()
		}
		if err == nil {
			mu.Lock()
			schemas[name] = schema
			mu.Unlock()
		}
		return dataset.Shard{Format: f.Name(), Rows: pf.Rows(), Files: map[string]string{"data": name}, Name: strings.TrimSuffix(dataset.RelPath(p, name), dataset.Ext(name, ".parquet"))}, err
	})
	if err != nil {
		return nil, err
	}
	var fixed [2]fixedDim
	var rows int64
	for _, sh := range shards {
		rows += sh.Rows
		for m, col := range embCols {
			if err := fixed[m].add(sh.Files["data"], col, schemas[sh.Files["data"]]); err != nil {
				return nil, err
			}
		}
	}
	var dims [2]int
	for m, col := range embCols {
		if fixed[m].file != "" {
			dims[m] = fixed[m].size
			continue
		}
		var err error
		if dims[m], err = commonLength(ctx, p, shards, rows, col); err != nil {
			return nil, err
		}
	}
	if dims[0] != dims[1] {
		return nil, fmt.Errorf("%s: dimension mismatch: image embeddings (%s) have %d values, text embeddings (%s) %d", p, imgCol, dims[0], txtCol, dims[1])
	}
	for i := range shards {
		shards[i].Dim = dims[0]
	}
	return shards, nil
}

// The dataset's dimension comes from its schema where that fixes it (an embedding column of
// type fixed_size_list), else from the length most rows' embeddings have; rows of another
// length are errors. It never depends on one row, nor on where a row is.

// fixedDim is an embedding column's size as the files' schemas fix it; file is "" if none does.
type fixedDim struct {
	size int
	file string
}

// add takes the size that file's schema gives column col, if it fixes one.
func (d *fixedDim) add(file, col string, schema *arrow.Schema) error {
	i := schema.FieldIndices(col)
	if len(i) == 0 {
		return nil
	}
	t, ok := schema.Field(i[0]).Type.(*arrow.FixedSizeListType)
	switch {
	case !ok:
	case d.file == "":
		d.size, d.file = int(t.Len()), file
	case int(t.Len()) != d.size:
		return fmt.Errorf("dimension mismatch: column %q of %s holds lists of %d values, that of %s %d", col, file, t.Len(), d.file, d.size)
	}
	return nil
}

// commonLength is the length most of the rows' lists in column col have, of the dataset at p
// with rows rows. It counts the lengths shard by shard, and stops once one length holds more
// than half of all rows: no other can then be as common.
func commonLength(ctx context.Context, p string, shards []dataset.Shard, rows int64, col string) (int, error) {
	counts := map[int]int64{}
	var most int64
	for _, sh := range shards {
		if 2*most > rows {
			break
		}
		if err := countLengths(ctx, sh.Files["data"], col, counts); err != nil {
			return 0, err
		}
		for _, c := range counts {
			most = max(most, c)
		}
	}
	if most == 0 {
		return 0, fmt.Errorf("%s: no rows with an embedding in column %q", p, col)
	}
	var best []int
	for l, c := range counts {
		if c == most {
			best = append(best, l)
		}
	}
	if len(best) > 1 {
		return 0, fmt.Errorf("%s: the lists of column %q disagree on the dimension, and no length is more common than all others (rows by length: %v); fix the data, or store the column as a fixed_size_list", p, col, counts)
	}
	return best[0], nil
}

// countLengths adds to counts the lengths of the non-null lists of column col of file.
func countLengths(ctx context.Context, file, col string, counts map[int]int64) error {
	pf, err := metadata.OpenParquet(ctx, file)
	if err != nil {
		return err
	}
	rr, err := pf.Records(ctx, []string{col})
	if err != nil {
		pf.Close()
		return err
	}
	defer rr.Release()
	for rr.Next() {
		c := rr.RecordBatch().Column(0)
		offsets, err := listOffsets(file, col, c)
		if err != nil {
			return err
		}
		for i := 0; i < c.Len(); i++ {
			if !c.IsNull(i) {
				lo, hi := offsets(i)
				counts[int(hi-lo)]++
			}
		}
	}
	if err := rr.Err(); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return nil
}

// listOffsets returns where each row's values are in a list column's values.
func listOffsets(file, name string, col arrow.Array) (func(i int) (int64, int64), error) {
	switch c := col.(type) {
	case *array.List, *array.LargeList, *array.FixedSizeList:
		return c.(array.ListLike).ValueOffsets, nil
	}
	return nil, fmt.Errorf("%s: column %q is %s, want a list of floats", file, name, col.DataType())
}

func (Format) Read(ctx context.Context, sh dataset.Shard, o dataset.Options, emit func(dataset.Record) error) error {
	var n int64
	err := readRows(ctx, sh, o, func(r dataset.Record) error {
		n++
		if r.Err == "" {
			if len(r.Image) != sh.Dim {
				r.Err = fmt.Sprintf("row %d of %s: image embedding has %d values, the dataset's dimension is %d", r.Index, storage.Base(sh.Files["data"]), len(r.Image), sh.Dim)
			} else if len(r.Text) != sh.Dim {
				r.Err = fmt.Sprintf("row %d of %s: text embedding has %d values, the dataset's dimension is %d", r.Index, storage.Base(sh.Files["data"]), len(r.Text), sh.Dim)
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
	offsets, err := listOffsets(file, name, col)
	if err != nil {
		return nil, err
	}
	values := col.(array.ListLike).ListValues()
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
