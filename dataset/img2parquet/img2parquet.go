// Package img2parquet reads Parquet of encoded images and captions, one file or a dataset
// root with .parquet files at any depth (each a shard): img2dataset's Parquet output (a key, a
// caption and the image in a binary column named by the encode format, "jpg", "png", "webp",
// beside img2dataset's own metadata: url, status, error_message, width, ...) and Hugging Face
// datasets (an image struct column {bytes, path} and a text column, in files such as
// data/train-00000-of-00002.parquet). It writes kept/, rejected/ and errors/ as Parquet with
// every original column, image bytes included, each file at the input file's path below the
// root (see WriteSplits).
//
// Options: ImageBytesColumn names the image column (default: the first of ImageColumns present
// that holds bytes: binary, large binary, or a struct with a binary "bytes" field as Hugging
// Face datasets store images); IDColumn and CaptionColumn as everywhere (dataset.IDColumns and
// dataset.CaptionColumns). Without an id column a row's id is FILE:ROW, the file's path below
// the root and the row's number in it ("data/train-00000-of-00002.parquet:17"), unique across
// the dataset; the outputs then carry it in an added column "id", so runs can be joined on it
// (lemon eval's deep kNN baseline).
//
// Per-row faults (RawRecord.Err): a null or empty id, a missing, empty or non-UTF-8 caption, a
// null image (for img2dataset's failed downloads "download failed", quoting the status and
// error_message) or an empty one. An unreadable file is an error naming it.
package img2parquet

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/img2parquet/pqsplit"
	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/storage"
)

func init() { dataset.RegisterRaw(Format{}) }

// Format is img2dataset's Parquet output.
type Format struct{}

func (Format) Name() string { return "img2parquet" }

// ImageColumns are the image column names tried, in order, when none is configured.
var ImageColumns = []string{"jpg", "jpeg", "png", "webp", "image", "img", "image_bytes", "bytes"}

// batchRows is the rows per record batch: few, because each row carries an image.
const batchRows = 64

// Detect wants Parquet whose first file has an image bytes column and no list<float> column,
// so neither embedding Parquet nor the metadata Parquet beside webdataset tars is taken for it.
func (Format) Detect(ctx context.Context, p string) bool {
	fs, err := dataset.ShardFilesUnder(ctx, p, ".parquet")
	if err != nil || len(fs) == 0 {
		return false
	}
	pf, err := open(ctx, fs[0])
	if err != nil {
		return false
	}
	defer pf.close()
	for _, f := range pf.schema.Fields() {
		if isFloatList(f.Type) {
			return false
		}
	}
	_, err = imageColumn(fs[0], pf.schema, "")
	return err == nil
}

func isFloatList(t arrow.DataType) bool {
	var elem arrow.DataType
	switch l := t.(type) {
	case *arrow.ListType:
		elem = l.Elem()
	case *arrow.LargeListType:
		elem = l.Elem()
	case *arrow.FixedSizeListType:
		elem = l.Elem()
	default:
		return false
	}
	switch elem.ID() {
	case arrow.FLOAT16, arrow.FLOAT32, arrow.FLOAT64:
		return true
	}
	return false
}

// isImage reports whether a column of type t can hold encoded images.
func isImage(t arrow.DataType) bool {
	switch t.ID() {
	case arrow.BINARY, arrow.LARGE_BINARY:
		return true
	case arrow.STRUCT:
		st := t.(*arrow.StructType)
		if i, ok := st.FieldIdx("bytes"); ok {
			id := st.Field(i).Type.ID()
			return id == arrow.BINARY || id == arrow.LARGE_BINARY
		}
	}
	return false
}

