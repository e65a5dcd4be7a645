package webdataset_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/dataset/rawtest"
	"github.com/lemon-curation/lemon/dataset/rawtest/samples"
	"github.com/lemon-curation/lemon/dataset/webdataset"
	"github.com/lemon-curation/lemon/storage"
)

var fixture = rawtest.Fixture{Format: webdataset.Format{}, Write: webdataset.Write, Dump: dump}

func TestConformance(t *testing.T) { rawtest.Run(t, fixture, t.TempDir()) }

// memfs streams (no ReadAt), as gs:// does.
func TestConformanceMemfs(t *testing.T) { rawtest.Run(t, fixture, "memfs://webdataset-conformance") }

// dump reports, per sample, every member's bytes and header (name, mode, owner, times), and the
// Parquet columns of the row with the sample's key.
func dump(ctx context.Context, dir string) ([]rawtest.Item, error) {
	tars, err := storage.List(ctx, storage.Join(dir, "*.tar"))
	if err != nil {
		return nil, err
	}
	sort.Strings(tars)
	var items []rawtest.Item
	for _, p := range tars {
		b, err := storage.ReadFile(ctx, p)
		if err != nil {
			return nil, err
		}
		rows := map[string]map[string][]byte{}
		if pq := strings.TrimSuffix(p, ".tar") + ".parquet"; storage.Exists(ctx, pq) {
			rr, err := metadata.Open(ctx, pq)
			if err != nil {
				return nil, err
			}
			all, err := rawtest.ArrowRows(rr)
			if err != nil {
				return nil, err
			}
			for _, r := range all {
				rows[string(r["key"])] = r
			}
		}
		tr := tar.NewReader(bytes.NewReader(b))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				return nil, err
			}
			key, _, _ := strings.Cut(h.Name, ".")
			if len(items) == 0 || items[len(items)-1].ID != key {
				parts := map[string][]byte{}
				for c, v := range rows[key] {
					parts[c] = v
				}
				items = append(items, rawtest.Item{ID: key, Parts: parts})
			}
			it := items[len(items)-1]
			it.Parts[h.Name] = data
			it.Parts["header "+h.Name] = fmt.Appendf(nil, "mode %o mtime %s uname %s type %c", h.Mode, h.ModTime.UTC().Format(time.RFC3339Nano), h.Uname, h.Typeflag)
		}
	}
	return items, nil
}

type member struct {
	name string
	data string
	typ  byte
}

