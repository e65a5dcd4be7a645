package tune

import (
	"math"
	"testing"
)

// Test (3): Nelder-Mead finds the minima of standard test functions.
func TestNelderMead(t *testing.T) {
	cases := []struct {
		name  string
		f     func(x []float64) float64
		x0    []float64
		evals int
		tol   float64
		check func(x []float64) bool
	}{
		{"sphere 6-D, shifted", func(x []float64) float64 {
			s := 0.0
			for i, v := range x {
				d := v - float64(i)
				s += d * d
			}
			return s
		}, []float64{10, 10, 10, 10, 10, 10}, 5000, 1e-6, func(x []float64) bool {
			for i, v := range x {
				if math.Abs(v-float64(i)) > 1e-3 {
					return false
				}
			}
			return true
		}},
		{"Rosenbrock", func(x []float64) float64 {
			return 100*math.Pow(x[1]-x[0]*x[0], 2) + math.Pow(1-x[0], 2)
		}, []float64{-1.2, 1}, 2000, 1e-8, func(x []float64) bool { return math.Abs(x[0]-1) < 1e-3 && math.Abs(x[1]-1) < 1e-3 }},
		{"Himmelblau (any of four minima)", func(x []float64) float64 {
			return math.Pow(x[0]*x[0]+x[1]-11, 2) + math.Pow(x[0]+x[1]*x[1]-7, 2)
		}, []float64{0, 0}, 1000, 1e-8, nil},
		{"Beale", func(x []float64) float64 {
			a, b := x[0], x[1]
			return math.Pow(1.5-a+a*b, 2) + math.Pow(2.25-a+a*b*b, 2) + math.Pow(2.625-a+a*b*b*b, 2)
		}, []float64{1, 1}, 2000, 1e-8, func(x []float64) bool { return math.Abs(x[0]-3) < 1e-3 && math.Abs(x[1]-0.5) < 1e-3 }},
		{"ill-conditioned quadratic", func(x []float64) float64 {
			return (x[0]-1)*(x[0]-1) + 1000*(x[1]+2)*(x[1]+2) + 10*(x[0]-1)*(x[1]+2)
		}, []float64{5, 5}, 2000, 1e-8, func(x []float64) bool { return math.Abs(x[0]-1) < 1e-3 && math.Abs(x[1]+2) < 1e-3 }},
	}
	for _, c := range cases {
		r := NelderMead(c.f, c.x0, NMOptions{MaxEvals: c.evals, XTol: 1e-6, FTol: 1e-12})
		if r.F > c.tol || (c.check != nil && !c.check(r.X)) {
			t.Errorf("%s: stopped at %v with f = %g after %d evaluations (converged %v)", c.name, r.X, r.F, r.Evals, r.Converged)
		}
		if !r.Converged || r.Evals > c.evals {
			t.Errorf("%s: converged %v after %d evaluations (bound %d)", c.name, r.Converged, r.Evals, c.evals)
		}
		t.Logf("%s: f = %.3g at %.6f in %d evaluations", c.name, r.F, r.X, r.Evals)
	}
}

// The evaluation bound holds exactly, a step function (like a validation F1) terminates, and
// the result is the best point evaluated.
func TestNelderMeadBoundsAndSteps(t *testing.T) {
	for _, max := range []int{1, 3, 7, 8, 50} {
		n := 0
		r := NelderMead(func(x []float64) float64 { n++; return x[0]*x[0] + x[1]*x[1] + x[2]*x[2] }, []float64{3, 3, 3}, NMOptions{MaxEvals: max})
		if n > max || r.Evals != n {
			t.Errorf("MaxEvals %d: %d evaluations, reported %d", max, n, r.Evals)
		}
	}
	best := math.Inf(1)
	step := func(x []float64) float64 {
		v := math.Floor(math.Abs(x[0]-3)) + math.Floor(math.Abs(x[1]+1)) // flat steps, minimum 0 around (3, -1)
		best = math.Min(best, v)
		return v
	}
	r := NelderMead(step, []float64{0, 0}, NMOptions{Step: []float64{2.5, 2.5}, MaxEvals: 500, XTol: 1e-3, FTol: 1e-9})
	if r.F != best || r.F != 0 {
		t.Errorf("step function: f = %v at %v, best seen %v", r.F, r.X, best)
	}
	// NaN counts as worse than anything.
	r = NelderMead(func(x []float64) float64 {
		if x[0] < 0 {
			return math.NaN()
		}
		return (x[0] - 1) * (x[0] - 1)
	}, []float64{0.5}, NMOptions{MaxEvals: 200, XTol: 1e-8, FTol: 1e-14})
	if math.Abs(r.X[0]-1) > 1e-3 {
		t.Errorf("with NaN region: stopped at %v", r.X)
	}
}
