package pathcsv_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/dataset/pathcsv"
	"github.com/lemon-curation/lemon/dataset/rawtest"
	"github.com/lemon-curation/lemon/dataset/rawtest/samples"
	"github.com/lemon-curation/lemon/storage"
)

var fixture = rawtest.Fixture{Format: pathcsv.Format{}, Write: pathcsv.Write, Dump: dump}

func TestConformance(t *testing.T) { rawtest.Run(t, fixture, t.TempDir()) }

func TestConformanceMemfs(t *testing.T) { rawtest.Run(t, fixture, "memfs://pathcsv-conformance") }

// dump reports every column of every row by name, with the image path resolved.
func dump(ctx context.Context, dir string) ([]rawtest.Item, error) {
	fs, err := storage.List(ctx, storage.Join(dir, "*.csv"))
	if err != nil {
		return nil, err
	}
	sort.Strings(fs)
	var items []rawtest.Item
	for _, p := range fs {
		rr, err := metadata.Open(ctx, p)
		if err != nil {
			return nil, err
		}
		rows, err := rawtest.ArrowRows(rr)
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			img := pathcsv.Resolve(p, string(r["image"]))
			if !strings.Contains(img, "://") {
				img, _ = filepath.Abs(img)
			}
			r["image"] = []byte(img)
			items = append(items, rawtest.Item{ID: string(r["key"]), Parts: r})
		}
	}
	return items, nil
}

func write(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, p string, o dataset.Options) ([]dataset.RawRecord, error) {
	t.Helper()
	ctx := context.Background()
	plan, err := pathcsv.Format{}.Plan(ctx, p, o)
	if err != nil {
		return nil, err
	}
	var out []dataset.RawRecord
	for _, sh := range plan {
		err := pathcsv.Format{}.ReadRaw(ctx, sh, o, func(r dataset.RawRecord) error {
			out = append(out, r)
			return nil
		})
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func TestPathsAndIDs(t *testing.T) {
	dir := t.TempDir()
	img := samples.PNG(3, 3, 1)
	write(t, filepath.Join(dir, "pics", "a.png"), string(img))
	write(t, filepath.Join(dir, "empty.png"), "")
	abs := filepath.Join(dir, "pics", "a.png")
	// A BOM, no id column, absolute and relative paths, an empty path cell.
	write(t, filepath.Join(dir, "sub", "list.csv"), "\ufefftext,file_name\nrelative,../pics/a.png\nabsolute,"+abs+"\nmissing,nope.jpg\nempty file,../empty.png\nno path,\n")
	// The paths lead outside the CSV's folder: reading them must be allowed.
	got, err := read(t, filepath.Join(dir, "sub", "list.csv"), dataset.Options{AllowOutsidePaths: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ id, err string }{
		{"list-0", ""}, {"list-1", ""},
		{"list-2", "image file not found: " + filepath.Join(dir, "sub", "nope.jpg")},
		{"list-3", "empty image file: " + filepath.Join(dir, "empty.png")},
		{"list-4", "missing image path"},
	}
	if len(got) != len(want) {
		t.Fatalf("read %d rows", len(got))
	}
	for i, w := range want {
		if got[i].ID != w.id || got[i].Err != w.err {
			t.Errorf("row %d = {%q %q}, want {%q %q}", i, got[i].ID, got[i].Err, w.id, w.err)
		}
	}
	if string(got[0].Image) != string(img) || string(got[1].Image) != string(img) {
		t.Error("image bytes differ")
	}
	// Configured columns: a missing one is named.
	if _, err := read(t, filepath.Join(dir, "sub"), dataset.Options{IDColumn: "uid", AllowOutsidePaths: true}); err == nil || !strings.Contains(err.Error(), `"uid"`) {
		t.Errorf("missing id column: err = %v", err)
	}
	if _, err := read(t, filepath.Join(dir, "sub"), dataset.Options{ImagePathColumn: "picture", AllowOutsidePaths: true}); err == nil || !strings.Contains(err.Error(), `"picture"`) {
		t.Errorf("missing image column: err = %v", err)
	}
}

func TestMalformedCSV(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.csv"), "image,caption\nx.png,one\ny.png,two,extra\n")
	_, err := read(t, dir, dataset.Options{})
	if err == nil || !strings.Contains(err.Error(), "a.csv") || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("err = %v, want one naming the file and line", err)
	}
}

// A CSV without an image path column (an img2dataset url list) is not this format.
func TestDetect(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "urls.csv"), "url,caption\nhttps://example.com/a.jpg,a\n")
	if (pathcsv.Format{}).Detect(context.Background(), dir) {
		t.Fatal("Detect on a URL list = true")
	}
}

