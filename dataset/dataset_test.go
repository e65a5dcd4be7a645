package dataset_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lemon-curation/lemon/dataset"
)

// TestPlanShards: files are planned at once (several in flight), and the shards come back in
// file order with indices and offsets from that order, whatever order the plans finish in;
// failures report the first failing file in order and how many more failed.
func TestPlanShards(t *testing.T) {
	files := []string{"a", "b", "c", "d", "e"}
	var inFlight, most atomic.Int32
	plan := func(ctx context.Context, name string) (dataset.Shard, error) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		i := strings.Index("abcde", name)
		time.Sleep(time.Duration(5-i) * 20 * time.Millisecond) // later files finish first
		return dataset.Shard{Rows: int64(10 * (i + 1)), Name: name}, nil
	}
	shards, err := dataset.PlanShards(context.Background(), files, plan)
	if err != nil {
		t.Fatal(err)
	}
	var offset int64
	for i, sh := range shards {
		if sh.Name != files[i] || sh.Index != i || sh.Offset != offset {
			t.Fatalf("shard %d = %+v, want %s at index %d, offset %d", i, sh, files[i], i, offset)
		}
		offset += sh.Rows
	}
	if most.Load() < 2 {
		t.Fatalf("at most %d files were planned at once", most.Load())
	}
	failing := func(ctx context.Context, name string) (dataset.Shard, error) {
		if name == "b" || name == "d" || name == "e" {
			return dataset.Shard{}, fmt.Errorf("%s: broken", name)
		}
		return dataset.Shard{}, nil
	}
	_, err = dataset.PlanShards(context.Background(), files, failing)
	if err == nil || !strings.HasPrefix(err.Error(), "b: broken") || !strings.Contains(err.Error(), "2 more of the 5 files") {
		t.Fatalf("err = %v, want b's error first and 2 more counted", err)
	}
}

// The deprecated --image-column and --text-column become the option they meant for the
// format, with a note; where they meant nothing, or clash with the new option, it is an error.
func TestResolveAliases(t *testing.T) {
	for _, c := range []struct {
		format string
		in     dataset.Options
		want   dataset.Options
	}{
		{"parquet", dataset.Options{ImageColumn: "i", TextColumn: "t"}, dataset.Options{ImageEmbeddingColumn: "i", TextEmbeddingColumn: "t"}},
		{"img2parquet", dataset.Options{ImageColumn: "jpg"}, dataset.Options{ImageBytesColumn: "jpg"}},
		{"pathcsv", dataset.Options{ImageColumn: "file"}, dataset.Options{ImagePathColumn: "file"}},
		{"webdataset", dataset.Options{ImageColumn: "png"}, dataset.Options{ImageExtension: "png"}},
		{"img2parquet", dataset.Options{ImageColumn: "jpg", ImageBytesColumn: "jpg"}, dataset.Options{ImageBytesColumn: "jpg"}},
	} {
		got, note, err := c.in.Resolve(c.format)
		if err != nil || got != c.want || !strings.Contains(note, "deprecated") || !strings.Contains(note, c.format) {
			t.Errorf("%s: Resolve(%+v) = %+v, note %q, err %v; want %+v and a note", c.format, c.in, got, note, err, c.want)
		}
	}
	if got, note, err := (dataset.Options{ImageBytesColumn: "x"}).Resolve("img2parquet"); err != nil || note != "" || got.ImageBytesColumn != "x" {
		t.Errorf("no deprecated option: got %+v, note %q, err %v", got, note, err)
	}
	for _, c := range []struct {
		format string
		in     dataset.Options
		want   string
	}{
		{"embdir", dataset.Options{ImageColumn: "x"}, "--image-column (deprecated) has no meaning for embdir"},
		{"datacomp", dataset.Options{ImageColumn: "x"}, "has no meaning for datacomp"},
		{"img2parquet", dataset.Options{TextColumn: "text"}, "--caption-column"},
		{"parquet", dataset.Options{ImageColumn: "a", ImageEmbeddingColumn: "b"}, "give only --image-embedding-column"},
	} {
		if _, _, err := c.in.Resolve(c.format); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Resolve(%+v): err = %v, want one saying %q", c.format, c.in, err, c.want)
		}
	}
}

// Shard files at any depth, in path order, without hidden names; a file path is itself.
func TestShardFilesUnder(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	for _, n := range []string{"data/train-00001-of-00002.parquet", "data/train-00000-of-00002.parquet", "a.PARQUET", "README.md", "x/y/z.parquet", ".cache/c.parquet", "data/.part.parquet.tmp-1"} {
		os.MkdirAll(filepath.Dir(filepath.Join(root, n)), 0o755)
		os.WriteFile(filepath.Join(root, n), []byte("x"), 0o644)
	}
	got, err := dataset.ShardFilesUnder(ctx, root, ".parquet")
	var rel []string
	for _, f := range got {
		rel = append(rel, dataset.RelPath(root, f))
	}
	if want := "a.PARQUET data/train-00000-of-00002.parquet data/train-00001-of-00002.parquet x/y/z.parquet"; err != nil || strings.Join(rel, " ") != want {
		t.Fatalf("ShardFilesUnder = %v, %v; want %s", rel, err, want)
	}
	one := filepath.Join(root, "x", "y", "z.parquet")
	if got, err := dataset.ShardFilesUnder(ctx, one, ".parquet"); err != nil || len(got) != 1 || dataset.RelPath(one, got[0]) != "z.parquet" {
		t.Fatalf("a file path: %v, %v", got, err)
	}
	if dataset.RelPath("gs://b/root/", "gs://b/root/data/x.parquet") != "data/x.parquet" {
		t.Error("RelPath of a URL with a trailing slash")
	}
}

// A path with nothing there does not exist; an empty local folder says so; a folder holding
// files only in subfolders exists.
func TestCheckExists(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	missing := filepath.Join(root, "no-such-dir")
	if err := dataset.CheckExists(ctx, missing); err == nil || err.Error() != missing+" does not exist" {
		t.Errorf("missing: %v", err)
	}
	if _, err := dataset.Open(ctx, missing, ""); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Open(missing): %v, want it to say the path does not exist", err)
	}
	empty := filepath.Join(root, "empty")
	os.Mkdir(empty, 0o755)
	if err := dataset.CheckExists(ctx, empty); err == nil || !strings.Contains(err.Error(), "empty folder") {
		t.Errorf("empty: %v", err)
	}
	os.MkdirAll(filepath.Join(root, "deep", "er"), 0o755)
	os.WriteFile(filepath.Join(root, "deep", "er", "f"), nil, 0o644)
	if err := dataset.CheckExists(ctx, filepath.Join(root, "deep")); err != nil {
		t.Errorf("a folder with a file below: %v", err)
	}
	if err := dataset.CheckExists(ctx, filepath.Join(root, "deep", "er", "f")); err != nil {
		t.Errorf("a file: %v", err)
	}
	if err := dataset.CheckExists(ctx, "memfs://nothing-here/x"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("memfs: %v", err)
	}
}
