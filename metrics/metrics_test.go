package metrics_test

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/lemon-curation/lemon/metrics"
)

// tol is the agreement asked of every rate. Inputs and counts are identical, so the only
// differences are the order of float64 additions (numpy sums pairwise, Go in sequence; AUROC
// here is summed exactly in integers): about n ulps, far below 1e-12 for these sizes.
const tol = 1e-12

type curveRef struct {
	FPR, TPR      []float64
	ThrAfterFirst []float64 `json:"thr_after_first"`
	Precision     []float64
	Recall        []float64
	Thr           []float64
}

type refCase struct {
	Name     string
	Scores   []float64
	Truth    []bool
	Expected struct {
		AUROC             *float64
		AUPRC             *float64
		ROCFull           curveRef `json:"roc_full"`
		ROCDrop           curveRef `json:"roc_drop_intermediate"`
		PR                curveRef
		SklearnAUROCError string `json:"sklearn_auroc_error"`
		BestF1            struct {
			Threshold float64
			F1        float64
		} `json:"best_f1"`
		AtThresholds []struct {
			Threshold, F1, Precision, Recall float64
		} `json:"at_thresholds"`
		AtFractions []struct {
			Fraction          float64
			Threshold         *float64 // nil: nothing rejected
			Rejected          int
			Precision, Recall float64
		} `json:"at_fractions"`
	}
}

type reference struct {
	SklearnVersion string `json:"sklearn_version"`
	Cases          []refCase
}

func loadReference(t *testing.T, path string) reference {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r reference
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(r.Cases) < 10 {
		t.Fatalf("%s: only %d cases", path, len(r.Cases))
	}
	return r
}

func near(a, b float64) bool { return math.Abs(a-b) <= tol }

func checkSlice(t *testing.T, what string, got, want []float64, exact bool) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d points, scikit-learn %d", what, len(got), len(want))
		return
	}
	for i := range got {
		if exact && got[i] != want[i] || !exact && !near(got[i], want[i]) {
			t.Errorf("%s[%d] = %v, scikit-learn %v", what, i, got[i], want[i])
			return
		}
	}
}