// Stopping early (emit fails) returns at once and leaves no reader behind.
func TestEmitError(t *testing.T) {
	dir := t.TempDir()
	if err := pathcsv.Write(context.Background(), dir, [][]samples.Sample{samples.Make("e", 50, 1)}); err != nil {
		t.Fatal(err)
	}
	plan, err := pathcsv.Format{}.Plan(context.Background(), dir, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	stop := os.ErrClosed
	n := 0
	err = pathcsv.Format{}.ReadRaw(context.Background(), plan[0], dataset.Options{}, func(dataset.RawRecord) error { n++; return stop })
	if err != stop || n != 1 {
		t.Fatalf("err %v after %d rows", err, n)
	}
}

// Paths resolve inside the CSV's folder: "..", absolute paths and URLs elsewhere, and symbolic
// links out of it are row errors that read nothing, unless AllowOutsidePaths. A directory or a
// pipe is a row error, not a failed job (or a hung one).
func TestOutsidePaths(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "ds")
	img := string(samples.PNG(3, 3, 1))
	write(t, filepath.Join(dir, "pics", "a.png"), img)
	write(t, filepath.Join(root, "secret.png"), "root:x:0:0:root:/root:/bin/bash\n")
	if err := os.Symlink(filepath.Join(root, "secret.png"), filepath.Join(dir, "link.png")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("pics", "a.png"), filepath.Join(dir, "inlink.png")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.png"), 0o644); err != nil {
		t.Fatal(err)
	}
	cells := []string{
		"pics/a.png",                        // inside
		"pics/../pics/a.png",                // inside, through ..
		filepath.Join(dir, "pics", "a.png"), // absolute, inside
		"../secret.png",                     // out through ..
		filepath.Join(root, "secret.png"),   // absolute, outside
		"memfs://elsewhere/x.png",           // a URL elsewhere
		"link.png",                          // a link out
		"inlink.png",                        // a link that stays inside
		"pics",                              // a directory
		"fifo.png",                          // a pipe: reading it would wait forever
	}
	csv := "caption,image\n"
	for i, c := range cells {
		csv += fmt.Sprintf("row %d,%s\n", i, c)
	}
	write(t, filepath.Join(dir, "list.csv"), csv)
	outside := func(p, how string) string {
		return "image path " + p + " leads outside the CSV's folder (" + how + "); pass --allow-outside-paths to read such paths"
	}
	want := []string{
		"", "", "",
		outside(filepath.Join(root, "secret.png"), "through .."),
		outside(filepath.Join(root, "secret.png"), "absolute path or URL"),
		outside("memfs://elsewhere/x.png", "absolute path or URL"),
		outside(filepath.Join(dir, "link.png"), "through a symbolic link"),
		"",
		"image path is a directory: " + filepath.Join(dir, "pics"),
		"image path is not a regular file: " + filepath.Join(dir, "fifo.png"),
	}
	got, err := read(t, dir, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("read %d rows, want %d", len(got), len(want))
	}
	for i, w := range want {
		if got[i].Err != w {
			t.Errorf("row %d (%s): fault %q, want %q", i, cells[i], got[i].Err, w)
		}
		if w == "" && string(got[i].Image) != img {
			t.Errorf("row %d (%s): image bytes differ", i, cells[i])
		}
		if w != "" && got[i].Image != nil {
			t.Errorf("row %d (%s): an error row holds %d bytes of the file", i, cells[i], len(got[i].Image))
		}
	}
	// Allowed, the local paths outside are read (the URL names no file).
	got, err = read(t, dir, dataset.Options{AllowOutsidePaths: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{3, 4, 6} {
		if got[i].Err != "" || !strings.HasPrefix(string(got[i].Image), "root:") {
			t.Errorf("allowed, row %d (%s): fault %q, %d bytes", i, cells[i], got[i].Err, len(got[i].Image))
		}
	}
}