func imageColumn(file string, s *arrow.Schema, configured string) (string, error) {
	var names []string
	for _, f := range s.Fields() {
		names = append(names, f.Name)
	}
	if configured != "" {
		i := s.FieldIndices(configured)
		if len(i) == 0 {
			return "", fmt.Errorf("%s: no image column %q (columns: %v)", file, configured, names)
		}
		if t := s.Field(i[0]).Type; !isImage(t) {
			return "", fmt.Errorf("%s: image column %q is %s, want binary (encoded image bytes)", file, configured, t)
		}
		return configured, nil
	}
	for _, c := range ImageColumns {
		if i := s.FieldIndices(c); len(i) > 0 && isImage(s.Field(i[0]).Type) {
			return c, nil
		}
	}
	return "", fmt.Errorf("%s: no image bytes column (looked for binary columns %v; columns: %v); name it with --image-bytes-column", file, ImageColumns, names)
}

// pqFile is an open Parquet file. It streams column chunks through a buffer rather than
// loading them whole (the default), since a row group of images can be gigabytes.
type pqFile struct {
	ra     storage.ReaderAtCloser
	rd     *file.Reader
	fr     *pqarrow.FileReader
	schema *arrow.Schema
	path   string
}

func open(ctx context.Context, p string) (*pqFile, error) {
	ra, size, err := storage.OpenReaderAt(ctx, p)
	if err != nil {
		return nil, err
	}
	props := parquet.NewReaderProperties(memory.DefaultAllocator)
	props.BufferedStreamEnabled = true
	props.BufferSize = 1 << 20
	rd, err := file.NewParquetReader(io.NewSectionReader(ra, 0, size), file.WithReadProps(props))
	if err != nil {
		ra.Close()
		return nil, fmt.Errorf("%s: not a readable Parquet file: %w", p, err)
	}
	fr, err := pqarrow.NewFileReader(rd, pqarrow.ArrowReadProperties{BatchSize: batchRows}, memory.DefaultAllocator)
	if err != nil {
		rd.Close()
		ra.Close()
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	s, err := fr.Schema()
	if err != nil {
		rd.Close()
		ra.Close()
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return &pqFile{ra: ra, rd: rd, fr: fr, schema: s, path: p}, nil
}

func (f *pqFile) close() {
	f.rd.Close()
	f.ra.Close()
}

// records reads the named top-level columns (all if nil) in batches of batchRows.
func (f *pqFile) records(ctx context.Context, cols []string) (array.RecordReader, error) {
	var leaves []int
	if cols != nil {
		sc := f.rd.MetaData().Schema
		for _, c := range cols {
			n := len(leaves)
			for i := 0; i < sc.NumColumns(); i++ {
				if p := sc.Column(i).ColumnPath(); len(p) > 0 && p[0] == c {
					leaves = append(leaves, i)
				}
			}
			if len(leaves) == n {
				return nil, fmt.Errorf("%s: no column %q", f.path, c)
			}
		}
	}
	rr, err := f.fr.GetRecordReader(ctx, leaves, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.path, err)
	}
	return rr, nil
}

// columns are the columns a shard's rows are read from; id is "" when the file has none.
type columns struct{ id, caption, image string }

func pick(file string, s *arrow.Schema, o dataset.Options) (columns, error) {
	var c columns
	var names []string
	for _, f := range s.Fields() {
		names = append(names, f.Name)
	}
	var err error
	if c.image, err = imageColumn(file, s, o.ImageBytesColumn); err != nil {
		return c, err
	}
	if c.caption, err = dataset.PickColumn(file, names, o.CaptionColumn, dataset.CaptionColumns, "caption"); err != nil {
		return c, err
	}
	if o.IDColumn != "" || slices.ContainsFunc(dataset.IDColumns, func(n string) bool { return slices.Contains(names, n) }) {
		if c.id, err = dataset.PickColumn(file, names, o.IDColumn, dataset.IDColumns, "id"); err != nil {
			return c, err
		}
	}
	return c, nil
}

// Plan reads each file's footer: its columns and row count. A shard's name is its file's path
// below the root, without the extension.
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
	return dataset.PlanShards(ctx, fs, func(ctx context.Context, name string) (dataset.Shard, error) {
		pf, err := open(ctx, name)
		if err != nil {
			return dataset.Shard{}, err
		}
		defer pf.close()
		_, err = pick(name, pf.schema, o)
		return dataset.Shard{Format: f.Name(), Rows: pf.rd.NumRows(), Files: map[string]string{"data": name}, Name: strings.TrimSuffix(dataset.RelPath(p, name), dataset.Ext(name, ".parquet"))}, err
	})
}

