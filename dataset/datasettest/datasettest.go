// Package datasettest is the conformance suite every input format passes: what it writes, Plan
// and Read give back exactly, in order, with dataset positions, per-row faults and metadata.
package datasettest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/img2parquet/pqsplit"
	"github.com/lemon-curation/lemon/dataset/metadata"
)

// Fixture is a format under test and a way to write datasets in it.
type Fixture struct {
	Format dataset.Format
	// Write lays shards out under dir in the format.
	Write func(ctx context.Context, dir string, shards [][]dataset.Row) error
	// IDColumn is the metadata column that holds ids.
	IDColumn string
}

// Rows makes n rows of dimension dim with ids prefix0, prefix1, ...
func Rows(prefix string, n, dim int, seed uint64) []dataset.Row {
	rng := rand.New(rand.NewPCG(seed, 7))
	rows := make([]dataset.Row, n)
	for i := range rows {
		img, txt := make([]float32, dim), make([]float32, dim)
		for j := range img {
			img[j], txt[j] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
		}
		rows[i] = dataset.Row{ID: fmt.Sprintf("%s%d", prefix, i), Caption: fmt.Sprintf("caption %s%d, with \"quotes\"", prefix, i), Image: img, Text: txt, Extra: map[string]string{"is_error": fmt.Sprint(i%3 == 0)}}
	}
	return rows
}

func readAll(t *testing.T, f dataset.Format, shards []dataset.Shard) []dataset.Record {
	t.Helper()
	var all []dataset.Record
	for _, sh := range shards {
		err := f.Read(context.Background(), sh, dataset.Options{}, func(r dataset.Record) error {
			r.Image, r.Text = slices.Clone(r.Image), slices.Clone(r.Text) // only valid during emit
			all = append(all, r)
			return nil
		})
		if err != nil {
			t.Fatalf("Read(%s): %v", sh.Name, err)
		}
	}
	return all
}

// Run runs the suite; root is an empty directory or URL prefix.
func Run(t *testing.T, fx Fixture, root string) {
	ctx := context.Background()
	t.Run("RoundTrip", func(t *testing.T) {
		dir := root + "/roundtrip"
		shards := [][]dataset.Row{Rows("a", 5, 8, 1), Rows("b", 1, 8, 2), Rows("c", 7, 8, 3)}
		if err := fx.Write(ctx, dir, shards); err != nil {
			t.Fatal(err)
		}
		if !fx.Format.Detect(ctx, dir) {
			t.Fatalf("Detect(%s) = false", dir)
		}
		plan, err := fx.Format.Plan(ctx, dir, dataset.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if len(plan) != 3 {
			t.Fatalf("Plan gave %d shards, want 3", len(plan))
		}
		var offset int64
		for i, sh := range plan {
			if sh.Index != i || sh.Offset != offset || sh.Rows != int64(len(shards[i])) || sh.Dim != 8 {
				t.Fatalf("shard %d = %+v, want index %d offset %d rows %d dim 8", i, sh, i, offset, len(shards[i]))
			}
			offset += sh.Rows
		}
		got := readAll(t, fx.Format, plan)
		var want []dataset.Row
		for _, s := range shards {
			want = append(want, s...)
		}
		if len(got) != len(want) {
			t.Fatalf("read %d rows, want %d", len(got), len(want))
		}
		for i, r := range got {
			w := want[i]
			if r.ID != w.ID || r.Caption != w.Caption || r.Err != "" {
				t.Fatalf("row %d = {%q %q err %q}, want {%q %q}", i, r.ID, r.Caption, r.Err, w.ID, w.Caption)
			}
			for j := range w.Image {
				if r.Image[j] != w.Image[j] || r.Text[j] != w.Text[j] {
					t.Fatalf("row %d embedding differs at %d", i, j)
				}
			}
		}
		// Metadata gives back every row, in order, with its id.
		for i, sh := range plan {
			rr, err := fx.Format.Metadata(ctx, sh, dataset.Options{})
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for rr.Next() {
				col, _, err := metadata.StringColumn(sh.Name, rr.RecordBatch(), fx.IDColumn)
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, col...)
			}
			rr.Release()
			if len(ids) != len(shards[i]) {
				t.Fatalf("shard %d metadata has %d rows, want %d", i, len(ids), len(shards[i]))
			}
			for j, id := range ids {
				if id != shards[i][j].ID {
					t.Fatalf("shard %d metadata row %d id %q, want %q", i, j, id, shards[i][j].ID)
				}
			}
		}
	})
	if layout, ok := fx.Format.(dataset.SplitLayout); ok {
		t.Run("SplitLayout", func(t *testing.T) { splitLayout(t, fx, layout, root+"/splits") })
	}
	t.Run("PerRowFaults", func(t *testing.T) {
		dir := root + "/faults"
		rows := Rows("r", 4, 4, 9)
		rows[1].Caption = ""
		rows[2].ID = ""
		if err := fx.Write(ctx, dir, [][]dataset.Row{rows}); err != nil {
			t.Fatal(err)
		}
		plan, err := fx.Format.Plan(ctx, dir, dataset.Options{})
		if err != nil {
			t.Fatal(err)
		}
		got := readAll(t, fx.Format, plan)
		if len(got) != 4 {
			t.Fatalf("read %d rows, want 4: a faulty row must still be read, with its fault", len(got))
		}
		if got[1].Err != "empty caption" || got[2].Err != "missing id" || got[0].Err != "" || got[3].Err != "" {
			t.Fatalf("faults = %q %q %q %q; want \"\", empty caption, missing id, \"\"", got[0].Err, got[1].Err, got[2].Err, got[3].Err)
		}
	})
	t.Run("ColumnOverride", func(t *testing.T) {
		dir := root + "/override"
		if err := fx.Write(ctx, dir, [][]dataset.Row{Rows("o", 2, 4, 5)}); err != nil {
			t.Fatal(err)
		}
		_, err := fx.Format.Plan(ctx, dir, dataset.Options{CaptionColumn: "no_such_column"})
		if err == nil || !strings.Contains(err.Error(), "no_such_column") {
			t.Fatalf("Plan with a missing caption column: err = %v, want one naming the column", err)
		}
	})
	t.Run("MissingInput", func(t *testing.T) {
		dir := root + "/does-not-exist"
		if fx.Format.Detect(ctx, dir) {
			t.Fatal("Detect on a missing path = true")
		}
		if _, err := fx.Format.Plan(ctx, dir, dataset.Options{}); err == nil || !strings.Contains(err.Error(), "does-not-exist") {
			t.Fatalf("Plan on a missing path: err = %v, want one naming it", err)
		}
	})
}

