package webdataset_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
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

// Tars in gzip streams.
var gzFixture = rawtest.Fixture{Format: webdataset.Format{}, Write: writeGzip, Dump: dump}

func TestConformanceGzip(t *testing.T) { rawtest.Run(t, gzFixture, t.TempDir()) }

func TestConformanceGzipMemfs(t *testing.T) {
	rawtest.Run(t, gzFixture, "memfs://webdataset-gzip-conformance")
}

// writeGzip writes shards as webdataset.Write does, then replaces each NNNNN.tar by
// NNNNN.tar.gz (odd shards: NNNNN.tgz).
func writeGzip(ctx context.Context, dir string, shards [][]samples.Sample) error {
	if err := webdataset.Write(ctx, dir, shards); err != nil {
		return err
	}
	for n := range shards {
		base := storage.Join(dir, fmt.Sprintf("%05d", n))
		b, err := storage.ReadFile(ctx, base+".tar")
		if err != nil {
			return err
		}
		ext := ".tar.gz"
		if n%2 == 1 {
			ext = ".tgz"
		}
		if err := storage.WriteFile(ctx, base+ext, gzipBytes(b)); err != nil {
			return err
		}
		if err := storage.Remove(ctx, base+".tar"); err != nil {
			return err
		}
	}
	return nil
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// dump reports, per sample, every member's bytes and header (name, mode, owner, times), and the
// Parquet columns of the row with the sample's key.
func dump(ctx context.Context, dir string) ([]rawtest.Item, error) {
	var tars []string
	for _, ext := range webdataset.TarExtensions {
		fs, err := storage.List(ctx, storage.Join(dir, "*"+ext))
		if err != nil {
			return nil, err
		}
		tars = append(tars, fs...)
	}
	sort.Strings(tars)
	var items []rawtest.Item
	for _, p := range tars {
		b, err := storage.ReadFile(ctx, p)
		if err != nil {
			return nil, err
		}
		name := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(p, ".gz"), ".tar"), ".tgz")
		if name != strings.TrimSuffix(p, ".tar") {
			zr, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			if b, err = io.ReadAll(zr); err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
		}
		rows := map[string]map[string][]byte{}
		if pq := name + ".parquet"; storage.Exists(ctx, pq) {
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

// readReasons reads a reasons file's rows (key, reason), checking its header.
func readReasons(ctx context.Context, p string) ([][]string, error) {
	b, err := storage.ReadFile(ctx, p)
	if err != nil {
		return nil, err
	}
	recs, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if len(recs) == 0 || strings.Join(recs[0], ",") != "key,reason" {
		return nil, fmt.Errorf("%s: header %v, want key,reason", p, recs)
	}
	return recs[1:], nil
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
	got, err = readAll(t, dir, dataset.Options{IDColumn: "uid", CaptionColumn: "alt", ImageExtension: "seg.png"})
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

// Parquet rows that are no sample of the tar (img2dataset's failed downloads) are rows of the
// shard after its samples, errors whose reason quotes the download status and error message:
// counted, and written to errors/ (Parquet and reasons file). A single .tar path is a dataset
// of one shard; outputs are named after the input.
func TestParquetFailedRowsAndSingleFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tarPath := filepath.Join(dir, "00042.tar")
	writeTar(t, tarPath, []member{{name: "a.jpg", data: png}, {name: "a.txt", data: "A"}, {name: "c.jpg", data: png}, {name: "c.txt", data: "C"}})
	rows := []dataset.Row{{ID: "a", Caption: "A"}, {ID: "b", Caption: "B"}, {ID: "c", Caption: "C"}, {ID: "d", Caption: "D"}, {ID: "e", Caption: "E"}}
	for i := range rows {
		rows[i].Extra = map[string]string{"status": "success", "error_message": ""}
	}
	rows[1].Extra = map[string]string{"status": "failed_to_download", "error_message": "HTTP Error 404: Not Found"}
	rows[3].Extra = map[string]string{"status": "failed_to_resize", "error_message": ""}
	rec := dataset.MetadataBatch(rows, "key", "caption", []string{"error_message", "status"})
	if err := metadata.WriteParquet(ctx, filepath.Join(dir, "00042.parquet"), rec.Schema(), rec); err != nil {
		t.Fatal(err)
	}
	rec.Release()
	plan, err := webdataset.Format{}.Plan(ctx, tarPath, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan) != 1 || plan[0].Rows != 5 || plan[0].Files["parquet"] == "" || plan[0].Name != "00042" {
		t.Fatalf("plan = %+v, want 5 rows: 2 samples and 3 Parquet rows without one", plan)
	}
	var got []string
	err = webdataset.Format{}.ReadRaw(ctx, plan[0], dataset.Options{}, func(r dataset.RawRecord) error {
		got = append(got, fmt.Sprintf("%d %s %s %q", r.Index, r.ID, r.Caption, r.Err))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`0 a A ""`, `1 c C ""`,
		`2 b B "download failed: no sample in 00042.tar (status failed_to_download: HTTP Error 404: Not Found)"`,
		`3 d D "download failed: no sample in 00042.tar (status failed_to_resize)"`,
		`4 e E "no sample in 00042.tar, although 00042.parquet lists it (status success)"`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("ReadRaw:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	out := t.TempDir()
	outcomes := []dataset.Outcome{{Split: dataset.Rejected, Score: 2}, {Split: dataset.Kept, Score: 1}, {Split: dataset.Errors, Reason: "rb"}, {Split: dataset.Errors, Reason: "rd"}, {Split: dataset.Errors, Reason: "re"}}
	if err := (webdataset.Format{}).WriteSplits(ctx, plan[0], dataset.Options{}, out, outcomes[:4]); err == nil {
		t.Error("WriteSplits with an outcome missing succeeded")
	}
	bad := slices.Clone(outcomes)
	bad[3] = dataset.Outcome{Split: dataset.Kept}
	if err := (webdataset.Format{}).WriteSplits(ctx, plan[0], dataset.Options{}, out, bad); err == nil || !strings.Contains(err.Error(), `"d"`) {
		t.Errorf("WriteSplits with a row without a sample kept: err = %v", err)
	}
	err = webdataset.Format{}.WriteSplits(ctx, plan[0], dataset.Options{}, out, outcomes)
	if err != nil {
		t.Fatal(err)
	}
	reasons, err := readReasons(ctx, filepath.Join(out, "errors", "00042.reasons.csv"))
	if err != nil || fmt.Sprint(reasons) != "[[b rb] [d rd] [e re]]" {
		t.Errorf("reasons = %v, %v", reasons, err)
	}
	for split, want := range map[string]string{"kept": "c", "rejected": "a", "errors": "b,d,e"} {
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
			if split == "errors" && string(r["reason"]) != "r"+string(r["key"]) {
				t.Errorf("errors row %s: reason %q", r["key"], r["reason"])
			}
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

// A gzip stream's faults are errors naming the file, with offsets in the decompressed tar; its
// tar's own faults are found as in a plain tar. Before, .tar.gz shards were skipped unread.
func TestGzipFaults(t *testing.T) {
	good := writeTar(t, "", []member{
		{name: "a.jpg", data: png}, {name: "a.txt", data: "caption a"},
		{name: "b.jpg", data: strings.Repeat("x", 2000)}, {name: "b.txt", data: "caption b"},
	})
	bData := 512 + (len(png)+511)/512*512 + 1024 + 512
	gz := gzipBytes(good)
	badCRC := bytes.Clone(gz)
	badCRC[len(badCRC)-8] ^= 0xff // the trailer's CRC-32
	for _, c := range []struct {
		name  string
		data  []byte
		rows  int // read before the error
		wants []string
	}{
		{"tar-truncated-mid-member", gzipBytes(good[:bData+1000]), 1, []string{"truncated tar", `member "b.jpg" needs bytes ` + fmt.Sprint(bData), "decompressed"}},
		{"tar-garbage-appended", gzipBytes(append(bytes.Clone(good), "GARBAGE"...)), 2, []string{fmt.Sprintf("non-zero bytes at byte %d", len(good)), "decompressed"}},
		{"stream-truncated", gz[:len(gz)/2], 0, []string{"truncated", "decompressed"}},
		{"stream-trailer-missing", gz[:len(gz)-4], 2, []string{"truncated gzip stream"}},
		{"bad-checksum", badCRC, 2, []string{"corrupt gzip stream", "checksum"}},
		{"garbage-after-stream", append(bytes.Clone(gz), "GARBAGE!GARBAGE!"...), 2, []string{"corrupt gzip stream"}},
		{"two-streams-two-tars", append(bytes.Clone(gz), gz...), 2, []string{"tars concatenated"}},
		{"not-gzip", good, 0, []string{"not a gzip stream"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "00007.tar.gz")
			if err := os.WriteFile(p, c.data, 0o644); err != nil {
				t.Fatal(err)
			}
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
			_, err := (webdataset.Format{}).Plan(context.Background(), dir, dataset.Options{})
			check("Plan", err)
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

// A .tar.gz shard is read like the same tar, and its outputs are gzip streams of its own name.
func TestGzipShardReadAndWritten(t *testing.T) {
	ctx := context.Background()
	dir, out := t.TempDir(), t.TempDir()
	plain := writeTar(t, filepath.Join(dir, "00000.tar"), []member{{name: "a.jpg", data: png}, {name: "a.txt", data: "A"}})
	tgz := writeTar(t, "", []member{{name: "b.jpg", data: png}, {name: "b.txt", data: "B"}, {name: "c.jpg", data: png}, {name: "c.txt", data: "C"}})
	if err := os.WriteFile(filepath.Join(dir, "00001.tgz"), gzipBytes(tgz), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "00002.TAR.GZ"), gzipBytes(plain), 0o644); err != nil {
		t.Fatal(err)
	}
	plan, err := webdataset.Format{}.Plan(ctx, dir, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var rows int64
	for _, sh := range plan {
		names = append(names, sh.Name)
		rows += sh.Rows
	}
	if strings.Join(names, ",") != "00000,00001,00002" || rows != 4 {
		t.Fatalf("plan: shards %v with %d rows, want 00000,00001,00002 with 4", names, rows)
	}
	got, err := readAll(t, dir, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range got {
		ids = append(ids, r.ID+":"+r.Caption)
	}
	if strings.Join(ids, ",") != "a:A,b:B,c:C,a:A" {
		t.Fatalf("read %v", ids)
	}
	err = webdataset.Format{}.WriteSplits(ctx, plan[1], dataset.Options{}, out, []dataset.Outcome{{Split: dataset.Kept}, {Split: dataset.Rejected, Score: 1}})
	if err != nil {
		t.Fatal(err)
	}
	kept, err := os.ReadFile(filepath.Join(out, "kept", "00001.tgz"))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(kept))
	if err != nil {
		t.Fatalf("kept/00001.tgz is not gzip: %v", err)
	}
	tr := tar.NewReader(zr)
	var members []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, h.Name)
	}
	if strings.Join(members, ",") != "b.jpg,b.txt" {
		t.Fatalf("kept/00001.tgz members %v, want b.jpg,b.txt", members)
	}
}

// Two tars that would give outputs of one name are refused.
func TestTwoShardsOfOneName(t *testing.T) {
	dir := t.TempDir()
	b := writeTar(t, filepath.Join(dir, "00000.tar"), []member{{name: "a.jpg", data: png}, {name: "a.txt", data: "A"}})
	if err := os.WriteFile(filepath.Join(dir, "00000.tar.gz"), gzipBytes(b), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := webdataset.Format{}.Plan(context.Background(), dir, dataset.Options{})
	if err == nil || !strings.Contains(err.Error(), "00000.tar.gz") || !strings.Contains(err.Error(), `two shards named "00000"`) {
		t.Fatalf("err = %v", err)
	}
}

// Files of a shard directory that are not read are named, not skipped without a word.
func TestUnreadFilesAreNoted(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	writeTar(t, filepath.Join(dir, "00000.tar"), []member{{name: "a.jpg", data: png}, {name: "a.txt", data: "A"}})
	rec := dataset.MetadataBatch([]dataset.Row{{ID: "a", Caption: "A"}}, "key", "caption", nil)
	if err := metadata.WriteParquet(ctx, filepath.Join(dir, "00000.parquet"), rec.Schema(), rec); err != nil {
		t.Fatal(err)
	}
	rec.Release()
	for _, f := range []string{"00000_stats.json", "00001.zip", "notes.txt", ".00002.tar.tmp"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	var notes []string
	ctx = dataset.WithNotes(ctx, func(m string) { notes = append(notes, m) })
	if _, err := (webdataset.Format{}).Plan(ctx, dir, dataset.Options{}); err != nil {
		t.Fatal(err)
	}
	if len(notes) != 1 {
		t.Fatalf("notes = %q, want one", notes)
	}
	want := dir + ": 3 file(s) are not read (no part of the webdataset layout): 00000_stats.json, 00001.zip, notes.txt"
	if notes[0] != want {
		t.Fatalf("note %q, want %q", notes[0], want)
	}
	// A tar named on its own: nothing else is looked at.
	notes = nil
	if _, err := (webdataset.Format{}).Plan(ctx, filepath.Join(dir, "00000.tar"), dataset.Options{}); err != nil || len(notes) != 0 {
		t.Fatalf("single tar: err %v, notes %q", err, notes)
	}
}

// A sample with a member named to land outside the extraction folder is an error row.
func TestEscapingMemberNames(t *testing.T) {
	dir := t.TempDir()
	writeTar(t, filepath.Join(dir, "00000.tar"), []member{
		{name: "../../x.jpg", data: png}, {name: "../../x.txt", data: "up"},
		{name: "/abs/y.jpg", data: png}, {name: "/abs/y.txt", data: "absolute"},
		{name: "d/../z.jpg", data: png}, {name: "d/../z.txt", data: "stays inside"},
		{name: `C:\w.jpg`, data: png}, {name: `C:\w.txt`, data: "windows drive"},
		{name: "v.jpg", data: png}, {name: "v.txt", data: "fine"},
	})
	got, err := readAll(t, dir, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ id, err string }{
		{"../../x", `member name "../../x.jpg" leads outside the tar's folder (absolute, or through ..)`},
		{"/abs/y", `member name "/abs/y.jpg" leads outside the tar's folder (absolute, or through ..)`},
		{"d/../z", ""},
		{`C:\w`, `member name "C:\\w.jpg" leads outside the tar's folder (absolute, or through ..)`},
		{"v", ""},
	}
	if len(got) != len(want) {
		t.Fatalf("read %d rows, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i].ID != w.id || got[i].Err != w.err {
			t.Errorf("row %d = {%q err %q}, want {%q err %q}", i, got[i].ID, got[i].Err, w.id, w.err)
		}
	}
}

// Without a Parquet beside the tar, the reasons file is the only place an error's reason is:
// one row per sample of the errors tar, in its order.
func TestReasonsFile(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{"00003.tar", "00003.tar.gz"} {
		t.Run(name, func(t *testing.T) {
			dir, out := t.TempDir(), t.TempDir()
			b := writeTar(t, "", []member{
				{name: "a.jpg", data: png}, {name: "a.txt", data: "A"},
				{name: "b.txt", data: "no image"},
				{name: "c.jpg", data: png}, {name: "c.txt", data: "C"},
				{name: "d.jpg", data: png}, {name: "d.txt", data: "D"},
			})
			if strings.HasSuffix(name, ".gz") {
				b = gzipBytes(b)
			}
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
			plan, err := webdataset.Format{}.Plan(ctx, dir, dataset.Options{})
			if err != nil {
				t.Fatal(err)
			}
			outcomes := []dataset.Outcome{
				{Split: dataset.Kept},
				{Split: dataset.Errors, Reason: "missing image (no .jpg member)"},
				{Split: dataset.Errors, Reason: `duplicate id "c", with "quotes", first at row 0`},
				{Split: dataset.Rejected, Score: 1},
			}
			if err := (webdataset.Format{}).WriteSplits(ctx, plan[0], dataset.Options{}, out, outcomes); err != nil {
				t.Fatal(err)
			}
			recs, err := readReasons(ctx, filepath.Join(out, "errors", "00003.reasons.csv"))
			if err != nil {
				t.Fatal(err)
			}
			want := [][]string{{"b", outcomes[1].Reason}, {"c", outcomes[2].Reason}}
			if fmt.Sprint(recs) != fmt.Sprint(want) {
				t.Fatalf("reasons %q, want %q", recs, want)
			}
		})
	}
}
