package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/embdir"
)

// classificationData writes a clean classification dataset: captions "A photo of a <class>",
// one text embedding per class, images near their class's text embedding. CSV metadata, so the
// reference script reads it without pyarrow.
func classificationData(t *testing.T, dir string, n, dim int) {
	t.Helper()
	classes := []string{"cat", "dog", "car", "ship", "frog", "horse"}
	rng := rand.New(rand.NewPCG(21, 8))
	text := make([][]float32, len(classes))
	for c := range text {
		text[c] = make([]float32, dim)
		for j := range text[c] {
			text[c][j] = float32(rng.NormFloat64())
		}
	}
	rows := make([]dataset.Row, n)
	for i := range rows {
		c := i % len(classes)
		img := make([]float32, dim)
		for j := range img {
			img[j] = text[c][j] + float32(2.6*rng.NormFloat64())
		}
		rows[i] = dataset.Row{ID: fmt.Sprintf("c%05d", i), Caption: "A photo of a " + classes[c], Image: img, Text: text[c]}
	}
	shards := [][]dataset.Row{rows[:n/3], rows[n/3 : 2*n/3], rows[2*n/3:]}
	if err := embdir.Write(context.Background(), dir, shards, embdir.WriteOptions{MetadataExt: ".csv"}); err != nil {
		t.Fatal(err)
	}
}

type evalMethod struct {
	Available           bool
	Reason, Note        string
	AUROC, AUPRC, F1    *float64
	F1Prevalence        *float64 `json:"f1_prevalence"`
	PrevalenceThreshold *float64 `json:"prevalence_threshold"`
}

type evalReport struct {
	Methods       map[string]evalMethod
	NoiseRate     *float64 `json:"noise_rate"`
	NoiseRateFrom string   `json:"noise_rate_from"`
	Downstream    *struct {
		TrainRows int `json:"train_rows"`
		TestRows  int `json:"test_rows"`
		TrainSets []struct {
			Name        string
			Rows        int `json:"train_rows"`
			LabelErrors int `json:"train_label_errors"`
			Accuracy    *float64
		} `json:"train_sets"`
	}
}

