// Package logreg fits multinomial logistic regression with an L2 penalty: the classifier of
// `lemon eval --downstream`. It solves what scikit-learn's LogisticRegression(C=C) solves with
// its default lbfgs solver on multiclass data: minimise
//
//	C * sum_i -log softmax(W x_i + b)[y_i]  +  ||W||^2 / 2
//
// over one weight vector and one unpenalised intercept per class. The problem is convex; W and
// the probabilities are unique, the intercepts up to a common shift, which starting from zero
// (as scikit-learn does) fixes at sum(b) = 0. The solver is L-BFGS, in float64. Sums over rows
// run in fixed chunks added in order, so the result does not depend on the number of CPUs.
package logreg

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
)

// Model is a fitted classifier.
type Model struct {
	Classes, Dim int
	W            []float64 // Classes x Dim, row-major
	B            []float64 // Classes
	Iterations   int
	Converged    bool    // the gradient's largest component fell below Tolerance
	GradNorm     float64 // largest gradient component at the end (of the objective divided by n)
}

// Settings of the solver.
const (
	Tolerance     = 1e-8 // on the largest gradient component of the objective divided by n
	MaxIterations = 5000
	memory        = 10  // L-BFGS correction pairs
	chunk         = 256 // rows per partial sum
)

// Fit trains on n rows x (row-major, dim values each) with labels y in [0, classes), with
// penalty strength c (scikit-learn's C; larger is weaker). Every class must have a row: a
// class without one has an intercept that runs off to minus infinity.
func Fit(x []float64, dim int, y []int, classes int, c float64) (*Model, error) {
	n := len(y)
	switch {
	case dim < 1 || len(x) != n*dim:
		return nil, fmt.Errorf("logreg: %d values for %d rows of %d", len(x), n, dim)
	case classes < 2:
		return nil, errors.New("logreg: need at least 2 classes")
	case !(c > 0):
		return nil, fmt.Errorf("logreg: C = %v must be positive", c)
	}
	seen := make([]bool, classes)
	for i, k := range y {
		if k < 0 || k >= classes {
			return nil, fmt.Errorf("logreg: row %d has label %d, want [0, %d)", i, k, classes)
		}
		seen[k] = true
	}
	for k, ok := range seen {
		if !ok {
			return nil, fmt.Errorf("logreg: class %d has no row", k)
		}
	}
	p := &problem{x: x, y: y, n: n, dim: dim, classes: classes, c: c}
	theta := make([]float64, classes*(dim+1)) // W then b, from zero
	iters, conv, gnorm := lbfgs(p, theta)
	m := &Model{Classes: classes, Dim: dim, W: theta[:classes*dim], B: theta[classes*dim:], Iterations: iters, Converged: conv, GradNorm: gnorm}
	return m, nil
}

// Logits writes W x + b for one row into out (length Classes).
func (m *Model) Logits(x, out []float64) {
	for k := 0; k < m.Classes; k++ {
		s := m.B[k]
		w := m.W[k*m.Dim : (k+1)*m.Dim]
		for j, v := range x {
			s += w[j] * v
		}
		out[k] = s
	}
}

// Predict returns the most probable class of one row (ties: the lower class).
func (m *Model) Predict(x []float64) int {
	z := make([]float64, m.Classes)
	m.Logits(x, z)
	best := 0
	for k, v := range z {
		if v > z[best] {
			best = k
		}
	}
	return best
}

// Proba writes the class probabilities of one row into out.
func (m *Model) Proba(x, out []float64) {
	m.Logits(x, out)
	softmax(out)
}

// softmax turns logits into probabilities in place and returns log-sum-exp of the logits.
func softmax(z []float64) float64 {
	mx := math.Inf(-1)
	for _, v := range z {
		mx = max(mx, v)
	}
	var s float64
	for k, v := range z {
		z[k] = math.Exp(v - mx)
		s += z[k]
	}
	for k := range z {
		z[k] /= s
	}
	return mx + math.Log(s)
}

type problem struct {
	x       []float64
	y       []int
	n, dim  int
	classes int
	c       float64
	partF   []float64
	partG   [][]float64
}

