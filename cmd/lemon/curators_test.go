package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/datacomp"
	"github.com/lemon-curation/lemon/dataset/embparquet"
	"github.com/lemon-curation/lemon/dataset/img2parquet"
	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/dataset/rawtest/samples"
	"github.com/lemon-curation/lemon/dataset/webdataset"
	"github.com/lemon-curation/lemon/internal/npy"
	"github.com/lemon-curation/lemon/synth"
)

// TestDataCompShards: DataComp metadata shards (Parquet + float16 .npz, one folder stored as
// np.savez does, one deflated as np.savez_compressed does) are scored as they are, found under
// the root at any depth; ids are the uids, kept/ carries DataComp's columns and the scores;
// --embedding-model l14 reads the other arrays; lemon eval's deep kNN baseline joins on uid.
func TestDataCompShards(t *testing.T) {
	ctx := context.Background()
	o := synth.Defaults()
	o.Rows, o.Dim, o.Noise = 240, 512, 0.25
	rows, err := synth.Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	for i := range rows {
		rows[i].ID = fmt.Sprintf("%016x%016x", uint64(i)*0x9e3779b97f4a7c15, uint64(i+1)*0xbf58476d1ce4e5b9)
	}
	root := filepath.Join(t.TempDir(), "datacomp")
	if err := datacomp.Write(ctx, filepath.Join(root, "metadata", "a"), [][]dataset.Row{rows[:100]}, datacomp.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := datacomp.Write(ctx, filepath.Join(root, "metadata", "b"), [][]dataset.Row{rows[100:170], rows[170:]}, datacomp.WriteOptions{Compressed: true}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	log := run(t, false, "score", "--input", root, "--output", out, "--k", "10", "--emit-neighbours", "--scores-format", "csv")
	if !strings.Contains(log, "(datacomp, dim 512)") {
		t.Errorf("score did not read the input as DataComp of dimension 512:\n%s", log)
	}
	if c := readCounts(t, out); c["rows_in"] != 240 || c["errors"] != 0 || c["kept"]+c["rejected"] != 240 {
		t.Fatalf("counts %v, want 240 rows in, none in errors", c)
	}
	scores := readScores(t, out)
	for _, r := range rows {
		if s, ok := scores[r.ID]; !ok || s.Caption != r.Caption {
			t.Fatalf("uid %s: scored %+v, want its row with caption %q", r.ID, s, r.Caption)
		}
	}
	kept := filepath.Join(out, "kept")
	files, _ := dataset.ShardFilesUnder(ctx, kept, ".parquet")
	if len(files) != 3 {
		t.Fatalf("kept/ has %d Parquet files, want one per shard (3)", len(files))
	}
	pf, err := metadata.OpenParquet(ctx, files[0])
	if err != nil {
		t.Fatal(err)
	}
	cols, _ := pf.Columns()
	pf.Close()
	for _, c := range []string{"uid", "url", "text", "original_width", "original_height", "clip_b32_similarity_score", "clip_l14_similarity_score", "face_bboxes", "sha256", "lemon_score"} {
		if !slices.Contains(cols, c) {
			t.Errorf("kept/ lacks column %s (has %v)", c, cols)
		}
	}
	uids := append(readColumn(t, kept, "uid"), readColumn(t, filepath.Join(out, "rejected"), "uid")...)
	if len(uids) != 240 {
		t.Errorf("kept/ and rejected/ hold %d uids, want 240", len(uids))
	}
	checkDataCompSplits(t, root, out, readCounts(t, out))

	rep := filepath.Join(t.TempDir(), "rep")
	run(t, false, "eval", "--run", out, "--output", rep)
	if a := evalAUROC(t, rep)["deep_knn"]; a == nil {
		t.Error("deep kNN not computed on a DataComp run")
	}

	out2 := filepath.Join(t.TempDir(), "out")
	log = run(t, false, "score", "--input", root, "--input-format", "datacomp", "--embedding-model", "l14", "--output", out2, "--k", "10")
	if !strings.Contains(log, "(datacomp, dim 768)") {
		t.Errorf("--embedding-model l14 did not read the 768-dimensional arrays:\n%s", log)
	}
	msg := run(t, true, "score", "--input", root, "--embedding-model", "h14", "--output", filepath.Join(t.TempDir(), "o"))
	if !strings.Contains(msg, `--embedding-model "h14"`) {
		t.Errorf("a bad --embedding-model:\n%s", msg)
	}
}

// TestHuggingFaceParquet: a Hugging Face dataset root (data/train-*.parquet with an image
// struct column and a text column, no id column, a README) is scored as is: ids are FILE:ROW,
// kept/ and rejected/ mirror the files' paths and carry the ids in an id column, which lemon
// eval's deep kNN baseline joins on.
func TestHuggingFaceParquet(t *testing.T) {
	requireEmbedding(t)
	ctx := context.Background()
	dir := t.TempDir()
	enc := tinyEncoders(t, dir)
	root := filepath.Join(dir, "hf")
	a, b := samples.Make("a", 20, 1), samples.Make("b", 14, 2)
	a[3].Image = nil // a row without an image
	for i, s := range append(a, b...) {
		s.Extra["is_error"] = fmt.Sprint(i%4 == 0) // a truth column for lemon eval
	}
	for p, s := range map[string][]samples.Sample{"data/train-00000-of-00002.parquet": a, "data/train-00001-of-00002.parquet": b} {
		if err := img2parquet.WriteHuggingFace(ctx, filepath.Join(root, p), s); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(root, "README.md"), []byte("---\nlicense: mit\n---\n"), 0o644)
	out := filepath.Join(dir, "out")
	log := run(t, false, "score", "--input", root, "--output", out, "--image-model", filepath.Join(enc, "image.onnx"),
		"--text-model", filepath.Join(enc, "text.onnx"), "--k", "10", "--emit-neighbours", "--scores-format", "csv")
	if !strings.Contains(log, "README.md") {
		t.Errorf("the README was not noted as not read:\n%s", log)
	}
	if c := readCounts(t, out); c["rows_in"] != 34 || c["errors"] != 1 || c["kept"]+c["rejected"] != 33 {
		t.Fatalf("counts %v, want 34 rows in, 1 error", c)
	}
	scores := readScores(t, out)
	if _, ok := scores["data/train-00001-of-00002.parquet:13"]; !ok || len(scores) != 33 {
		t.Fatalf("scores' ids are not FILE:ROW: %d rows, e.g. %v", len(scores), firstKeys(scores))
	}
	var ids []string
	for _, split := range []string{"kept", "rejected"} {
		for _, f := range []string{"train-00000-of-00002.parquet", "train-00001-of-00002.parquet"} {
			p := filepath.Join(out, split, "data", f)
			rr, err := metadata.Open(ctx, p)
			if err != nil {
				t.Fatalf("%s/data/%s: %v", split, f, err)
			}
			for rr.Next() {
				v, _, err := metadata.StringColumn(p, rr.RecordBatch(), "id")
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, v...)
			}
			rr.Release()
		}
	}
	sort.Strings(ids)
	var want []string
	for id := range scores {
		want = append(want, id)
	}
	sort.Strings(want)
	if !slices.Equal(ids, want) {
		t.Errorf("kept/ and rejected/ ids %v, want the scored ids %v", ids, want)
	}
	rep := filepath.Join(dir, "rep")
	run(t, false, "eval", "--run", out, "--output", rep)
	if a := evalAUROC(t, rep)["deep_knn"]; a == nil {
		t.Error("deep kNN not computed on a run of Parquet without an id column")
	}
}

// evalAUROC reads each method's AUROC from lemon eval's metrics.json (nil where not computed).
func evalAUROC(t *testing.T, rep string) map[string]*float64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(rep, "metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Methods map[string]struct {
			AUROC *float64 `json:"auroc"`
		} `json:"methods"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	out := map[string]*float64{}
	for k, v := range m.Methods {
		out[k] = v.AUROC
	}
	return out
}

func firstKeys(m map[string]scoreRow) []string {
	var k []string
	for id := range m {
		if len(k) < 3 {
			k = append(k, id)
		}
	}
	return k
}

// TestWebdatasetFailedDownloads: rows img2dataset lists in a tar's Parquet with no sample in
// the tar (failed downloads) are counted in rows_in and land in errors/ with the download
// status and error message as the reason; kept + rejected + errors = rows_in.
func TestWebdatasetFailedDownloads(t *testing.T) {
	requireEmbedding(t)
	ctx := context.Background()
	dir := t.TempDir()
	enc := tinyEncoders(t, dir)
	raw := filepath.Join(dir, "raw")
	ok := samples.Make("s", 20, 1)
	if err := webdataset.Write(ctx, raw, [][]samples.Sample{ok}); err != nil {
		t.Fatal(err)
	}
	// The Parquet img2dataset writes beside the tar lists the failed downloads too.
	var meta []dataset.Row
	for _, s := range ok {
		meta = append(meta, dataset.Row{ID: s.ID, Caption: s.Caption, Extra: map[string]string{"status": "success", "error_message": ""}})
	}
	for i := range 3 {
		meta = append(meta, dataset.Row{ID: fmt.Sprintf("f%d", i), Caption: "lost", Extra: map[string]string{"status": "failed_to_download", "error_message": fmt.Sprintf("HTTP Error 40%d", i)}})
	}
	rec := dataset.MetadataBatch(meta, "key", "caption", []string{"error_message", "status"})
	if err := metadata.WriteParquet(ctx, filepath.Join(raw, "00000.parquet"), rec.Schema(), rec); err != nil {
		t.Fatal(err)
	}
	rec.Release()
	out := filepath.Join(dir, "out")
	run(t, false, "score", "--input", raw, "--output", out, "--image-model", filepath.Join(enc, "image.onnx"),
		"--text-model", filepath.Join(enc, "text.onnx"), "--k", "4")
	c := readCounts(t, out)
	if c["rows_in"] != 23 || c["errors"] != 3 || c["kept"]+c["rejected"]+c["errors"] != c["rows_in"] {
		t.Fatalf("counts %v, want 23 rows in (20 samples, 3 failed downloads), 3 errors", c)
	}
	p := filepath.Join(out, "errors", "00000.parquet")
	rr, err := metadata.Open(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rr.Next() {
		keys, _, _ := metadata.StringColumn(p, rr.RecordBatch(), "key")
		reasons, _, _ := metadata.StringColumn(p, rr.RecordBatch(), "reason")
		for i := range keys {
			got = append(got, keys[i]+": "+reasons[i])
		}
	}
	rr.Release()
	want := []string{
		"f0: download failed: no sample in 00000.tar (status failed_to_download: HTTP Error 400)",
		"f1: download failed: no sample in 00000.tar (status failed_to_download: HTTP Error 401)",
		"f2: download failed: no sample in 00000.tar (status failed_to_download: HTTP Error 402)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("errors/00000.parquet rows:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

var progressLine = regexp.MustCompile(`lemon: embedding: (\d+)/96 rows \(\d+%\), ([\d.]+|-) rows/s, elapsed \S+, ETA \S+`)

// TestEmbedProgress: while embedding, lemon prints lines with the rows done of the total, the
// rate and the time left, paced here by LEMON_PROGRESS_INTERVAL, and a last line at the end.
func TestEmbedProgress(t *testing.T) {
	requireEmbedding(t)
	ctx := context.Background()
	dir := t.TempDir()
	enc := tinyEncoders(t, dir)
	raw := filepath.Join(dir, "raw")
	if err := webdataset.Write(ctx, raw, [][]samples.Sample{samples.Make("p", 50, 1), samples.Make("q", 46, 2)}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(lemonBin, "embed", "--input", raw, "--output", filepath.Join(dir, "emb"), "--image-model", filepath.Join(enc, "image.onnx"),
		"--text-model", filepath.Join(enc, "text.onnx"), "--batch-size", "2")
	cmd.Env = append(os.Environ(), "LEMON_PROGRESS_INTERVAL=1ms")
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("lemon embed: %v\n%s", err, b)
	}
	lines := progressLine.FindAllStringSubmatch(string(b), -1)
	if len(lines) == 0 {
		t.Fatalf("no progress line while embedding:\n%s", b)
	}
	if !strings.Contains(string(b), "lemon: embedding done: 96 rows in ") {
		t.Errorf("no last progress line:\n%s", b)
	}
}

// TestCommandLine: every subcommand's --help prints its help on stdout and exits 0; a mistyped
// flag gives one line naming it, a suggestion and a pointer to --help, and exits 2; a missing
// input says it does not exist; the deprecated --image-column still works where it meant one
// thing, with a note.
func TestCommandLine(t *testing.T) {
	status := func(args ...string) (int, string, string) {
		cmd := exec.Command(lemonBin, args...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, stdout.String(), stderr.String()
	}
	for _, c := range [][]string{{"score"}, {"plan"}, {"embed"}, {"noise"}, {"eval"}, {"report"}, {"tune"}, {"quantize"}, {"dev", "make-dataset"}, {"dev", "make-encoders"}} {
		name := "lemon " + strings.Join(c, " ")
		for _, h := range []string{"--help", "-h"} {
			code, out, errOut := status(append(c, h)...)
			if code != 0 || !strings.HasPrefix(out, "Usage: "+name+" ") || errOut != "" || !strings.Contains(out, "\n  --") {
				t.Errorf("%s %s: exit %d, stdout %.80q, stderr %q; want the help (usage line, flags) on stdout and exit 0", name, h, code, out, errOut)
			}
		}
		code, out, errOut := status(append(c, "--no-such-flag")...)
		want := fmt.Sprintf("lemon: unknown flag --no-such-flag; see '%s --help'\n", name)
		if code != 2 || out != "" || errOut != want {
			t.Errorf("%s --no-such-flag: exit %d, stdout %q, stderr %q; want exit 2 and %q", name, code, out, errOut, want)
		}
	}
	code, _, errOut := status("score", "--imput", "x")
	if code != 2 || errOut != "lemon: unknown flag --imput (did you mean --input?); see 'lemon score --help'\n" {
		t.Errorf("a typo: exit %d, %q", code, errOut)
	}
	for _, args := range [][]string{{"frob"}, {"dev"}, {"dev", "frob"}} {
		if code, _, errOut := status(args...); code != 2 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "help") {
			t.Errorf("lemon %v: exit %d, stderr %q; want one line pointing at the help, exit 2", args, code, errOut)
		}
	}

	dir := t.TempDir()
	missing := filepath.Join(dir, "no-such-dataset")
	if code, _, errOut := status("score", "--input", missing, "--output", filepath.Join(dir, "out")); code == 0 || errOut != "lemon: "+missing+" does not exist\n" {
		t.Errorf("a missing input: exit %d, %q", code, errOut)
	}

	rows := synth.Defaults()
	rows.Rows, rows.Dim = 60, 8
	data, err := synth.Generate(rows)
	if err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(dir, "pq")
	if err := embparquet.Write(context.Background(), in, [][]dataset.Row{data}); err != nil {
		t.Fatal(err)
	}
	log := run(t, false, "score", "--input", in, "--output", filepath.Join(dir, "o1"), "--k", "5", "--image-column", "image_embedding")
	if !strings.Contains(log, "--image-column is deprecated: for parquet input it is --image-embedding-column") {
		t.Errorf("no deprecation note:\n%s", log)
	}
	msg := run(t, true, "score", "--input", in, "--output", filepath.Join(dir, "o2"), "--k", "5", "--image-embedding-column", "nope")
	if !strings.Contains(msg, `"nope"`) {
		t.Errorf("a missing embedding column:\n%s", msg)
	}
}

// npzArrays reads every array of a DataComp shard's .npz, as float32 rows.
func npzArrays(t *testing.T, p string) map[string][][]float32 {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	z, err := npy.OpenNPZ(f, st.Size())
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	out := map[string][][]float32{}
	for _, name := range z.Names() {
		r, err := z.Array(name)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		h := r.Header()
		if h.Dtype != "<f2" {
			t.Errorf("%s: array %s is %s, want float16 as the input", p, name, h.Dtype)
		}
		data := make([]float32, h.Rows*h.Cols)
		if err := r.ReadRows(0, h.Rows, data); err != nil {
			t.Fatal(err)
		}
		out[name] = [][]float32{}
		for i := range h.Rows {
			out[name] = append(out[name], data[i*h.Cols:(i+1)*h.Cols])
		}
	}
	return out
}

// checkDataCompSplits: kept/, rejected/ and errors/ of a DataComp run are DataComp shards at
// the input's paths: each .parquet beside an .npz holding every array of the input's (both
// models), cut to the split's rows in input order, with the same values; kept/ is scored
// again as it is, with either model.
func checkDataCompSplits(t *testing.T, in, out string, counts map[string]int64) {
	t.Helper()
	ctx := context.Background()
	inputs, _ := dataset.ShardFilesUnder(ctx, in, ".parquet")
	type row struct {
		shard, index int
		arrays       map[string][]float32
	}
	src := map[string]row{}
	for s, p := range inputs {
		arrays := npzArrays(t, strings.TrimSuffix(p, ".parquet")+".npz")
		for i, uid := range readColumn(t, p, "uid") {
			r := row{shard: s, index: i, arrays: map[string][]float32{}}
			for name, rows := range arrays {
				r.arrays[name] = rows[i]
			}
			src[uid] = r
		}
	}
	for _, split := range []string{"kept", "rejected", "errors"} {
		n := int64(0)
		for _, p := range inputs {
			rel, _ := filepath.Rel(in, p)
			pq := filepath.Join(out, split, rel)
			uids := readColumn(t, pq, "uid")
			arrays := npzArrays(t, strings.TrimSuffix(pq, ".parquet")+".npz")
			if len(arrays) != 4 {
				t.Fatalf("%s: arrays %v, want the input's four", pq, slices.Collect(maps.Keys(arrays)))
			}
			for name, rows := range arrays {
				if len(rows) != len(uids) {
					t.Fatalf("%s: array %s has %d rows, the Parquet %d", pq, name, len(rows), len(uids))
				}
			}
			for i, uid := range uids {
				r := src[uid]
				if i > 0 && src[uids[i-1]].index >= r.index {
					t.Fatalf("%s: uid %s before %s, against the input's order", pq, uids[i-1], uid)
				}
				for name, rows := range arrays {
					if !slices.Equal(rows[i], r.arrays[name]) {
						t.Fatalf("%s: row %d (uid %s): array %s differs from the input's row", pq, i, uid, name)
					}
				}
			}
			n += int64(len(uids))
		}
		if n != counts[split] {
			t.Errorf("%s/ holds %d rows, the manifest counts %d", split, n, counts[split])
		}
	}
	for _, model := range []string{"b32", "l14"} {
		again := filepath.Join(t.TempDir(), "again")
		run(t, false, "score", "--input", filepath.Join(out, "kept"), "--embedding-model", model, "--output", again, "--k", "10")
		if c := readCounts(t, again); c["rows_in"] != counts["kept"] || c["errors"] != 0 {
			t.Errorf("scoring kept/ (%s): counts %v, want %d rows in, none in errors", model, c, counts["kept"])
		}
	}
}
