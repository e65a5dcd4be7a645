package main_test

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lemon-curation/lemon/dataset/img2parquet"
	"github.com/lemon-curation/lemon/dataset/pathcsv"
	"github.com/lemon-curation/lemon/dataset/rawtest/samples"
	"github.com/lemon-curation/lemon/dataset/webdataset"
	"github.com/lemon-curation/lemon/embed/onnx/onnxtest"
	"github.com/lemon-curation/lemon/embed/tokenizer"
)

// requireEmbedding skips in -short mode, and skips (or, in CI, fails) when the ONNX Runtime
// library or the CLIP vocabulary has not been fetched (scripts/setup.sh fetches both).
func requireEmbedding(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping the embedding runs in -short mode")
	}
	onnxtest.RequireRuntime(t)
	if _, err := tokenizer.DefaultVocabPath(); err != nil {
		if onnxtest.InCI() {
			t.Fatalf("CLIP vocabulary missing in CI: %v", err)
		}
		t.Skipf("CLIP vocabulary missing (run scripts/setup.sh): %v", err)
	}
}

// tarMembers lists every member of the tars in dir as "name:content".
func tarMembers(t *testing.T, dir string) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.tar"))
	var out []string
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(fh)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(tr)
			out = append(out, h.Name+":"+string(b))
		}
		fh.Close()
	}
	return out
}

