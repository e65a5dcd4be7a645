package knn

import (
	"math"
	"slices"
)

// cand is a float32-stage candidate: a dot product and a row index in the other block.
type cand struct {
	dot float32
	idx int32
}

// topSet collects, for each of its rows, the best l candidates by the selection order
// (dot desc, then the other block's Pos asc, then index asc: a strict total order, so the kept
// set never depends on the order candidates arrive in).
//
// Kernels compare whole tiles against thr[r] and only candidates with dot >= thr[r] are pushed,
// so most candidates cost one vector compare. Pushes are cheap appends into a buffer of c > l
// slots; when it fills, compact keeps the best l (quickselect) and raises thr[r] to the l-th
// best dot. Before the first compaction thr[r] is -Inf. thr has +Inf entries for the padding
// rows of the last micro-panel, so padding never passes.
type topSet struct {
	l, c int
	pos  []int64 // Pos of the other block, for tie-breaks
	buf  []cand  // row r's candidates are buf[r*c : r*c+cnt[r]]
	cnt  []int32
	thr  []float32
}

func newTopSet(rows, padded, l int, pos []int64) *topSet {
	c := l + max(l, 32)
	t := &topSet{
		l: l, c: c, pos: pos,
		buf: getCands(rows * c), // dirty: only buf[r*c : r*c+cnt[r]] is ever read
		cnt: make([]int32, rows),
		thr: make([]float32, padded),
	}
	ninf, pinf := float32(math.Inf(-1)), float32(math.Inf(1))
	for i := range t.thr {
		if i < rows {
			t.thr[i] = ninf
		} else {
			t.thr[i] = pinf
		}
	}
	return t
}

// release returns the set's buffer to the pool; t must not be used afterwards.
func (t *topSet) release() {
	putCands(t.buf)
	t.buf = nil
}

// better reports whether x ranks before y.
func (t *topSet) better(x, y cand) bool {
	if x.dot != y.dot {
		return x.dot > y.dot
	}
	if px, py := t.pos[x.idx], t.pos[y.idx]; px != py {
		return px < py
	}
	return x.idx < y.idx
}

// push appends x to row r. The caller has checked x.dot >= t.thr[r] (so x.dot is not NaN).
func (t *topSet) push(r int, x cand, s *selector) {
	n := int(t.cnt[r])
	t.buf[r*t.c+n] = x
	n++
	if n == t.c {
		n = t.compact(r, n, s)
	}
	t.cnt[r] = int32(n)
}

// compact keeps row r's best l of its n candidates and returns the new count.
func (t *topSet) compact(r, n int, s *selector) int {
	if n <= t.l {
		return n
	}
	t.thr[r] = t.selectBest(t.buf[r*t.c:r*t.c+n], t.l, s)
	return t.l
}

// selector holds scratch space for selectBest. Each goroutine has its own.
type selector struct {
	buf [4][]cand
	out []cand
}

// partitionGE copies the candidates of src with dot >= pivot to ge and the others to lt (each
// in input order) and returns how many went to ge. ge and lt must have room for len(src)+8
// candidates (the vector version stores whole registers). Replaced by assembly where available.
var partitionGE = partitionGEGo

func partitionGEGo(src []cand, pivot float32, ge, lt []cand) int {
	g, l := 0, 0
	for _, x := range src {
		if x.dot >= pivot {
			ge[g] = x
			g++
		} else {
			lt[l] = x
			l++
		}
	}
	return g
}

func (s *selector) scratch(n int) {
	if cap(s.out) < n+8 {
		for i := range s.buf {
			s.buf[i] = make([]cand, n+8)
		}
		s.out = make([]cand, n+8)
	}
}

