package main_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/datasettest"
	"github.com/lemon-curation/lemon/dataset/embparquet"
	"github.com/lemon-curation/lemon/dataset/rawtest/samples"
	"github.com/lemon-curation/lemon/embed"
)

// One short first row of embedding Parquet made the job fail (every row took the first row's
// dimension); now that row alone goes to errors, its reason naming the row and both lengths.
func TestEmbeddingParquetShortFirstRow(t *testing.T) {
	rows := datasettest.Rows("r", 30, 8, 5)
	rows[0].Image = rows[0].Image[:3]
	in := filepath.Join(t.TempDir(), "in")
	if err := embparquet.Write(context.Background(), in, [][]dataset.Row{rows[:12], rows[12:]}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	run(t, false, "score", "--input", in, "--output", out, "--k", "5")
	if c := readCounts(t, out); c["rows_in"] != 30 || c["errors"] != 1 {
		t.Fatalf("counts %v, want 30 rows in and 1 error", c)
	}
	want := "row 0 of part-00000.parquet: image embedding has 3 values, the dataset's dimension is 8"
	if got := readColumn(t, filepath.Join(out, "errors"), "reason"); len(got) != 1 || got[0] != want {
		t.Fatalf("errors' reasons %q, want %q", got, want)
	}
}

// tarFile is a tar of the given members (name, content), gzip-compressed if zip.
func tarFile(t *testing.T, zip bool, members ...[2]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		if err := tw.WriteHeader(&tar.Header{Name: m[0], Mode: 0o644, Size: int64(len(m[1])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(m[1]))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if !zip {
		return buf.Bytes()
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(buf.Bytes())
	zw.Close()
	return z.Bytes()
}

func readCSV(t *testing.T, p string) [][]string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return recs
}

// A webdataset of a plain tar and a .tar.gz (once skipped without a word), without Parquet:
// every sample reaches rows_in, errors' reasons are in errors/NAME.reasons.csv, a sample named to
// escape the extraction folder is an error, other files are noted, and a huge caption is cut
// before tokenizing (the scores hold the cut caption, the kept tar the whole one).
func TestRawWebdatasetGzipAndHostileNames(t *testing.T) {
	requireEmbedding(t)
	dir := t.TempDir()
	enc := tinyEncoders(t, dir)
	raw := filepath.Join(dir, "raw")
	if err := os.MkdirAll(raw, 0o755); err != nil {
		t.Fatal(err)
	}
	huge := strings.Repeat("caption ", 1<<17) // 1 MiB
	var plain, zipped [][2]string
	for i, s := range samples.Make("a", 12, 1) {
		caption := s.Caption
		if i == 3 {
			caption = huge
		}
		plain = append(plain, [2]string{s.ID + ".png", string(s.Image)}, [2]string{s.ID + ".txt", caption})
	}
	plain = append(plain, [2]string{"../../evil.png", string(samples.PNG(4, 4, 2))}, [2]string{"../../evil.txt", "escape"})
	for _, s := range samples.Make("b", 12, 2) {
		zipped = append(zipped, [2]string{s.ID + ".png", string(s.Image)}, [2]string{s.ID + ".txt", s.Caption})
	}
	zipped = append(zipped, [2]string{"nopic.txt", "a caption without an image"})
	for name, b := range map[string][]byte{
		"00000.tar":        tarFile(t, false, plain...),
		"00001.tar.gz":     tarFile(t, true, zipped...),
		"00000_stats.json": []byte("{}"),
	} {
		if err := os.WriteFile(filepath.Join(raw, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "out")
	log := run(t, false, "score", "--input", raw, "--output", out, "--image-model", filepath.Join(enc, "image.onnx"),
		"--text-model", filepath.Join(enc, "text.onnx"), "--k", "4", "--scores-format", "csv")
	if c := readCounts(t, out); c["rows_in"] != 26 || c["errors"] != 2 {
		t.Fatalf("counts %v, want 26 rows in (13 per tar) and 2 errors", c)
	}
	if !strings.Contains(log, "00000_stats.json") {
		t.Errorf("the log does not say 00000_stats.json is not read:\n%s", log)
	}
	for name, want := range map[string][][]string{
		"00000.reasons.csv": {{"key", "reason"}, {"../../evil", `member name "../../evil.png" leads outside the tar's folder (absolute, or through ..)`}},
		"00001.reasons.csv": {{"key", "reason"}, {"nopic", "missing image (no .jpg, .jpeg, .png, .webp, .gif member)"}},
	} {
		if got := readCSV(t, filepath.Join(out, "errors", name)); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("errors/%s = %q, want %q", name, got, want)
		}
	}
	// The .tar.gz's outputs are gzip streams of its name.
	var members int
	for _, split := range []string{"kept", "rejected", "errors"} {
		b, err := os.ReadFile(filepath.Join(out, split, "00001.tar.gz"))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s/00001.tar.gz: %v", split, err)
		}
		tr := tar.NewReader(zr)
		for {
			if _, err := tr.Next(); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s/00001.tar.gz: %v", split, err)
			}
			members++
		}
	}
	if members != len(zipped) {
		t.Errorf("the outputs of 00001.tar.gz hold %d members, the input %d", members, len(zipped))
	}
	// The huge caption: cut in the scores, whole in the tars.
	if got := readScores(t, out)["a3"].Caption; len(got) != embed.MaxCaptionBytes || !strings.HasPrefix(huge, got) {
		t.Errorf("scores hold %d bytes of a3's caption, want its first %d", len(got), embed.MaxCaptionBytes)
	}
	var whole bool
	for _, split := range []string{"kept", "rejected"} {
		for _, m := range tarMembers(t, filepath.Join(out, split)) {
			whole = whole || m == "a3.txt:"+huge
		}
	}
	if !whole {
		t.Error("a3.txt is not in kept/ or rejected/ byte for byte")
	}
}

// Path CSVs read only inside their folder: "..", absolute paths elsewhere and directories are
// row errors, the job goes on, and no error copies a file's bytes; --allow-outside-paths reads
// outside paths.
func TestRawPathCSVOutsidePaths(t *testing.T) {
	requireEmbedding(t)
	dir := t.TempDir()
	enc := tinyEncoders(t, dir)
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(filepath.Join(data, "images"), 0o755); err != nil {
		t.Fatal(err)
	}
	secret := "root:x:0:0:root:/root:/bin/bash\n"
	outsideImg := samples.PNG(6, 6, 9)
	for p, b := range map[string][]byte{filepath.Join(dir, "secret.txt"): []byte(secret), filepath.Join(dir, "outside.png"): outsideImg} {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var csvBuf bytes.Buffer
	cw := csv.NewWriter(&csvBuf)
	cw.Write([]string{"key", "image", "caption"})
	for _, s := range samples.Make("c", 10, 4) {
		if err := os.WriteFile(filepath.Join(data, "images", s.ID+".png"), s.Image, 0o644); err != nil {
			t.Fatal(err)
		}
		cw.Write([]string{s.ID, "images/" + s.ID + ".png", s.Caption})
	}
	cw.Write([]string{"up", "../outside.png", "an image outside the folder"})
	cw.Write([]string{"abs", filepath.Join(dir, "secret.txt"), "a file outside the folder"})
	cw.Write([]string{"folder", "images", "a directory"})
	cw.Flush()
	if err := os.WriteFile(filepath.Join(data, "list.csv"), csvBuf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	models := []string{"--image-model", filepath.Join(enc, "image.onnx"), "--text-model", filepath.Join(enc, "text.onnx"), "--k", "4"}
	out := filepath.Join(dir, "out")
	run(t, false, append([]string{"score", "--input", data, "--output", out}, models...)...)
	if c := readCounts(t, out); c["rows_in"] != 13 || c["errors"] != 3 {
		t.Fatalf("counts %v, want 13 rows in and 3 errors", c)
	}
	recs := readCSV(t, filepath.Join(out, "errors", "list.csv"))
	reasons := map[string]string{}
	for _, r := range recs[1:] {
		reasons[r[0]] = r[len(r)-1]
	}
	for id, want := range map[string]string{"up": "leads outside the CSV's folder (through ..)", "abs": "leads outside the CSV's folder (absolute path or URL)", "folder": "image path is a directory"} {
		if !strings.Contains(reasons[id], want) {
			t.Errorf("row %s: reason %q, want one saying %q", id, reasons[id], want)
		}
	}
	b, _ := os.ReadFile(filepath.Join(out, "errors", "list.csv"))
	if strings.Contains(string(b), "root:") {
		t.Errorf("errors/list.csv holds the outside file's bytes:\n%s", b)
	}
	out2 := filepath.Join(dir, "out2")
	run(t, false, append([]string{"score", "--input", data, "--output", out2, "--allow-outside-paths"}, models...)...)
	if c := readCounts(t, out2); c["errors"] != 2 {
		t.Fatalf("with --allow-outside-paths: counts %v, want 2 errors (the text file and the directory)", c)
	}
}
