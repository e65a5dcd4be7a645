package main_test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// searchFigures is the manifest's "search" (and `lemon plan --json`'s top level).
type searchFigures struct {
	Shape          string  `json:"shape"`
	Tasks          int64   `json:"tasks"`
	TempReadBytes  int64   `json:"temp_read_bytes"`
	TempWriteBytes int64   `json:"temp_write_bytes"`
	ShuffleBytes   int64   `json:"shuffle_bytes"`
	PeakTaskMemory int64   `json:"peak_task_memory_bytes"`
	Flops          float64 `json:"flops"`
	Sketch         struct {
		Checked int64 `json:"tiles_checked"`
		Skipped int64 `json:"tiles_skipped"`
	} `json:"sketch"` // the manifest's only
}

func manifestSearch(t *testing.T, out string) searchFigures {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Search searchFigures `json:"search"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m.Search
}

// TestPlanPredictsTheRun: a 60,000-row self-join under a budget small enough to cut it into many
// tiles gives the same scores and neighbours as the in-memory shape, and what its manifest
// measured (temporary-storage bytes, shuffle, tasks, FLOPs) is what `lemon plan --input`
// predicted for the same flags, within 25% (the bytes) or exactly (the counts).
func TestPlanPredictsTheRun(t *testing.T) {
	if testing.Short() {
		t.Skip("scores 60,000 rows three times")
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	run(t, false, "dev", "make-dataset", "--out", in, "--rows", "60000", "--dim", "32", "--shards", "6", "--dtype", "<f2")
	common := []string{"--input", in, "--k", "10", "--emit-neighbours", "--scores-format", "csv"}
	memOut := filepath.Join(dir, "memory")
	run(t, false, append([]string{"score", "--output", memOut, "--search-shape", "memory"}, common...)...)
	want := readScores(t, memOut)
	for _, shape := range []string{"stream", "pairs"} {
		t.Run(shape, func(t *testing.T) {
			planMatchesRun(t, filepath.Join(dir, shape), append([]string{"--search-shape", shape, "--worker-memory-mib", "48"}, common...), 0.25, want)
		})
	}
}

// TestPlanPredictsUnevenTiles: the same, where tiles are not the planner's nominal size (7
// shards of 3,000 rows cut into blocks of 1,684 and 1,316) and where the reference is a sample
// (whose blocks group shards), within 5%.
func TestPlanPredictsUnevenTiles(t *testing.T) {
	if testing.Short() {
		t.Skip("scores 21,000 rows four times")
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	run(t, false, "dev", "make-dataset", "--out", in, "--rows", "21000", "--dim", "16", "--shards", "7")
	for _, c := range []struct {
		name  string
		extra []string
	}{{"self-join", nil}, {"sample", []string{"--reference-sample", "5000"}}} {
		t.Run(c.name, func(t *testing.T) {
			common := append([]string{"--input", in, "--k", "10", "--emit-neighbours", "--scores-format", "csv"}, c.extra...)
			memOut := filepath.Join(dir, c.name+"-memory")
			run(t, false, append([]string{"score", "--output", memOut, "--search-shape", "memory"}, common...)...)
			planMatchesRun(t, filepath.Join(dir, c.name+"-pairs"), append([]string{"--search-shape", "pairs", "--worker-memory-mib", "16"}, common...), 0.05, readScores(t, memOut))
		})
	}
}

// planMatchesRun runs `lemon plan --json` and `lemon score --output out` with the same flags,
// and checks that the run's measured search figures are the plan's (tasks and FLOPs exactly,
// bytes within tol) and its scores and neighbours are want's.
func planMatchesRun(t *testing.T, out string, flags []string, tol float64, want map[string]scoreRow) {
	t.Helper()
	var plan searchFigures
	if err := json.Unmarshal([]byte(run(t, false, append([]string{"plan", "--json"}, flags...)...)), &plan); err != nil {
		t.Fatal(err)
	}
	run(t, false, append([]string{"score", "--output", out}, flags...)...)
	got := manifestSearch(t, out)
	t.Logf("predicted %+v", plan)
	t.Logf("measured  %+v", got)
	if plan.Tasks < 10 || got.Tasks != plan.Tasks || got.Flops != plan.Flops {
		t.Errorf("tasks %d, flops %g measured; %d, %g predicted (want at least 10 tasks)", got.Tasks, got.Flops, plan.Tasks, plan.Flops)
	}
	for _, f := range []struct {
		name           string
		measured, plan int64
	}{{"temp_read_bytes", got.TempReadBytes, plan.TempReadBytes}, {"temp_write_bytes", got.TempWriteBytes, plan.TempWriteBytes}, {"shuffle_bytes", got.ShuffleBytes, plan.ShuffleBytes}} {
		if f.measured == 0 || math.Abs(float64(f.measured-f.plan)) > tol*float64(f.measured) {
			t.Errorf("%s: measured %d, predicted %d: more than %.0f%% apart", f.name, f.measured, f.plan, 100*tol)
		}
	}
	rows := readScores(t, out)
	if len(rows) != len(want) {
		t.Fatalf("%d rows scored, the memory shape %d", len(rows), len(want))
	}
	for id, r := range rows {
		w := want[id]
		if r.Score != w.Score || strings.Join(r.ImageNbrs, " ") != strings.Join(w.ImageNbrs, " ") || strings.Join(r.TextNbrs, " ") != strings.Join(w.TextNbrs, " ") {
			t.Fatalf("row %s: %+v, the memory shape gave %+v", id, r, w)
		}
	}
}

// TestPlanLAIONExample is the README's web-scale example: LAION-400M (D = 768, float16) against
// a sampled reference of 10M rows on 64 GiB workers, planned without the data.
func TestPlanLAIONExample(t *testing.T) {
	out := run(t, false, "plan", "--json", "--rows", "400000000", "--dim", "768", "--dtype", "float16", "--id-bytes", "9", "--caption-bytes", "60",
		"--reference-sample", "10000000", "--worker-memory-mib", "65536", "--workers", "64", "--cores", "16")
	var p searchFigures
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	const tb = 1e12
	if p.TempReadBytes > 40*tb || p.ShuffleBytes > 4*tb || p.Tasks < 100 || p.Tasks > 1_000_000 || p.PeakTaskMemory > 64<<30 {
		t.Errorf("plan %+v: outside 40 TB of temporary reads, 4 TB of shuffle, 100..1,000,000 tasks, 64 GiB per task", p)
	}
}
