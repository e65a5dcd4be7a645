// Package rawtest is the conformance suite every raw input format (dataset.RawFormat, images and
// captions before embedding) passes: what a fixture writes, Plan and ReadRaw give back exactly,
// in order, byte for byte, with per-row faults kept as rows; and WriteSplits routes each row to
// kept/, rejected/ or errors/ in the format's own layout, so the outputs read back with the same
// format and hold exactly the rows routed there.
package rawtest

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/rawtest/samples"
	"github.com/lemon-curation/lemon/storage"
)

// Sample is one image-caption pair as a fixture writes it (see samples.Sample).
type Sample = samples.Sample

// Samples makes n samples with ids prefix0, prefix1, ... and small real images.
func Samples(prefix string, n, seed int) []Sample { return samples.Make(prefix, n, seed) }

// Item is everything a format stores for one row, by part name: every tar member, every
// column. The suite checks that WriteSplits copies each part of a routed row unchanged.
type Item struct {
	ID    string
	Parts map[string][]byte
}

// Fixture is a raw format under test and a way to write datasets in it.
type Fixture struct {
	// Format is the format under test; it must also implement dataset.SplitWriter.
	Format dataset.RawFormat
	// Write lays shards out under dir in the format, one shard per inner slice.
	Write func(ctx context.Context, dir string, shards [][]Sample) error
	// Dump, if set, returns every row stored under dir (all shards, in order) with all its
	// parts. Outputs must carry each input part unchanged, and scores as parts named
	// lemon_d_mm, lemon_s_n, lemon_s_m and lemon_score (kept, rejected) or the reason as
	// reason or lemon_reason (errors), formatted by strconv.FormatFloat(v, 'g', -1, 64).
	Dump func(ctx context.Context, dir string) ([]Item, error)
}