func writeTar(t *testing.T, p string, ms []member) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range ms {
		typ := m.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Name: m.name, Typeflag: typ, Mode: 0o600, Size: int64(len(m.data)), ModTime: time.Unix(1700000000, 0)}
		if typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(m.data))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if p != "" {
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func readAll(t *testing.T, dir string, o dataset.Options) ([]dataset.RawRecord, error) {
	t.Helper()
	ctx := context.Background()
	plan, err := webdataset.Format{}.Plan(ctx, dir, o)
	if err != nil {
		return nil, err
	}
	var out []dataset.RawRecord
	for _, sh := range plan {
		if err := (webdataset.Format{}).ReadRaw(ctx, sh, o, func(r dataset.RawRecord) error {
			out = append(out, r)
			return nil
		}); err != nil {
			return out, err
		}
	}
	return out, nil
}

var png = string(samples.PNG(4, 4, 1))

func TestSamples(t *testing.T) {
	dir := t.TempDir()
	writeTar(t, filepath.Join(dir, "00000.tar"), []member{
		{name: "d/", typ: tar.TypeDir}, // not a sample
		{name: "a.jpg", data: png},
		{name: "a.txt", data: "caption a\n"},
		{name: "a.json", data: `{"uid": "u-a", "alt": "alt a"}`},
		{name: "__index__", data: "meta"}, // not a sample
		{name: "b.png", data: png},
		{name: "b.json", data: `{"caption": "caption b from json", "uid": 7}`},
		{name: "c.txt", data: "no image"},
		{name: "a.cls", data: "1"}, // a again, after other samples
		{name: "d/e.seg.png", data: png},
		{name: "d/e.txt", data: "nested"},
		{name: "f.webp", data: ""},
		{name: "f.txt", data: "empty image"},
		{name: "g.jpg", data: png},
		{name: "g.txt", data: " \n"},
		{name: "h.jpg", data: png},
		{name: "h.txt", data: "x"},
		{name: "h.txt", data: "y"},
	})
	got, err := readAll(t, dir, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ id, caption, err string }{
		{"a", "caption a", ""},
		{"b", "caption b from json", ""},
		{"c", "no image", "missing image (no .jpg, .jpeg, .png, .webp, .gif member)"},
		{"a", "", `key "a" appears again after other samples: a sample's members must be adjacent in the tar`},
		{"d/e", "nested", "missing image (no .jpg, .jpeg, .png, .webp, .gif member)"}, // its extension is seg.png
		{"f", "empty image", "empty image"},
		{"g", " ", "empty caption"},
		{"h", "x", `two members named "h.txt"`},
	}
	if len(got) != len(want) {
		t.Fatalf("read %d rows, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		r := got[i]
		if r.Index != int64(i) || r.ID != w.id || r.Caption != w.caption || r.Err != w.err {
			t.Errorf("row %d = {%d %q %q err %q}, want {%q %q err %q}", i, r.Index, r.ID, r.Caption, r.Err, w.id, w.caption, w.err)
		}
	}
	if string(got[0].Image) != png {
		t.Error("row 0 image differs")
	}

	// Options: ids from the json, captions from another member or json field, the image by extension.
	got, err = readAll(t, dir, dataset.Options{IDColumn: "uid", CaptionColumn: "alt", ImageColumn: "seg.png"})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].ID != "u-a" || got[0].Caption != "alt a" || got[0].Err != "missing image (no .seg.png member)" {
		t.Errorf("row 0 with options = %+v", got[0])
	}
	if got[1].ID != "7" || got[1].Err != "missing image (no .seg.png member)" {
		t.Errorf("row 1 with options = {%q %q}", got[1].ID, got[1].Err)
	}
	if got[4].Image == nil || got[4].Err != "missing id" {
		t.Errorf("row 4 with options = {%q %q image %d bytes}", got[4].ID, got[4].Err, len(got[4].Image))
	}
}

func TestBrokenTars(t *testing.T) {
	good := writeTar(t, "", []member{
		{name: "a.jpg", data: png}, {name: "a.txt", data: "caption a"},
		{name: "b.jpg", data: strings.Repeat("x", 2000)}, {name: "b.txt", data: "caption b"},
	})
	// Member b.jpg's data starts after a.jpg (header + padded data), a.txt (header + 1 block)
	// and its own header.
	bData := 512 + (len(png)+511)/512*512 + 1024 + 512
	lastEnd := bData + 2048 + 1024 // b.jpg padded, b.txt header and block
	for _, c := range []struct {
		name  string
		data  []byte
		rows  int // read before the error
		wants []string
	}{
		{"mid-member", good[:bData+1000], 1, []string{"truncated tar", `member "b.jpg" needs bytes ` + fmt.Sprint(bData)}},
		{"mid-header", good[:bData-100], 0, []string{"truncated tar", fmt.Sprintf("ends at byte %d inside the header that starts at byte %d", bData-100, bData-512)}},
		{"no-end-marker", good[:lastEnd], 1, []string{"truncated tar", "without the end-of-archive marker"}},
		{"garbage-appended", append(bytes.Clone(good), []byte("GARBAGE")...), 2, []string{fmt.Sprintf("non-zero bytes at byte %d", len(good)), "garbage appended"}},
		{"two-tars-concatenated", append(bytes.Clone(good), good...), 2, []string{fmt.Sprintf("non-zero bytes at byte %d", len(good)), "concatenated"}},
		{"garbage-header", append(bytes.Clone(good[:lastEnd]), bytes.Repeat([]byte("garbage!"), 128)...), 1, []string{"corrupt tar: invalid header at byte " + fmt.Sprint(lastEnd)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "00007.tar")
			if err := os.WriteFile(p, c.data, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := (webdataset.Format{}).Plan(context.Background(), dir, dataset.Options{})
			check := func(what string, err error) {
				t.Helper()
				if err == nil {
					t.Fatalf("%s: no error", what)
				}
				for _, w := range append([]string{p}, c.wants...) {
					if !strings.Contains(err.Error(), w) {
						t.Fatalf("%s: error %q does not say %q", what, err, w)
					}
				}
			}
			check("Plan", err)
			// ReadRaw of a shard planned before the file broke: the rows before the fault, then the error.
			sh := dataset.Shard{Format: "webdataset", Rows: 2, Files: map[string]string{"tar": p}, Name: "00007"}
			var rows []dataset.RawRecord
			err = (webdataset.Format{}).ReadRaw(context.Background(), sh, dataset.Options{}, func(r dataset.RawRecord) error {
				rows = append(rows, r)
				return nil
			})
			check("ReadRaw", err)
			if len(rows) != c.rows {
				t.Fatalf("ReadRaw emitted %d rows before the error, want %d", len(rows), c.rows)
			}
		})
	}
}

func TestEmitErrorStops(t *testing.T) {
	dir := t.TempDir()
	if err := webdataset.Write(context.Background(), dir, [][]samples.Sample{samples.Make("x", 3, 1)}); err != nil {
		t.Fatal(err)
	}
	plan, err := webdataset.Format{}.Plan(context.Background(), dir, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	n := 0
	err = (webdataset.Format{}).ReadRaw(context.Background(), plan[0], dataset.Options{}, func(dataset.RawRecord) error { n++; return stop })
	if err != stop || n != 1 {
		t.Fatalf("ReadRaw after emit failed: err %v after %d rows", err, n)
	}
}

// Parquet rows that are no sample of the tar (img2dataset's failed downloads) are in no split;
// a single .tar path is a dataset of one shard; outputs are named after the input.
func TestParquetFailedRowsAndSingleFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tarPath := filepath.Join(dir, "00042.tar")
	writeTar(t, tarPath, []member{{name: "a.jpg", data: png}, {name: "a.txt", data: "A"}, {name: "c.jpg", data: png}, {name: "c.txt", data: "C"}})
	rows := []dataset.Row{{ID: "a", Caption: "A"}, {ID: "b", Caption: "B"}, {ID: "c", Caption: "C"}}
	for i := range rows {
		rows[i].Extra = map[string]string{"status": "success"}
	}
	rows[1].Extra["status"] = "failed_to_download"
	rec := dataset.MetadataBatch(rows, "key", "caption", []string{"status"})
	if err := metadata.WriteParquet(ctx, filepath.Join(dir, "00042.parquet"), rec.Schema(), rec); err != nil {
		t.Fatal(err)
	}
	rec.Release()
	plan, err := webdataset.Format{}.Plan(ctx, tarPath, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan) != 1 || plan[0].Rows != 2 || plan[0].Files["parquet"] == "" || plan[0].Name != "00042" {
		t.Fatalf("plan = %+v", plan)
	}
	out := t.TempDir()
	err = webdataset.Format{}.WriteSplits(ctx, plan[0], dataset.Options{}, out, []dataset.Outcome{{Split: dataset.Rejected, Score: 2}, {Split: dataset.Kept, Score: 1}})
	if err != nil {
		t.Fatal(err)
	}
	for split, want := range map[string]string{"kept": "c", "rejected": "a", "errors": ""} {
		rr, err := metadata.Open(ctx, filepath.Join(out, split, "00042.parquet"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := rawtest.ArrowRows(rr)
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, r := range got {
			keys = append(keys, string(r["key"]))
		}
		if strings.Join(keys, ",") != want {
			t.Errorf("%s parquet keys = %v, want %q", split, keys, want)
		}
		if !storage.Exists(ctx, filepath.Join(out, split, "00042.tar")) {
			t.Errorf("no %s/00042.tar", split)
		}
	}
}

// A sibling Parquet without a key column cannot be split: Plan says so.
func TestParquetWithoutKey(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	writeTar(t, filepath.Join(dir, "00000.tar"), []member{{name: "a.jpg", data: png}, {name: "a.txt", data: "A"}})
	rec := dataset.MetadataBatch([]dataset.Row{{ID: "a", Caption: "A"}}, "name", "caption", nil)
	if err := metadata.WriteParquet(ctx, filepath.Join(dir, "00000.parquet"), rec.Schema(), rec); err != nil {
		t.Fatal(err)
	}
	rec.Release()
	_, err := webdataset.Format{}.Plan(ctx, dir, dataset.Options{})
	if err == nil || !strings.Contains(err.Error(), "00000.parquet") || !strings.Contains(err.Error(), `no "key" column`) {
		t.Fatalf("err = %v", err)
	}
}

// A lone zero block ends a tar (the writer finished); Plan names the first broken tar and
// counts the others.
func TestLoneZeroBlockAndManyBroken(t *testing.T) {
	dir := t.TempDir()
	good := writeTar(t, "", []member{{name: "a.jpg", data: png}, {name: "a.txt", data: "A"}})
	end := len(good)
	for end > 0 && good[end-1] == 0 {
		end--
	}
	end = (end + 511) / 512 * 512 // the last member's padded end
	if err := os.WriteFile(filepath.Join(dir, "00000.tar"), good[:end+512], 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := readAll(t, dir, dataset.Options{})
	if err != nil || len(got) != 1 || got[0].Err != "" {
		t.Fatalf("lone zero block: %v, %+v", err, got)
	}
	for _, n := range []string{"00001.tar", "00002.tar"} {
		if err := os.WriteFile(filepath.Join(dir, n), good[:end], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err = webdataset.Format{}.Plan(context.Background(), dir, dataset.Options{})
	if err == nil || !strings.Contains(err.Error(), "00001.tar: truncated tar") || !strings.Contains(err.Error(), "and 1 more of the 3 files") {
		t.Fatalf("err = %v", err)
	}
}