func TestAgainstScikitLearn(t *testing.T) {
	ref := loadReference(t, "testdata/reference.json")
	for _, c := range ref.Cases {
		t.Run(c.Name, func(t *testing.T) {
			e := c.Expected
			if e.SklearnAUROCError != "" {
				// scikit-learn raises; every function here must refuse.
				if _, err := metrics.AUROC(c.Scores, c.Truth); !errors.Is(err, metrics.ErrOneClass) {
					t.Errorf("AUROC: err = %v, want ErrOneClass (scikit-learn: %q)", err, e.SklearnAUROCError)
				}
				if _, err := metrics.AUPRC(c.Scores, c.Truth); !errors.Is(err, metrics.ErrOneClass) {
					t.Errorf("AUPRC: err = %v, want ErrOneClass", err)
				}
				if _, _, err := metrics.BestF1Threshold(c.Scores, c.Truth); !errors.Is(err, metrics.ErrOneClass) {
					t.Errorf("BestF1Threshold: err = %v, want ErrOneClass", err)
				}
				return
			}
			auroc, err := metrics.AUROC(c.Scores, c.Truth)
			if err != nil || !near(auroc, *e.AUROC) {
				t.Errorf("AUROC = %v, %v; scikit-learn %v", auroc, err, *e.AUROC)
			}
			auprc, err := metrics.AUPRC(c.Scores, c.Truth)
			if err != nil || !near(auprc, *e.AUPRC) {
				t.Errorf("AUPRC = %v, %v; scikit-learn %v", auprc, err, *e.AUPRC)
			}
			for _, v := range []struct {
				name string
				drop bool
				want curveRef
			}{{"roc_full", false, e.ROCFull}, {"roc_drop_intermediate", true, e.ROCDrop}} {
				fpr, tpr, thr, err := metrics.ROCCurve(c.Scores, c.Truth, v.drop)
				if err != nil {
					t.Fatal(err)
				}
				checkSlice(t, v.name+" fpr", fpr, v.want.FPR, false)
				checkSlice(t, v.name+" tpr", tpr, v.want.TPR, false)
				if !math.IsInf(thr[0], 1) {
					t.Errorf("%s: first threshold %v, want +Inf", v.name, thr[0])
				}
				checkSlice(t, v.name+" thresholds", thr[1:], v.want.ThrAfterFirst, true)
			}
			p, r, thr, err := metrics.PRCurve(c.Scores, c.Truth)
			if err != nil {
				t.Fatal(err)
			}
			checkSlice(t, "pr precision", p, e.PR.Precision, false)
			checkSlice(t, "pr recall", r, e.PR.Recall, false)
			checkSlice(t, "pr thresholds", thr, e.PR.Thr, true)

			bt, bf, err := metrics.BestF1Threshold(c.Scores, c.Truth)
			if err != nil || bt != e.BestF1.Threshold || !near(bf, e.BestF1.F1) {
				t.Errorf("BestF1Threshold = %v, %v, %v; want %v, %v (F1 from scikit-learn's f1_score)", bt, bf, err, e.BestF1.Threshold, e.BestF1.F1)
			}
			for _, a := range e.AtThresholds {
				f, err := metrics.F1At(c.Scores, c.Truth, a.Threshold)
				if err != nil || !near(f, a.F1) {
					t.Errorf("F1At(%v) = %v, %v; scikit-learn %v", a.Threshold, f, err, a.F1)
				}
				p, r, err := metrics.PrecisionRecallAt(c.Scores, c.Truth, a.Threshold)
				if err != nil || !near(p, a.Precision) || !near(r, a.Recall) {
					t.Errorf("PrecisionRecallAt(%v) = %v, %v, %v; scikit-learn %v, %v", a.Threshold, p, r, err, a.Precision, a.Recall)
				}
			}
			for _, a := range e.AtFractions {
				got, err := metrics.PrecisionRecallAtFraction(c.Scores, c.Truth, a.Fraction)
				if err != nil {
					t.Fatal(err)
				}
				wantThr := math.Inf(1)
				if a.Threshold != nil {
					wantThr = *a.Threshold
				}
				if got.Threshold != wantThr || got.Rejected != a.Rejected || !near(got.Precision, a.Precision) || !near(got.Recall, a.Recall) {
					t.Errorf("PrecisionRecallAtFraction(%v) = %+v; want threshold %v, rejected %d, precision %v, recall %v",
						a.Fraction, got, wantThr, a.Rejected, a.Precision, a.Recall)
				}
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	for _, c := range []struct {
		name   string
		scores []float64
		truth  []bool
		want   error
	}{
		{"empty", nil, nil, metrics.ErrEmpty},
		{"length mismatch", []float64{1, 2}, []bool{true}, metrics.ErrLengthMismatch},
		{"NaN", []float64{1, math.NaN()}, []bool{true, false}, metrics.ErrNotFinite},
		{"Inf", []float64{math.Inf(1), 0}, []bool{true, false}, metrics.ErrNotFinite},
		{"only errors", []float64{1, 2}, []bool{true, true}, metrics.ErrOneClass},
		{"only clean", []float64{1, 2}, []bool{false, false}, metrics.ErrOneClass},
	} {
		t.Run(c.name, func(t *testing.T) {
			errs := map[string]error{}
			_, errs["AUROC"] = metrics.AUROC(c.scores, c.truth)
			_, errs["AUPRC"] = metrics.AUPRC(c.scores, c.truth)
			_, _, errs["BestF1Threshold"] = metrics.BestF1Threshold(c.scores, c.truth)
			_, errs["F1At"] = metrics.F1At(c.scores, c.truth, 0.5)
			_, _, errs["PrecisionRecallAt"] = metrics.PrecisionRecallAt(c.scores, c.truth, 0.5)
			_, errs["PrecisionRecallAtFraction"] = metrics.PrecisionRecallAtFraction(c.scores, c.truth, 0.5)
			_, _, _, errs["ROCCurve"] = metrics.ROCCurve(c.scores, c.truth, true)
			_, _, _, errs["PRCurve"] = metrics.PRCurve(c.scores, c.truth)
			for fn, err := range errs {
				if !errors.Is(err, c.want) {
					t.Errorf("%s: err = %v, want %v", fn, err, c.want)
				}
			}
		})
	}
	s, tr := []float64{0.1, 0.9}, []bool{false, true}
	if _, err := metrics.PrecisionRecallAtFraction(s, tr, 1.5); err == nil {
		t.Error("fraction 1.5 accepted")
	}
	if _, err := metrics.PrecisionRecallAtFraction(s, tr, math.NaN()); err == nil {
		t.Error("fraction NaN accepted")
	}
	if _, err := metrics.F1At(s, tr, math.NaN()); err == nil {
		t.Error("threshold NaN accepted")
	}
}

// TestReferenceIsCurrent reruns make_reference.py and checks that the committed JSON still says
// what scikit-learn says. It needs /usr/bin/python3 with scikit-learn (Debian: python3-sklearn);
// without it the test skips, except under CI=true, where it fails.
func TestReferenceIsCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the scikit-learn rerun in -short mode")
	}
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import sklearn").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %s cannot import sklearn (%v): install python3-sklearn", py, err)
		}
		t.Skipf("%s with scikit-learn not available (%v); install python3-sklearn to run", py, err)
	}
	out := filepath.Join(t.TempDir(), "reference.json")
	cmd := exec.Command(py, "testdata/make_reference.py", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make_reference.py: %v\n%s", err, b)
	}
	committed, fresh := loadReference(t, "testdata/reference.json"), loadReference(t, out)
	// Compare as data, to the test's tolerance, so a scikit-learn release that only reorders
	// float additions does not fail; anything else means: rerun the script and commit.
	a, _ := json.Marshal(committed.Cases)
	b, _ := json.Marshal(fresh.Cases)
	var x, y any
	json.Unmarshal(a, &x)
	json.Unmarshal(b, &y)
	if path, ok := sameJSON(x, y, ""); !ok {
		t.Fatalf("testdata/reference.json is stale at %s (scikit-learn %s made it, %s is installed): run %s testdata/make_reference.py and commit the result",
			path, committed.SklearnVersion, fresh.SklearnVersion, py)
	}
}

