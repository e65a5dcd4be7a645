package embdir_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/datasettest"
	"github.com/lemon-curation/lemon/dataset/embdir"
	"github.com/x448/float16"
)

func TestConformance(t *testing.T) {
	for _, c := range []struct {
		name string
		o    embdir.WriteOptions
	}{
		{"parquet-f32", embdir.WriteOptions{}},
		{"csv-f16", embdir.WriteOptions{MetadataExt: ".csv", Dtype: "<f2"}},
		{"jsonl", embdir.WriteOptions{MetadataExt: ".jsonl", IDColumn: "uid"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := c.o
			idCol := o.IDColumn
			if idCol == "" {
				idCol = "key"
			}
			datasettest.Run(t, datasettest.Fixture{
				Format:   embdir.Format{},
				IDColumn: idCol,
				Write: func(ctx context.Context, dir string, shards [][]dataset.Row) error {
					if o.Dtype == "<f2" {
						// float16 loses precision; round the fixture so it compares exactly.
						for _, s := range shards {
							for _, r := range s {
								roundF16(r.Image)
								roundF16(r.Text)
							}
						}
					}
					return embdir.Write(ctx, dir, shards, o)
				},
			}, t.TempDir())
		})
	}
}

func roundF16(v []float32) {
	for i, x := range v {
		v[i] = float16.Fromfloat32(x).Float32()
	}
}

// Files of the shard folders that are not read are noted; a file matching a shard pattern
// without a shard number is refused rather than skipped.
func TestUnreadAndUnnumberedFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if err := embdir.Write(ctx, dir, [][]dataset.Row{datasettest.Rows("a", 3, 4, 1)}, embdir.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"img_emb/readme.txt", "metadata/metadata_0.json", "stats.json"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var notes []string
	ctx = dataset.WithNotes(ctx, func(m string) { notes = append(notes, m) })
	plan, err := embdir.Format{}.Plan(ctx, dir, dataset.Options{})
	if err != nil || len(plan) != 1 {
		t.Fatalf("Plan: %v, %d shards", err, len(plan))
	}
	want := []string{
		filepath.Join(dir, "img_emb") + ": 1 file(s) are not read (no part of the embdir layout): readme.txt",
		filepath.Join(dir, "metadata") + ": 1 file(s) are not read (no part of the embdir layout): metadata_0.json",
	}
	if strings.Join(notes, "\n") != strings.Join(want, "\n") {
		t.Fatalf("notes:\n%s\nwant:\n%s", strings.Join(notes, "\n"), strings.Join(want, "\n"))
	}
	if err := os.WriteFile(filepath.Join(dir, "img_emb", "img_emb_x.npy"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = embdir.Format{}.Plan(ctx, dir, dataset.Options{})
	if err == nil || !strings.Contains(err.Error(), "img_emb_x.npy: no shard number in its name") {
		t.Fatalf("err = %v", err)
	}
}
