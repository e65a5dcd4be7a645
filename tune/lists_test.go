package tune

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/lemon-curation/lemon/internal/golden"
	"github.com/lemon-curation/lemon/score"
)

// handLists builds n rows of k hand-made neighbours each, with some exact ties and captions
// shared, in distance d.
func handLists(t *testing.T, rng *rand.Rand, d score.Distance, n, k int) (*Lists, [][]score.Neighbour, [][]score.Neighbour) {
	t.Helper()
	l := NewLists(d, k)
	imgs, txts := make([][]score.Neighbour, n), make([][]score.Neighbour, n)
	mk := func() []score.Neighbour {
		ns := make([]score.Neighbour, k)
		for j := range ns {
			ns[j] = score.Neighbour{Dist: rng.Float64(), Cross: rng.Float64() * 1.3, Dmm: 0.5 + 0.4*rng.Float64(), SameCaption: rng.IntN(3) == 0}
		}
		if k > 2 {
			ns[1].Dist = ns[2].Dist // a tie
		}
		sort.SliceStable(ns, func(a, b int) bool { return ns[a].Dist < ns[b].Dist })
		return ns
	}
	for i := 0; i < n; i++ {
		imgs[i], txts[i] = mk(), mk()
		if err := l.Append(string(rune('a'+i%26)), 0.6+0.3*rng.Float64(), i%3 == 0, imgs[i], txts[i]); err != nil {
			t.Fatal(err)
		}
	}
	return l, imgs, txts
}

// Test (1): re-scoring from lists is score.Score, bit for bit, for several parameter sets and
// every k up to the lists' length; the one-pass running sums (prefix) agree too.
func TestScoreMatchesScorePackage(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, d := range []score.Distance{score.Cosine, score.Euclidean} {
		const n, kmax = 40, 12
		l, imgs, txts := handLists(t, rng, d, n, kmax)
		params := []score.Params{
			score.Fixed(),
			{Beta: 3.5, Gamma: 1.25, Tau1n: 0.7, Tau2n: 2, Tau1m: 4, Tau2m: 0.5},
			{Beta: 0, Gamma: 0},
			{Beta: 100, Gamma: 5, Tau1n: 10, Tau2n: 10, Tau1m: 0, Tau2m: 1, DiscreteText: true},
		}
		for _, p := range params {
			for _, k := range []int{1, 2, 5, kmax} {
				p.K, p.Distance = k, d
				got, err := l.Score(p)
				if err != nil {
					t.Fatal(err)
				}
				for i := range got {
					want := score.Score(p, l.Dmm[i], imgs[i][:k], txts[i][:k])
					if got[i] != want {
						t.Fatalf("%s %+v row %d: got %+v, score.Score gives %+v", d, p, i, got[i], want)
					}
				}
			}
			// Running sums at several k in one pass equal separate computations.
			ks := []int{1, 2, 5, kmax}
			sn, sm := make([][]float64, len(ks)), make([][]float64, len(ks))
			for a := range ks {
				sn[a], sm[a] = make([]float64, n), make([]float64, n)
			}
			tm := newTerms(l, d, p.DiscreteText)
			tm.prefix(ks, p.Tau1n, p.Tau2n, p.Tau1m, p.Tau2m, sn, sm)
			for a, k := range ks {
				for i := 0; i < n; i++ {
					want := score.Score(score.Params{K: k, Distance: d, DiscreteText: p.DiscreteText, Tau1n: p.Tau1n, Tau2n: p.Tau2n, Tau1m: p.Tau1m, Tau2m: p.Tau2m}, l.Dmm[i], imgs[i][:k], txts[i][:k])
					if sn[a][i] != want.Sn || sm[a][i] != want.Sm {
						t.Fatalf("prefix k=%d row %d: (%v, %v), want (%v, %v)", k, i, sn[a][i], sm[a][i], want.Sn, want.Sm)
					}
				}
			}
		}
		// The refinement's fused exponential agrees with the exact form up to rounding.
		for _, p := range params {
			for _, td := range []score.Distance{score.Cosine, score.Euclidean} {
				tm := newTerms(l, td, p.DiscreteText)
				for i := 0; i < n; i++ {
					sn, sm := tm.row(i, 7, p.Tau1n, p.Tau2n, p.Tau1m, p.Tau2m)
					fn, fm := tm.rowFused(i, 7, p.Tau1n, p.Tau2n, p.Tau1m, p.Tau2m)
					if math.Abs(sn-fn) > 1e-12*math.Abs(sn) || math.Abs(sm-fm) > 1e-12*math.Abs(sm) {
						t.Fatalf("fused %s %+v row %d: (%v, %v), exact (%v, %v)", td, p, i, fn, fm, sn, sm)
					}
				}
			}
		}
		if _, err := l.Score(score.Params{K: kmax + 1, Distance: d}); err == nil {
			t.Errorf("k above the lists' length: no error")
		}
	}
}

