package knn

import (
	"math"
	"sync/atomic"
	"unsafe"
)

// cand is a selection-stage candidate: its approximate dot product and a row index in the
// other block.
type cand struct {
	dot float32
	idx int32
}

// topSet collects, for each of its rows, every candidate that may still reach the row's final
// K: those whose selection-stage dot lies within the row's window (win[r], see window) of the
// row's K-th best selection-stage dot. The set is a superset of the true K nearest, so
// re-ranking it in float64 gives the exact answer whatever order candidates arrived in.
//
// Kernels compare whole tiles against thr[r] and only candidates with dot >= thr[r] are pushed,
// so most candidates cost one vector compare. Pushes are cheap appends into c slots per row;
// when they fill, compact finds the K-th best dot, raises thr[r] to it minus the window and
// drops what fell below. A row whose window holds most of its slots (dense data, duplicates)
// moves to a growable slice of its own. Before the first compaction thr[r] is -Inf. thr has
// +Inf entries for the padding rows of the last micro-panel, so padding never passes.
type topSet struct {
	k    int // the window is anchored at each row's k-th best candidate
	c    int // slots per row in buf
	win  []float32
	buf  []cand // row r's candidates are buf[r*c : r*c+cnt[r]] (unless over[r] != nil)
	cnt  []int32
	thr  []float32
	over [][]cand // rows that outgrew their slots
}

func newTopSet(rows, padded, k int, win []float32) *topSet {
	c := 2*k + 64
	t := &topSet{
		k: k, c: c, win: win,
		buf:  getCands(rows * c), // dirty: only buf[r*c : r*c+cnt[r]] is ever read
		cnt:  make([]int32, rows),
		thr:  make([]float32, padded),
		over: make([][]cand, rows),
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

// push adds x to row r. The caller has checked x.dot >= t.thr[r] (so x.dot is not NaN).
func (t *topSet) push(r int, x cand, s *selector) {
	if o := t.over[r]; o != nil {
		if len(o) == cap(o) {
			n := t.compact(r, o, s)
			if n > cap(o)/2 {
				grown := make([]cand, n, 2*cap(o))
				copy(grown, o[:n])
				o = grown
			}
			o = o[:n]
		}
		t.over[r] = append(o, x)
		return
	}
	row := t.buf[r*t.c : (r+1)*t.c]
	n := int(t.cnt[r])
	row[n] = x
	n++
	if n == t.c {
		n = t.compact(r, row, s)
		if n > t.c-16 {
			o := make([]cand, n, 4*t.c)
			copy(o, row[:n])
			t.over[r] = o
			n = 0
		}
	}
	t.cnt[r] = int32(n)
}

// compact keeps, in h's front, the candidates of row r that are still within the window of
// the k-th best in h, raising thr[r] accordingly, and returns how many it kept.
func (t *topSet) compact(r int, h []cand, s *selector) int {
	if len(h) <= t.k {
		return len(h)
	}
	s.scratch(len(h))
	kth := kthLargest(h, t.k-1, s)
	thr := t.raise(r, below(float64(kth)-float64(t.win[r])))
	g := partitionGE(h, thr, s.out, s.buf[0])
	copy(h, s.out[:g])
	return g
}

// threshold is row r's current threshold. thr may be shared with another set over the same rows
// (a self-join's row and column sets), so it is read and raised atomically; the kernels read it
// directly, and any value they see is a valid threshold, as thresholds only rise.
func (t *topSet) threshold(r int) float32 { return loadF32(&t.thr[r]) }

// raise sets row r's threshold to at least v and returns it.
func (t *topSet) raise(r int, v float32) float32 {
	p := (*uint32)(unsafe.Pointer(&t.thr[r]))
	for {
		old := atomic.LoadUint32(p)
		if cur := math.Float32frombits(old); cur >= v {
			return cur
		}
		if atomic.CompareAndSwapUint32(p, old, math.Float32bits(v)) {
			return v
		}
	}
}

// below rounds x to a float32 no greater than x.
func below(x float64) float32 {
	f := float32(x)
	if float64(f) > x {
		f = math.Nextafter32(f, float32(math.Inf(-1)))
	}
	return f
}

// candidates returns row r's current candidates.
func (t *topSet) candidates(r int) []cand {
	if o := t.over[r]; o != nil {
		return o
	}
	return t.buf[r*t.c : r*t.c+int(t.cnt[r])]
}

// final compacts row r and returns its candidates (unordered).
func (t *topSet) final(r int, s *selector) []cand {
	h := t.candidates(r)
	n := t.compact(r, h, s)
	if t.over[r] != nil {
		t.over[r] = h[:n]
	} else {
		t.cnt[r] = int32(n)
	}
	return h[:n]
}

// absorb pushes every candidate of o (a set over the same rows) into t.
func (t *topSet) absorb(o *topSet, s *selector) {
	for r := range t.cnt {
		for _, x := range o.candidates(r) {
			if x.dot >= t.threshold(r) {
				t.push(r, x, s)
			}
		}
	}
}

// selector holds scratch space for compaction. Each goroutine has its own.
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
		n = max(n, 256)
		for i := range s.buf {
			s.buf[i] = make([]cand, n+8)
		}
		s.out = make([]cand, n+8)
	}
}

// kthLargest returns the (target+1)-th largest dot of h without modifying h. s must have
// scratch for len(h).
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
