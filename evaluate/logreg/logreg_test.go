package logreg

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// blobs is a classification problem: classes around random centres, overlapping enough that
// the fit is not separable (a separable problem's optimum is set by the penalty alone).
func blobs(n, dim, classes int, seed uint64) ([]float64, []int) {
	rng := rand.New(rand.NewPCG(seed, 5))
	centres := make([]float64, classes*dim)
	for i := range centres {
		centres[i] = rng.NormFloat64()
	}
	x, y := make([]float64, n*dim), make([]int, n)
	for i := range y {
		y[i] = i % classes
		for j := 0; j < dim; j++ {
			x[i*dim+j] = centres[y[i]*dim+j] + 1.2*rng.NormFloat64()
		}
	}
	return x, y
}

// TestMatchesScikitLearn fits the same problems as scikit-learn's LogisticRegression
// (multinomial, solved tightly) and compares coefficients, intercepts and probabilities. It
// needs /usr/bin/python3 with scikit-learn (Debian python3-sklearn, installed by
// scripts/setup.sh); it skips without, unless CI is set.
func TestMatchesScikitLearn(t *testing.T) {
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import sklearn").Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI=true but %s cannot import sklearn (%v): install python3-sklearn", py, err)
		}
		t.Skipf("%s with scikit-learn not available (%v)", py, err)
	}
	for _, tc := range []struct {
		n, dim, classes int
		c               float64
	}{{300, 5, 3, 1}, {500, 8, 6, 0.3}, {200, 4, 2, 10}} {
		x, y := blobs(tc.n, tc.dim, tc.classes, uint64(tc.n))
		xt, _ := blobs(50, tc.dim, tc.classes, 99)
		m, err := Fit(x, tc.dim, y, tc.classes, tc.c)
		if err != nil {
			t.Fatal(err)
		}
		if !m.Converged {
			t.Fatalf("%+v: not converged after %d iterations (gradient %g)", tc, m.Iterations, m.GradNorm)
		}
		path := filepath.Join(t.TempDir(), "case.json")
		js, _ := json.Marshal(map[string]any{"x": x, "y": y, "dim": tc.dim, "c": tc.c, "x_test": xt})
		if err := os.WriteFile(path, js, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(py, "testdata/sklearn_fit.py", path).Output()
		if err != nil {
			t.Fatalf("sklearn_fit.py: %v", err)
		}
		var ref struct {
			Version string
			W, B    []float64
			Proba   []float64
			Predict []int
		}
		if err := json.Unmarshal(out, &ref); err != nil {
			t.Fatal(err)
		}
		// With 2 classes scikit-learn reports a single weight row; compare probabilities only.
		worst := 0.0
		if tc.classes > 2 {
			for j := range m.W {
				worst = math.Max(worst, math.Abs(m.W[j]-ref.W[j]))
			}
			for k := range m.B {
				worst = math.Max(worst, math.Abs(m.B[k]-ref.B[k]))
			}
			if worst > 1e-5 {
				t.Errorf("%+v: coefficients differ from scikit-learn %s by up to %g", tc, ref.Version, worst)
			}
		}
		p := make([]float64, tc.classes)
		maxP := 0.0
		for i := 0; i < 50; i++ {
			row := xt[i*tc.dim : (i+1)*tc.dim]
			m.Proba(row, p)
			for k := range p {
				maxP = math.Max(maxP, math.Abs(p[k]-ref.Proba[i*tc.classes+k]))
			}
			if got := m.Predict(row); got != ref.Predict[i] {
				t.Errorf("%+v: row %d predicted %d, scikit-learn %d", tc, i, got, ref.Predict[i])
			}
		}
		if maxP > 1e-6 {
			t.Errorf("%+v: probabilities differ from scikit-learn by up to %g", tc, maxP)
		}
		t.Logf("%+v: %d iterations; coefficients within %.1e, probabilities within %.1e of scikit-learn %s", tc, m.Iterations, worst, maxP, ref.Version)
	}
}

func TestFitErrors(t *testing.T) {
	x, y := blobs(20, 3, 2, 1)
	for _, tc := range []struct {
		name string
		err  func() error
	}{
		{"short x", func() error { _, err := Fit(x[:5], 3, y, 2, 1); return err }},
		{"one class", func() error { _, err := Fit(x, 3, y, 1, 1); return err }},
		{"label out of range", func() error { _, err := Fit(x, 3, append(y[:19:19], 5), 2, 1); return err }},
		{"empty class", func() error { _, err := Fit(x, 3, y, 3, 1); return err }},
		{"bad C", func() error { _, err := Fit(x, 3, y, 2, 0); return err }},
	} {
		if tc.err() == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

// TestWorkerCountIndependent: the fit is bit-identical whatever GOMAXPROCS is.
func TestWorkerCountIndependent(t *testing.T) {
	x, y := blobs(1000, 6, 4, 3)
	a, _ := Fit(x, 6, y, 4, 1)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	b, _ := Fit(x, 6, y, 4, 1)
	for j := range a.W {
		if a.W[j] != b.W[j] {
			t.Fatalf("W[%d]: %v with many CPUs, %v with one", j, a.W[j], b.W[j])
		}
	}
}