func readEval(t *testing.T, dir string) evalReport {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r evalReport
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// sameMetrics: two methods' numbers are identical (same scores on the same rows).
func sameMetrics(t *testing.T, what string, a, b evalMethod) {
	t.Helper()
	if !a.Available || !b.Available {
		t.Fatalf("%s: unavailable (%q, %q)", what, a.Reason, b.Reason)
	}
	for _, c := range []struct {
		name string
		x, y *float64
	}{{"auroc", a.AUROC, b.AUROC}, {"auprc", a.AUPRC, b.AUPRC}, {"f1", a.F1, b.F1}, {"f1_prevalence", a.F1Prevalence, b.F1Prevalence}} {
		if c.x == nil || c.y == nil || *c.x != *c.y {
			t.Errorf("%s %s: %v vs %v", what, c.name, deref(c.x), deref(c.y))
		}
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

// TestPaperProtocolClassification runs the paper's protocol on classification data through the
// CLI (noise, score against the training split, eval --downstream) and checks it against
// independent computations:
//   - CLIP Logits' AUROC and prevalence-matched F1 against numpy/scikit-learn from the noisy
//     dataset's own files (testdata/protocol_reference.py), AUROC to 1e-6;
//   - the downstream classifier trained on all training rows against scikit-learn's;
//   - lemon_fix, re-scored from a k = 50 run's saved lists, against a separate k = 30 run with
//     the default (LEMoN_fix) settings, and the ablation d_mm + 5 s_n (taus 0) against a run
//     with exactly those settings: identical numbers;
//   - the noise rate comes from noise.json's validation split.
func TestPaperProtocolClassification(t *testing.T) {
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import numpy, scipy, sklearn").Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI=true but %s cannot import numpy, scipy and sklearn (%v): install python3-sklearn", py, err)
		}
		t.Skipf("%s with numpy, scipy and scikit-learn not available (%v)", py, err)
	}
	dir := t.TempDir()
	clean, noisy := filepath.Join(dir, "clean"), filepath.Join(dir, "noisy")
	classificationData(t, clean, 1500, 24)
	run(t, false, "noise", "--input", clean, "--output", noisy, "--kind", "symmetric", "--level", "0.4", "--seed", "3")

	lists, fix, abl := filepath.Join(dir, "lists"), filepath.Join(dir, "fix"), filepath.Join(dir, "abl")
	score := []string{"score", "--input", noisy, "--discrete-text", "--reference-split", "train"} // the paper's reference: the training split
	run(t, false, append(score, "--output", lists, "--k", "50", "--save-neighbour-lists", "--emit-neighbours", "--reject-fraction", "0.4")...)
	run(t, false, append(score, "--output", fix)...)
	run(t, false, append(score, "--output", abl, "--gamma", "0", "--tau1n", "0", "--tau2n", "0", "--tau1m", "0", "--tau2m", "0")...)
	for _, r := range []string{lists, fix, abl} {
		msg := run(t, false, "eval", "--run", r, "--split-column", "split", "--output", r+"-report", "--downstream")
		if r == lists && (!strings.Contains(msg, "clip_logits") || !strings.Contains(msg, "downstream")) {
			t.Errorf("eval summary lacks CLIP Logits or the downstream table:\n%s", msg)
		}
	}
	got, fixRep, ablRep := readEval(t, lists+"-report"), readEval(t, fix+"-report"), readEval(t, abl+"-report")

	// The noise rate is the validation split's level, from noise.json.
	var nr struct {
		Splits []struct {
			Name         string
			Rows, Errors int
		}
	}
	b, err := os.ReadFile(filepath.Join(noisy, "noise.json"))
	if err != nil || json.Unmarshal(b, &nr) != nil {
		t.Fatalf("noise.json: %v", err)
	}
	for _, s := range nr.Splits {
		if s.Name == "val" {
			if want := float64(s.Errors) / float64(s.Rows); got.NoiseRate == nil || *got.NoiseRate != want {
				t.Errorf("noise rate %v (%s), want val's %d/%d", deref(got.NoiseRate), got.NoiseRateFrom, s.Errors, s.Rows)
			}
		}
	}

	sameMetrics(t, "lemon_fix from the k=50 lists vs a k=30 LEMoN_fix run", got.Methods["lemon_fix"], fixRep.Methods["lemon"])
	sameMetrics(t, "lemon_fix of a LEMoN_fix run vs its own score", fixRep.Methods["lemon_fix"], fixRep.Methods["lemon"])
	sameMetrics(t, "ablation_s_n from lists vs a run with gamma = 0, taus 0", got.Methods["ablation_s_n"], ablRep.Methods["lemon"])
	if m := fixRep.Methods["ablation_s_n"]; m.Available || !strings.Contains(m.Reason, "--save-neighbour-lists") {
		t.Errorf("ablation without saved lists: %+v, want unavailable asking for --save-neighbour-lists", m)
	}
	if m := got.Methods["deep_knn"]; !m.Available || !strings.Contains(m.Note, "captions") {
		t.Errorf("deep_knn on a --discrete-text run: %+v, want the captions as labels", m)
	}

	// The independent computation.
	out, err := exec.Command(py, "testdata/protocol_reference.py", noisy, "0.01").CombinedOutput()
	if err != nil {
		t.Fatalf("protocol_reference.py: %v\n%s", err, out)
	}
	var ref struct {
		ClipLogitsAUROC        float64 `json:"clip_logits_auroc"`
		ClipLogitsF1Prevalence float64 `json:"clip_logits_f1_prevalence"`
		DownstreamAllAccuracy  float64 `json:"downstream_all_accuracy"`
		TestRows               int     `json:"test_rows"`
	}
	if err := json.Unmarshal(out, &ref); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	cl := got.Methods["clip_logits"]
	if !cl.Available {
		t.Fatalf("clip_logits unavailable: %s", cl.Reason)
	}
	if d := math.Abs(*cl.AUROC - ref.ClipLogitsAUROC); d > 1e-6 {
		t.Errorf("CLIP Logits AUROC %.9f, numpy/scikit-learn %.9f", *cl.AUROC, ref.ClipLogitsAUROC)
	}
	if cl.F1Prevalence == nil || math.Abs(*cl.F1Prevalence-ref.ClipLogitsF1Prevalence) > 1e-9 {
		t.Errorf("CLIP Logits prevalence-matched F1 %v, reference %v", deref(cl.F1Prevalence), ref.ClipLogitsF1Prevalence)
	}
	if *cl.AUROC < 0.7 {
		t.Errorf("CLIP Logits AUROC %.3f on aligned embeddings; want better than 0.7", *cl.AUROC)
	}

	ds := got.Downstream
	if ds == nil || len(ds.TrainSets) != 4 || ds.TestRows != ref.TestRows {
		t.Fatalf("downstream: %+v (reference test rows %d)", ds, ref.TestRows)
	}
	acc := map[string]float64{}
	for _, s := range ds.TrainSets {
		if s.Accuracy == nil {
			t.Fatalf("downstream %s: no accuracy", s.Name)
		}
		acc[s.Name] = *s.Accuracy
		if s.Rows == 0 || s.Rows > ds.TrainRows {
			t.Errorf("downstream %s: %d training rows of %d", s.Name, s.Rows, ds.TrainRows)
		}
	}
	if d := math.Abs(acc["all"] - ref.DownstreamAllAccuracy); d > 1.0/float64(ref.TestRows)+1e-12 {
		t.Errorf("downstream accuracy on all rows %.4f, scikit-learn %.4f: more than one test row apart", acc["all"], ref.DownstreamAllAccuracy)
	}
	for _, s := range ds.TrainSets {
		if s.Name == "clean" && s.LabelErrors != 0 {
			t.Errorf("the clean training set has %d wrong labels", s.LabelErrors)
		}
		if s.Name == "clip_similarity" && s.Rows != ds.TrainSets[1].Rows {
			t.Errorf("CLIP similarity keeps %d rows, LEMoN %d: want the same number", s.Rows, ds.TrainSets[1].Rows)
		}
	}
}