// Run runs the suite; root is an empty directory or URL prefix (a local path, memfs://...).
func Run(t *testing.T, fx Fixture, root string) {
	ctx := context.Background()
	if _, ok := fx.Format.(dataset.SplitWriter); !ok {
		t.Fatalf("%s does not implement dataset.SplitWriter", fx.Format.Name())
	}
	t.Run("RoundTrip", func(t *testing.T) {
		dir := storage.Join(root, "roundtrip")
		shards := [][]Sample{Samples("a", 5, 1), Samples("b", 1, 2), Samples("c", 7, 3)}
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
		if len(plan) != len(shards) {
			t.Fatalf("Plan gave %d shards, want %d", len(plan), len(shards))
		}
		var offset int64
		for i, sh := range plan {
			if sh.Index != i || sh.Offset != offset || sh.Rows != int64(len(shards[i])) || sh.Format != fx.Format.Name() {
				t.Fatalf("shard %d = %+v, want format %s index %d offset %d rows %d", i, sh, fx.Format.Name(), i, offset, len(shards[i]))
			}
			offset += sh.Rows
		}
		for i, sh := range plan {
			got := ReadShard(t, fx.Format, sh)
			if len(got) != len(shards[i]) {
				t.Fatalf("shard %d: read %d rows, want %d", i, len(got), len(shards[i]))
			}
			for j, r := range got {
				w := shards[i][j]
				if r.Index != int64(j) {
					t.Fatalf("shard %d row %d has Index %d", i, j, r.Index)
				}
				if r.Err != "" {
					t.Fatalf("shard %d row %d (%s): unexpected fault %q", i, j, w.ID, r.Err)
				}
				if err := same(r, w); err != nil {
					t.Fatalf("shard %d row %d: %v", i, j, err)
				}
			}
		}
	})
	t.Run("PerRowFaults", func(t *testing.T) {
		dir := storage.Join(root, "faults")
		rows := Samples("r", 5, 9)
		rows[1].Caption = ""
		rows[2].Image = nil
		rows[3].Caption = "not UTF-8: \xff\xfe"
		if err := fx.Write(ctx, dir, [][]Sample{rows}); err != nil {
			t.Fatal(err)
		}
		plan, err := fx.Format.Plan(ctx, dir, dataset.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if len(plan) != 1 || plan[0].Rows != 5 {
			t.Fatalf("Plan = %+v, want one shard of 5 rows: faulty rows are rows", plan)
		}
		got := ReadShard(t, fx.Format, plan[0])
		if len(got) != 5 {
			t.Fatalf("read %d rows, want 5: a faulty row must still be read, with its fault", len(got))
		}
		for i, r := range got {
			if r.ID != rows[i].ID {
				t.Fatalf("row %d id %q, want %q", i, r.ID, rows[i].ID)
			}
		}
		check := func(i int, ok bool, want string) {
			if !ok {
				t.Errorf("row %d fault = %q, want %s", i, got[i].Err, want)
			}
		}
		check(0, got[0].Err == "", "none")
		check(1, got[1].Err == "empty caption", `"empty caption"`)
		check(2, strings.Contains(got[2].Err, "image"), "one about the missing image")
		check(3, strings.Contains(got[3].Err, "UTF-8"), "one saying the caption is not UTF-8")
		check(4, got[4].Err == "", "none")
	})
	t.Run("WriteSplits", func(t *testing.T) { testSplits(t, fx, root) })
	t.Run("MissingInput", func(t *testing.T) {
		dir := storage.Join(root, "does-not-exist")
		if fx.Format.Detect(ctx, dir) {
			t.Fatal("Detect on a missing path = true")
		}
		if _, err := fx.Format.Plan(ctx, dir, dataset.Options{}); err == nil || !strings.Contains(err.Error(), "does-not-exist") {
			t.Fatalf("Plan on a missing path: err = %v, want one naming it", err)
		}
	})
}

// ReadShard reads every row of a shard, failing the test on a file-level error.
func ReadShard(t testing.TB, f dataset.RawFormat, sh dataset.Shard) []dataset.RawRecord {
	t.Helper()
	return readShard(t, f, sh, dataset.Options{})
}

func readShard(t testing.TB, f dataset.RawFormat, sh dataset.Shard, o dataset.Options) []dataset.RawRecord {
	t.Helper()
	var out []dataset.RawRecord
	err := f.ReadRaw(context.Background(), sh, o, func(r dataset.RawRecord) error {
		out = append(out, r)
		return nil
	})
	if err != nil {
		t.Fatalf("ReadRaw(%s): %v", sh.Name, err)
	}
	return out
}

func same(r dataset.RawRecord, w Sample) error {
	if r.ID != w.ID || r.Caption != w.Caption {
		return fmt.Errorf("got {%q %q}, want {%q %q}", r.ID, r.Caption, w.ID, w.Caption)
	}
	if !bytes.Equal(r.Image, w.Image) {
		return fmt.Errorf("%s: image bytes differ (%d bytes, want %d)", w.ID, len(r.Image), len(w.Image))
	}
	return nil
}

// Outcomes routes rows i%3 == 0 to kept, 1 to rejected, 2 to errors, and every row in bad to
// errors; scores differ per row so a row's scores identify it.
func Outcomes(n int, bad map[int]bool) []dataset.Outcome {
	out := make([]dataset.Outcome, n)
	for i := range out {
		s := dataset.Split(i % 3)
		if bad[i] {
			s = dataset.Errors
		}
		if s == dataset.Errors {
			out[i] = dataset.Outcome{Split: s, Reason: fmt.Sprintf("reason %d, with \"quotes\"", i)}
			continue
		}
		f := float64(i)
		out[i] = dataset.Outcome{Split: s, Dmm: 0.5 + f/64, Sn: 0.25 + f/128, Sm: 0.125 + f/256, Score: f/8 - 0.3}
	}
	return out
}

func testSplits(t *testing.T, fx Fixture, root string) {
	ctx := context.Background()
	in, out := storage.Join(root, "splits-in"), storage.Join(root, "splits-out")
	s0 := Samples("s", 8, 4)
	s0[4].Caption = "" // faulty rows go to errors, and must come back faulty
	s0[5].Image = nil
	shards := [][]Sample{s0, Samples("t", 3, 5)}
	if err := fx.Write(ctx, in, shards); err != nil {
		t.Fatal(err)
	}
	plan, err := fx.Format.Plan(ctx, in, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan) != 2 {
		t.Fatalf("Plan gave %d shards, want 2", len(plan))
	}
	sw := fx.Format.(dataset.SplitWriter)
	outcomes := [][]dataset.Outcome{Outcomes(8, map[int]bool{4: true, 5: true}), Outcomes(3, nil)}
	if err := sw.WriteSplits(ctx, plan[0], dataset.Options{}, out, outcomes[0][:7]); err == nil {
		t.Fatal("WriteSplits with fewer outcomes than rows: no error")
	}
	// Twice: a retried write replaces the files it wrote before.
	for range 2 {
		for i, sh := range plan {
			if err := sw.WriteSplits(ctx, sh, dataset.Options{}, out, outcomes[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
	var inputRecs []dataset.RawRecord
	for _, sh := range plan {
		inputRecs = append(inputRecs, ReadShard(t, fx.Format, sh)...)
	}
	var all []Sample
	var allOut []dataset.Outcome
	for i := range shards {
		all = append(all, shards[i]...)
		allOut = append(allOut, outcomes[i]...)
	}
	var inItems []Item
	if fx.Dump != nil {
		if inItems, err = fx.Dump(ctx, in); err != nil {
			t.Fatal(err)
		}
		if len(inItems) != len(all) {
			t.Fatalf("Dump(%s) gave %d rows, want %d", in, len(inItems), len(all))
		}
	}
	for _, split := range []dataset.Split{dataset.Kept, dataset.Rejected, dataset.Errors} {
		dir := storage.Join(out, split.String())
		var want []int
		for i, o := range allOut {
			if o.Split == split {
				want = append(want, i)
			}
		}
		if tmp, _ := storage.List(ctx, storage.Join(dir, ".*")); len(tmp) > 0 {
			t.Errorf("%s: temporary files left behind: %v", dir, tmp)
		}
		got := readDir(t, fx.Format, dir)
		if len(got) != len(want) {
			t.Fatalf("%s: read back %d rows, want %d", dir, len(got), len(want))
		}
		for j, i := range want {
			r := got[j]
			if err := same(r, all[i]); err != nil {
				t.Fatalf("%s row %d: %v", dir, j, err)
			}
			if (r.Err == "") != (inputRecs[i].Err == "") {
				t.Fatalf("%s row %d (%s): fault %q, but the input row's is %q", dir, j, all[i].ID, r.Err, inputRecs[i].Err)
			}
		}
		if fx.Dump == nil {
			continue
		}
		items, err := fx.Dump(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(items) != len(want) {
			t.Fatalf("Dump(%s) gave %d rows, want %d", dir, len(items), len(want))
		}
		for j, i := range want {
			if err := sameItem(items[j], inItems[i], allOut[i]); err != nil {
				t.Fatalf("%s row %d (%s): %v", dir, j, all[i].ID, err)
			}
		}
	}
}

// readDir reads back an output directory. Outputs may name files where the input has them,
// outside the output directory (pathcsv's images), so it allows such paths.
func readDir(t *testing.T, f dataset.RawFormat, dir string) []dataset.RawRecord {
	t.Helper()
	o := dataset.Options{AllowOutsidePaths: true}
	plan, err := f.Plan(context.Background(), dir, o)
	if err != nil {
		t.Fatalf("reading back %s: %v", dir, err)
	}
	var out []dataset.RawRecord
	for _, sh := range plan {
		out = append(out, readShard(t, f, sh, o)...)
	}
	return out
}

func sameItem(got, in Item, o dataset.Outcome) error {
	if got.ID != in.ID {
		return fmt.Errorf("id %q, want %q", got.ID, in.ID)
	}
	for name, b := range in.Parts {
		g, ok := got.Parts[name]
		if !ok {
			return fmt.Errorf("part %q is missing from the output", name)
		}
		if !bytes.Equal(g, b) {
			return fmt.Errorf("part %q differs: %d bytes %.40q, want %d bytes %.40q", name, len(g), g, len(b), b)
		}
	}
	if o.Split == dataset.Errors {
		r, ok := got.Parts["reason"]
		if _, dup := in.Parts["reason"]; dup {
			r, ok = got.Parts["lemon_reason"]
		}
		if !ok || string(r) != o.Reason {
			return fmt.Errorf("reason %q, want %q", r, o.Reason)
		}
		return nil
	}
	for name, v := range map[string]float64{"lemon_d_mm": o.Dmm, "lemon_s_n": o.Sn, "lemon_s_m": o.Sm, "lemon_score": o.Score} {
		s, ok := got.Parts[name]
		if !ok {
			return fmt.Errorf("no %s in the output", name)
		}
		if f, err := strconv.ParseFloat(string(s), 64); err != nil || f != v {
			return fmt.Errorf("%s = %q, want %v", name, s, v)
		}
	}
	return nil
}

// ArrowCell is one cell as a Dump reports it: binary and string values as stored, floats as
// strconv.FormatFloat(v, 'g', -1, 64), nulls as "(null)", anything else by ValueStr.
func ArrowCell(col arrow.Array, i int) []byte {
	if col.IsNull(i) {
		return []byte("(null)")
	}
	switch c := col.(type) {
	case *array.Binary:
		return bytes.Clone(c.Value(i))
	case *array.LargeBinary:
		return bytes.Clone(c.Value(i))
	case *array.String:
		return []byte(c.Value(i))
	case *array.LargeString:
		return []byte(c.Value(i))
	case *array.Float64:
		return []byte(strconv.FormatFloat(c.Value(i), 'g', -1, 64))
	case *array.Float32:
		return []byte(strconv.FormatFloat(float64(c.Value(i)), 'g', -1, 32))
	}
	return []byte(col.ValueStr(i))
}

// ArrowRows returns each row of the batches of rr as parts by column name, and releases rr.
func ArrowRows(rr array.RecordReader) ([]map[string][]byte, error) {
	defer rr.Release()
	var out []map[string][]byte
	for rr.Next() {
		rec := rr.RecordBatch()
		for i := 0; i < int(rec.NumRows()); i++ {
			row := map[string][]byte{}
			for c, f := range rec.Schema().Fields() {
				row[f.Name] = ArrowCell(rec.Column(c), i)
			}
			out = append(out, row)
		}
	}
	return out, rr.Err()
}
