package tune

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/goccy/go-yaml"

	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/pipeline"
	"github.com/lemon-curation/lemon/score"
)

// synthRun is a made-up scored run whose label errors show mostly in s_n: an error row's image
// neighbours have captions far from its own (large cross distances), a clean row's do not,
// while d_mm separates them only weakly. Tuning must therefore raise beta well above 0.
type synthRun struct {
	dist     score.Distance
	discrete bool // the run's discrete_text
	k        int
	ids      []string
	split    []string
	truth    []bool
	dmm      []float64
	img      [][]score.Neighbour
	txt      [][]score.Neighbour
}

func newSynthRun(n, k int, dist score.Distance, seed uint64) *synthRun {
	rng := rand.New(rand.NewPCG(seed, 99))
	r := &synthRun{dist: dist, k: k}
	u := func(lo, hi float64) float64 { return lo + (hi-lo)*rng.Float64() }
	// Values are drawn as cosine distances and stored in the run's distance.
	f := scale(score.Cosine, dist)
	for i := 0; i < n; i++ {
		isErr := rng.Float64() < 0.3
		split := "train"
		switch x := rng.Float64(); {
		case x < 0.1:
			split = "val"
		case x < 0.2:
			split = "test"
		}
		dmm := u(0.67, 0.77)
		if isErr {
			dmm = u(0.70, 0.80)
		}
		side := func(crossLo, crossHi float64) []score.Neighbour {
			ns := make([]score.Neighbour, k)
			for j := range ns {
				ns[j] = score.Neighbour{Dist: f * u(0.05, 0.5), Cross: f * u(crossLo, crossHi), Dmm: f * u(0.6, 0.85), SameCaption: rng.Float64() < 0.1}
			}
			sort.Slice(ns, func(a, b int) bool { return ns[a].Dist < ns[b].Dist })
			return ns
		}
		img := side(0.35, 0.75)
		if isErr {
			img = side(0.45, 0.85)
		}
		r.ids = append(r.ids, fmt.Sprintf("row%06d", i))
		r.split = append(r.split, split)
		r.truth = append(r.truth, isErr)
		r.dmm = append(r.dmm, f*dmm)
		r.img = append(r.img, img)
		r.txt = append(r.txt, side(0.3, 0.9))
	}
	return r
}

// write lays the run out as `lemon score --save-neighbour-lists` does: manifest.json,
// neighbours/part-N.parquet (the transforms.writeLists schema) and kept/ and rejected/ with the
// input's columns, in shards.
func (r *synthRun) write(t testing.TB, dir string, shards int, truthAsBool bool) {
	t.Helper()
	ctx := context.Background()
	p := score.Fixed()
	p.K, p.Distance, p.DiscreteText = r.k, r.dist, r.discrete
	m, _ := json.Marshal(map[string]any{"tool": "lemon", "status": "complete", "params": p})
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), m, 0o644); err != nil {
		t.Fatal(err)
	}
	n := len(r.ids)
	for s := 0; s < shards; s++ {
		lo, hi := s*n/shards, (s+1)*n/shards
		r.writeLists(t, ctx, filepath.Join(dir, "neighbours", fmt.Sprintf("part-%05d.parquet", s)), lo, hi)
		// Rows with the highest d_mm go to rejected/, as if a threshold had been applied.
		for _, sub := range []string{"kept", "rejected"} {
			truthType := arrow.DataType(arrow.BinaryTypes.String)
			if truthAsBool {
				truthType = arrow.FixedWidthTypes.Boolean
			}
			schema := arrow.NewSchema([]arrow.Field{{Name: "key", Type: arrow.BinaryTypes.String}, {Name: "caption", Type: arrow.BinaryTypes.String},
				{Name: "is_error", Type: truthType}, {Name: "split", Type: arrow.BinaryTypes.String}, {Name: "lemon_score", Type: arrow.PrimitiveTypes.Float64}}, nil)
			b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
			for i := lo; i < hi; i++ {
				if (r.dmm[i] > 0.79*scale(score.Cosine, r.dist)) != (sub == "rejected") {
					continue
				}
				b.Field(0).(*array.StringBuilder).Append(r.ids[i])
				b.Field(1).(*array.StringBuilder).Append("a caption")
				if truthAsBool {
					b.Field(2).(*array.BooleanBuilder).Append(r.truth[i])
				} else {
					b.Field(2).(*array.StringBuilder).Append(strconv.FormatBool(r.truth[i]))
				}
				b.Field(3).(*array.StringBuilder).Append(r.split[i])
				b.Field(4).(*array.Float64Builder).Append(r.dmm[i])
			}
			rec := b.NewRecordBatch()
			if err := metadata.WriteParquet(ctx, filepath.Join(dir, sub, fmt.Sprintf("part-%05d.parquet", s)), schema, rec); err != nil {
				t.Fatal(err)
			}
			rec.Release()
			b.Release()
		}
	}
}