// unitVector returns a random vector of norm exactly 1: its components are multiples of 2^-12
// whose squares sum to 1 exactly (random integers, the last one chosen to complete the sum when
// the remainder is a perfect square). Float32-normalised vectors are unit only to ~6e-8, which
// is also how far 2*(1-cos) and ||a-b||^2 then differ; exact ones test the identity itself.
func unitVector(rng *rand.Rand, dim int) []float32 {
	const one = 1 << 12
	for {
		a := make([]int64, dim)
		var sum int64
		for i := 0; i < dim-1; i++ {
			a[i] = int64(rng.NormFloat64() * one / math.Sqrt(float64(dim)))
			sum += a[i] * a[i]
		}
		r := int64(one*one) - sum
		if r < 0 {
			continue
		}
		last := int64(math.Round(math.Sqrt(float64(r))))
		if last*last != r {
			continue
		}
		a[dim-1] = last
		if rng.IntN(2) == 0 {
			a[dim-1] = -last
		}
		rng.Shuffle(dim, func(i, j int) { a[i], a[j] = a[j], a[i] })
		v := make([]float32, dim)
		for i, x := range a {
			v[i] = float32(x) / one
		}
		return v
	}
}

// bruteLists finds every row's k nearest image and text neighbours (self excluded, ties by
// position) in distance d and returns the lists and, per row, the neighbours as score.Score
// takes them computed in distance want.
func bruteLists(img, txt [][]float32, caps []string, k int, d, want score.Distance) (*Lists, [][]score.Neighbour, [][]score.Neighbour, []float64) {
	n := len(img)
	dmm := func(dist score.Distance, i int) float64 { return score.Dist(dist, img[i], txt[i]) }
	l := NewLists(d, k)
	wi, wt, wd := make([][]score.Neighbour, n), make([][]score.Neighbour, n), make([]float64, n)
	for i := 0; i < n; i++ {
		var sides [2][]score.Neighbour
		var direct [2][]score.Neighbour
		for m, pair := range [][2][][]float32{{img, txt}, {txt, img}} {
			search, other := pair[0], pair[1]
			idx := make([]int, 0, n-1)
			for j := 0; j < n; j++ {
				if j != i {
					idx = append(idx, j)
				}
			}
			sort.SliceStable(idx, func(a, b int) bool {
				return score.Dist(d, search[i], search[idx[a]]) < score.Dist(d, search[i], search[idx[b]])
			})
			for _, j := range idx[:k] {
				sides[m] = append(sides[m], score.Neighbour{Dist: score.Dist(d, search[i], search[j]), Cross: score.Dist(d, other[i], other[j]), Dmm: dmm(d, j), SameCaption: caps[i] == caps[j]})
				direct[m] = append(direct[m], score.Neighbour{Dist: score.Dist(want, search[i], search[j]), Cross: score.Dist(want, other[i], other[j]), Dmm: dmm(want, j), SameCaption: caps[i] == caps[j]})
			}
		}
		if err := l.Append(string(rune(i)), dmm(d, i), false, sides[0], sides[1]); err != nil {
			panic(err)
		}
		wi[i], wt[i], wd[i] = direct[0], direct[1], dmm(want, i)
	}
	return l, wi, wt, wd
}

