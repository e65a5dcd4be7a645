package knn

import (
	"cmp"
	"math"
	"math/bits"
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

// prefetchAhead is how many distinct candidate rows ahead of the current one re-ranking
// prefetches (a row's pairs are computed together, see eachPair).
const prefetchAhead = 4

// scored is a candidate after float64 re-ranking.
type scored struct {
	dist float64
	idx  int32
	pos  int64
}

// rescorer re-ranks the candidates of a chunk of query rows at a time, in float64. One per
// goroutine.
//
// Within a chunk, each modality's candidate pairs are computed in reference-row order, so a
// candidate row is read from memory once for all the chunk's query rows that need it: in
// cluster order, neighbouring query rows share most of their candidates, and the chunk's
// widened query rows stay in cache. Which pairs are computed, and how each distance is
// computed, do not depend on the chunking, so neither do the results.
type rescorer struct {
	q, r   *Block
	inv    [2][]int32 // query row -> its index in the candidate sets (nil: the same)
	rorder [2][]int32 // candidate index -> reference row (nil: the same)
	k      int
	metric Metric
	sel    selector

	qw    []float64   // the chunk's query rows in one modality, widened: slot s at qw[s*dim:]
	pairs []uint64    // reference row << 32 | slot, sorted
	runs  []int32     // the distinct reference rows of pairs, in order
	tmp   []uint64    // scratch for sorting pairs
	cands [2][]scored // per modality, each slot's re-scored candidates, sorted by row
	start [2][]int32  // slot s's candidates are cands[m][start[m][s]:start[m][s+1]]
	fill  []int32     // scratch: next free place per slot
	top   []scored    // scratch: the K best of one slot
	keys  []float64   // scratch: one slot's distances
	cross [2][]uint64 // final neighbours still needing their distance in modality 0 / 1: reference row << 32 | crossAt
}

// crossAt is where a final neighbour's cross distance goes: entry n of slot's list in modality m.
func (s *rescorer) crossAt(slot, m, n int) uint64 { return uint64((slot*2+m)*s.k + n) }

func newRescorer(q, r *Block, inv, rorder [2][]int32, opt Options) *rescorer {
	return &rescorer{q: q, r: r, inv: inv, rorder: rorder, k: opt.K, metric: opt.Metric}
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

// widenChunk widens the chunk's query rows in modality m into s.qw.
func (s *rescorer) widenChunk(m int, rows []int) {
	dim := s.q.Dim
	if cap(s.qw) < len(rows)*dim {
		s.qw = make([]float64, len(rows)*dim)
	}
	s.qw = s.qw[:len(rows)*dim]
	src := rowsOf(s.q, m)
	for slot, i := range rows {
		widen(s.qw[slot*dim:(slot+1)*dim], src[i*dim:(i+1)*dim])
	}
}

// dist is d_m(query slot, reference row j); next is a reference row to prefetch.
func (s *rescorer) dist(m int, slot int32, j, next int32) float64 {
	dim := s.r.Dim
	rm := rowsOf(s.r, m)
	q := s.qw[int(slot)*dim : int(slot+1)*dim]
	rj := rm[int(j)*dim : int(j+1)*dim]
	nx := rm[int(next)*dim : int(next+1)*dim]
	if s.metric == Euclidean {
		return sqdist64(q, rj, nx)
	}
	return 1 - dot64(q, rj, nx)
}

// chunk re-ranks the query rows rows (indices into s.q), writing row rows[n]'s image and text
// lists into dst[n][0] and dst[n][1] (room for K entries each) and cutting them to length.
func (s *rescorer) chunk(rows []int, sets [2]*topSet, dst [][2][]Neighbour) {
	for m := range 2 {
		s.rescore(m, rows, sets[m])
	}
	q, r := s.q, s.r
	s.cross[0], s.cross[1] = s.cross[0][:0], s.cross[1][:0]
	byRow := func(e scored, t int32) int { return cmp.Compare(e.idx, t) }
	for slot, i := range rows {
		for m := range 2 {
			best := s.best(m, slot)
			res := dst[slot][m][:len(best)]
			dst[slot][m] = res
			other := s.cands[1-m][s.start[1-m][slot]:s.start[1-m][slot+1]]
			for n, x := range best {
				j := int(x.idx)
				nb := Neighbour{Pos: x.pos, Dist: x.dist}
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
				// The distance in the other modality is known when j is a candidate there too.
				if at, ok := slices.BinarySearchFunc(other, x.idx, byRow); ok {
					res[n].Cross = other[at].dist
				} else {
					s.cross[1-m] = append(s.cross[1-m], uint64(x.idx)<<32|s.crossAt(slot, m, n))
				}
			}
		}
	}
	for t := range 2 {
		cs := s.cross[t]
		if len(cs) == 0 {
			continue
		}
		cs, s.tmp = sortByRow(cs, s.tmp, r.Len())
		s.cross[t] = cs
		s.widenChunk(t, rows)
		s.eachPair(cs, func(n int, j, next int32) {
			at := int(uint32(cs[n]))
			slot, m, e := at/s.k/2, at/s.k%2, at%s.k
			dst[slot][m][e].Cross = s.dist(t, int32(slot), j, next)
		})
	}
}

// rescore computes the float64 distance of every candidate of the chunk's rows in modality m,
// filling s.cands[m] and s.start[m].
func (s *rescorer) rescore(m int, rows []int, set *topSet) {
	s.pairs = s.pairs[:0]
	start := append(s.start[m][:0], 0)
	for slot, i := range rows {
		for _, c := range set.final(s.packedRow(m, i), &s.sel) {
			s.pairs = append(s.pairs, uint64(s.refRow(m, c.idx))<<32|uint64(slot))
		}
		start = append(start, int32(len(s.pairs)))
	}
	s.start[m] = start
	s.pairs, s.tmp = sortByRow(s.pairs, s.tmp, s.r.Len())
	s.fill = append(s.fill[:0], start[:len(rows)]...)
	if cap(s.cands[m]) < len(s.pairs) {
		s.cands[m] = make([]scored, len(s.pairs))
	}
	cands := s.cands[m][:len(s.pairs)]
	s.cands[m] = cands
	s.widenChunk(m, rows)
	pos := s.r.Pos
	s.eachPair(s.pairs, func(n int, j, next int32) {
		slot := int32(uint32(s.pairs[n]))
		cands[s.fill[slot]] = scored{s.dist(m, slot, j, next), j, pos[j]}
		s.fill[slot]++
	})
}

// eachPair calls f for every pair of pairs (sorted by reference row, the upper 32 bits) with
// its index, its reference row j and the row to prefetch: at the first pair of a run of pairs
// on one row, the row prefetchAhead runs on; within a run, j itself (nothing to prefetch).
func (s *rescorer) eachPair(pairs []uint64, f func(n int, j, next int32)) {
	s.runs = s.runs[:0]
	for n, p := range pairs {
		if n == 0 || p>>32 != pairs[n-1]>>32 {
			s.runs = append(s.runs, int32(p>>32))
		}
	}
	run := -1
	for n, p := range pairs {
		j, next := int32(p>>32), int32(p>>32)
		if n == 0 || p>>32 != pairs[n-1]>>32 {
			run++
			next = s.runs[min(run+prefetchAhead, len(s.runs)-1)]
		}
		f(n, j, next)
	}
}

// sortByRow sorts pairs (row << 32 | slot, rows below n, slots ascending as given) by row,
// keeping slots ascending within a row: a least-significant-digit radix sort on the row, one
// pass per byte that rows below n can have. It returns the sorted slice and the scratch one.
func sortByRow(pairs, tmp []uint64, n int) (sorted, scratch []uint64) {
	if cap(tmp) < len(pairs) {
		tmp = make([]uint64, len(pairs))
	}
	tmp = tmp[:len(pairs)]
	for shift := 32; shift < 32+bits.Len(uint(max(n-1, 1))); shift += 8 {
		var count [257]int
		for _, p := range pairs {
			count[(p>>shift)&0xff+1]++
		}
		for d := 1; d < 257; d++ {
			count[d] += count[d-1]
		}
		for _, p := range pairs {
			d := (p >> shift) & 0xff
			tmp[count[d]] = p
			count[d]++
		}
		pairs, tmp = tmp, pairs
	}
	return pairs, tmp
}

// best returns slot's K best candidates in modality m, in order (see lessScored): those whose
// distance is at most the K-th smallest (found by selection on the distances alone), sorted.
func (s *rescorer) best(m, slot int) []scored {
	cands := s.cands[m][s.start[m][slot]:s.start[m][slot+1]]
	if len(cands) <= s.k {
		s.top = append(s.top[:0], cands...)
		sortScored(s.top)
		return s.top
	}
	keys := s.keys[:0]
	for _, x := range cands {
		d := x.dist
		if d != d {
			d = math.Inf(1) // NaN sorts last, with (after) +Inf: see below
		}
		keys = append(keys, d)
	}
	s.keys = keys
	kth := kthSmallest(keys, s.k)
	// Every candidate with a distance below kth beats every one above it (NaN included), and at
	// least K are at most kth: the K best are among those, ties with kth included.
	top := s.top[:0]
	for _, x := range cands {
		if x.dist <= kth || (kth > math.MaxFloat64 && (x.dist > math.MaxFloat64 || x.dist != x.dist)) {
			top = append(top, x)
		}
	}
	sortScored(top)
	s.top = top
	return top[:s.k]
}

// kthSmallest returns the k-th smallest of v (1 <= k <= len(v), no NaN), reordering v.
func kthSmallest[T float32 | float64](v []T, k int) T {
	lo, hi, want := 0, len(v)-1, k-1
	for lo < hi {
		p := v[lo+(hi-lo)/2]
		i, j := lo, hi
		for i <= j {
			for v[i] < p {
				i++
			}
			for v[j] > p {
				j--
			}
			if i <= j {
				v[i], v[j] = v[j], v[i]
				i++
				j--
			}
		}
		switch {
		case want <= j:
			hi = j
		case want >= i:
			lo = i
		default:
			return v[want]
		}
	}
	return v[want]
}

// sortScored sorts v by lessScored: an insertion sort, as v holds about K entries.
func sortScored(v []scored) {
	for i := 1; i < len(v); i++ {
		x := v[i]
		j := i
		for ; j > 0 && lessScored(x, v[j-1]); j-- {
			v[j] = v[j-1]
		}
		v[j] = x
	}
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