// splitLayout: a format whose kept/, rejected/ and errors/ are datasets of its own format
// gives back, read as input, each split's rows (the metadata written as lemon writes it) in
// input order, ids, captions and embeddings unchanged.
func splitLayout(t *testing.T, fx Fixture, layout dataset.SplitLayout, root string) {
	ctx := context.Background()
	in, out := root+"/in", root+"/out"
	shards := [][]dataset.Row{Rows("a", 7, 8, 1), Rows("b", 5, 8, 2)}
	if err := fx.Write(ctx, in, shards); err != nil {
		t.Fatal(err)
	}
	plan, err := fx.Format.Plan(ctx, in, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var want [3][]dataset.Row
	for i, sh := range plan {
		outcomes := make([]dataset.Outcome, sh.Rows)
		for j := range outcomes {
			split := dataset.Split([]int{0, 0, 1, 2, 0, 1, 0}[j%7])
			outcomes[j] = dataset.Outcome{Split: split, Score: float64(j), Reason: "test"}
			want[split] = append(want[split], shards[i][j])
		}
		if err := layout.WriteSplitEmbeddings(ctx, sh, dataset.Options{}, out, outcomes); err != nil {
			t.Fatal(err)
		}
		var paths [3]string
		for s := range paths {
			paths[s] = layout.SplitMetadataPath(sh, out, dataset.Split(s))
		}
		rr, err := fx.Format.Metadata(ctx, sh, dataset.Options{})
		if err != nil {
			t.Fatal(err)
		}
		w, err := pqsplit.Create(ctx, paths, rr.Schema(), pqsplit.Options{})
		if err != nil {
			t.Fatal(err)
		}
		var offset int
		for rr.Next() {
			rec := rr.RecordBatch()
			part := make([]*dataset.Outcome, rec.NumRows())
			for j := range part {
				part[j] = &outcomes[offset+j]
			}
			if err := w.Write(ctx, rec, part); err != nil {
				t.Fatal(err)
			}
			offset += len(part)
		}
		rr.Release()
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	for s, rows := range want {
		dir := out + "/" + dataset.Split(s).String()
		splitPlan, err := fx.Format.Plan(ctx, dir, dataset.Options{})
		if err != nil {
			t.Fatalf("%s/ is not a dataset of the format: %v", dataset.Split(s), err)
		}
		got := readAll(t, fx.Format, splitPlan)
		if len(got) != len(rows) {
			t.Fatalf("%s/ reads %d rows, want %d", dataset.Split(s), len(got), len(rows))
		}
		for i, r := range got {
			w := rows[i]
			if r.ID != w.ID || r.Caption != w.Caption || r.Err != "" || !slices.Equal(r.Image, w.Image) || !slices.Equal(r.Text, w.Text) {
				t.Fatalf("%s/ row %d = {%q %q err %q}, want {%q %q} and its embeddings", dataset.Split(s), i, r.ID, r.Caption, r.Err, w.ID, w.Caption)
			}
		}
	}
}
