package tune

import (
	"context"
	"fmt"
	"math"
	"sort"

	"github.com/lemon-curation/lemon/score"
)

// evaluator scores candidates on the validation rows.
type evaluator struct {
	val      *Lists
	pos      int // validation errors
	discrete bool
}

type gridCell struct{ f1, thr float64 }

// grid evaluates every grid candidate. Work is split by (distance, tau1, tau2): each job
// computes s_n and s_m of every validation row once, for every k in one pass over the lists
// (running sums), and then only the cheap part varies over k and the 441 (beta, gamma) pairs:
// score = d_mm + beta*s_n + gamma*s_m and a radix sort for the best threshold.
func (e *evaluator) grid(ctx context.Context, ks []int, dists []score.Distance, workers int) ([]GridBest, error) {
	nb, ng := len(GridWeights), len(GridWeights)
	nt1, nt2 := len(GridTau1), len(GridTau2)
	cells := make([]gridCell, len(dists)*len(ks)*nt1*nt2*nb*ng)
	at := func(di, ki, t1, t2, b, g int) int {
		return ((((di*len(ks)+ki)*nt1+t1)*nt2+t2)*nb+b)*ng + g
	}
	n := e.val.Len()
	err := parallel(ctx, len(dists)*nt1*nt2, workers, func(job int) error {
		di, t1, t2 := job/(nt1*nt2), job/nt2%nt1, job%nt2
		d := dists[di]
		tau1, tau2 := GridTau1[t1], GridTau2[t2]
		sn, sm := make([][]float64, len(ks)), make([][]float64, len(ks))
		for a := range ks {
			sn[a], sm[a] = make([]float64, n), make([]float64, n)
		}
		tm := newTerms(e.val, d, e.discrete)
		tm.prefix(ks, tau1, tau2, tau1, tau2, sn, sm)
		dmm := make([]float64, n)
		for i := range dmm {
			dmm[i] = tm.f * e.val.Dmm[i]
		}
		var sc f1Scratch
		scores := make([]float64, n)
		for ki := range ks {
			if err := ctx.Err(); err != nil {
				return err
			}
			for b, beta := range GridWeights {
				for g, gamma := range GridWeights {
					for i := range scores {
						scores[i] = dmm[i] + beta*sn[ki][i] + gamma*sm[ki][i]
					}
					c := gridCell{f1: -1}
					if thr, f1, ok := sc.bestF1(scores, e.val.Truth, e.pos); ok {
						c = gridCell{f1, thr}
					}
					cells[at(di, ki, t1, t2, b, g)] = c
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Best per (k, distance), scanning in a fixed order so ties are resolved the same way
	// whatever the goroutines did: tau1, tau2, beta, gamma ascending, first wins.
	var out []GridBest
	for ki, k := range ks {
		for di, d := range dists {
			gb := GridBest{K: k, Distance: d, Best: Candidate{ValF1: -1}, Evaluated: nt1 * nt2 * nb * ng}
			for t1 := range nt1 {
				for t2 := range nt2 {
					for b := range nb {
						for g := range ng {
							c := cells[at(di, ki, t1, t2, b, g)]
							if c.f1 > gb.Best.ValF1 {
								p := score.Params{K: k, Distance: d, DiscreteText: e.discrete, Beta: GridWeights[b], Gamma: GridWeights[g],
									Tau1n: GridTau1[t1], Tau2n: GridTau2[t2], Tau1m: GridTau1[t1], Tau2m: GridTau2[t2]}
								gb.Best = Candidate{Params: p, ValF1: c.f1, Threshold: c.thr}
							}
						}
					}
				}
			}
			if gb.Best.ValF1 < 0 {
				return nil, fmt.Errorf("internal error: no finite grid score for k=%d %s", k, d)
			}
			out = append(out, gb)
		}
	}
	return out, nil
}

// vec and fromVec map the six refined weights to and from a point of R^6.
func vec(p score.Params) [6]float64 {
	return [6]float64{p.Beta, p.Gamma, p.Tau1n, p.Tau2n, p.Tau1m, p.Tau2m}
}

// fromVec clamps each weight to >= 0: Nelder-Mead is unconstrained, so the objective is
// evaluated at the nearest allowed point (the projection), and that is the point reported.
func fromVec(base score.Params, x []float64) score.Params {
	c := func(v float64) float64 { return math.Max(v, 0) }
	base.Beta, base.Gamma, base.Tau1n, base.Tau2n, base.Tau1m, base.Tau2m = c(x[0]), c(x[1]), c(x[2]), c(x[3]), c(x[4]), c(x[5])
	return base
}

// refineStep is the initial simplex's size: half a grid step for beta and gamma (2.5) and 0.5
// for the taus, or 5% of the start's value where that is larger. Smaller steps (scipy's 5%,
// or 0.00025 at 0) would not move the validation F1, a step function, at all.
var refineStep = [6]float64{2.5, 2.5, 0.5, 0.5, 0.5, 0.5}

// refine runs Nelder-Mead from the grid best and the fixed starts, for the top (k, distance)
// pairs by grid F1. Runs are independent and go in parallel; results are in a fixed order.
func (e *evaluator) refine(ctx context.Context, grid []GridBest, top, maxEvals, workers int) ([]Refinement, error) {
	if top <= 0 {
		return nil, nil
	}
	order := make([]int, len(grid))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return grid[order[a]].Best.ValF1 > grid[order[b]].Best.ValF1 })
	if top < len(order) {
		order = order[:top]
	}
	sort.Ints(order) // report in grid order
	var runs []Refinement
	for _, gi := range order {
		g := grid[gi]
		runs = append(runs, Refinement{K: g.K, Distance: g.Distance, Start: "grid best", From: g.Best})
		for _, v := range RefineStarts {
			p := fromVec(g.Best.Params, []float64{v, v, v, v, v, v})
			runs = append(runs, Refinement{K: g.K, Distance: g.Distance, Start: fmt.Sprintf("all %g", v), From: Candidate{Params: p}})
		}
	}
	terms := map[score.Distance]*terms{}
	for _, d := range []score.Distance{score.Cosine, score.Euclidean} {
		terms[d] = newTerms(e.val, d, e.discrete)
	}
	err := parallel(ctx, len(runs), workers, func(i int) error {
		r := &runs[i]
		tm := terms[r.Distance]
		var sc f1Scratch
		scores := make([]float64, e.val.Len())
		evalAt := func(p score.Params) (f1, thr float64) {
			for j := range scores {
				sn, sm := tm.rowFused(j, p.K, p.Tau1n, p.Tau2n, p.Tau1m, p.Tau2m)
				scores[j] = tm.f*e.val.Dmm[j] + p.Beta*sn + p.Gamma*sm
			}
			thr, f1, ok := sc.bestF1(scores, e.val.Truth, e.pos)
			if !ok {
				return -1, 0 // overflowing weights: worse than any usable point
			}
			return f1, thr
		}
		bestF1, best := math.Inf(-1), Candidate{ValF1: math.Inf(-1)} // the first evaluation is the start
		evals := 0
		var stop error
		f := func(x []float64) float64 {
			evals++
			if evals%16 == 0 && stop == nil {
				stop = ctx.Err()
			}
			if stop != nil {
				return math.Inf(1)
			}
			p := fromVec(r.From.Params, x)
			f1, thr := evalAt(p)
			if f1 > bestF1 {
				bestF1 = f1
				r.Path = append(r.Path, Step{Eval: evals, ValF1: f1, Params: vec(p)})
				if f1 > best.ValF1 {
					best = Candidate{Params: p, ValF1: f1, Threshold: thr}
				}
			}
			return -f1
		}
		x0 := vec(r.From.Params)
		step := make([]float64, 6)
		for j := range step {
			step[j] = math.Max(refineStep[j], 0.05*math.Abs(x0[j]))
		}
		// XTol 1e-3 is far below any weight's meaningful resolution; FTol below one row's F1 change.
		res := NelderMead(f, x0[:], NMOptions{Step: step, MaxEvals: maxEvals, XTol: 1e-3, FTol: 1e-9})
		if stop != nil {
			return stop
		}
		r.Evals, r.Converged, r.To = res.Evals, res.Converged, best
		// Report exact values (the search used the fused exponential).
		r.From.ValF1, r.From.Threshold = e.exact(tm, r.From.Params, scores, &sc)
		r.To.ValF1, r.To.Threshold = e.exact(tm, r.To.Params, scores, &sc)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return runs, nil
}

// exact is p's validation F1 and threshold computed with score.Score's arithmetic.
func (e *evaluator) exact(tm *terms, p score.Params, scores []float64, sc *f1Scratch) (f1, thr float64) {
	for j := range scores {
		sn, sm := tm.row(j, p.K, p.Tau1n, p.Tau2n, p.Tau1m, p.Tau2m)
		scores[j] = tm.f*e.val.Dmm[j] + p.Beta*sn + p.Gamma*sm
	}
	thr, f1, ok := sc.bestF1(scores, e.val.Truth, e.pos)
	if !ok {
		return -1, 0
	}
	return f1, thr
}
