package knn

import (
	"cmp"
	"slices"
)

// Float64 distances between a query row, widened to float64 once, and a float32 row.
//
// The summation order is fixed so that every implementation (this Go code and the assembly in
// kernel_amd64.s) returns bit-identical values, whichever backend ran the selection:
//
//  1. four accumulators of eight lanes: over blocks of 32 terms, term d+8v+l goes to
//     accumulator v, lane l (each lane sums its terms in order);
//  2. lane-wise combine S = (A0+A1) + (A2+A3);
//  3. remaining blocks of 8 terms: term d+l is added to S lane l;
//  4. the lanes are reduced as ((S0+S4)+(S2+S6)) + ((S1+S5)+(S3+S7));
//  5. the last n mod 8 terms are added one by one.
//
// For the dot product each term is a product of two float32 values, which is exact in float64,
// so a fused multiply-add gives the same result as multiply-then-add. For the squared distance
// the difference is rounded, then its square, then the sum (never fused).

// dot64Go is the reference implementation of dot64. next is a prefetch hint (unused here).
func dot64Go(q []float64, r, next []float32) float64 {
	n := min(len(q), len(r))
	q, r = q[:n], r[:n]
	var acc [4][8]float64
	d := 0
	for ; d+32 <= n; d += 32 {
		x, y := q[d:d+32:d+32], r[d:d+32:d+32]
		for v := range 4 {
			for l := range 8 {
				// float64(...) around a product is an explicit rounding: it forbids fusion.
				acc[v][l] += float64(x[8*v+l] * float64(y[8*v+l]))
			}
		}
	}
	var s [8]float64
	for l := range 8 {
		s[l] = (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l])
	}
	for ; d+8 <= n; d += 8 {
		x, y := q[d:d+8:d+8], r[d:d+8:d+8]
		for l := range 8 {
			s[l] += float64(x[l] * float64(y[l]))
		}
	}
	t := ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]))
	for ; d < n; d++ {
		t += float64(q[d] * float64(r[d]))
	}
	return t
}

// sqdist64Go is the reference implementation of sqdist64.
func sqdist64Go(q []float64, r, next []float32) float64 {
	n := min(len(q), len(r))
	q, r = q[:n], r[:n]
	var acc [4][8]float64
	d := 0
	for ; d+32 <= n; d += 32 {
		x, y := q[d:d+32:d+32], r[d:d+32:d+32]
		for v := range 4 {
			for l := range 8 {
				e := x[8*v+l] - float64(y[8*v+l])
				acc[v][l] += float64(e * e)
			}
		}
	}
	var s [8]float64
	for l := range 8 {
		s[l] = (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l])
	}
	for ; d+8 <= n; d += 8 {
		x, y := q[d:d+8:d+8], r[d:d+8:d+8]
		for l := range 8 {
			e := x[l] - float64(y[l])
			s[l] += float64(e * e)
		}
	}
	t := ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]))
	for ; d < n; d++ {
		e := q[d] - float64(r[d])
		t += float64(e * e)
	}
	return t
}

// dot64 and sqdist64 are replaced by assembly where available (same results, see above).
var (
	dot64    = dot64Go
	sqdist64 = sqdist64Go
)

// widen converts a float32 row to float64.
func widen(dst []float64, src []float32) []float64 {
	if cap(dst) < len(src) {
		dst = make([]float64, len(src))
	}
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = float64(v)
	}
	return dst
}

// prefetchAhead is how many rows ahead of the current one the distance kernels prefetch.
const prefetchAhead = 2

// scored is a candidate after float64 re-ranking.
type scored struct {
	dist float64
	idx  int32
	pos  int64
}

// rescorer turns float32 candidates into final neighbour lists, one query row at a time. One per
// goroutine: it memoises the float64 distances of the current query row by reference index
// (a distance computed as one modality's Dist is reused as the other's Cross).
type rescorer struct {
	q, r   *Block
	inv    [2][]int32 // query row -> its index in the candidate sets (nil: the same)
	rorder [2][]int32 // candidate index -> reference row (nil: the same)
	k      int
	metric Metric

	row   int32        // current query row + 1 (0: none)
	stamp [2][]int32   // stamp[m][j] == row: memo[m][j] holds d_m(row, j)
	memo  [2][]float64 //
	qw    [2][]float64 // current query row widened, per modality
	sc    [2][]scored
	sel   selector
}

func newRescorer(q, r *Block, inv, rorder [2][]int32, opt Options) *rescorer {
	n := r.Len()
	return &rescorer{
		q: q, r: r, inv: inv, rorder: rorder, k: opt.K, metric: opt.Metric,
		stamp: [2][]int32{make([]int32, n), make([]int32, n)},
		memo:  [2][]float64{make([]float64, n), make([]float64, n)},
	}
}