// TestRawWebdatasetScoreAndEmbed: a webdataset of real (small) images goes through `lemon
// score` with stand-in encoders, and comes back as kept/rejected/errors tars that keep every
// member byte for byte; `lemon embed` then `lemon score` on the embeddings gives the same
// scores as scoring the raw data directly.
func TestRawWebdatasetScoreAndEmbed(t *testing.T) {
	requireEmbedding(t)
	ctx := context.Background()
	dir := t.TempDir()
	enc := tinyEncoders(t, dir)
	img, txt := filepath.Join(enc, "image.onnx"), filepath.Join(enc, "text.onnx")

	a, b := samples.Make("a", 30, 1), samples.Make("b", 25, 2)
	a[4].Image = []byte("this is not an image")
	b[7].Caption = ""
	raw := filepath.Join(dir, "raw")
	if err := webdataset.Write(ctx, raw, [][]samples.Sample{a, b}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	run(t, false, "score", "--input", raw, "--output", out, "--image-model", img, "--text-model", txt,
		"--k", "5", "--reject-fraction", "0.2", "--scores-format", "csv", "--batch-size", "8")
	counts := readCounts(t, out)
	if counts["rows_in"] != 55 || counts["errors"] != 2 || counts["rejected"] != 11 {
		t.Fatalf("counts %v: want rows_in 55, errors 2 (bad image, empty caption), rejected round(0.2*53)=11", counts)
	}
	in := tarMembers(t, raw)
	var got []string
	for _, split := range []string{"kept", "rejected", "errors"} {
		got = append(got, tarMembers(t, filepath.Join(out, split))...)
	}
	if len(got) != len(in) {
		t.Fatalf("outputs hold %d tar members, input %d", len(got), len(in))
	}
	have := map[string]bool{}
	for _, m := range got {
		have[m] = true
	}
	for _, m := range in {
		if !have[m] {
			t.Fatalf("input member %.40q not found byte for byte in the outputs", m)
		}
	}
	errs := tarMembers(t, filepath.Join(out, "errors"))
	if len(errs) == 0 || !strings.HasPrefix(errs[0], "a4.") {
		t.Errorf("errors/ tar should hold sample a4 first, got %v", errs)
	}

	// Embed, then score the embeddings: the same scores.
	emb := filepath.Join(dir, "emb")
	run(t, false, "embed", "--input", raw, "--output", emb, "--image-model", img, "--text-model", txt)
	out2 := filepath.Join(dir, "out2")
	run(t, false, "score", "--input", emb, "--output", out2, "--k", "5", "--reject-fraction", "0.2", "--scores-format", "csv")
	s1, s2 := readScores(t, out), readScores(t, out2)
	if len(s1) != 53 || len(s2) != 53 {
		t.Fatalf("scored %d rows raw and %d from embeddings, want 53", len(s1), len(s2))
	}
	for id, r := range s1 {
		if d := r.Score - s2[id].Score; d > 1e-6 || d < -1e-6 {
			t.Fatalf("row %s: raw score %v, from embeddings %v", id, r.Score, s2[id].Score)
		}
	}

	// The embedding folder is a run directory: a second embed into it is refused; with
	// --overwrite and a one-shard input, no shard of the first run is left to be scored.
	embedArgs := []string{"embed", "--output", emb, "--image-model", img, "--text-model", txt}
	if again := run(t, true, append(embedArgs, "--input", raw)...); !strings.Contains(again, "already holds a run") || !strings.Contains(again, "--overwrite") {
		t.Errorf("a second embed into %s said %q; want a refusal naming --overwrite", emb, again)
	}
	rawA := filepath.Join(dir, "raw-a")
	if err := webdataset.Write(ctx, rawA, [][]samples.Sample{a}); err != nil {
		t.Fatal(err)
	}
	run(t, false, append(embedArgs, "--input", rawA, "--overwrite")...)
	if npys, _ := filepath.Glob(filepath.Join(emb, "img_emb", "*.npy")); len(npys) != 1 {
		t.Errorf("after --overwrite with one shard, img_emb/ holds %v", npys)
	}
	out5 := filepath.Join(dir, "out5")
	run(t, false, "score", "--input", emb, "--output", out5, "--k", "5", "--scores-format", "csv")
	if c := readCounts(t, out5); c["rows_in"] != 29 {
		t.Errorf("scoring the overwritten embeddings: counts %v, want the 29 embeddable rows of shard a", c)
	}
	// An embed run that did not complete (here: killed, its manifest still Running) is refused
	// as input rather than scored in part.
	mp := filepath.Join(emb, "manifest.json")
	mb, err := os.ReadFile(mp)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mp, bytes.Replace(mb, []byte(`"status": "complete"`), []byte(`"status": "running"`), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if m := run(t, true, "score", "--input", emb, "--output", filepath.Join(dir, "out6")); !strings.Contains(m, "has not finished") {
		t.Errorf("scoring an unfinished embed run said %q", m)
	}

	// A missing model fails before any work, naming the file.
	msg := run(t, true, "score", "--input", raw, "--output", filepath.Join(dir, "out3"), "--image-model", filepath.Join(dir, "nope.onnx"), "--text-model", txt)
	if !strings.Contains(msg, "nope.onnx") {
		t.Errorf("missing model: error does not name it:\n%s", msg)
	}
	msg = run(t, true, "score", "--input", raw, "--output", filepath.Join(dir, "out4"))
	if !strings.Contains(msg, "--image-model") {
		t.Errorf("raw input without models: error should ask for --image-model:\n%s", msg)
	}
}

// TestRawParquetAndCSVInputs: img2dataset Parquet and a CSV of image paths score end to end,
// with outputs in the input's own format and every row accounted for.
func TestRawParquetAndCSVInputs(t *testing.T) {
	requireEmbedding(t)
	ctx := context.Background()
	dir := t.TempDir()
	enc := tinyEncoders(t, dir)
	for _, f := range []struct {
		name, ext string
		write     func(context.Context, string, [][]samples.Sample) error
	}{{"img2parquet", "parquet", img2parquet.Write}, {"pathcsv", "csv", pathcsv.Write}} {
		t.Run(f.name, func(t *testing.T) {
			a := samples.Make("p", 24, 3)
			a[5].Image = nil // a failed download / missing file
			raw := filepath.Join(dir, f.name)
			if err := f.write(ctx, raw, [][]samples.Sample{a[:10], a[10:]}); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, f.name+"-out")
			run(t, false, "score", "--input", raw, "--output", out, "--image-model", filepath.Join(enc, "image.onnx"),
				"--text-model", filepath.Join(enc, "text.onnx"), "--k", "4", "--reject-fraction", "0.25")
			c := readCounts(t, out)
			if c["rows_in"] != 24 || c["errors"] != 1 || c["rejected"] != 6 || c["kept"] != 17 {
				t.Fatalf("counts %v: want 24 in, 1 error, round(0.25*23)=6 rejected, 17 kept", c)
			}
			for _, split := range []string{"kept", "rejected", "errors"} {
				files, _ := filepath.Glob(filepath.Join(out, split, "*."+f.ext))
				if len(files) != 2 {
					t.Errorf("%s/: %d .%s files, want one per input shard (2)", split, len(files), f.ext)
				}
			}
		})
	}
}

// TestFewFileDescriptors: a path-CSV job opens each image only while reading it, so it runs
// under a low limit on open files (Beam's local file system left a file open per size check:
// a 3,000-row job peaked at 250 open files).
func TestFewFileDescriptors(t *testing.T) {
	requireEmbedding(t)
	ctx := context.Background()
	dir := t.TempDir()
	enc := tinyEncoders(t, dir)
	const rows = 1500
	a := samples.Make("f", rows, 5)
	raw := filepath.Join(dir, "raw")
	if err := pathcsv.Write(ctx, raw, [][]samples.Sample{a[:rows/2], a[rows/2:]}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	cmd := exec.Command("sh", "-c", `ulimit -n 64 && exec "$@"`, "sh", lemonBin, "score", "--input", raw, "--output", out,
		"--image-model", filepath.Join(enc, "image.onnx"), "--text-model", filepath.Join(enc, "text.onnx"), "--k", "4")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("lemon score under ulimit -n 64: %v\n%s", err, b)
	}
	if c := readCounts(t, out); c["rows_in"] != rows {
		t.Fatalf("counts %v, want %d rows in", c, rows)
	}
}
