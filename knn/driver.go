package knn

import (
	"math"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
)

// groupPanels is how many A micro-panels (of mr rows) one work item covers. A worker packs its
// group's rows itself, so they are hot in L2 (12 x 14 rows x 768 x 4 bytes = 516 KB per
// modality) while every B micro-panel streams past them once: B is read from memory once per
// group rather than once per tile. Smaller groups balance the (triangular) diagonal case
// better across goroutines.
const groupPanels = 12

// infThr is the column threshold used when no column-side result is wanted: nothing passes.
var infThr = func() []float32 {
	t := make([]float32, nr)
	for i := range t {
		t[i] = float32(math.Inf(1))
	}
	return t
}()

// packPanels lays out micro-panels p0..p1-1 of the n rows of dim floats in src: panel p holds
// rows p*w..p*w+w-1 interleaved by coordinate (dst[(p-p0)*dim*w + d*w + l] = row p*w+l,
// coordinate d), zero-padded past n, which is how the kernels read both operands. It also
// folds each row's squared norm into st.
func packPanels(dst, src []float32, n, dim, w, p0, p1 int, st *rowStats) {
	var sq [max(mr, nr)]float64
	for p := p0; p < p1; p++ {
		out := dst[(p-p0)*dim*w : (p-p0+1)*dim*w]
		rows := min(w, n-p*w)
		blk := src[p*w*dim : (p*w+rows)*dim]
		clear(sq[:])
		// Write sequentially, reading the w source rows side by side.
		o := 0
		for d := 0; d < dim; d++ {
			seg := out[o : o+w]
			for l := 0; l < rows; l++ {
				v := blk[l*dim+d]
				seg[l] = v
				sq[l] += float64(v) * float64(v)
			}
			clear(seg[rows:])
			o += w
		}
		for l := 0; l < rows; l++ {
			st.add(sq[l])
		}
	}
}

// job is one Search or SearchPair call.
type job struct {
	be     *backend
	a, b   *Block // a: query rows (A side, row-wise selection); b: reference rows (B side)
	na, nb int
	dim    int
	pair   bool // also collect b's rows' lists against a (column-wise selection)
	diag   bool // pair with a == b: only pairs row <= col are computed, feeding both rows
	l      int  // candidates kept per row: K + Margin (capped by the other block's size)

	aPanels, bPanels int
	pb               [2][]float32 // b packed: image (0) and text (1)
	rows             [2]*topSet   // a's rows' candidates
	cols             [][2]*topSet // per worker: b's rows' candidates (pair only; shared when stripes != nil)
	stripes          []sync.Mutex // non-diagonal pair: locks over ranges of B panels
	sa               [][2]rowStats
}

