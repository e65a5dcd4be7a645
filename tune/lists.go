package tune

import (
	"fmt"
	"math"

	"github.com/lemon-curation/lemon/score"
)

// Lists are the saved neighbour lists of a set of rows (what `lemon score
// --save-neighbour-lists` writes to OUT/neighbours/), in the distance the run searched with.
// Every row has exactly K neighbours per modality, nearest first; the arrays are row-major with
// stride K.
type Lists struct {
	Distance score.Distance // the distance the run computed Dist, Cross and Dmm in
	K        int            // neighbours per row and modality (k_max)

	IDs   []string
	Dmm   []float64 // each row's own d_mm
	Truth []bool    // is the row a label error (from the truth column)

	Image Side // searched by image: Cross is the caption distance
	Text  Side // searched by caption: Cross is the image distance
}

// Side is one modality's neighbours of every row.
type Side struct {
	Dist  []float64 // distance in the searched modality
	Cross []float64 // distance in the other modality
	Dmm   []float64 // the neighbour's own d_mm
	Same  []bool    // neighbour's caption equals the row's
}

// NewLists returns empty lists of k neighbours per row, in distance d.
func NewLists(d score.Distance, k int) *Lists { return &Lists{Distance: d, K: k} }

// Len is the number of rows.
func (l *Lists) Len() int { return len(l.Dmm) }

// Append adds one row. Both lists must hold exactly l.K neighbours, nearest first.
func (l *Lists) Append(id string, dmm float64, truth bool, image, text []score.Neighbour) error {
	if len(image) != l.K || len(text) != l.K {
		return fmt.Errorf("row %q has %d image and %d text neighbours, want %d of each", id, len(image), len(text), l.K)
	}
	l.IDs = append(l.IDs, id)
	l.Dmm = append(l.Dmm, dmm)
	l.Truth = append(l.Truth, truth)
	l.Image.add(image)
	l.Text.add(text)
	return nil
}

func (s *Side) add(ns []score.Neighbour) {
	for _, n := range ns {
		s.Dist = append(s.Dist, n.Dist)
		s.Cross = append(s.Cross, n.Cross)
		s.Dmm = append(s.Dmm, n.Dmm)
		s.Same = append(s.Same, n.SameCaption)
	}
}

// appendLists appends every row of m to l (same distance and K).
func (l *Lists) appendLists(m *Lists) {
	l.IDs = append(l.IDs, m.IDs...)
	l.Dmm = append(l.Dmm, m.Dmm...)
	l.Truth = append(l.Truth, m.Truth...)
	for _, p := range []struct{ dst, src *Side }{{&l.Image, &m.Image}, {&l.Text, &m.Text}} {
		p.dst.Dist = append(p.dst.Dist, p.src.Dist...)
		p.dst.Cross = append(p.dst.Cross, p.src.Cross...)
		p.dst.Dmm = append(p.dst.Dmm, p.src.Dmm...)
		p.dst.Same = append(p.dst.Same, p.src.Same...)
	}
}

// Neighbours returns row i's first k neighbours per modality, converted to distance d, as
// score.Score takes them.
func (l *Lists) Neighbours(i, k int, d score.Distance) (dmm float64, image, text []score.Neighbour) {
	f := scale(l.Distance, d)
	get := func(s *Side) []score.Neighbour {
		out := make([]score.Neighbour, k)
		for j := range out {
			x := i*l.K + j
			out[j] = score.Neighbour{Dist: f * s.Dist[x], Cross: f * s.Cross[x], Dmm: f * s.Dmm[x], SameCaption: s.Same[x]}
		}
		return out
	}
	return f * l.Dmm[i], get(&l.Image), get(&l.Text)
}

// scale converts a distance computed as from into one computed as to. For unit vectors
// ||a-b||^2 = 2*(1 - <a,b>) exactly, so the conversion is a factor of 2 either way; and since
// multiplying by 2 or 1/2 is exact in floating point, converting loses nothing.
func scale(from, to score.Distance) float64 {
	switch {
	case from == to:
		return 1
	case from == score.Cosine:
		return 2
	default:
		return 0.5
	}
}

// checkParams says whether p can be computed from lists of l.K neighbours.
func (l *Lists) checkParams(p score.Params) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if p.K > l.K {
		return fmt.Errorf("k=%d needs %d neighbours per row, but the saved lists hold %d (rerun lemon score --save-neighbour-lists with --k %d or more)", p.K, p.K, l.K, p.K)
	}
	return nil
}

