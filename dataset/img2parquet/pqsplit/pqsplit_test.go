package pqsplit_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/img2parquet/pqsplit"
	"github.com/lemon-curation/lemon/dataset/metadata"
)

// Rerunning on lemon's own output replaces its columns; an input reason column moves the new
// one to lemon_reason; a nil outcome drops the row; empty splits are still written.
func TestColumns(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "key", Type: arrow.BinaryTypes.String},
		{Name: "lemon_score", Type: arrow.PrimitiveTypes.Float64},
		{Name: "reason", Type: arrow.BinaryTypes.String},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	b.Field(0).(*array.StringBuilder).AppendValues([]string{"a", "b", "c"}, nil)
	b.Field(1).(*array.Float64Builder).AppendValues([]float64{9, 9, 9}, nil)
	b.Field(2).(*array.StringBuilder).AppendValues([]string{"old", "old", "old"}, nil)
	rec := b.NewRecordBatch()
	defer rec.Release()
	b.Release()
	var paths [3]string
	for s := range paths {
		paths[s] = filepath.Join(dir, dataset.Split(s).String()+".parquet")
	}
	w, err := pqsplit.Create(ctx, paths, schema, pqsplit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = w.Write(ctx, rec, []*dataset.Outcome{{Split: dataset.Kept, Score: 0.5}, nil, {Split: dataset.Errors, Reason: "new"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"kept":     {"key", "reason", "lemon_d_mm", "lemon_s_n", "lemon_s_m", "lemon_score"},
		"rejected": {"key", "reason", "lemon_d_mm", "lemon_s_n", "lemon_s_m", "lemon_score"},
		"errors":   {"key", "reason", "lemon_reason"},
	}
	rows := map[string]int64{"kept": 1, "rejected": 0, "errors": 1}
	for split, cols := range want {
		pf, err := metadata.OpenParquet(ctx, filepath.Join(dir, split+".parquet"))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := pf.Columns()
		if pf.Rows() != rows[split] || len(got) != len(cols) {
			t.Fatalf("%s: %d rows, columns %v; want %d rows, %v", split, pf.Rows(), got, rows[split], cols)
		}
		for i := range cols {
			if got[i] != cols[i] {
				t.Fatalf("%s: columns %v, want %v", split, got, cols)
			}
		}
		rr, err := pf.Records(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		for rr.Next() {
			r := rr.RecordBatch()
			if split == "kept" && r.Column(5).(*array.Float64).Value(0) != 0.5 {
				t.Errorf("kept lemon_score = %v", r.Column(5))
			}
			if split == "errors" && r.Column(2).(*array.String).Value(0) != "new" {
				t.Errorf("errors lemon_reason = %v", r.Column(2))
			}
		}
		rr.Release()
	}
}
