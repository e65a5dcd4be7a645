package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/passert"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"

	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/x448/float16"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/embdir"
	"github.com/lemon-curation/lemon/dataset/embparquet"
	"github.com/lemon-curation/lemon/pipeline"
	"github.com/lemon-curation/lemon/rundir"
	"github.com/lemon-curation/lemon/score"
	"github.com/lemon-curation/lemon/storage"
	"github.com/lemon-curation/lemon/synth"
	"github.com/lemon-curation/lemon/transforms"
)

func TestMain(m *testing.M) { ptest.Main(m) }

func runJob(t *testing.T, c pipeline.Config) {
	t.Helper()
	plan, err := pipeline.Check(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	p, s := beam.NewPipelineWithRoot()
	pipeline.Build(s, plan, nil)
	if err := ptest.Run(p); err != nil {
		t.Fatalf("pipeline failed: %v", err)
	}
}

func readFiles(t *testing.T, glob string) string {
	t.Helper()
	files, _ := filepath.Glob(glob)
	sort.Strings(files)
	var all string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all += string(b)
	}
	return all
}

// TestSampledReferenceEqualsExplicitReference: --reference-sample N picks N rows by a seeded
// hash of their ids; scoring against that sample must equal scoring against the same rows
// given as a separate reference dataset.
func TestSampledReferenceEqualsExplicitReference(t *testing.T) {
	ctx := context.Background()
	o := synth.Defaults()
	o.Rows, o.Dim = 240, 16
	rows, err := synth.Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	if err := embdir.Write(ctx, in, synth.Split(rows, 3), embdir.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	const n, seed = 50, 7
	type keyed struct {
		h uint64
		i int
	}
	var ks []keyed
	for i, r := range rows {
		ks = append(ks, keyed{transforms.SampleHash(seed, r.ID), i})
	}
	sort.Slice(ks, func(a, b int) bool { return ks[a].h < ks[b].h })
	var picked []int
	for _, k := range ks[:n] {
		picked = append(picked, k.i)
	}
	sort.Ints(picked)
	var ref []dataset.Row
	for _, i := range picked {
		ref = append(ref, rows[i])
	}
	refDir := filepath.Join(dir, "ref")
	if err := embparquet.Write(ctx, refDir, [][]dataset.Row{ref}); err != nil {
		t.Fatal(err)
	}

	base := pipeline.Defaults()
	base.Input, base.K, base.ScoresFormat, base.EmitNeighbours, base.BlockRows = in, 8, "csv", true, 32
	sampled := base
	sampled.Output, sampled.ReferenceSample, sampled.Seed = filepath.Join(dir, "out-sample"), n, seed
	explicit := base
	explicit.Output, explicit.Reference = filepath.Join(dir, "out-ref"), refDir
	var results []string
	for _, shape := range []string{"memory", "stream", "pairs"} {
		for _, c := range []pipeline.Config{sampled, explicit} {
			c.SearchShape = shape
			c.Output += "-" + shape
			runJob(t, c)
			results = append(results, readFiles(t, filepath.Join(c.Output, "scores", "*.csv")))
		}
	}
	for i, r := range results {
		if r == "" || r != results[0] {
			t.Fatalf("result %d (sample/reference x memory/stream/pairs) differs from the first", i)
		}
	}
}

// TestFindDuplicateIDs keeps the first row of each id (by position) and faults the rest.
func TestFindDuplicateIDs(t *testing.T) {
	in := transforms.Input{Format: "embdir", Shards: []dataset.Shard{{Index: 0, Rows: 5, Files: map[string]string{"image": "a.npy"}}}}
	p, s := beam.NewPipelineWithRoot()
	// Two shards' batches of one bucket: the duplicates of x span them.
	ids := beam.ParDo(s, idBatch, beam.Create(s, "x=4 y=1", "x=0 z=3 x=2"))
	faults, dropped := transforms.FindDuplicateIDs(s, in, ids)
	passert.Equals(s, beam.ParDo(s, faultPos, faults), int64(2), int64(4))
	passert.Equals(s, dropped, int64(2), int64(4))
	ptest.RunAndValidate(t, p)
}

func splitKV(s string) (string, int64) {
	var n int64
	fmt.Sscan(s[2:], &n)
	return s[:1], n
}

// idBatch turns "a=1 b=2" into a batch of ids and positions, in bucket 0.
func idBatch(s string) (int32, transforms.IDBatch) {
	var b transforms.IDBatch
	for _, kv := range strings.Fields(s) {
		id, pos := splitKV(kv)
		b.IDs, b.Pos = append(b.IDs, id), append(b.Pos, pos)
	}
	return 0, b
}
func faultPos(f transforms.Fault) int64 { return f.Pos }

func init() {
	beam.RegisterFunction(idBatch)
	beam.RegisterFunction(faultPos)
}

// TestGCSPaths runs a whole job with input, output and temporary blocks on gs:// (an in-process
// fake GCS server) and checks that it matches the same job on local paths.
func TestGCSPaths(t *testing.T) {
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", Port: 0, PublicHost: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: "lemon"})
	t.Setenv("STORAGE_EMULATOR_HOST", srv.URL()[len("http://"):])

	ctx := context.Background()
	o := synth.Defaults()
	o.Rows, o.Dim = 150, 8
	rows, _ := synth.Generate(o)
	local := t.TempDir()
	for _, root := range []string{"gs://lemon/job", local} {
		if err := embdir.Write(ctx, root+"/in", synth.Split(rows, 2), embdir.WriteOptions{MetadataExt: ".jsonl"}); err != nil {
			t.Fatal(err)
		}
		c := pipeline.Defaults()
		c.Input, c.Output, c.K, c.BlockRows, c.ScoresFormat = root+"/in", root+"/out", 5, 40, "csv"
		runJob(t, c)
	}
	for _, f := range []string{"scores/part-00000.csv", "scores/part-00001.csv"} {
		remote, err := storage.ReadFile(ctx, "gs://lemon/job/out/"+f)
		if err != nil {
			t.Fatal(err)
		}
		mine, _ := os.ReadFile(filepath.Join(local, "out", f))
		if len(remote) == 0 || string(remote) != string(mine) {
			t.Fatalf("%s differs between gs:// and local runs", f)
		}
	}
	if !storage.Exists(ctx, "gs://lemon/job/out/manifest.json") {
		t.Fatal("gs:// run did not write its manifest")
	}
	// kept/ of a clip-retrieval input is a clip-retrieval folder, on gs:// as locally.
	for _, f := range []string{"kept/metadata/metadata_1.parquet", "kept/img_emb/img_emb_1.npy", "kept/text_emb/text_emb_1.npy"} {
		remote, err := storage.ReadFile(ctx, "gs://lemon/job/out/"+f)
		mine, _ := os.ReadFile(filepath.Join(local, "out", f))
		if err != nil || len(remote) == 0 || string(remote) != string(mine) {
			t.Fatalf("%s: %v, or it differs between gs:// and local runs", f, err)
		}
	}
}

// TestRejectThreshold: the round(F*n)-th largest score, exactly, including scores that differ
// only in their low bits; +Inf when the rank is 0; nothing when there are no scores (readers
// then reject nothing).
func TestRejectThreshold(t *testing.T) {
	vals := []float64{0.5, 3, 1, math.Nextafter(1, 2), math.Nextafter(1, 0), 2, 1 + 1e-12, -1, 7, 1}
	for _, c := range []struct {
		fraction float64
		want     float64
	}{{0.1, 7}, {0.3, 2}, {0.4, 1 + 1e-12}, {0.5, math.Nextafter(1, 2)}, {0.6, 1}, {0.8, math.Nextafter(1, 0)}, {1, -1}, {0.01, math.Inf(1)}} {
		p, s := beam.NewPipelineWithRoot()
		batches := beam.Create(s, orderedKeys(vals[:4]), orderedKeys(vals[4:]))
		passert.Equals(s, transforms.RejectThreshold(s, batches, transforms.Filter{Fraction: c.fraction}), c.want)
		ptest.RunAndValidate(t, p)
	}
	p, s := beam.NewPipelineWithRoot()
	none := beam.CreateList(s, [][]uint64{})
	passert.Empty(s, transforms.RejectThreshold(s, none, transforms.Filter{Fraction: 0.5}))
	ptest.RunAndValidate(t, p)
}

// orderedKeys is a batch of scores as RejectThreshold takes them (ScoredRows.Keys).
func orderedKeys(scores []float64) []uint64 {
	out := make([]uint64, len(scores))
	for i, v := range scores {
		out[i] = score.OrderedKey(v)
	}
	return out
}

// TestReferenceSplitEqualsExplicitReference: --reference-split train searches only the train
// rows, which must equal scoring against those rows given as a separate reference dataset, in
// every shape; with --reference-sample the sample is drawn from the train rows only.
func TestReferenceSplitEqualsExplicitReference(t *testing.T) {
	ctx := context.Background()
	o := synth.Defaults()
	o.Rows, o.Dim = 400, 16
	rows, err := synth.Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	var train []dataset.Row
	for i := range rows {
		split := []string{"train", "train", "train", "val", "test"}[i%5]
		rows[i].Extra = map[string]string{"split": split}
		if split == "train" {
			train = append(train, rows[i])
		}
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	if err := embdir.Write(ctx, in, synth.Split(rows, 3), embdir.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	refDir := filepath.Join(dir, "ref")
	if err := embparquet.Write(ctx, refDir, [][]dataset.Row{train}); err != nil {
		t.Fatal(err)
	}
	base := pipeline.Defaults()
	base.Input, base.K, base.ScoresFormat, base.EmitNeighbours, base.BlockRows = in, 8, "csv", true, 32
	explicit := base
	explicit.Output, explicit.Reference = filepath.Join(dir, "out-ref"), refDir
	runJob(t, explicit)
	want := readFiles(t, filepath.Join(explicit.Output, "scores", "*.csv"))
	for _, shape := range []string{"memory", "stream", "pairs"} {
		c := base
		c.Output, c.ReferenceSplit, c.SearchShape, c.WorkerMemoryMiB = filepath.Join(dir, "out-split-"+shape), "train", shape, 1
		if shape == "memory" {
			c.WorkerMemoryMiB = 64
		}
		runJob(t, c)
		if got := readFiles(t, filepath.Join(c.Output, "scores", "*.csv")); got == "" || got != want {
			t.Fatalf("--reference-split train, %s shape: scores differ from the explicit train reference's", shape)
		}
	}

	// A sample of the train rows: the 60 train rows with the smallest hashes.
	const n, seed = 60, 3
	sort.Slice(train, func(a, b int) bool {
		return transforms.SampleHash(seed, train[a].ID) < transforms.SampleHash(seed, train[b].ID)
	})
	sample := append([]dataset.Row(nil), train[:n]...)
	sort.Slice(sample, func(a, b int) bool { return sample[a].ID < sample[b].ID })
	sampleDir := filepath.Join(dir, "sample")
	if err := embparquet.Write(ctx, sampleDir, [][]dataset.Row{sample}); err != nil {
		t.Fatal(err)
	}
	explicit.Output, explicit.Reference = filepath.Join(dir, "out-sample-ref"), sampleDir
	runJob(t, explicit)
	sampled := base
	sampled.Output, sampled.ReferenceSplit, sampled.ReferenceSample, sampled.Seed = filepath.Join(dir, "out-split-sample"), "train", n, seed
	runJob(t, sampled)
	if a, b := readFiles(t, filepath.Join(explicit.Output, "scores", "*.csv")), readFiles(t, filepath.Join(sampled.Output, "scores", "*.csv")); a == "" || a != b {
		t.Fatal("--reference-split train --reference-sample: scores differ from the explicit sample of train rows")
	}
}

// TestFloat16BlocksKeepPrecision: blocks store float16 values in two bytes whatever file type
// held them, results equal for the same values as float16 or float32, and values that are not
// float16 keep four bytes.
func TestFloat16BlocksKeepPrecision(t *testing.T) {
	ctx := context.Background()
	o := synth.Defaults()
	o.Rows, o.Dim = 300, 64
	rows, err := synth.Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	half := make([]dataset.Row, len(rows))
	for i, r := range rows {
		h := r
		h.Image, h.Text = make([]float32, o.Dim), make([]float32, o.Dim)
		for k := range o.Dim {
			h.Image[k], h.Text[k] = float16.Fromfloat32(r.Image[k]).Float32(), float16.Fromfloat32(r.Text[k]).Float32()
		}
		half[i] = h
	}
	dir := t.TempDir()
	var scores []string
	var written []int64
	for i, v := range []struct {
		dtype string
		rows  []dataset.Row
	}{{"<f2", half}, {"<f4", half}, {"<f4", rows}} {
		in := filepath.Join(dir, fmt.Sprint("in", i))
		if err := embdir.Write(ctx, in, synth.Split(v.rows, 2), embdir.WriteOptions{Dtype: v.dtype}); err != nil {
			t.Fatal(err)
		}
		c := pipeline.Defaults()
		c.Input, c.Output, c.K, c.ScoresFormat, c.EmitNeighbours = in, filepath.Join(dir, fmt.Sprint("out", i)), 10, "csv", true
		runJob(t, c)
		scores = append(scores, readFiles(t, filepath.Join(c.Output, "scores", "*.csv")))
		b, err := os.ReadFile(filepath.Join(c.Output, "manifest.json"))
		if err != nil {
			t.Fatal(err)
		}
		var m rundir.Manifest
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		written = append(written, m.Search.TempWriteBytes)
	}
	if scores[0] == "" || scores[0] != scores[1] {
		t.Error("float16 and float32 files of the same values scored differently")
	}
	// The embeddings are 2 x 64 values a row: 256 bytes in float16, 512 in float32.
	if written[0] != written[1] || written[2]-written[0] != int64(o.Rows)*256 {
		t.Errorf("temporary bytes written: %v; want the first two equal and the third 256 bytes a row more", written)
	}
}