// selectBest permutes h so that h[:k] holds its k best candidates, and returns the k-th best
// dot product (the smallest in h[:k]). Positions are only looked at when candidates tie on that
// dot product.
//
// It is a quickselect on the dots that partitions out of place (so a vector partition can do
// the work without data-dependent branches), finding the k-th largest dot tau; then h's
// candidates above tau, and as many as needed of those equal to tau, are gathered into h[:k].
func (t *topSet) selectBest(h []cand, k int, s *selector) float32 {
	n := len(h)
	if k >= n {
		tau := float32(math.Inf(1))
		for _, x := range h {
			tau = min(tau, x.dot)
		}
		return tau
	}
	s.scratch(n)
	tau := kthLargest(h, k-1, s)

	// Gather: everything above tau, then the ties.
	out, rest := s.out, s.buf[0]
	g := 0
	if !math.IsInf(float64(tau), 1) {
		g = partitionGE(h, math.Nextafter32(tau, float32(math.Inf(1))), out, rest)
	} else {
		copy(rest, h)
	}
	e := partitionGE(rest[:n-g], tau, out[g:], s.buf[1])
	if g+e > k {
		// Ties across the cut: take the best of them by the full order (Pos, then index).
		slices.SortFunc(out[g:g+e], func(x, y cand) int {
			if t.better(x, y) {
				return -1
			}
			if t.better(y, x) {
				return 1
			}
			return 0
		})
	}
	// h[:k] gets the winners, h[k:] the other ties and then everything below tau.
	copy(h, out[:g+e])
	copy(h[g+e:], s.buf[1][:n-g-e])
	return tau
}

// kthLargest returns the (target+1)-th largest dot of h without modifying h.
func kthLargest(h []cand, target int, s *selector) float32 {
	cur := h
	step := 0
	for len(cur) > 8 {
		a, b, c := cur[0].dot, cur[len(cur)/2].dot, cur[len(cur)-1].dot
		pivot := max(min(a, b), min(max(a, b), c)) // median of three: an element of cur
		ge, lt := s.buf[2*(step&1)], s.buf[2*(step&1)+1]
		step++
		// Split off the dots above the pivot (there are fewer than len(cur): the pivot is not).
		g := 0
		if !math.IsInf(float64(pivot), 1) {
			g = partitionGE(cur, math.Nextafter32(pivot, float32(math.Inf(1))), ge, lt)
		} else {
			copy(lt, cur)
		}
		if target < g {
			cur = ge[:g]
			continue
		}
		target -= g
		rest := lt[:len(cur)-g] // all <= pivot, and the pivot is among them
		ge, lt = s.buf[2*(step&1)], s.buf[2*(step&1)+1]
		step++
		e := partitionGE(rest, pivot, ge, lt) // ge: the dots equal to the pivot (at least one)
		if target < e {
			return pivot
		}
		target -= e
		cur = lt[:len(rest)-e]
	}
	// At most 8 left: the answer is the dot with fewer than target+1 dots above it and at
	// least target+1 at or above it. Counting (branch-free) beats sorting here.
	var d [8]float32
	for i, x := range cur {
		d[i] = x.dot
	}
	ds := d[:len(cur)]
	for _, x := range ds {
		above, atLeast := 0, 0
		for _, y := range ds {
			above += b2i(y > x)
			atLeast += b2i(y >= x)
		}
		if above <= target && target < atLeast {
			return x
		}
	}
	panic("knn: kthLargest: no answer") // unreachable: dots are never NaN
}

// b2i is 1 for true, 0 for false (compiled without a branch).
func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// final compacts row r to at most l candidates and returns them (unordered).
func (t *topSet) final(r int, s *selector) []cand {
	n := t.compact(r, int(t.cnt[r]), s)
	t.cnt[r] = int32(n)
	return t.buf[r*t.c : r*t.c+n]
}

// absorb pushes every candidate of o (a set over the same rows) into t.
func (t *topSet) absorb(o *topSet, s *selector) {
	for r := range t.cnt {
		for _, x := range o.buf[r*o.c : r*o.c+int(o.cnt[r])] {
			if x.dot >= t.thr[r] {
				t.push(r, x, s)
			}
		}
	}
}
