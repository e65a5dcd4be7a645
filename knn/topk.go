package knn

import (
	"math"
	"sync/atomic"
	"unsafe"

	"github.com/lemon-curation/lemon/internal/hugepage"
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
// so most candidates cost one vector compare. Each row keeps a heap of its K best dots so far,
// and thr[r] is at least the heap's minimum minus the window (-Inf until K have been pushed,
// unless raised otherwise, see job.seed). Pushes are
// cheap appends into c slots per row; when they fill, compact drops what fell below thr[r]. A
// row whose window holds most of its slots (dense data, duplicates) moves to a growable slice
// of its own. thr has +Inf entries for the padding rows of the last micro-panel, so padding
// never passes.
type topSet struct {
	k     int // the window is anchored at each row's k-th best candidate
	c     int // slots per row in buf
	win   []float32
	best  []float32 // per row, the k best dots pushed so far: a min-heap once all k are filled
	nbest []int32   // per row, how many of its k best slots are filled
	buf   []cand    // row r's candidates are buf[r*c : r*c+cnt[r]] (unless over[r] != nil)
	cnt   []int32
	thr   []float32
	over  [][]cand // rows that outgrew their slots

	// With a sketch (see sketch.go): each row's threshold less its slack, kept in step with
	// thr by raise, for the sketch's tiles to be compared against.
	skThr   []float32
	skSlack []float64
}

func newTopSet(rows, padded, k int, win []float32) *topSet {
	c := 2*k + 64
	t := &topSet{
		k: k, c: c, win: win,
		buf:   candPool.get(rows * c), // dirty: only buf[r*c : r*c+cnt[r]] is ever read
		best:  hugepage.Alloc[float32](rows * k),
		nbest: make([]int32, rows),
		cnt:   make([]int32, rows),
		thr:   make([]float32, padded),
		over:  make([][]cand, rows),
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

// release returns the set's buffer to the pool and drops its other storage; t must not be
// used afterwards. Releasing twice is harmless.
func (t *topSet) release() {
	if t.buf != nil {
		candPool.put(t.buf)
		hugepage.Free(t.best)
	}
	t.buf, t.over, t.best, t.nbest = nil, nil, nil, nil
}

// push adds x to row r. The caller has checked x.dot >= t.thr[r] (so x.dot is not NaN).
func (t *topSet) push(r int, x cand, s *selector) {
	// The threshold follows the k-th best dot as soon as there are k, so later candidates are
	// filtered as tightly as possible. The first k fill the slots; then the heap is built once.
	h := t.best[r*t.k : (r+1)*t.k]
	switch n := t.nbest[r]; {
	case int(n) < t.k:
		h[n] = x.dot
		t.nbest[r] = n + 1
		if int(n)+1 < t.k {
			break
		}
		for i := t.k/2 - 1; i >= 0; i-- {
			siftDownFrom(h, i)
		}
		t.raise(r, below(float64(h[0])-float64(t.win[r])))
	case x.dot > h[0]:
		h[0] = x.dot
		siftDown(h)
		t.raise(r, below(float64(h[0])-float64(t.win[r])))
	}
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
			o := make([]cand, n, 2*t.c)
			copy(o, row[:n])
			t.over[r] = o
			n = 0
		}
	}
	t.cnt[r] = int32(n)
}

// compact keeps, in h's front, the candidates of row r that are not below its threshold, and
// returns how many it kept.
func (t *topSet) compact(r int, h []cand, s *selector) int {
	s.scratch(len(h))
	g := partitionGE(h, t.threshold(r), s.out, s.rest)
	copy(h, s.out[:g])
	return g
}

// siftDown restores the min-heap h after its root was replaced.
func siftDown(h []float32) { siftDownFrom(h, 0) }

// siftDownFrom moves h[i] down to its place in the min-heap h.
func siftDownFrom(h []float32, i int) {
	n := len(h)
	for {
		c := 2*i + 1
		if c >= n {
			return
		}
		if c+1 < n && h[c+1] < h[c] {
			c++
		}
		if h[i] <= h[c] {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
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
			if t.skThr != nil {
				// Racing raises may store out of order; any value stored was valid for a
				// threshold thr has passed, so a stale one is merely lower.
				atomic.StoreUint32((*uint32)(unsafe.Pointer(&t.skThr[r])), math.Float32bits(below(float64(v)-t.skSlack[r])))
			}
			return v
		}
	}
}

// useSketch sets up the sketch thresholds for a per-row slack (at least as long as thr).
func (t *topSet) useSketch(slack []float64) {
	t.skSlack = slack
	t.skThr = make([]float32, len(t.thr))
	for r := range t.thr {
		t.skThr[r] = below(float64(t.threshold(r)) - slack[r])
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
	out, rest []cand
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
		s.out, s.rest = make([]cand, n+8), make([]cand, n+8)
	}
}
