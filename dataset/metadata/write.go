package metadata

import (
	"context"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/lemon-curation/lemon/storage"
)

// ParquetWriter writes record batches to a Parquet file atomically: the file appears under its
// name only after Commit.
type ParquetWriter struct {
	out *storage.Writer
	fw  *pqarrow.FileWriter
	p   string
}

// CreateParquet starts writing a Parquet file with the given schema.
func CreateParquet(ctx context.Context, p string, schema *arrow.Schema) (*ParquetWriter, error) {
	out, err := storage.Create(ctx, p)
	if err != nil {
		return nil, err
	}
	props := parquet.NewWriterProperties(parquet.WithCompression(compress.Codecs.Zstd), parquet.WithStats(true))
	fw, err := pqarrow.NewFileWriter(schema, out, props, pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		out.Abort()
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return &ParquetWriter{out: out, fw: fw, p: p}, nil
}

// Write appends a batch.
func (w *ParquetWriter) Write(rec arrow.RecordBatch) error {
	if err := w.fw.WriteBuffered(rec); err != nil {
		return fmt.Errorf("writing %s: %w", w.p, err)
	}
	return nil
}

// Commit finishes the file and moves it into place.
func (w *ParquetWriter) Commit() error {
	if err := w.fw.Close(); err != nil {
		w.out.Abort()
		return fmt.Errorf("writing %s: %w", w.p, err)
	}
	return w.out.Commit()
}

// Abort discards the file.
func (w *ParquetWriter) Abort() {
	w.fw.Close()
	w.out.Abort()
}

// WriteParquet writes batches to p in one go.
func WriteParquet(ctx context.Context, p string, schema *arrow.Schema, recs ...arrow.RecordBatch) error {
	w, err := CreateParquet(ctx, p, schema)
	if err != nil {
		return err
	}
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			w.Abort()
			return err
		}
	}
	return w.Commit()
}