func sameJSON(a, b any, path string) (string, bool) {
	switch a := a.(type) {
	case map[string]any:
		bm, ok := b.(map[string]any)
		if !ok || len(a) != len(bm) {
			return path, false
		}
		for k, v := range a {
			if p, ok := sameJSON(v, bm[k], path+"."+k); !ok {
				return p, false
			}
		}
		return "", true
	case []any:
		bs, ok := b.([]any)
		if !ok || len(a) != len(bs) {
			return path, false
		}
		for i := range a {
			if p, ok := sameJSON(a[i], bs[i], path+"["+itoa(i)+"]"); !ok {
				return p, false
			}
		}
		return "", true
	case float64:
		bf, ok := b.(float64)
		return path, ok && near(a, bf)
	default:
		return path, a == b
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestThresholdAtFraction(t *testing.T) {
	s := []float64{0.1, 0.9, 0.5, 0.5, 0.3, 0.7}
	for _, c := range []struct{ fraction, want float64 }{
		{0, math.Inf(1)}, {0.05, math.Inf(1)}, {1.0 / 6, 0.9}, {0.5, 0.5}, {4.0 / 6, 0.5}, {5.0 / 6, 0.3}, {1, 0.1},
	} {
		if got := metrics.ThresholdAtFraction(s, c.fraction); got != c.want {
			t.Errorf("ThresholdAtFraction(%v) = %v, want %v", c.fraction, got, c.want)
		}
	}
	if s[1] != 0.9 {
		t.Error("ThresholdAtFraction reordered its input")
	}
}