// Score recomputes every row's LEMoN score for p from the lists, with no new search: the first
// p.K neighbours of a list of K are the k nearest (ties are broken by reference position in the
// search, so a prefix is exactly the shorter search's answer). The arithmetic is score.Score's,
// operation for operation, so in the run's own distance the results are bit-identical.
func (l *Lists) Score(p score.Params) ([]score.Result, error) {
	if err := l.checkParams(p); err != nil {
		return nil, err
	}
	w := newTerms(l, p.Distance, p.DiscreteText)
	out := make([]score.Result, l.Len())
	for i := range out {
		sn, sm := w.row(i, p.K, p.Tau1n, p.Tau2n, p.Tau1m, p.Tau2m)
		dmm := w.f * l.Dmm[i]
		out[i] = score.Result{Dmm: dmm, Sn: sn, Sm: sm, Score: dmm + p.Beta*sn + p.Gamma*sm}
	}
	return out, nil
}

// terms computes s_n and s_m from the lists in one target distance.
type terms struct {
	l        *Lists
	d        score.Distance
	f        float64 // conversion factor from the lists' distance to d
	discrete bool
}

func newTerms(l *Lists, d score.Distance, discrete bool) *terms {
	return &terms{l: l, d: d, f: scale(l.Distance, d), discrete: discrete}
}

// term is one neighbour's contribution to a sum, written exactly as score.Score writes it.
func (t *terms) term(s *Side, x int, tau1, tau2 float64, discrete bool) float64 {
	dy := t.f * s.Cross[x]
	if discrete {
		dy = 1
		if s.Same[x] {
			dy = 0
		}
	}
	return dy * score.NeighbourWeight(t.d, t.f*s.Dist[x], tau1) * math.Exp(-tau2*(t.f*s.Dmm[x]))
}

// row returns s_n and s_m of row i with k neighbours.
func (t *terms) row(i, k int, tau1n, tau2n, tau1m, tau2m float64) (sn, sm float64) {
	base := i * t.l.K
	for j := 0; j < k; j++ {
		sn += t.term(&t.l.Image, base+j, tau1n, tau2n, t.discrete)
	}
	for j := 0; j < k; j++ {
		sm += t.term(&t.l.Text, base+j, tau1m, tau2m, false)
	}
	kf := float64(k)
	return sn / kf, sm / kf
}

// rowFused is row with one exponential per neighbour instead of two:
// w1(d; tau1) * exp(-tau2*dmm) = exp(tau1*(1-d) - tau2*dmm) for cosine (exp(-tau1*d - tau2*dmm)
// for euclidean). Equal to row up to rounding (~1e-16 relative) and twice as fast, for the
// refinement, whose thousands of evaluations each recompute every term; what is reported is
// always re-scored with the exact form.
func (t *terms) rowFused(i, k int, tau1n, tau2n, tau1m, tau2m float64) (sn, sm float64) {
	base := i * t.l.K
	f := t.f
	off1n, off1m := 0.0, 0.0
	if t.d == score.Cosine {
		off1n, off1m = tau1n, tau1m // tau*(1-d) = tau - tau*d
	}
	img, txt := &t.l.Image, &t.l.Text
	for j := base; j < base+k; j++ {
		dy := f * img.Cross[j]
		if t.discrete {
			dy = 1
			if img.Same[j] {
				dy = 0
			}
		}
		sn += dy * math.Exp(off1n-tau1n*(f*img.Dist[j])-tau2n*(f*img.Dmm[j]))
	}
	for j := base; j < base+k; j++ {
		sm += f * txt.Cross[j] * math.Exp(off1m-tau1m*(f*txt.Dist[j])-tau2m*(f*txt.Dmm[j]))
	}
	kf := float64(k)
	return sn / kf, sm / kf
}

// prefix computes, in one pass over each row's lists, s_n and s_m for every k in ks (ascending,
// each <= K): the running sum after k terms, divided by k. The running sum adds the same terms
// in the same order as score.Score's loop, so each value is bit-identical to a separate
// computation at that k. sn[a][i] and sm[a][i] are row i's terms at ks[a].
func (t *terms) prefix(ks []int, tau1n, tau2n, tau1m, tau2m float64, sn, sm [][]float64) {
	kmax := ks[len(ks)-1]
	for i := 0; i < t.l.Len(); i++ {
		base := i * t.l.K
		for m, s := range []*Side{&t.l.Image, &t.l.Text} {
			tau1, tau2, discrete, dst := tau1n, tau2n, t.discrete, sn
			if m == 1 {
				tau1, tau2, discrete, dst = tau1m, tau2m, false, sm
			}
			var sum float64
			a := 0
			for j := 0; j < kmax; j++ {
				sum += t.term(s, base+j, tau1, tau2, discrete)
				if j+1 == ks[a] {
					dst[a][i] = sum / float64(ks[a])
					a++
				}
			}
		}
	}
}
