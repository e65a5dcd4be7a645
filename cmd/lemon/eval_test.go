package main_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDatasetScoreEval runs the documented path end to end: generate a dataset with known
// errors, score it, evaluate the run.
func TestDatasetScoreEval(t *testing.T) {
	dir := t.TempDir()
	data, out, rep := filepath.Join(dir, "data"), filepath.Join(dir, "out"), filepath.Join(dir, "rep")
	run(t, false, "dev", "make-dataset", "--out", data, "--rows", "600", "--dim", "16", "--shards", "2", "--noise", "0.3")
	run(t, false, "score", "--input", data, "--output", out, "--k", "10", "--emit-neighbours")
	msg := run(t, false, "eval", "--run", out, "--output", rep)
	if !strings.Contains(msg, "lemon") {
		t.Errorf("eval printed no summary:\n%s", msg)
	}
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
	for _, name := range []string{"lemon", "clip_similarity", "deep_knn"} {
		a := m.Methods[name].AUROC
		if a == nil || *a < 0 || *a > 1 {
			t.Errorf("%s: auroc %v, want a value in [0, 1]", name, a)
		}
	}
	if a := m.Methods["lemon"].AUROC; a != nil && *a < 0.8 {
		t.Errorf("lemon AUROC %.3f on swapped captions; want at least 0.8", *a)
	}
	html, _ := os.ReadFile(filepath.Join(rep, "report.html"))
	if !strings.Contains(string(html), "<svg") {
		t.Error("report.html has no plots")
	}
	run(t, true, "eval", "--run", out) // no --output: a usage error
}

// TestTuneThenScore: tune from a run's saved neighbour lists, then score with the tuned config.
func TestTuneThenScore(t *testing.T) {
	dir := t.TempDir()
	data, out, cfg := filepath.Join(dir, "data"), filepath.Join(dir, "out"), filepath.Join(dir, "tuned.yaml")
	run(t, false, "dev", "make-dataset", "--out", data, "--rows", "1500", "--dim", "16", "--shards", "2", "--noise", "0.3",
		"--concepts", "30", "--families", "6", "--hard", "--modality-noise", "1.0", "--split")
	run(t, false, "score", "--input", data, "--output", out, "--k", "20", "--save-neighbour-lists")
	run(t, false, "tune", "--run", out, "--split-column", "split", "--output", cfg, "--ks", "5,10,20")
	b, err := os.ReadFile(cfg)
	if err != nil || !strings.Contains(string(b), "beta:") || !strings.Contains(string(b), "threshold:") {
		t.Fatalf("tuned config %q, %v", b, err)
	}
	out2 := filepath.Join(dir, "out2")
	run(t, false, "score", "--input", data, "--output", out2, "--config", cfg)
	if c := readCounts(t, out2); c["rows_in"] != 1500 || c["rejected"] == 0 {
		t.Errorf("scoring with the tuned config: counts %v", c)
	}
}