// Test (2): lists searched and stored in one distance, converted to the other, score as the
// other distance computed directly on the unit vectors does (within 1e-9), both ways.
func TestDistanceConversion(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const n, dim, k = 60, 16, 8
	img, txt, caps := make([][]float32, n), make([][]float32, n), make([]string, n)
	for i := range img {
		img[i], txt[i] = unitVector(rng, dim), unitVector(rng, dim)
		caps[i] = string(rune('a' + rng.IntN(5)))
	}
	for _, c := range []struct{ stored, want score.Distance }{{score.Cosine, score.Euclidean}, {score.Euclidean, score.Cosine}, {score.Cosine, score.Cosine}} {
		l, wi, wt, wd := bruteLists(img, txt, caps, k, c.stored, c.want)
		for _, p := range []score.Params{score.Fixed(), {Beta: 20, Gamma: 35, Tau1n: 5, Tau2n: 1, Tau1m: 10, Tau2m: 0}, {Beta: 7, Gamma: 3, Tau1n: 1, Tau2n: 5, Tau1m: 1, Tau2m: 5, DiscreteText: true}} {
			for _, kk := range []int{1, 5, k} {
				p.K, p.Distance = kk, c.want
				got, err := l.Score(p)
				if err != nil {
					t.Fatal(err)
				}
				for i := range got {
					want := score.Score(p, wd[i], wi[i][:kk], wt[i][:kk])
					for _, pair := range [][2]float64{{got[i].Dmm, want.Dmm}, {got[i].Sn, want.Sn}, {got[i].Sm, want.Sm}, {got[i].Score, want.Score}} {
						if math.Abs(pair[0]-pair[1]) > 1e-9 {
							t.Fatalf("%s lists scored as %s, %+v, row %d: got %+v, direct %+v", c.stored, c.want, p, i, got[i], want)
						}
					}
				}
			}
		}
	}
}

// The golden cases' expected scores come out of lists built from their expected neighbours, in
// the case's own distance and converted from the other one.
func TestGoldenCases(t *testing.T) {
	cases, err := golden.All()
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) == 0 {
		t.Skip("no golden cases")
	}
	for _, c := range cases {
		idx := map[string]int{}
		img, txt := make([][]float32, len(c.IDs)), make([][]float32, len(c.IDs))
		for i, id := range c.IDs {
			idx[id] = i
			img[i] = append([]float32(nil), c.ImageEmbedding[i]...)
			txt[i] = append([]float32(nil), c.TextEmbedding[i]...)
			if score.Normalize(img[i]) != nil || score.Normalize(txt[i]) != nil {
				t.Fatalf("%s: bad embedding", c.Name)
			}
		}
		p := c.Params
		for _, stored := range []score.Distance{score.Cosine, score.Euclidean} {
			l := NewLists(stored, p.K)
			for i := range c.IDs {
				var sides [2][]score.Neighbour
				for m, ids := range [][]string{c.ExpectedNeighbours.Image[i], c.ExpectedNeighbours.Text[i]} {
					search, other := img, txt
					if m == 1 {
						search, other = txt, img
					}
					for _, id := range ids {
						j := idx[id]
						sides[m] = append(sides[m], score.Neighbour{Dist: score.Dist(stored, search[i], search[j]), Cross: score.Dist(stored, other[i], other[j]),
							Dmm: score.Dist(stored, img[j], txt[j]), SameCaption: c.Captions[i] == c.Captions[j]})
					}
				}
				if err := l.Append(c.IDs[i], score.Dist(stored, img[i], txt[i]), false, sides[0], sides[1]); err != nil {
					t.Fatalf("%s: %v", c.Name, err)
				}
			}
			got, err := l.Score(p)
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range got {
				if math.Abs(r.Score-c.Expected.Score[i]) > 1e-4 || math.Abs(r.Sn-c.Expected.Sn[i]) > 1e-4 || math.Abs(r.Sm-c.Expected.Sm[i]) > 1e-4 {
					t.Fatalf("%s (lists in %s): row %d: got %+v, want score %v s_n %v s_m %v", c.Name, stored, i, r, c.Expected.Score[i], c.Expected.Sn[i], c.Expected.Sm[i])
				}
			}
		}
	}
}