func run(be *backend, a, b *Block, opt Options, pair bool) (forA, forB Lists) {
	margin := opt.Margin
	if margin == 0 {
		margin = DefaultMargin(opt.K)
	}
	j := &job{
		be: be, a: a, b: b, na: a.Len(), nb: b.Len(), dim: a.Dim,
		pair: pair, diag: pair && a == b,
		l: opt.K + margin,
	}
	dim := j.dim
	j.aPanels = (j.na + mr - 1) / mr
	j.bPanels = (j.nb + nr - 1) / nr
	nproc := max(1, runtime.GOMAXPROCS(0))
	groups := (j.aPanels + groupPanels - 1) / groupPanels
	workers := max(1, min(nproc, groups))

	// Pack b up front, in parallel (every group reads all of it).
	var sb [2]rowStats
	{
		const chunk = 16 // panels per task
		tasks := (j.bPanels + chunk - 1) / chunk
		for m := range 2 {
			j.pb[m] = getF32(j.bPanels * dim * nr)
		}
		st := make([][2]rowStats, nproc)
		var next atomic.Int64
		parallel(min(nproc, tasks), func(w int) {
			for t := int(next.Add(1) - 1); t < tasks; t = int(next.Add(1) - 1) {
				p0, p1 := t*chunk, min((t+1)*chunk, j.bPanels)
				for m := range 2 {
					packPanels(j.pb[m][p0*dim*nr:], rowsOf(b, m), j.nb, dim, nr, p0, p1, &st[w][m])
				}
			}
		})
		for w := range st {
			for m := range 2 {
				sb[m].merge(st[w][m])
			}
		}
	}

	for m := range 2 {
		j.rows[m] = newTopSet(j.na, j.aPanels*mr, min(j.l, max(j.nb, 1)), b.Pos)
	}
	if pair {
		j.cols = make([][2]*topSet, workers)
		shared := !j.diag && workers > 1
		if shared {
			j.stripes = make([]sync.Mutex, min(j.bPanels, 4*workers))
		}
		for w := range j.cols {
			for m := range 2 {
				if shared && w > 0 {
					j.cols[w][m] = j.cols[0][m]
				} else {
					j.cols[w][m] = newTopSet(j.nb, j.bPanels*nr, min(j.l, max(j.na, 1)), a.Pos)
				}
			}
		}
	}
	j.sa = make([][2]rowStats, workers)
	var next atomic.Int64
	parallel(workers, func(w int) {
		c := make([]float32, mr*nr)
		masks := new([2 * mr]uint32)
		apack := getF32(2 * groupPanels * mr * dim)
		sel := &selector{}
		for g := int(next.Add(1) - 1); g < groups; g = int(next.Add(1) - 1) {
			j.group(w, g, apack, c, masks, sel)
		}
		putF32(apack)
	})
	for m := range 2 {
		putF32(j.pb[m])
	}
	var sa [2]rowStats
	for w := range j.sa {
		for m := range 2 {
			sa[m].merge(j.sa[w][m])
		}
	}

	var slackA, slackB [2]float64
	for m := range 2 {
		slackA[m] = pruneSlack(opt.Metric, dim, sa[m], sb[m])
		slackB[m] = pruneSlack(opt.Metric, dim, sb[m], sa[m])
	}
	defer func() {
		for m := range 2 {
			j.rows[m].release()
			for w := range j.cols {
				if w == 0 || j.cols[w][m] != j.cols[0][m] {
					j.cols[w][m].release()
				}
			}
		}
	}()
	if !pair {
		return lists(j.rows, a, b, opt, slackA, nproc), Lists{}
	}
	// Combine the per-worker column sets. Keeping the top l by a total order is
	// order-independent, so the result does not depend on how work was split.
	if j.diag {
		for w := range j.cols {
			for m := range 2 {
				j.rows[m].absorb(j.cols[w][m], &selector{})
			}
		}
		forA = lists(j.rows, a, b, opt, slackA, nproc)
		return forA, forA
	}
	for w := 1; w < len(j.cols); w++ {
		for m := range 2 {
			if j.cols[w][m] != j.cols[0][m] {
				j.cols[0][m].absorb(j.cols[w][m], &selector{})
			}
		}
	}
	return lists(j.rows, a, b, opt, slackA, nproc), lists(j.cols[0], b, a, opt, slackB, nproc)
}

// group packs A panels [g*groupPanels, ...) into apack and runs their tiles against all B
// panels, one modality at a time. For a non-diagonal SearchPair the B panels are split into
// stripes whose column candidate sets are shared by all workers; a worker takes a stripe's lock
// while it works on it, trying free stripes first, so the two sides never wait long and every
// column sees every row under one threshold (per-worker column sets would each see only part
// of the rows, and keep more candidates).
func (j *job) group(w, g int, apack, c []float32, masks *[2 * mr]uint32, sel *selector) {
	p0 := g * groupPanels
	p1 := min(p0+groupPanels, j.aPanels)
	dim := j.dim
	for m := range 2 {
		packPanels(apack[m*groupPanels*mr*dim:], rowsOf(j.a, m), j.na, dim, mr, p0, p1, &j.sa[w][m])
	}
	if j.stripes == nil {
		jp0 := 0
		if j.diag {
			// Skip B panels whose every column lies left of this group's first row.
			jp0 = (p0 * mr) / nr
		}
		j.tiles(w, p0, p1, jp0, j.bPanels, apack, c, masks, sel)
		return
	}
	ns := len(j.stripes)
	pending := make([]int, 0, ns)
	for k := range ns {
		pending = append(pending, (g+k)%ns) // start where the other workers are unlikely to be
	}
	for len(pending) > 0 {
		got := -1
		for k, s := range pending {
			if j.stripes[s].TryLock() {
				got = k
				break
			}
		}
		if got < 0 {
			got = 0
			j.stripes[pending[0]].Lock()
		}
		s := pending[got]
		jp0, jp1 := s*j.bPanels/ns, (s+1)*j.bPanels/ns
		j.tiles(w, p0, p1, jp0, jp1, apack, c, masks, sel)
		j.stripes[s].Unlock()
		pending = append(pending[:got], pending[got+1:]...)
	}
}

