package score_test

import (
	"cmp"
	"math"
	"slices"
	"sort"
	"testing"

	"github.com/lemon-curation/lemon/internal/golden"
	"github.com/lemon-curation/lemon/score"
)

// TestGoldenBruteForce checks the score arithmetic on every golden case, with neighbours found
// by a plain float64 scan: this pins the formula; the CLI tests pin the whole pipeline.
func TestGoldenBruteForce(t *testing.T) {
	cases, err := golden.All()
	if err != nil || len(cases) == 0 {
		t.Fatalf("loading golden cases: %v (found %d)", err, len(cases))
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			rows := c.Rows()
			for _, r := range rows {
				if err := score.Normalize(r.Image); err != nil {
					t.Fatal(err)
				}
				if err := score.Normalize(r.Text); err != nil {
					t.Fatal(err)
				}
			}
			ref := c.ReferenceRows()
			if ref == nil {
				ref = rows
			}
			p := c.Params
			dmm := func(i int, img, txt []float32) float64 { return score.Dist(p.Distance, img, txt) }
			for i, q := range rows {
				type cand struct {
					pos int
					d   float64
					nbr score.Neighbour
					id  string
				}
				search := func(image bool) ([]score.Neighbour, []string) {
					var cs []cand
					for j, r := range ref {
						if r.ID == q.ID {
							continue
						}
						n := score.Neighbour{Dmm: dmm(j, r.Image, r.Text), SameCaption: q.Caption == r.Caption}
						if image {
							n.Dist, n.Cross = score.Dist(p.Distance, q.Image, r.Image), score.Dist(p.Distance, q.Text, r.Text)
						} else {
							n.Dist, n.Cross = score.Dist(p.Distance, q.Text, r.Text), score.Dist(p.Distance, q.Image, r.Image)
						}
						cs = append(cs, cand{j, n.Dist, n, r.ID})
					}
					sort.SliceStable(cs, func(a, b int) bool { return cs[a].d < cs[b].d })
					var ns []score.Neighbour
					var ids []string
					for _, c := range cs[:p.K] {
						ns = append(ns, c.nbr)
						ids = append(ids, c.id)
					}
					return ns, ids
				}
				img, imgIDs := search(true)
				txt, txtIDs := search(false)
				got := score.Score(p, dmm(i, q.Image, q.Text), img, txt)
				want := []float64{c.Expected.Dmm[i], c.Expected.Sn[i], c.Expected.Sm[i], c.Expected.Score[i]}
				for k, g := range []float64{got.Dmm, got.Sn, got.Sm, got.Score} {
					if math.Abs(g-want[k]) > 1e-4 {
						t.Fatalf("row %s: component %d = %v, want %v", q.ID, k, g, want[k])
					}
				}
				if !equal(imgIDs, c.ExpectedNeighbours.Image[i]) || !equal(txtIDs, c.ExpectedNeighbours.Text[i]) {
					t.Fatalf("row %s: neighbours differ", q.ID)
				}
			}
		})
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestNormalizeRejectsBadVectors(t *testing.T) {
	for name, v := range map[string][]float32{
		"zero": {0, 0, 0}, "nan": {1, float32(math.NaN()), 0}, "inf": {float32(math.Inf(1)), 0, 0},
	} {
		if err := score.Normalize(v); err == nil {
			t.Errorf("%s vector: no error", name)
		}
	}
	v := []float32{3, 4}
	if err := score.Normalize(v); err != nil || math.Abs(float64(v[0])-0.6) > 1e-7 {
		t.Errorf("Normalize(3,4) = %v, %v", v, err)
	}
}

func TestRadixSelectionFindsRthLargest(t *testing.T) {
	// Some values share their high 32 bits, so the second pass decides between them. Negative
	// zero (a real one: the constant -0.0 is +0 in Go) ranks just below +0, as OrderedKey
	// orders them.
	vals := []float64{0.5, -2, 3.25, 3.25, 1e-9, 7, math.Copysign(0, -1), 0, 2.5, 100, 1, math.Nextafter(1, 2), math.Nextafter(1, 0), 1 + 1e-12, -1e-300}
	for r := int64(1); r <= int64(len(vals)); r++ {
		sel := score.Selection{Rank: r}
		for pass := 0; pass < score.RadixDigits; pass++ {
			// Two partial histograms, merged, as the runner's combiner builds them.
			var ds [2][]uint32
			for i, v := range vals {
				k := score.OrderedKey(v)
				if sel.Matches(k) {
					ds[i%2] = append(ds[i%2], sel.Digit(k))
				}
			}
			hist := score.MergeHistograms(score.HistogramOf(ds[0]), score.HistogramOf(ds[1]))
			sel = sel.Next(hist)
		}
		sorted := append([]float64(nil), vals...)
		slices.SortFunc(sorted, func(a, b float64) int { return cmp.Compare(score.OrderedKey(b), score.OrderedKey(a)) })
		// Bits, not ==: -0 == 0 would let the wrong zero through.
		if got := score.FromOrderedKey(sel.Prefix); math.Float64bits(got) != math.Float64bits(sorted[r-1]) {
			t.Errorf("rank %d: got %v (sign bit %v), want %v (sign bit %v)", r, got, math.Signbit(got), sorted[r-1], math.Signbit(sorted[r-1]))
		}
	}
	if score.RejectCount(0.1, 25) != 3 || score.RejectCount(0, 10) != 0 || score.RejectCount(1, 10) != 10 {
		t.Error("RejectCount rounding")
	}
}
