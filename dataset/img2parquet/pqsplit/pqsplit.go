// Package pqsplit writes one shard's Parquet rows into kept/, rejected/ and errors/ files with
// lemon's columns appended: lemon_d_mm, lemon_s_n, lemon_s_m and lemon_score for kept and
// rejected rows, reason (lemon_reason if the input already has a reason column) for errors.
// All three files are written, empty ones included, and appear only on Commit. The img2parquet
// format uses it for its data files and the webdataset format for the Parquet beside each tar.
package pqsplit

import (
	"context"
	"fmt"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/rundir"
	"github.com/lemon-curation/lemon/storage"
)

// ScoreColumns are appended to kept and rejected rows, in this order.
var ScoreColumns = rundir.ScoreColumns

// ReasonColumn is appended to error rows; LemonReasonColumn replaces it when the input has a
// column of that name already.
const (
	ReasonColumn      = "reason"
	LemonReasonColumn = "lemon_reason"
)

// Options tune the files written.
type Options struct {
	// RowGroupRows caps the rows per row group (default 65536). Tables of image bytes want
	// small row groups: the writer holds one row group in memory.
	RowGroupRows int64
	// Raw names columns to store uncompressed and without min/max statistics: encoded images
	// do not compress, and their statistics would copy whole images into the footer.
	Raw []string
}

// Writer routes record batches of one shard into the three split files.
type Writer struct {
	keep        []int // input columns carried over (old lemon columns are dropped)
	scored, bad *arrow.Schema
	files       [3]*file
}

type file struct {
	out *storage.Writer
	fw  *pqarrow.FileWriter
	p   string
}

// Create starts the files paths[Kept], paths[Rejected] and paths[Errors] for rows with schema
// base. Columns of base named like lemon's own (a rerun on lemon's outputs) are replaced.
func Create(ctx context.Context, paths [3]string, base *arrow.Schema, o Options) (*Writer, error) {
	w := &Writer{}
	var fields []arrow.Field
	for i, f := range base.Fields() {
		if slices.Contains(ScoreColumns, f.Name) || f.Name == LemonReasonColumn {
			continue
		}
		w.keep = append(w.keep, i)
		fields = append(fields, f)
	}
	reason := ReasonColumn
	for _, f := range fields {
		if f.Name == ReasonColumn {
			reason = LemonReasonColumn
		}
	}
	scored := slices.Clone(fields)
	for _, c := range ScoreColumns {
		scored = append(scored, arrow.Field{Name: c, Type: arrow.PrimitiveTypes.Float64})
	}
	md := base.Metadata()
	w.scored = arrow.NewSchema(scored, &md)
	w.bad = arrow.NewSchema(append(slices.Clone(fields), arrow.Field{Name: reason, Type: arrow.BinaryTypes.String}), &md)

	rg := o.RowGroupRows
	if rg <= 0 {
		rg = 65536
	}
	props := []parquet.WriterProperty{parquet.WithCompression(compress.Codecs.Zstd), parquet.WithStats(true), parquet.WithMaxRowGroupLength(rg)}
	for _, c := range o.Raw {
		// A struct column (Hugging Face's image feature) keeps its bytes in c.bytes.
		for _, leaf := range []string{c, c + ".bytes"} {
			props = append(props, parquet.WithCompressionFor(leaf, compress.Codecs.Uncompressed), parquet.WithStatsFor(leaf, false),
				parquet.WithDictionaryFor(leaf, false))
		}
	}
	for s, p := range paths {
		schema := w.scored
		if dataset.Split(s) == dataset.Errors {
			schema = w.bad
		}
		out, err := storage.Create(ctx, p)
		if err != nil {
			w.Abort()
			return nil, err
		}
		fw, err := pqarrow.NewFileWriter(schema, out, parquet.NewWriterProperties(props...), pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
		if err != nil {
			out.Abort()
			w.Abort()
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		w.files[s] = &file{out: out, fw: fw, p: p}
	}
	return w, nil
}

// Write routes the rows of rec: row i goes where outcomes[i] says, or nowhere if it is nil.
func (w *Writer) Write(ctx context.Context, rec arrow.RecordBatch, outcomes []*dataset.Outcome) error {
	if int64(len(outcomes)) != rec.NumRows() {
		return fmt.Errorf("pqsplit: %d outcomes for %d rows", len(outcomes), rec.NumRows())
	}
	for s, f := range w.files {
		split := dataset.Split(s)
		mb := array.NewBooleanBuilder(memory.DefaultAllocator)
		var picked []*dataset.Outcome
		for _, o := range outcomes {
			take := o != nil && o.Split == split
			mb.Append(take)
			if take {
				picked = append(picked, o)
			}
		}
		mask := mb.NewArray()
		mb.Release()
		if len(picked) == 0 {
			mask.Release()
			continue
		}
		err := w.writeFiltered(ctx, f, split, rec, mask, picked)
		mask.Release()
		if err != nil {
			return err
		}
	}
	return nil
}

func (w *Writer) writeFiltered(ctx context.Context, f *file, split dataset.Split, rec arrow.RecordBatch, mask arrow.Array, picked []*dataset.Outcome) error {
	filtered, err := compute.FilterRecordBatch(ctx, rec, mask, compute.DefaultFilterOptions())
	if err != nil {
		return fmt.Errorf("writing %s: %w", f.p, err)
	}
	defer filtered.Release()
	var cols []arrow.Array
	for _, i := range w.keep {
		cols = append(cols, filtered.Column(i))
	}
	var extra []arrow.Array
	if split == dataset.Errors {
		b := array.NewStringBuilder(memory.DefaultAllocator)
		for _, o := range picked {
			b.Append(o.Reason)
		}
		extra = append(extra, b.NewArray())
		b.Release()
	} else {
		for c := range ScoreColumns {
			b := array.NewFloat64Builder(memory.DefaultAllocator)
			for _, o := range picked {
				b.Append([]float64{o.Dmm, o.Sn, o.Sm, o.Score}[c])
			}
			extra = append(extra, b.NewArray())
			b.Release()
		}
	}
	defer func() {
		for _, a := range extra {
			a.Release()
		}
	}()
	schema := w.scored
	if split == dataset.Errors {
		schema = w.bad
	}
	out := array.NewRecordBatch(schema, append(cols, extra...), int64(len(picked)))
	defer out.Release()
	if err := f.fw.WriteBuffered(out); err != nil {
		return fmt.Errorf("writing %s: %w", f.p, err)
	}
	return nil
}

// Commit finishes the three files and moves them into place.
func (w *Writer) Commit() error {
	for i, f := range w.files {
		if err := f.fw.Close(); err != nil {
			w.Abort()
			return fmt.Errorf("writing %s: %w", f.p, err)
		}
		if err := f.out.Commit(); err != nil {
			w.files[i] = nil
			w.Abort()
			return err
		}
		w.files[i] = nil
	}
	return nil
}

// Abort discards whatever has not been committed.
func (w *Writer) Abort() {
	for i, f := range w.files {
		if f != nil {
			f.fw.Close()
			f.out.Abort()
			w.files[i] = nil
		}
	}
}
