// Package score is the LEMoN label-error score (spec/lemon.md): distances, the neighbour terms
// s_n and s_m, their weights, and the fixed defaults. It is pure arithmetic: no Beam, no I/O.
package score

import (
	"fmt"
	"math"
)

// Distance names how two unit vectors are compared.
type Distance string

const (
	Cosine    Distance = "cosine"    // 1 - <a, b>
	Euclidean Distance = "euclidean" // ||a - b||^2, squared
)

// Params are LEMoN's hyperparameters.
type Params struct {
	K            int      `yaml:"k" json:"k"`
	Distance     Distance `yaml:"distance" json:"distance"`
	DiscreteText bool     `yaml:"discrete_text" json:"discrete_text"`
	Beta         float64  `yaml:"beta" json:"beta"`
	Gamma        float64  `yaml:"gamma" json:"gamma"`
	Tau1n        float64  `yaml:"tau1n" json:"tau1n"`
	Tau2n        float64  `yaml:"tau2n" json:"tau2n"`
	Tau1m        float64  `yaml:"tau1m" json:"tau1m"`
	Tau2m        float64  `yaml:"tau2m" json:"tau2m"`
}

// Fixed returns LEMoN_fix, the published defaults that need no labels.
func Fixed() Params {
	return Params{K: 30, Distance: Cosine, Beta: 5, Gamma: 5, Tau1n: 0.1, Tau2n: 5, Tau1m: 0.1, Tau2m: 5}
}

// Validate reports the first parameter that makes no sense.
func (p Params) Validate() error {
	if p.K < 1 {
		return fmt.Errorf("k must be at least 1, got %d", p.K)
	}
	if p.Distance != Cosine && p.Distance != Euclidean {
		return fmt.Errorf("distance must be cosine or euclidean, got %q", p.Distance)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"beta", p.Beta}, {"gamma", p.Gamma}, {"tau1n", p.Tau1n}, {"tau2n", p.Tau2n}, {"tau1m", p.Tau1m}, {"tau2m", p.Tau2m}} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return fmt.Errorf("%s must be a finite number, got %v", f.name, f.v)
		}
	}
	return nil
}

// Dist is d(a, b) between two unit vectors, in float64.
func Dist(d Distance, a, b []float32) float64 {
	if d == Euclidean {
		var s float64
		for i := range a {
			x := float64(a[i]) - float64(b[i])
			s += x * x
		}
		return s
	}
	var dot float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
	}
	return 1 - dot
}

// NeighbourWeight is w1, the weight of a neighbour at distance d in the searched modality, as the
// authors' code computes it (spec: for cosine exp(tau*(1-d)), for euclidean exp(-tau*d)).
func NeighbourWeight(d Distance, dist, tau float64) float64 {
	if d == Euclidean {
		return math.Exp(-tau * dist)
	}
	return math.Exp(tau * (1 - dist))
}

// Neighbour is what the score needs of one neighbour j of row i.
type Neighbour struct {
	Dist        float64 // distance from i to j in the modality that was searched
	Cross       float64 // distance from i to j in the other modality
	Dmm         float64 // d_mm(j), the neighbour's own image-caption distance
	SameCaption bool    // caption strings equal (discrete-text mode)
}

// Result is one row's score and its parts.
type Result struct {
	Dmm, Sn, Sm, Score float64
}

// Score computes LEMoN for one row from its d_mm, its image-space neighbours (searched by image,
// Cross = caption distance) and its text-space neighbours (searched by caption, Cross = image
// distance). The sums divide by k, not by the weights, as the spec says; lists shorter than k
// still divide by k.
func Score(p Params, dmm float64, imageNbrs, textNbrs []Neighbour) Result {
	k := float64(p.K)
	var sn, sm float64
	for _, n := range imageNbrs {
		dy := n.Cross
		if p.DiscreteText {
			dy = 1
			if n.SameCaption {
				dy = 0
			}
		}
		sn += dy * NeighbourWeight(p.Distance, n.Dist, p.Tau1n) * math.Exp(-p.Tau2n*n.Dmm)
	}
	for _, n := range textNbrs {
		sm += n.Cross * NeighbourWeight(p.Distance, n.Dist, p.Tau1m) * math.Exp(-p.Tau2m*n.Dmm)
	}
	sn /= k
	sm /= k
	return Result{Dmm: dmm, Sn: sn, Sm: sm, Score: dmm + p.Beta*sn + p.Gamma*sm}
}

// CosineSimilarity is the cosine similarity of a and b, summed in float64; 0 when either is zero.
func CosineSimilarity(a, b []float32) float64 {
	var ab, aa, bb float64
	for i := range a {
		ab += float64(a[i]) * float64(b[i])
		aa += float64(a[i]) * float64(a[i])
		bb += float64(b[i]) * float64(b[i])
	}
	if aa == 0 || bb == 0 {
		return 0
	}
	return ab / math.Sqrt(aa*bb)
}

// Normalize scales v to unit length in place, computing the norm in float64. It returns an
// error for vectors that cannot be scored: zero, NaN or Inf.
func Normalize(v []float32) error {
	var s float64
	for _, x := range v {
		f := float64(x)
		if math.IsNaN(f) {
			return fmt.Errorf("vector contains NaN")
		}
		if math.IsInf(f, 0) {
			return fmt.Errorf("vector contains Inf")
		}
		s += f * f
	}
	if s == 0 {
		return fmt.Errorf("vector is all zeros")
	}
	if math.IsInf(s, 0) {
		return fmt.Errorf("vector norm overflows")
	}
	n := math.Sqrt(s)
	for i, x := range v {
		v[i] = float32(float64(x) / n)
	}
	return nil
}