// packedRow is query row i's index in modality m's candidate sets.
func (s *rescorer) packedRow(m, i int) int {
	if s.inv[m] == nil {
		return i
	}
	return int(s.inv[m][i])
}

// refRow is the reference row that candidate index idx of modality m stands for.
func (s *rescorer) refRow(m int, idx int32) int32 {
	if s.rorder[m] == nil {
		return idx
	}
	return s.rorder[m][idx]
}

// modality m's rows: 0 image, 1 text.
func rowsOf(b *Block, m int) []float32 {
	if m == 0 {
		return b.Image
	}
	return b.Text
}

// dist returns d_m(current query row, reference row j), memoised; next is a prefetch hint.
func (s *rescorer) dist(m int, j, next int32) float64 {
	if s.stamp[m][j] == s.row {
		return s.memo[m][j]
	}
	dim := s.r.Dim
	rm := rowsOf(s.r, m)
	rj := rm[int(j)*dim : int(j+1)*dim]
	nx := rm[int(next)*dim : int(next+1)*dim]
	var d float64
	if s.metric == Euclidean {
		d = sqdist64(s.qw[m], rj, nx)
	} else {
		d = 1 - dot64(s.qw[m], rj, nx)
	}
	s.stamp[m][j] = s.row
	s.memo[m][j] = d
	return d
}

// lists builds query row i's image and text neighbour lists from its candidate sets, writing
// them into dst[0] (image) and dst[1] (text), which have room for K entries, and returns them.
func (s *rescorer) lists(i int, sets [2]*topSet, dst [2][]Neighbour) (img, txt []Neighbour) {
	q, r, dim := s.q, s.r, s.q.Dim
	s.row = int32(i + 1)
	for m := range 2 {
		s.qw[m] = widen(s.qw[m], rowsOf(q, m)[i*dim:(i+1)*dim])
	}
	var out [2][]Neighbour
	var finals [2][]scored
	for m := range 2 {
		keep := sets[m].final(s.packedRow(m, i), &s.sel)
		// Keep the K best seen so far sorted; a candidate that beats the worst of them is
		// inserted in place. Most candidates lose to the K-th, so this beats sorting all.
		best := s.sc[m][:0]
		for n, c := range keep {
			idx := s.refRow(m, c.idx)
			next := idx // prefetch two candidates ahead: the rows come from memory
			if n+prefetchAhead < len(keep) {
				next = s.refRow(m, keep[n+prefetchAhead].idx)
			}
			x := scored{s.dist(m, idx, next), idx, r.Pos[idx]}
			if len(best) == s.k && !lessScored(x, best[s.k-1]) {
				continue
			}
			at, _ := slices.BinarySearchFunc(best, x, func(e, t scored) int {
				if lessScored(e, t) {
					return -1
				}
				return 1
			})
			if len(best) < s.k {
				best = append(best, scored{})
			}
			copy(best[at+1:], best[at:len(best)-1])
			best[at] = x
		}
		finals[m] = best
		s.sc[m] = best
	}
	for m := range 2 {
		sc := finals[m]
		res := dst[m][:len(sc)]
		for n, x := range sc {
			next := x.idx
			if n+prefetchAhead < len(sc) {
				next = sc[n+prefetchAhead].idx
			}
			j := int(x.idx)
			nb := Neighbour{Pos: x.pos, Dist: x.dist, Cross: s.dist(1-m, x.idx, next)}
			if r.ID != nil {
				nb.ID = r.ID[j]
			}
			if r.Dmm != nil {
				nb.Dmm = r.Dmm[j]
			}
			if q.Caption != nil && r.Caption != nil {
				nb.SameCaption = q.Caption[i] == r.Caption[j]
			}
			res[n] = nb
		}
		out[m] = res
	}
	return out[0], out[1]
}

// lessScored orders re-ranked candidates by (distance, NaN last; position; index).
func lessScored(x, y scored) bool {
	if c := cmpDist(x.dist, y.dist); c != 0 {
		return c < 0
	}
	if x.pos != y.pos {
		return x.pos < y.pos
	}
	return x.idx < y.idx
}

// cmpDist orders distances ascending with NaN last (cmp.Compare would put NaN first).
func cmpDist(x, y float64) int {
	xn, yn := x != x, y != y
	switch {
	case xn && yn:
		return 0
	case xn:
		return 1
	case yn:
		return -1
	}
	return cmp.Compare(x, y)
}