// TestDeepKNNCaptionClusters: on captioning data (every caption unique) deep kNN labels rows by
// clusters of caption embeddings, so it is informative rather than about 1 for every row.
func TestDeepKNNCaptionClusters(t *testing.T) {
	dir := t.TempDir()
	data, out, rep := filepath.Join(dir, "data"), filepath.Join(dir, "out"), filepath.Join(dir, "rep")
	run(t, false, "dev", "make-dataset", "--out", data, "--rows", "1200", "--dim", "16", "--concepts", "12", "--noise", "0.3", "--split")
	run(t, false, "score", "--input", data, "--output", out, "--emit-neighbours")
	run(t, false, "eval", "--run", out, "--split-column", "split", "--output", rep, "--caption-clusters", "12", "--noise-rate", "0.3")
	r := readEval(t, rep)
	dk := r.Methods["deep_knn"]
	if !dk.Available || !strings.Contains(dk.Note, "12 k-means clusters") {
		t.Fatalf("deep_knn: %+v, want caption clusters", dk)
	}
	if *dk.AUROC < 0.75 {
		t.Errorf("deep kNN with caption clusters: AUROC %.3f, want at least 0.75 on 12 clear concepts", *dk.AUROC)
	}
	if cl := r.Methods["clip_logits"]; cl.Available || !strings.Contains(cl.Reason, "--discrete-text") {
		t.Errorf("clip_logits on a captioning run: %+v, want unavailable", cl)
	}
	if r.NoiseRate == nil || *r.NoiseRate != 0.3 || r.Methods["lemon"].F1Prevalence == nil {
		t.Errorf("--noise-rate 0.3: noise rate %v, lemon's prevalence F1 %v", deref(r.NoiseRate), deref(r.Methods["lemon"].F1Prevalence))
	}
}