// tiles runs the tiles of A panels [p0, p1) (packed in apack) against B panels [jp0, jp1).
func (j *job) tiles(w, p0, p1, jp0, jp1 int, apack, c []float32, masks *[2 * mr]uint32, sel *selector) {
	dim := j.dim
	for m := range 2 {
		pa := apack[m*groupPanels*mr*dim:]
		rows := j.rows[m]
		var cols *topSet
		if j.pair {
			cols = j.cols[w][m]
		}
		for jp := jp0; jp < jp1; jp++ {
			bp := j.pb[m][jp*dim*nr : (jp+1)*dim*nr]
			colThr := infThr
			if cols != nil {
				colThr = cols.thr[jp*nr : (jp+1)*nr]
			}
			for ip := p0; ip < p1; ip++ {
				if j.diag && ip*mr > jp*nr+nr-1 {
					continue // entirely below the diagonal: its mirror tile covers it
				}
				ap := pa[(ip-p0)*dim*mr : (ip-p0+1)*dim*mr]
				if j.be.kernel(ap, bp, dim, c, rows.thr[ip*mr:(ip+1)*mr], colThr, masks) != 0 {
					j.slow(masks, c, ip, jp, rows, cols, sel)
				}
			}
		}
	}
}

// slow pushes the tile values that passed a threshold into the candidate sets. It re-checks
// each value against the current threshold (it may have risen within this tile), skips
// padding, applies identity exclusion (Self) and, on a diagonal block, takes each unordered
// pair once: row-wise for row <= col, column-wise for row < col.
func (j *job) slow(masks *[2 * mr]uint32, c []float32, ip, jp int, rows, cols *topSet, sel *selector) {
	a, b := j.a, j.b
	valid := uint32(1<<min(nr, j.nb-jp*nr) - 1) // real columns (the last panel is padded)
	imax := min(mr, j.na-ip*mr)
	for i := 0; i < imax; i++ {
		row := ip*mr + i
		rm := masks[i] & valid
		cm := uint32(0)
		if cols != nil {
			cm = masks[mr+i] & valid
		}
		if j.diag {
			// Column jj is col = jp*nr+jj: rows take col >= row, columns take row < col.
			if first := row - jp*nr; first > 0 {
				rm &= ^uint32(0) << min(first, 32)
				cm &= ^uint32(0) << min(first+1, 32)
			} else if first == 0 {
				cm &= ^uint32(1)
			}
		}
		if rm|cm == 0 {
			continue
		}
		cr := c[i*nr : i*nr+nr]
		if rm != 0 {
			self := selfOf(a, row)
			for ; rm != 0; rm &= rm - 1 {
				jj := bits.TrailingZeros32(rm)
				v := cr[jj]
				col := jp*nr + jj
				if v >= rows.thr[row] && b.Pos[col] != self {
					rows.push(row, cand{v, int32(col)}, sel)
				}
			}
		}
		if cm != 0 {
			pos := a.Pos[row]
			for ; cm != 0; cm &= cm - 1 {
				jj := bits.TrailingZeros32(cm)
				v := cr[jj]
				col := jp*nr + jj
				if v >= cols.thr[col] && pos != selfOf(b, col) {
					cols.push(col, cand{v, int32(row)}, sel)
				}
			}
		}
	}
}

// selfOf returns the position a query row must not be matched with, or a value no Pos can
// have (math.MinInt64) when there is none.
func selfOf(q *Block, i int) int64 {
	if q.Self == nil || q.Self[i] < 0 {
		return math.MinInt64
	}
	return q.Self[i]
}

// lists re-ranks every query row's candidates in float64 and builds its neighbour lists.
func lists(sets [2]*topSet, q, r *Block, opt Options, slack [2]float64, workers int) Lists {
	n := q.Len()
	out := Lists{Image: make([][]Neighbour, n), Text: make([][]Neighbour, n)}
	// One backing array per modality; each row gets a capacity-limited window of it.
	per := min(opt.K, r.Len())
	back := [2][]Neighbour{make([]Neighbour, n*per), make([]Neighbour, n*per)}
	const chunk = 64
	var next atomic.Int64
	parallel(min(workers, (n+chunk-1)/chunk), func(int) {
		s := newRescorer(q, r, opt, slack)
		for {
			i0 := int(next.Add(chunk) - chunk)
			if i0 >= n {
				return
			}
			for i := i0; i < min(i0+chunk, n); i++ {
				w := i * per
				dst := [2][]Neighbour{back[0][w : w+per : w+per], back[1][w : w+per : w+per]}
				out.Image[i], out.Text[i] = s.lists(i, sets, dst)
			}
		}
	})
	return out
}

// parallel runs f(0..workers-1) concurrently and waits; one worker runs inline.
func parallel(workers int, f func(w int)) {
	if workers <= 1 {
		f(0)
		return
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(w)
		}()
	}
	wg.Wait()
}