func (r *synthRun) writeLists(t testing.TB, ctx context.Context, path string, lo, hi int) {
	t.Helper()
	fields := []arrow.Field{{Name: "id", Type: arrow.BinaryTypes.String}, {Name: "d_mm", Type: arrow.PrimitiveTypes.Float64}}
	types := []arrow.DataType{arrow.BinaryTypes.String, arrow.PrimitiveTypes.Float64, arrow.PrimitiveTypes.Float64, arrow.PrimitiveTypes.Float64, arrow.FixedWidthTypes.Boolean}
	for _, m := range []string{"image_", "text_"} {
		for i, c := range []string{"ids", "dist", "cross", "dmm", "same_caption"} {
			fields = append(fields, arrow.Field{Name: m + c, Type: arrow.ListOf(types[i])})
		}
	}
	schema := arrow.NewSchema(fields, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for i := lo; i < hi; i++ {
		b.Field(0).(*array.StringBuilder).Append(r.ids[i])
		b.Field(1).(*array.Float64Builder).Append(r.dmm[i])
		for m, list := range [][]score.Neighbour{r.img[i], r.txt[i]} {
			lbs := make([]*array.ListBuilder, 5)
			for c := range lbs {
				lbs[c] = b.Field(2 + m*5 + c).(*array.ListBuilder)
				lbs[c].Append(true)
			}
			for j, nb := range list {
				lbs[0].ValueBuilder().(*array.StringBuilder).Append(r.ids[(i+j+1)%len(r.ids)])
				lbs[1].ValueBuilder().(*array.Float64Builder).Append(nb.Dist)
				lbs[2].ValueBuilder().(*array.Float64Builder).Append(nb.Cross)
				lbs[3].ValueBuilder().(*array.Float64Builder).Append(nb.Dmm)
				lbs[4].ValueBuilder().(*array.BooleanBuilder).Append(nb.SameCaption)
			}
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	if err := metadata.WriteParquet(ctx, path, schema, rec); err != nil {
		t.Fatal(err)
	}
}

// loadConfig reads a YAML config exactly as cmd/lemon's LoadConfig does.
func loadConfig(t *testing.T, path string) pipeline.Config {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c := pipeline.Defaults()
	if err := yaml.UnmarshalWithOptions(b, &c, yaml.Strict()); err != nil {
		t.Fatalf("%s: %s", path, yaml.FormatError(err, false, true))
	}
	return c
}

// A discrete-text run is tuned in discrete-text mode, and the config says so.
func TestTuneDiscreteText(t *testing.T) {
	dir := t.TempDir()
	run := newSynthRun(1500, 5, score.Cosine, 3)
	run.discrete = true
	run.write(t, dir, 1, false)
	out := filepath.Join(dir, "tuned.yaml")
	if err := runMain([]string{"--run", dir, "--output", out, "--ks", "5", "--distances", "cosine", "--refine-top", "1", "--max-evals", "30"}, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	cfg := loadConfig(t, out)
	if !cfg.DiscreteText || cfg.K != 5 || cfg.Distance != score.Cosine {
		t.Errorf("config %+v: want discrete_text true, k 5, cosine", cfg.Params)
	}
}

// Test (4): end to end on a hand-made run where the errors show in s_n.
func TestTuneEndToEnd(t *testing.T) {
	for _, dist := range []score.Distance{score.Cosine, score.Euclidean} {
		t.Run(string(dist), func(t *testing.T) {
			dir := t.TempDir()
			run := newSynthRun(4000, 10, dist, 7)
			run.write(t, dir, 3, dist == score.Euclidean)
			out, report := filepath.Join(dir, "tuned.yaml"), filepath.Join(dir, "tune.json")
			var stdout, stderr bytes.Buffer
			err := runMain([]string{"--run", dir, "--truth-column", "is_error", "--split-column", "split", "--output", out, "--report", report, "--max-evals", "120"}, &stdout, &stderr)
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr.String())
			}
			t.Logf("\n%s%s", stderr.String(), stdout.String())

			var rep Report
			b, err := os.ReadFile(report)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &rep); err != nil {
				t.Fatal(err)
			}
			c := rep.Chosen
			if c.ValF1 < rep.CLIP.ValF1+0.05 || c.Params.Beta <= 0 {
				t.Errorf("tuned validation F1 %.3f (beta %v) vs CLIP similarity %.3f: tuning did not find s_n", c.ValF1, c.Params.Beta, rep.CLIP.ValF1)
			}
			if c.Test == nil || rep.CLIP.Test == nil || c.Test.AUROC <= rep.CLIP.Test.AUROC {
				t.Errorf("test metrics: tuned %+v, CLIP %+v", c.Test, rep.CLIP.Test)
			}
			if rep.KMax != 10 || !equalInts(rep.Ks, []int{1, 2, 5, 10}) || len(rep.Warnings) == 0 || !strings.Contains(rep.Warnings[0], "--k 50") {
				t.Errorf("k_max %d, ks %v, warnings %q: want 10, [1 2 5 10] and a warning about the skipped k", rep.KMax, rep.Ks, rep.Warnings)
			}
			if len(rep.Grid) != 8 || rep.GridCandidates != 8*16*441 {
				t.Errorf("grid: %d (k, distance) pairs, %d candidates", len(rep.Grid), rep.GridCandidates)
			}
			if len(rep.Refinement) != 3*5 || rep.RefineEvals == 0 || rep.RefineEvals > 15*120 {
				t.Errorf("refinement: %d runs, %d evaluations", len(rep.Refinement), rep.RefineEvals)
			}
			for _, g := range rep.Grid {
				if c.ValF1 < g.Best.ValF1 {
					t.Errorf("chosen F1 %v below the grid best of k=%d %s (%v)", c.ValF1, g.K, g.Distance, g.Best.ValF1)
				}
			}
			// The YAML goes through the CLI's strict loader and gives the chosen config back.
			cfg := loadConfig(t, out)
			want := c.Params
			if cfg.Params != want || cfg.Threshold == nil || *cfg.Threshold != c.Threshold {
				t.Errorf("config reads back as %+v threshold %v; want %+v threshold %v", cfg.Params, cfg.Threshold, want, c.Threshold)
			}
			if cfg.DiscreteText {
				t.Errorf("discrete_text should be copied from the run (false)")
			}
			y, _ := os.ReadFile(out)
			if !strings.HasPrefix(string(y), "# LEMoN_opt") || !strings.Contains(string(y), dir) {
				t.Errorf("YAML comments missing:\n%s", y)
			}
			// The chosen threshold and F1 are what re-scoring the validation rows gives.
			l := validationLists(t, run)
			res, err := l.Score(c.Params)
			if err != nil {
				t.Fatal(err)
			}
			var sc f1Scratch
			thr, f1, _ := sc.bestF1(scoresOf(res), l.Truth, count(l.Truth))
			if thr != c.Threshold || f1 != c.ValF1 {
				t.Errorf("re-scored: threshold %v F1 %v; report %v %v", thr, f1, c.Threshold, c.ValF1)
			}
			if !strings.Contains(stdout.String(), "chosen: k=") || !strings.Contains(stdout.String(), "CLIP similarity") {
				t.Errorf("summary:\n%s", stdout.String())
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func validationLists(t *testing.T, r *synthRun) *Lists {
	l := NewLists(r.dist, r.k)
	for i := range r.ids {
		if r.split[i] == "val" {
			if err := l.Append(r.ids[i], r.dmm[i], r.truth[i], r.img[i], r.txt[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
	return l
}

func TestTuneErrors(t *testing.T) {
	dir := t.TempDir()
	newSynthRun(300, 5, score.Cosine, 1).write(t, dir, 1, false)
	out := filepath.Join(dir, "t.yaml")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--run", dir}, "--run and --output are required"},
		{[]string{"--run", dir, "--output", out, "--ks", "5,10"}, "rerun `lemon score --save-neighbour-lists --k 10`"},
		{[]string{"--run", dir, "--output", out, "--ks", "x"}, "positive integers"},
		{[]string{"--run", dir, "--output", out, "--distances", "manhattan"}, "cosine and/or euclidean"},
		{[]string{"--run", dir, "--output", out, "--val-split", "nope"}, "no validation rows"},
		{[]string{"--run", dir, "--output", out, "--truth-column", "nope"}, `no column "nope"`},
		{[]string{"--run", filepath.Join(dir, "missing"), "--output", out}, "manifest.json"},
	}
	// A failed run keeps its files, but its manifest says they are incomplete.
	failed := t.TempDir()
	newSynthRun(300, 5, score.Cosine, 1).write(t, failed, 1, false)
	if err := os.WriteFile(filepath.Join(failed, "manifest.json"), []byte(`{"tool":"lemon","status":"failed","run_id":"r2","error":"worker lost"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cases = append(cases, struct {
		args []string
		want string
	}{[]string{"--run", failed, "--output", out}, "failed (run r2): worker lost"})
	for _, c := range cases {
		var stdout, stderr bytes.Buffer
		err := runMain(c.args, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error()+stderr.String(), c.want) {
			t.Errorf("%q: got %v, want an error containing %q", c.args, err, c.want)
		}
	}
	// A run without neighbour lists says how to make one.
	if err := os.RemoveAll(filepath.Join(dir, "neighbours")); err != nil {
		t.Fatal(err)
	}
	err := runMain([]string{"--run", dir, "--output", out}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "--save-neighbour-lists --k 50") {
		t.Errorf("no neighbours/: %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a failed tune wrote %s", out)
	}
	// -h prints the help and succeeds.
	var help bytes.Buffer
	if err := runMain([]string{"-h"}, &bytes.Buffer{}, &help); err != nil || !strings.Contains(help.String(), "--refine-top") {
		t.Errorf("-h: %v\n%s", err, help.String())
	}
}

// BenchmarkTune times lemon tune on a synthetic run of 5,000 rows (LEMON_TUNE_ROWS overrides)
// with neighbour lists of 50, the grid search and refinement included.
func BenchmarkTune(b *testing.B) {
	n := 5000
	if s := os.Getenv("LEMON_TUNE_ROWS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	dir := b.TempDir()
	newSynthRun(n, 50, score.Cosine, 11).write(b, dir, 4, false)
	for b.Loop() {
		var stdout, stderr bytes.Buffer
		if err := runMain([]string{"--run", dir, "--output", filepath.Join(dir, "tuned.yaml"), "--report", filepath.Join(dir, "tune.json")}, &stdout, &stderr); err != nil {
			b.Fatalf("%v\n%s", err, stderr.String())
		}
	}
}