// eval returns the objective divided by n (mean cross-entropy + ||W||^2 / (2 c n)) and writes
// its gradient into g.
func (p *problem) eval(theta, g []float64) float64 {
	nc := (p.n + chunk - 1) / chunk
	if p.partG == nil {
		p.partF = make([]float64, nc)
		p.partG = make([][]float64, nc)
		for i := range p.partG {
			p.partG[i] = make([]float64, len(theta))
		}
	}
	w, b := theta[:p.classes*p.dim], theta[p.classes*p.dim:]
	var wg sync.WaitGroup
	next := make(chan int, nc)
	for i := 0; i < nc; i++ {
		next <- i
	}
	close(next)
	for t := 0; t < min(runtime.GOMAXPROCS(0), nc); t++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			z := make([]float64, p.classes)
			for ci := range next {
				pg := p.partG[ci]
				clear(pg)
				gw, gb := pg[:p.classes*p.dim], pg[p.classes*p.dim:]
				var f float64
				for i := ci * chunk; i < min((ci+1)*chunk, p.n); i++ {
					xi := p.x[i*p.dim : (i+1)*p.dim]
					for k := 0; k < p.classes; k++ {
						s := b[k]
						wk := w[k*p.dim : (k+1)*p.dim]
						for j, v := range xi {
							s += wk[j] * v
						}
						z[k] = s
					}
					zy := z[p.y[i]]
					f += softmax(z) - zy
					z[p.y[i]]--
					for k := 0; k < p.classes; k++ {
						gk := gw[k*p.dim : (k+1)*p.dim]
						for j, v := range xi {
							gk[j] += z[k] * v
						}
						gb[k] += z[k]
					}
				}
				p.partF[ci] = f
			}
		}()
	}
	wg.Wait()
	clear(g)
	var f float64
	for ci := 0; ci < nc; ci++ {
		f += p.partF[ci]
		for j, v := range p.partG[ci] {
			g[j] += v
		}
	}
	inv := 1 / float64(p.n)
	reg := 1 / (p.c * float64(p.n))
	f *= inv
	for j := range g {
		g[j] *= inv
	}
	for j, v := range w {
		f += 0.5 * reg * v * v
		g[j] += reg * v
	}
	return f
}

func dotv(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

func maxAbs(a []float64) float64 {
	var m float64
	for _, v := range a {
		m = max(m, math.Abs(v))
	}
	return m
}

// lbfgs minimises p from theta (updated in place) and returns the iterations, whether the
// gradient tolerance was met, and the final gradient's largest component.
func lbfgs(p *problem, theta []float64) (int, bool, float64) {
	nv := len(theta)
	g := make([]float64, nv)
	f := p.eval(theta, g)
	var ss, ys [][]float64
	var rhos []float64
	d := make([]float64, nv)
	alpha := make([]float64, memory)
	trial, gt := make([]float64, nv), make([]float64, nv)
	stalled := 0 // iterations in a row that lowered f by no more than its rounding
	for it := 0; it < MaxIterations; it++ {
		if gn := maxAbs(g); gn < Tolerance {
			return it, true, gn
		}
		// Two-loop recursion: d = -H g.
		copy(d, g)
		for k := len(ss) - 1; k >= 0; k-- {
			alpha[k] = rhos[k] * dotv(ss[k], d)
			for j := range d {
				d[j] -= alpha[k] * ys[k][j]
			}
		}
		if k := len(ss) - 1; k >= 0 {
			gamma := dotv(ss[k], ys[k]) / dotv(ys[k], ys[k])
			for j := range d {
				d[j] *= gamma
			}
		} else {
			// First step: a unit step along -g would be huge for a steep start; scale it.
			s := 1 / math.Max(1, math.Sqrt(dotv(g, g)))
			for j := range d {
				d[j] *= s
			}
		}
		for k := 0; k < len(ss); k++ {
			beta := rhos[k] * dotv(ys[k], d)
			for j := range d {
				d[j] += (alpha[k] - beta) * ss[k][j]
			}
		}
		for j := range d {
			d[j] = -d[j]
		}
		slope := dotv(g, d)
		if slope >= 0 { // not a descent direction (rounding): restart from the gradient
			ss, ys, rhos = nil, nil, nil
			for j := range d {
				d[j] = -g[j]
			}
			slope = -dotv(g, g)
		}
		// Backtracking line search with the Armijo condition.
		step, ft := 1.0, 0.0
		ok := false
		for ls := 0; ls < 60; ls++ {
			for j := range trial {
				trial[j] = theta[j] + step*d[j]
			}
			ft = p.eval(trial, gt)
			if ft <= f+1e-4*step*slope {
				ok = true
				break
			}
			step /= 2
		}
		if !ok {
			return it, false, maxAbs(g) // no decrease to be had at this precision
		}
		s, yv := make([]float64, nv), make([]float64, nv)
		for j := range s {
			s[j] = trial[j] - theta[j]
			yv[j] = gt[j] - g[j]
		}
		if f-ft <= 1e-15*math.Abs(f) {
			stalled++
		} else {
			stalled = 0
		}
		copy(theta, trial)
		copy(g, gt)
		f = ft
		if stalled == 10 {
			gn := maxAbs(g)
			return it + 1, gn < Tolerance, gn // at the optimum to float64 precision, or stuck
		}
		if sy := dotv(s, yv); sy > 1e-300 {
			if len(ss) == memory {
				ss, ys, rhos = ss[1:], ys[1:], rhos[1:]
			}
			ss, ys, rhos = append(ss, s), append(ys, yv), append(rhos, 1/sy)
		}
	}
	gn := maxAbs(g)
	return MaxIterations, gn < Tolerance, gn
}
