package rawtest_test

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/embdir"
	"github.com/lemon-curation/lemon/dataset/embparquet"
	"github.com/lemon-curation/lemon/dataset/img2parquet"
	"github.com/lemon-curation/lemon/dataset/pathcsv"
	"github.com/lemon-curation/lemon/dataset/rawtest"
	"github.com/lemon-curation/lemon/dataset/webdataset"
	"github.com/lemon-curation/lemon/storage"
)

var raw = []rawtest.Fixture{
	{Format: webdataset.Format{}, Write: webdataset.Write},
	{Format: img2parquet.Format{}, Write: img2parquet.Write},
	{Format: pathcsv.Format{}, Write: pathcsv.Write},
}

func embRows(n int) []dataset.Row {
	rng := rand.New(rand.NewPCG(1, 2))
	rows := make([]dataset.Row, n)
	for i := range rows {
		rows[i] = dataset.Row{ID: string(rune('a' + i)), Caption: "c", Image: []float32{rng.Float32(), 1}, Text: []float32{1, rng.Float32()}}
	}
	return rows
}

// Auto-detection never takes one layout for another: each raw dataset, and the kept/ output
// each writes, is detected by its own format only and by no embedding format; embedding
// datasets are detected by no raw format.
func TestDetectIsSpecific(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	dirs := map[string]string{} // dir -> the one raw format that must detect it ("" for none)
	for _, fx := range raw {
		dir := storage.Join(root, fx.Format.Name())
		if err := fx.Write(ctx, dir, [][]rawtest.Sample{rawtest.Samples("x", 4, 1)}); err != nil {
			t.Fatal(err)
		}
		dirs[dir] = fx.Format.Name()
		plan, err := fx.Format.Plan(ctx, dir, dataset.Options{})
		if err != nil {
			t.Fatal(err)
		}
		out := storage.Join(root, fx.Format.Name()+"-out")
		if err := fx.Format.(dataset.SplitWriter).WriteSplits(ctx, plan[0], dataset.Options{}, out, rawtest.Outcomes(4, nil)); err != nil {
			t.Fatal(err)
		}
		dirs[storage.Join(out, "kept")] = fx.Format.Name()
	}
	ed := storage.Join(root, "embdir")
	if err := embdir.Write(ctx, ed, [][]dataset.Row{embRows(3)}, embdir.WriteOptions{MetadataExt: ".csv"}); err != nil {
		t.Fatal(err)
	}
	dirs[ed] = ""
	ep := storage.Join(root, "embparquet")
	if err := embparquet.Write(ctx, ep, [][]dataset.Row{embRows(3)}); err != nil {
		t.Fatal(err)
	}
	dirs[ep] = ""
	for dir, want := range dirs {
		for _, fx := range raw {
			if got := fx.Format.Detect(ctx, dir); got != (fx.Format.Name() == want) {
				t.Errorf("%s.Detect(%s) = %v", fx.Format.Name(), dir, got)
			}
		}
		f, err := dataset.DetectRaw(ctx, dir, "auto")
		if err != nil || (f == nil) != (want == "") || (f != nil && f.Name() != want) {
			t.Errorf("DetectRaw(%s) = %v, %v; want %q", dir, f, err, want)
		}
		if _, err := dataset.Open(ctx, dir, "auto"); (err == nil) != (want == "") {
			t.Errorf("dataset.Open(%s): err = %v; an embedding format must detect exactly the embedding datasets", dir, err)
		}
	}
}
