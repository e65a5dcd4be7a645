package tune

import (
	"math"
	"sort"
)

// NMOptions control NelderMead.
type NMOptions struct {
	// Step is the initial simplex's size per coordinate: vertex i is x0 with coordinate i moved
	// by Step[i]. Nil means scipy's default (5% of the coordinate, 0.00025 where it is 0).
	Step []float64
	// MaxEvals bounds the number of function evaluations (default 200 per dimension).
	MaxEvals int
	// XTol and FTol stop the search once every vertex is within XTol of the best in every
	// coordinate and within FTol of it in value (both must hold, as in scipy; defaults 1e-4).
	XTol, FTol float64
}

// NMResult is where NelderMead stopped.
type NMResult struct {
	X         []float64 // the best point evaluated
	F         float64   // f(X)
	Evals     int       // function evaluations used
	Converged bool      // stopped by XTol/FTol rather than by MaxEvals
}

// vertex is a simplex vertex and its value.
type vertex struct {
	x []float64
	f float64
}

// NelderMead minimises f from x0 with the standard Nelder-Mead simplex method (reflection 1,
// expansion 2, contraction 1/2, shrink 1/2), the variant scipy.optimize.minimize(method=
// "Nelder-Mead") implements. It needs no gradients, so it works on the piecewise-constant
// objectives a validation F1 gives, and it never evaluates f more than MaxEvals times.
func NelderMead(f func([]float64) float64, x0 []float64, o NMOptions) NMResult {
	n := len(x0)
	if o.MaxEvals <= 0 {
		o.MaxEvals = 200 * n
	}
	if o.XTol <= 0 {
		o.XTol = 1e-4
	}
	if o.FTol <= 0 {
		o.FTol = 1e-4
	}
	evals := 0
	eval := func(x []float64) float64 {
		evals++
		v := f(x)
		if math.IsNaN(v) {
			return math.Inf(1) // a failed point is never better than any other
		}
		return v
	}
	sim := make([]vertex, n+1)
	sim[0] = vertex{append([]float64(nil), x0...), eval(x0)}
	for i := 0; i < n && evals < o.MaxEvals; i++ {
		x := append([]float64(nil), x0...)
		switch {
		case o.Step != nil:
			x[i] += o.Step[i]
		case x[i] != 0:
			x[i] *= 1.05
		default:
			x[i] = 0.00025
		}
		sim[i+1] = vertex{x, eval(x)}
	}
	if evals < n+1 { // MaxEvals smaller than the simplex: return the best seen
		best := sim[0]
		for _, v := range sim[1:evals] {
			if v.f < best.f {
				best = v
			}
		}
		return NMResult{X: best.x, F: best.f, Evals: evals}
	}
	const rho, chi, psi, sigma = 1.0, 2.0, 0.5, 0.5
	point := func(base, dir []float64, t float64) []float64 { // base + t*(dir - base)
		out := make([]float64, n)
		for j := range out {
			out[j] = base[j] + t*(dir[j]-base[j])
		}
		return out
	}
	converged := false
	for {
		sort.SliceStable(sim, func(a, b int) bool { return sim[a].f < sim[b].f })
		if done(sim[0], sim[1:], o.XTol, o.FTol) {
			converged = true
			break
		}
		if evals >= o.MaxEvals {
			break
		}
		// Centroid of all vertices but the worst.
		xbar := make([]float64, n)
		for _, v := range sim[:n] {
			for j := range xbar {
				xbar[j] += v.x[j]
			}
		}
		for j := range xbar {
			xbar[j] /= float64(n)
		}
		worst := sim[n]
		xr := point(xbar, worst.x, -rho)
		fr := eval(xr)
		shrink := false
		switch {
		case fr < sim[0].f:
			if evals >= o.MaxEvals {
				sim[n] = vertex{xr, fr}
				break
			}
			xe := point(xbar, worst.x, -rho*chi)
			if fe := eval(xe); fe < fr {
				sim[n] = vertex{xe, fe}
			} else {
				sim[n] = vertex{xr, fr}
			}
		case fr < sim[n-1].f:
			sim[n] = vertex{xr, fr}
		case evals >= o.MaxEvals:
			// No budget left to contract; keep the simplex as it is.
		case fr < worst.f:
			xc := point(xbar, worst.x, -psi*rho) // outside contraction
			if fc := eval(xc); fc <= fr {
				sim[n] = vertex{xc, fc}
			} else {
				shrink = true
			}
		default:
			xcc := point(xbar, worst.x, psi) // inside contraction
			if fcc := eval(xcc); fcc < worst.f {
				sim[n] = vertex{xcc, fcc}
			} else {
				shrink = true
			}
		}
		if shrink {
			for i := 1; i <= n && evals < o.MaxEvals; i++ {
				x := point(sim[0].x, sim[i].x, sigma)
				sim[i] = vertex{x, eval(x)}
			}
		}
	}
	best := sim[0]
	for _, v := range sim[1:] {
		if v.f < best.f {
			best = v
		}
	}
	return NMResult{X: best.x, F: best.f, Evals: evals, Converged: converged}
}

// done is scipy's stopping rule: every other vertex within xtol of the best in each coordinate
// and within ftol of it in value.
func done(best vertex, others []vertex, xtol, ftol float64) bool {
	for _, v := range others {
		if !(math.Abs(v.f-best.f) <= ftol) {
			return false
		}
		for j := range v.x {
			if !(math.Abs(v.x[j]-best.x[j]) <= xtol) {
				return false
			}
		}
	}
	return true
}