func (f Format) ReadRaw(ctx context.Context, sh dataset.Shard, o dataset.Options, emit func(dataset.RawRecord) error) error {
	name := sh.Files["data"]
	pf, err := open(ctx, name)
	if err != nil {
		return err
	}
	defer pf.close()
	c, err := pick(name, pf.schema, o)
	if err != nil {
		return err
	}
	want := []string{c.caption, c.image}
	if c.id != "" {
		want = append(want, c.id)
	}
	// img2dataset's status and error_message say why a row has no image.
	for _, extra := range []string{"status", "error_message"} {
		if len(pf.schema.FieldIndices(extra)) > 0 && !slices.Contains(want, extra) {
			want = append(want, extra)
		}
	}
	rr, err := pf.records(ctx, want)
	if err != nil {
		return err
	}
	defer rr.Release()
	var index int64
	for rr.Next() {
		rec := rr.RecordBatch()
		caps, capOK, err := metadata.StringColumn(name, rec, c.caption)
		if err != nil {
			return err
		}
		imgs, err := images(name, rec, c.image)
		if err != nil {
			return err
		}
		var ids []string
		var idOK []bool
		if c.id != "" {
			if ids, idOK, err = metadata.StringColumn(name, rec, c.id); err != nil {
				return err
			}
		}
		status, _, _ := metadata.StringColumn(name, rec, "status")
		message, _, _ := metadata.StringColumn(name, rec, "error_message")
		for i := range caps {
			r := dataset.RawRecord{Index: index, Caption: caps[i], Image: imgs[i]}
			if c.id != "" {
				r.ID = ids[i]
			} else {
				r.ID = rowID(sh, index)
			}
			switch {
			case c.id != "" && (!idOK[i] || ids[i] == ""):
				r.Err = "missing id"
			case !capOK[i]:
				r.Err = "missing caption"
			case !utf8.ValidString(r.Caption):
				r.Err = "caption is not valid UTF-8"
			case strings.TrimSpace(r.Caption) == "":
				r.Err = "empty caption"
			case r.Image == nil:
				r.Err = "missing image"
				if status != nil && status[i] != "" && status[i] != "success" {
					r.Err = fmt.Sprintf("download failed: missing image (status %s", status[i])
					if message != nil && message[i] != "" {
						r.Err += ": " + message[i]
					}
					r.Err += ")"
				}
			case len(r.Image) == 0:
				r.Err = "empty image"
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
	if index != sh.Rows {
		return fmt.Errorf("%s: read %d rows, the footer says %d", name, index, sh.Rows)
	}
	return nil
}

// IDColumn is the column the outputs gain, holding the rows' ids, when the input has no id
// column.
const IDColumn = "id"

// relPath is the shard's file's path below the dataset root.
func relPath(sh dataset.Shard) string { return sh.Name + dataset.Ext(sh.Files["data"], ".parquet") }

// rowID is the id of row index of a shard without an id column: FILE:ROW.
func rowID(sh dataset.Shard, index int64) string {
	return relPath(sh) + ":" + strconv.FormatInt(index, 10)
}

// withIDs is rec, rows n.. of shard sh, with the IDColumn of their ids appended (schema being
// rec's schema with it).
func withIDs(rec arrow.RecordBatch, schema *arrow.Schema, sh dataset.Shard, n int64) arrow.RecordBatch {
	b := array.NewStringBuilder(memory.DefaultAllocator)
	defer b.Release()
	for i := int64(0); i < rec.NumRows(); i++ {
		b.Append(rowID(sh, n+i))
	}
	ids := b.NewArray()
	defer ids.Release()
	return array.NewRecordBatch(schema, append(slices.Clone(rec.Columns()), ids), rec.NumRows())
}

// images copies each row's image bytes out of the batch (nil for a null), since the batch's
// memory is reused once the next one is read.
func images(file string, rec arrow.RecordBatch, name string) ([][]byte, error) {
	idx := rec.Schema().FieldIndices(name)
	if len(idx) == 0 {
		return nil, fmt.Errorf("%s: no column %q", file, name)
	}
	col := rec.Column(idx[0])
	valid := func(i int) bool { return !col.IsNull(i) }
	if st, ok := col.(*array.Struct); ok {
		j, _ := st.DataType().(*arrow.StructType).FieldIdx("bytes")
		col = st.Field(j)
		valid = func(i int) bool { return !st.IsNull(i) && !col.IsNull(i) }
	}
	var value func(i int) []byte
	switch c := col.(type) {
	case *array.Binary:
		value = c.Value
	case *array.LargeBinary:
		value = c.Value
	default:
		return nil, fmt.Errorf("%s: image column %q is %s, want binary", file, name, col.DataType())
	}
	out := make([][]byte, col.Len())
	for i := range out {
		if valid(i) {
			out[i] = append(make([]byte, 0, len(value(i))), value(i)...)
		}
	}
	return out, nil
}

// WriteSplits writes outDir/kept/FILE, outDir/rejected/FILE and outDir/errors/FILE (FILE being
// the input file's path below the dataset root, data/train-00000-of-00002.parquet, or its name
// when the input is one file) with every column of the rows routed there, in input order, plus
// the id column (IDColumn) when the input has none, and lemon_d_mm, lemon_s_n, lemon_s_m and
// lemon_score (kept, rejected) or reason (errors). The image column is stored uncompressed and
// without statistics, in row groups of 1024 rows.
func (f Format) WriteSplits(ctx context.Context, sh dataset.Shard, o dataset.Options, outDir string, outcomes []dataset.Outcome) error {
	name := sh.Files["data"]
	if int64(len(outcomes)) != sh.Rows {
		return fmt.Errorf("%s: %d outcomes for a shard of %d rows", name, len(outcomes), sh.Rows)
	}
	pf, err := open(ctx, name)
	if err != nil {
		return err
	}
	defer pf.close()
	c, err := pick(name, pf.schema, o)
	if err != nil {
		return err
	}
	rr, err := pf.records(ctx, nil)
	if err != nil {
		return err
	}
	defer rr.Release()
	var paths [3]string
	for s := range paths {
		paths[s] = storage.Join(outDir, dataset.Split(s).String(), relPath(sh))
	}
	schema := rr.Schema()
	if c.id == "" {
		schema = arrow.NewSchema(append(slices.Clone(schema.Fields()), arrow.Field{Name: IDColumn, Type: arrow.BinaryTypes.String}), nil)
	}
	w, err := pqsplit.Create(ctx, paths, schema, pqsplit.Options{RowGroupRows: 1024, Raw: []string{c.image}})
	if err != nil {
		return err
	}
	var n int64
	for rr.Next() {
		rec := rr.RecordBatch()
		k := rec.NumRows()
		if n+k > sh.Rows {
			w.Abort()
			return fmt.Errorf("%s has more rows than the %d planned: it changed since the job was planned", name, sh.Rows)
		}
		route := make([]*dataset.Outcome, k)
		for i := range route {
			route[i] = &outcomes[n+int64(i)]
		}
		if c.id != "" {
			err = w.Write(ctx, rec, route)
		} else {
			err = w.Write(ctx, withIDs(rec, schema, sh, n), route)
		}
		if err != nil {
			w.Abort()
			return err
		}
		n += k
	}
	if err := rr.Err(); err != nil {
		w.Abort()
		return fmt.Errorf("%s: %w", name, err)
	}
	if n != sh.Rows {
		w.Abort()
		return fmt.Errorf("%s has %d rows, %d planned: it changed since the job was planned", name, n, sh.Rows)
	}
	return w.Commit()
}
