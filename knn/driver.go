package knn

import (
	"math"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/lemon-curation/lemon/internal/hugepage"
)

// groupPanels is how many A micro-panels (of mr rows) one work item covers: they stay hot in
// L2 while every B micro-panel streams past them once, so B is read from memory once per group
// rather than once per tile. Smaller groups balance the (triangular) diagonal case better
// across goroutines.
const groupPanels = 12

// infThr is the column threshold used when no column-side result is wanted: nothing passes.
var infThr = func() []float32 {
	t := make([]float32, nr)
	for i := range t {
		t[i] = float32(math.Inf(1))
	}
	return t
}()

// side is one block prepared for the kernels: its rows packed into micro-panels of w rows, per
// modality, and the per-row figures the candidate window is computed from. Rows are packed in
// the order order[m] (nil: the block's own order); everything per row is indexed in that order.
type side struct {
	n, panels int
	first     int // packed holds panels first.. (a window of them: see job.group)
	order     [2][]int32
	packed    [2][]uint32
	sq        [2][]float64 // per row: its squared norm, in float64 (not rounded)
	approx    [2][]float64 // per row: the norm of what the kernel reads, rounded up
	resid     [2][]float64 // per row: the norm of (row - what the kernel reads), rounded up
	stats     [2]sideStats
}

// sideStats summarises one modality of a side: maxima of the row figures, and the extremes of
// the rows' squared norms (for Euclidean distance).
type sideStats struct {
	rows                int
	norm, approx, resid float64 // maxima (norm: of the float32 rows themselves)
	minSq, maxSq        float64
}

func (s *sideStats) merge(o sideStats) {
	if o.rows == 0 {
		return
	}
	if s.rows == 0 || o.minSq < s.minSq {
		s.minSq = o.minSq
	}
	s.maxSq = max(s.maxSq, o.maxSq)
	s.norm, s.approx, s.resid = max(s.norm, o.norm), max(s.approx, o.approx), max(s.resid, o.resid)
	s.rows += o.rows
}

// up rounds a computed non-negative figure up, past any float64 rounding in computing it.
func up(x float64) float64 { return x*(1+1e-12) + 1e-300 }

// prepareSide packs blk's rows, in the given order, into micro-panels of w rows for backend
// be, in parallel.
//
// Without pack it only computes the per-row figures.
func prepareSide(be *backend, blk *Block, w, nproc int, order [2][]int32, pack bool) *side {
	return prepareRows(be, [2][]float32{blk.Image, blk.Text}, blk.Len(), blk.Dim, w, nproc, order, pack)
}

// prepareRows is prepareSide for n rows of dim coordinates per modality.
func prepareRows(be *backend, src [2][]float32, n, dim, w, nproc int, order [2][]int32, pack bool) *side {
	words := be.words(dim)
	sd := &side{n: n, panels: (n + w - 1) / w, order: order}
	for m := range 2 {
		if pack {
			sd.packed[m] = u32Pool.get(sd.panels * words * w)
		}
		sd.sq[m] = make([]float64, n)
		sd.approx[m] = make([]float64, n)
		sd.resid[m] = make([]float64, n)
	}
	const chunk = 16 // panels per task
	tasks := (sd.panels + chunk - 1) / chunk
	st := make([][2]sideStats, nproc)
	var next atomic.Int64
	parallel(min(nproc, tasks), func(wk int) {
		for t := int(next.Add(1) - 1); t < tasks; t = int(next.Add(1) - 1) {
			p0, p1 := t*chunk, min((t+1)*chunk, sd.panels)
			for m := range 2 {
				packPanels(be, sd, m, src[m], dim, w, p0, p1, &st[wk][m])
			}
		}
	})
	for wk := range st {
		for m := range 2 {
			sd.stats[m].merge(st[wk][m])
		}
	}
	return sd
}

// release returns the packed panels to the pool.
func (sd *side) release() {
	for m := range 2 {
		u32Pool.put(sd.packed[m])
		sd.packed[m] = nil
	}
}

// packPanels lays out micro-panels p0..p1-1 of modality m's rows (src, dim floats each): panel p
// holds packed rows p*w..p*w+w-1 interleaved by word (packed[p*words*w + t*w + l] = packed row
// p*w+l's word t), zero-padded past the last row, which is how the kernels read both operands.
// It records each row's figures in sd and folds them into st.
func packPanels(be *backend, sd *side, m int, src []float32, dim, w, p0, p1 int, st *sideStats) {
	words := be.words(dim)
	var dummy []uint32
	if sd.packed[m] == nil {
		dummy = make([]uint32, words*w) // figures only: pack into scratch
	}
	for p := p0; p < p1; p++ {
		out := dummy
		if dummy == nil {
			out = sd.packed[m][(p-sd.first)*words*w : (p-sd.first+1)*words*w]
		}
		rows := min(w, sd.n-p*w)
		// Row by row: each row is read in order and its words go to every w-th place of the
		// panel (a few KiB, so the scattered writes stay in cache).
		for l := 0; l < rows; l++ {
			i := sd.orig(m, p*w+l)
			row := src[i*dim : (i+1)*dim]
			var sq, asq, rsq float64
			if !be.bf16 {
				for t, v := range row {
					out[t*w+l] = math.Float32bits(v)
					sq += float64(v) * float64(v)
				}
				asq = sq
			} else {
				for t := range words {
					var word uint32
					for h := range 2 {
						d := 2*t + h
						if d >= dim {
							break
						}
						v := row[d]
						b := toBF16(v)
						word |= uint32(b) << (16 * h)
						a := float64(fromBF16(b))
						sq += float64(v) * float64(v)
						asq += a * a
						rsq += (float64(v) - a) * (float64(v) - a)
					}
					out[t*w+l] = word
				}
			}
			if sd.approx[m] == nil {
				continue // panels only: the figures are known
			}
			r := p*w + l
			sd.sq[m][r] = sq
			sd.approx[m][r] = up(math.Sqrt(asq))
			sd.resid[m][r] = up(math.Sqrt(rsq))
			st.add(sq, sd.approx[m][r], sd.resid[m][r])
		}
		for l := rows; l < w; l++ { // padding rows are zero
			for t := range words {
				out[t*w+l] = 0
			}
		}
	}
}

// orig is the block row that packed row r of modality m holds.
func (sd *side) orig(m, r int) int {
	if sd.order[m] == nil {
		return r
	}
	return int(sd.order[m][r])
}

// repack lays out A micro-panels p0..p1-1 (mr rows each) into dst, which starts at panel p0,
// from the same rows already packed as B micro-panels (nr rows each) in src: the words are
// the same, only interleaved differently. n is the number of rows; padding rows are zero.
func repack(dst, src []uint32, n, words, p0, p1 int) {
	for p := p0; p < p1; p++ {
		out := dst[(p-p0)*words*mr : (p-p0+1)*words*mr]
		r0, r1 := p*mr, min(p*mr+mr, n)
		for t := range words {
			seg := out[t*mr : t*mr+mr]
			// Rows r0..r1-1 lie in at most two B panels; within one, a word's lanes are adjacent.
			l := 0
			for r := r0; r < r1; {
				bp, lane := r/nr, r%nr
				k := min(r1-r, nr-lane)
				base := (bp*words+t)*nr + lane
				copy(seg[l:l+k], src[base:base+k])
				l, r = l+k, r+k
			}
			clear(seg[l:])
		}
	}
}

// clusterOrder returns, per modality, an order of b's rows in which similar rows sit together:
// sorted by their most similar of a few pivot rows (compared on the first coordinates only, which
// is enough to group them), then by position. A self-join then meets each row's nearest rows
// early, so its candidate thresholds rise fast and far fewer candidates are pushed. The order
// only affects speed: results are the same in any order.
func clusterOrder(b *Block, nproc int) [2][]int32 {
	const pivots, coords = 64, 64
	n, dim := b.Len(), b.Dim
	d := min(dim, coords)
	var out [2][]int32
	if n < 4*pivots {
		return out
	}
	for m := range 2 {
		src := rowsOf(b, m)
		key := make([]int32, n)
		const chunk = 1024
		var next atomic.Int64
		parallel(nproc, func(int) {
			for i0 := int(next.Add(chunk) - chunk); i0 < n; i0 = int(next.Add(chunk) - chunk) {
				for i := i0; i < min(i0+chunk, n); i++ {
					row := src[i*dim : i*dim+d]
					best, bestDot := 0, float32(math.Inf(-1))
					for p := range pivots {
						j := p * (n / pivots)
						piv := src[j*dim : j*dim+d]
						dot := pivotDot(row, piv)
						if dot > bestDot {
							best, bestDot = p, dot
						}
					}
					key[i] = int32(best)
				}
			}
		})
		// Rows grouped by pivot, in row order within a group (a counting sort).
		var start [pivots + 1]int
		for _, k := range key {
			start[k+1]++
		}
		for p := range pivots {
			start[p+1] += start[p]
		}
		order := make([]int32, n)
		for i, k := range key {
			order[start[k]] = int32(i)
			start[k]++
		}
		out[m] = order
	}
	return out
}

// pivotDot is an approximate dot product of two short row prefixes, for clusterOrder only (the
// order affects speed, never results): eight partial sums, so the additions do not wait on
// each other.
func pivotDot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3, s4, s5, s6, s7 float32 // scalars: the compiler keeps them in registers
	t := 0
	for ; t+8 <= len(a); t += 8 {
		x, y := a[t:t+8:t+8], b[t:t+8:t+8]
		s0 += x[0] * y[0]
		s1 += x[1] * y[1]
		s2 += x[2] * y[2]
		s3 += x[3] * y[3]
		s4 += x[4] * y[4]
		s5 += x[5] * y[5]
		s6 += x[6] * y[6]
		s7 += x[7] * y[7]
	}
	for ; t < len(a); t++ {
		s0 += a[t] * b[t]
	}
	return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
}

func (s *sideStats) add(sq, approx, resid float64) {
	if s.rows == 0 || sq < s.minSq {
		s.minSq = sq
	}
	s.maxSq = max(s.maxSq, sq)
	s.norm = max(s.norm, up(math.Sqrt(sq)))
	s.approx, s.resid = max(s.approx, approx), max(s.resid, resid)
	s.rows++
}

// toBF16 rounds v to the nearest bfloat16 (ties to even), flushing subnormals to zero as the
// bf16 instructions do with their inputs. NaN stays NaN.
func toBF16(v float32) uint16 {
	b := math.Float32bits(v)
	if b&0x7f800000 == 0 { // zero or subnormal
		return uint16(b>>16) & 0x8000
	}
	if b&0x7fffffff > 0x7f800000 { // NaN: keep it quiet and NaN
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

func fromBF16(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// window returns, for each row of x in modality m, how far (in dot product) below the row's
// K-th best selection-stage dot another candidate may lie and still be among its K nearest
// rows of y in float64. Candidates further down are provably beaten by K others.
//
// The bound: the kernel computes <x̃, ỹ> for the rows as packed (x̃ = x for float32 words,
// x rounded to bfloat16 otherwise) with float32 accumulation over dim products, each exact,
// in any order: within γ_dim·|x̃|·|ỹ| of the exact <x̃, ỹ> (γ_n = n·u/(1-n·u), u = 2^-24), and
// <x,y> - <x̃,ỹ> = <x-x̃, y> + <x̃, y-ỹ> is within |x-x̃|·|y| + |x̃|·|y-ỹ| (Cauchy-Schwarz).
// So every selection-stage dot is within E of the exact one, and a candidate more than 2E below
// the K-th best cannot outrank those K. For Euclidean, |x-y|² = |x|²+|y|²-2<x,y> also moves the
// ranking by half the spread of y's squared norms. A small absolute term covers the float64
// rounding of the final distances and the flushing of subnormal products.
func window(metric Metric, dim int, x *side, m int, y sideStats) []float32 {
	gamma := accumulationBound(dim)
	spread := 0.0
	if metric == Euclidean {
		spread = (y.maxSq - y.minSq) / 2
	}
	out := make([]float32, x.n)
	for r := range out {
		w := 2*dotError(x, m, r, y, gamma)*(1+1e-6) + spread + 1e-9
		f := float32(w)
		if float64(f) < w {
			f = math.Nextafter32(f, float32(math.Inf(1)))
		}
		out[r] = f // +Inf when no bound is useful: every candidate is kept
	}
	return out
}

// dotError bounds how far the kernel's dot of row r of x (modality m) with any row of the side
// y summarises lies from the exact dot of the float32 rows (see window); gamma is
// accumulationBound of the words' coordinates.
func dotError(x *side, m, r int, y sideStats, gamma float64) float64 {
	return x.resid[m][r]*y.norm + x.approx[m][r]*y.resid + gamma*x.approx[m][r]*y.approx
}

// accumulationBound is γ_dim = dim·u/(1-dim·u), u = 2^-24: a float32 sum of dim exact products,
// in any order, is within γ_dim·Σ|products| of the exact sum. +Inf when no bound holds.
func accumulationBound(dim int) float64 {
	du := float64(dim) * math.Ldexp(1, -24)
	if du >= 0.5 {
		return math.Inf(1)
	}
	return du / (1 - du)
}

// job is one Search or SearchPair call.
type job struct {
	be     *backend
	a, b   *Block // a: query rows (A side, row-wise selection); b: reference rows (B side)
	sa, sb *side
	na, nb int
	words  int
	pair   bool // also collect b's rows' lists against a (column-wise selection)
	diag   bool // pair with a == b: only pairs row <= col are computed, feeding both rows

	// selfA[m][r]: the packed B row (modality m) that packed A row r must not be matched with,
	// or -1; selfB the same for B rows against A. nil when positions repeat (then the Pos and
	// Self of each candidate are compared).
	selfA, selfB [2][]int32

	sk *sketch // nil: every tile is computed in full
	// match[m], between two blocks in cluster order: a's rows to where b's rows of their
	// cluster sit ([0]), and b's to a's ([1]); nil without.
	match   [2]*[2]rowMatch
	rows    [2]*topSet   // a's rows' candidates
	cols    [][2]*topSet // per worker: b's rows' candidates (pair only; shared when stripes != nil)
	stripes []sync.Mutex // non-diagonal pair: locks over ranges of B panels
	groups  int
	workers int // goroutines computing tiles
	prog    progress

	sketchChecked, sketchSkipped atomic.Int64 // tiles the sketch checked, and of those skipped
}

// progress counts work for Options.Progress in tiles: a group counts the tiles it computes,
// and re-ranking counts rescoreTilesPerRow per row (about what it costs: at 50,000 x 512 the
// re-ranking took 0.3-0.35 of the products' time).
type progress struct {
	report      func(done, total int64)
	done, total atomic.Int64
}

const rescoreTilesPerRow = 32

func (p *progress) add(n int64) {
	if p.report != nil {
		p.report(p.done.Add(n), p.total.Load())
	}
}

// groupTiles is how many tiles group g computes (per modality).
func (j *job) groupTiles(g int) int64 {
	p0, p1 := g*groupPanels, min((g+1)*groupPanels, j.sa.panels)
	if !j.diag {
		return int64(p1-p0) * int64(j.sb.panels)
	}
	var n int64
	for ip := p0; ip < p1; ip++ {
		n += int64(j.sb.panels - (ip*mr)/nr) // B panels from the one holding row ip*mr on
	}
	return n
}

func run(be *backend, a, b *Block, opt Options, pair bool) (forA, forB Lists) {
	nproc := max(1, runtime.GOMAXPROCS(0))
	j := newJob(be, a, b, opt, pair, nproc)
	order := j.sa.order
	if seedRows > 0 {
		j.seedColumns(nproc)
	}
	var next atomic.Int64
	parallel(j.workers, func(w int) {
		c := make([]float32, mr*nr)
		masks := new([2 * mr]uint32)
		sel := &selector{}
		var seedBuf []float32
		var lazy *side // a's panels of the current group, when a is not packed whole
		if j.sa.packed[0] == nil {
			lazy = &side{n: j.na, order: order}
			for m := range 2 {
				lazy.packed[m] = make([]uint32, groupPanels*mr*j.words)
			}
		}
		var ss *sketchState
		if j.sk != nil {
			ss = &sketchState{a: j.sk.a}
			if lazy != nil {
				ss.a = &side{n: j.na}
				for m := range 2 {
					ss.a.packed[m] = make([]uint32, groupPanels*mr*j.sk.words)
				}
			}
			defer func() {
				j.sketchChecked.Add(ss.Checked)
				j.sketchSkipped.Add(ss.Skipped)
			}()
		}
		for t := int(next.Add(1) - 1); t < j.groups; t = int(next.Add(1) - 1) {
			// Last group first: with rows in cluster order, the rows just before a column
			// are the ones most like it, so its threshold rises early too.
			g := j.groups - 1 - t
			pa := j.sa
			if lazy != nil {
				p0 := g * groupPanels
				lazy.first = p0
				for m := range 2 {
					repack(lazy.packed[m], j.sb.packed[m], j.na, j.words, p0, min(p0+groupPanels, j.sa.panels))
				}
				pa = lazy
				if ss != nil {
					ss.a.first = p0
					for m := range 2 {
						if j.sk.on[m] {
							repack(ss.a.packed[m], j.sk.b.packed[m], j.na, j.sk.words, p0, min(p0+groupPanels, j.sa.panels))
						}
					}
				}
			}
			if seedRows > 0 {
				seedBuf = j.seed(g, pa, c, masks, seedBuf)
			}
			j.group(w, g, pa, ss, c, masks, sel)
			j.prog.add(j.groupTiles(g))
		}
	})
	j.sa.release()
	j.sb.release()
	j.sk.release()
	if opt.Sketched != nil && j.sk != nil {
		opt.Sketched(j.sketchChecked.Load(), j.sketchSkipped.Load())
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
		return lists(j.rows, j.sa, j.sb, a, b, opt, nproc, &j.prog), Lists{}
	}
	// Combine the per-worker column sets. Every set is a superset of its rows' final K, so
	// the result does not depend on how work was split.
	if j.diag {
		parallel(min(2, nproc), func(w0 int) { // the modalities' sets are independent
			for m := w0; m < 2; m += min(2, nproc) {
				for w := range j.cols {
					if w == 0 || j.cols[w][m] != j.cols[0][m] {
						j.rows[m].absorb(j.cols[w][m], &selector{})
						j.cols[w][m].release() // before re-ranking, which allocates the lists
					}
				}
			}
		})
		forA = lists(j.rows, j.sa, j.sb, a, b, opt, nproc, &j.prog)
		return forA, forA
	}
	for w := 1; w < len(j.cols); w++ {
		for m := range 2 {
			if j.cols[w][m] != j.cols[0][m] {
				j.cols[0][m].absorb(j.cols[w][m], &selector{})
				j.cols[w][m].release()
			}
		}
	}
	return lists(j.rows, j.sa, j.sb, a, b, opt, nproc, &j.prog), lists(j.cols[0], j.sb, j.sa, b, a, opt, nproc, &j.prog)
}

// newJob prepares a Search (pair false) or SearchPair of a against b: the sides packed, the
// candidate sets with their windows, the sketch.
func newJob(be *backend, a, b *Block, opt Options, pair bool, nproc int) *job {
	j := &job{
		be: be, a: a, b: b, na: a.Len(), nb: b.Len(), words: be.words(a.Dim),
		pair: pair, diag: pair && a == b,
	}
	j.prog.report = opt.Progress
	// Rows in an order that keeps similar rows together (which only affects speed).
	plan := planSketch(j, opt.K, nproc)
	var order, orderB [2][]int32
	switch {
	case plan != nil:
		order, orderB = plan.orders(j, nproc)
	case j.diag:
		order = clusterOrder(a, nproc)
		orderB = order
	}
	j.sb = prepareSide(be, b, nr, nproc, orderB, true)
	if j.diag {
		// The same rows: share b's figures and pack a's micro-panels group by group, which
		// saves holding the rows packed twice.
		sb := j.sb
		j.sa = &side{n: j.na, panels: (j.na + mr - 1) / mr, order: order, sq: sb.sq, approx: sb.approx, resid: sb.resid, stats: sb.stats}
	} else {
		j.sa = prepareSide(be, a, mr, nproc, order, true)
	}
	bAt, aAt := rowAt(b), map[int64]int32(nil)
	if pair {
		aAt = bAt
		if !j.diag {
			aAt = rowAt(a)
		}
	}
	for m := range 2 {
		j.selfA[m] = selfIndex(a, j.sa, j.sb, m, bAt)
		if pair {
			j.selfB[m] = selfIndex(b, j.sb, j.sa, m, aAt)
		}
	}
	if plan != nil {
		j.sk = plan.build(j, nproc)
	}
	j.groups = (j.sa.panels + groupPanels - 1) / groupPanels
	workers := max(1, min(nproc, j.groups))
	j.workers = workers
	total := int64(j.na) * rescoreTilesPerRow
	if pair && !j.diag {
		total += int64(j.nb) * rescoreTilesPerRow
	}
	for g := range j.groups {
		total += j.groupTiles(g)
	}
	j.prog.total.Store(total)

	for m := range 2 {
		win := window(opt.Metric, a.Dim, j.sa, m, j.sb.stats[m])
		padded := j.sa.panels * mr
		if j.diag {
			padded = max(padded, j.sb.panels*nr) // the column sets share these thresholds
		}
		j.rows[m] = newTopSet(j.na, padded, opt.K, win)
		if b := opt.Within[m]; b != nil && opt.Metric == Cosine && !pair {
			// A reference row can enter row r's K only at a distance of at most b[r], that is
			// at an exact dot of at least 1-b[r]; its selection-stage dot is then within the
			// window of that (the same bound as a K-th best dot gives, see window).
			for r := range j.na {
				if d := b[j.sa.orig(m, r)]; d < math.Inf(1) {
					j.rows[m].raise(r, below(1-d-float64(win[r])-1e-9))
				}
			}
		}
	}
	if pair {
		j.cols = make([][2]*topSet, workers)
		shared := workers > 1
		if shared {
			j.stripes = make([]sync.Mutex, min(j.sb.panels, 4*workers))
		}
		for m := range 2 {
			win := window(opt.Metric, a.Dim, j.sb, m, j.sa.stats[m])
			for w := range j.cols {
				if shared && w > 0 {
					j.cols[w][m] = j.cols[0][m]
				} else {
					j.cols[w][m] = newTopSet(j.nb, j.sb.panels*nr, opt.K, win)
					if j.diag {
						// The same rows: a lower bound either set finds serves both.
						j.cols[w][m].thr = j.rows[m].thr
					}
				}
			}
		}
	}
	if j.sk != nil {
		for m := range 2 {
			if !j.sk.on[m] {
				continue
			}
			j.rows[m].useSketch(j.sk.slackA[m])
			for _, cols := range j.cols {
				if j.diag && cols[m].skThr == nil {
					cols[m].skThr, cols[m].skSlack = j.rows[m].skThr, j.rows[m].skSlack // thr is shared too
				} else if cols[m].skThr == nil {
					cols[m].useSketch(j.sk.slackB[m])
				}
			}
		}
	}
	return j
}

// group runs the tiles of A panels [g*groupPanels, ...) against all B panels, one modality at
// a time. For a non-diagonal SearchPair the B panels are split into stripes whose column
// candidate sets are shared by all workers; a worker takes a stripe's lock while it works on
// it, trying free stripes first, so the two sides never wait long and every column sees every
// row under one threshold (per-worker column sets would each see only part of the rows, and
// keep more candidates).
func (j *job) group(w, g int, pa *side, ss *sketchState, c []float32, masks *[2 * mr]uint32, sel *selector) {
	p0 := g * groupPanels
	p1 := min(p0+groupPanels, j.sa.panels)
	first := 0
	if j.diag {
		// Skip B panels whose every column lies left of this group's first row.
		first = (p0 * mr) / nr
	}
	if j.stripes == nil {
		j.tiles(w, pa, ss, p0, p1, first, j.sb.panels, c, masks, sel)
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
		jp0, jp1 := max(first, s*j.sb.panels/ns), (s+1)*j.sb.panels/ns
		if jp0 < jp1 {
			j.tiles(w, pa, ss, p0, p1, jp0, jp1, c, masks, sel)
		}
		j.stripes[s].Unlock()
		pending = append(pending[:got], pending[got+1:]...)
	}
}

// tiles runs the tiles of A panels [p0, p1) against B panels [jp0, jp1), skipping those the
// sketch (ss, nil for none) shows hold nothing that could pass.
func (j *job) tiles(w int, sa *side, ss *sketchState, p0, p1, jp0, jp1 int, c []float32, masks *[2 * mr]uint32, sel *selector) {
	words := j.words
	for m := range 2 {
		pa := sa.packed[m]
		rows := j.rows[m]
		var cols *topSet
		if j.pair {
			cols = j.cols[w][m]
		}
		sketched := ss != nil && j.sk.on[m]
		for jp := jp0; jp < jp1; jp++ {
			bp := j.sb.packed[m][jp*words*nr : (jp+1)*words*nr]
			colThr := infThr
			if cols != nil {
				colThr = cols.thr[jp*nr : (jp+1)*nr]
			}
			for ip := p0; ip < p1; ip++ {
				if j.diag && ip*mr > jp*nr+nr-1 {
					continue // entirely below the diagonal: its mirror tile covers it
				}
				if sketched && ss.want() && j.sketchSkips(ss, m, ip, jp, rows, cols, c, masks) {
					continue
				}
				ap := pa[(ip-sa.first)*words*mr : (ip-sa.first+1)*words*mr]
				if j.be.kernel(ap, bp, words, c, rows.thr[ip*mr:(ip+1)*mr], colThr, masks) != 0 {
					j.slow(m, masks, c, ip, jp, rows, cols, sel)
				}
			}
		}
	}
}

// slow pushes the tile values that passed a threshold into the candidate sets. It re-checks
// each value against the current threshold (it may have risen within this tile), skips
// padding, applies identity exclusion (Self) and, on a diagonal block, takes each unordered
// pair once: row-wise for row <= col, column-wise for row < col.
func (j *job) slow(m int, masks *[2 * mr]uint32, c []float32, ip, jp int, rows, cols *topSet, sel *selector) {
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
		for ; rm != 0; rm &= rm - 1 {
			jj := bits.TrailingZeros32(rm)
			v, col := cr[jj], jp*nr+jj
			if v >= rows.threshold(row) && !j.isSelf(m, row, col) {
				rows.push(row, cand{v, int32(col)}, sel)
			}
		}
		if cm != 0 {
			sb := j.selfB[m]
			pos := a.Pos[j.sa.orig(m, row)]
			for ; cm != 0; cm &= cm - 1 {
				jj := bits.TrailingZeros32(cm)
				v, col := cr[jj], jp*nr+jj
				if v < cols.threshold(col) {
					continue
				}
				if sb != nil && sb[col] != int32(row) || sb == nil && pos != selfOf(b, j.sb.orig(m, col)) {
					cols.push(col, cand{v, int32(row)}, sel)
				}
			}
		}
	}
}

// isSelf reports whether packed A row row and packed B row col (modality m) are one row that
// must not be matched with itself.
func (j *job) isSelf(m, row, col int) bool {
	if sa := j.selfA[m]; sa != nil {
		return sa[row] == int32(col)
	}
	return j.b.Pos[j.sb.orig(m, col)] == selfOf(j.a, j.sa.orig(m, row))
}

// rowAt maps each position of b to its row, or returns nil when positions repeat (a Self
// could then exclude several rows).
func rowAt(b *Block) map[int64]int32 {
	at := make(map[int64]int32, b.Len())
	for i, p := range b.Pos {
		if _, dup := at[p]; dup {
			return nil
		}
		at[p] = int32(i)
	}
	return at
}

// selfIndex maps each packed row of x (side xs, modality m) to the packed row of y (side ys)
// whose Pos is its Self, or -1 when there is none. yAt is rowAt(y); nil gives nil.
func selfIndex(x *Block, xs, ys *side, m int, yAt map[int64]int32) []int32 {
	if yAt == nil {
		return nil
	}
	var inv []int32 // y's row -> its packed index
	if o := ys.order[m]; o != nil {
		inv = make([]int32, len(o))
		for c, i := range o {
			inv[i] = int32(c)
		}
	}
	out := make([]int32, xs.n)
	for r := range out {
		out[r] = -1
		if x.Self == nil {
			continue
		}
		if i, ok := yAt[x.Self[xs.orig(m, r)]]; ok && x.Self[xs.orig(m, r)] >= 0 {
			if inv != nil {
				i = inv[i]
			}
			out[r] = i
		}
	}
	return out
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
func lists(sets [2]*topSet, qs, rs *side, q, r *Block, opt Options, workers int, prog *progress) Lists {
	n := q.Len()
	out := Lists{Image: make([][]Neighbour, n), Text: make([][]Neighbour, n)}
	// One backing array per modality; each row gets a capacity-limited window of it.
	per := min(opt.K, r.Len())
	back := [2][]Neighbour{make([]Neighbour, n*per), make([]Neighbour, n*per)}
	hugepage.Advise(back[0])
	hugepage.Advise(back[1])
	var inv [2][]int32
	for m := range 2 {
		if o := qs.order[m]; o != nil {
			inv[m] = make([]int32, len(o))
			for k, i := range o {
				inv[m][i] = int32(k)
			}
		}
	}
	var next atomic.Int64
	parallel(min(workers, rescoreChunks(n)), func(int) {
		s := newRescorer(q, r, inv, rs.order, opt)
		rows := make([]int, 0, rescoreChunk)
		dst := make([][2][]Neighbour, 0, rescoreChunk)
		for {
			i0 := int(next.Add(int64(rescoreChunk))) - rescoreChunk
			if i0 >= n {
				return
			}
			rows, dst = rows[:0], dst[:0]
			for k := i0; k < min(i0+rescoreChunk, n); k++ {
				// In cluster order, when there is one: neighbouring rows share most of
				// their candidates (see rescorer).
				i := qs.orig(0, k)
				w := i * per
				rows = append(rows, i)
				dst = append(dst, [2][]Neighbour{back[0][w : w+per : w+per], back[1][w : w+per : w+per]})
			}
			s.chunk(rows, sets, dst)
			for n, i := range rows {
				out.Image[i], out.Text[i] = dst[n][0], dst[n][1]
			}
			prog.add(int64(len(rows)) * rescoreTilesPerRow)
		}
	})
	return out
}

// rescoreChunk is how many rows a goroutine re-ranks at a time (a variable for tests).
var rescoreChunk = 128

func rescoreChunks(n int) int { return (n + rescoreChunk - 1) / rescoreChunk }

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

// seedRows is how many rows near each row in cluster order seed its threshold (see job.seed).
var seedRows = 256

// seed raises the thresholds of group g's rows before the group's tiles run. A row's K-th best
// selection-stage dot with any K distinct other rows is a lower bound of its final K-th, so it
// gives as valid a threshold as the candidate heap does; with rows in cluster order, the rows
// around a row are similar to it, and the bound starts close to the final one instead of at
// -Inf. The seed values only set thresholds (nothing is pushed), so no pair is counted twice.
func (j *job) seed(g int, pa *side, c []float32, masks *[2 * mr]uint32, buf []float32) []float32 {
	p0, p1 := g*groupPanels, min((g+1)*groupPanels, j.sa.panels)
	if most := ((p1-p0)*mr+seedRows)/nr + 2; cap(buf) < mr*most*nr {
		buf = make([]float32, mr*most*nr)
	}
	var cnt [mr]int
	for m := range 2 {
		lo, hi, ok := j.seedRange(m, p0*mr, min(p1*mr, j.na))
		if !ok {
			continue
		}
		jp0, jp1 := lo/nr, (hi+nr-1)/nr
		span := (jp1 - jp0) * nr
		vals := buf[:mr*span]
		rows := j.rows[m]
		for ip := p0; ip < p1; ip++ {
			ap := pa.packed[m][(ip-pa.first)*j.words*mr : (ip-pa.first+1)*j.words*mr]
			imax := min(mr, j.na-ip*mr)
			for i := range imax {
				cnt[i] = 0
			}
			for jp := jp0; jp < jp1; jp++ {
				bp := j.sb.packed[m][jp*j.words*nr : (jp+1)*j.words*nr]
				j.be.kernel(ap, bp, j.words, c, infThr, infThr, masks)
				jmax := min(nr, j.nb-jp*nr)
				for i := range imax {
					row := ip*mr + i
					v := vals[i*span+cnt[i]:]
					n := 0
					if sa := j.selfA[m]; sa != nil {
						self := int(sa[row]) - jp*nr // the column to leave out, if in this panel
						for jj, x := range c[i*nr : i*nr+jmax] {
							if x == x && jj != self {
								v[n] = x
								n++
							}
						}
					} else {
						for jj, x := range c[i*nr : i*nr+jmax] {
							if x == x && !j.isSelf(m, row, jp*nr+jj) {
								v[n] = x
								n++
							}
						}
					}
					cnt[i] += n
				}
			}
			for i := range imax {
				if cnt[i] < j.rows[m].k {
					continue
				}
				row := ip*mr + i
				kth := kthLargest(vals[i*span:i*span+cnt[i]], rows.k)
				rows.raise(row, below(float64(kth)-float64(rows.win[row])))
			}
		}
	}
	return buf
}

// seedRange is the range [lo, hi) of b's packed rows (modality m) that seed a's packed rows
// [r0, r1): on a diagonal, the rows around them; between two blocks, the rows of b in their
// cluster (see rowMatch). ok is false where there is nothing to seed from.
func (j *job) seedRange(m, r0, r1 int) (lo, hi int, ok bool) {
	return seedSpan(j.diag, j.match[m], 0, r0, r1, j.nb)
}

// seedSpan is seedRange for either side: rows [r0, r1) of one side, n rows on the other, and
// side's index in match.
func seedSpan(diag bool, match *[2]rowMatch, side, r0, r1, n int) (lo, hi int, ok bool) {
	if r0 >= r1 {
		return 0, 0, false
	}
	switch {
	case diag:
		lo, hi = r0-seedRows/2, r1+seedRows/2
	case match != nil:
		c0, c1 := match[side].at(r0), match[side].at(r1-1)
		half := (r1 - r0 + seedRows) / 2
		mid := (c0 + c1) / 2
		lo, hi = mid-half, mid+half
	default:
		return 0, 0, false
	}
	return max(0, lo), min(n, hi), max(0, lo) < min(n, hi)
}

// seedColumns raises the thresholds of b's rows between two blocks (SearchPair) as seed does
// for a's: from the rows of a in their cluster, before any tile runs.
func (j *job) seedColumns(nproc int) {
	if j.diag || !j.pair || (j.match[0] == nil && j.match[1] == nil) {
		return
	}
	var next atomic.Int64
	parallel(min(nproc, j.sb.panels), func(int) {
		c := make([]float32, mr*nr)
		masks := new([2 * mr]uint32)
		var vals []float32
		var cnt [nr]int
		for jp := int(next.Add(1) - 1); jp < j.sb.panels; jp = int(next.Add(1) - 1) {
			jmax := min(nr, j.nb-jp*nr)
			for m := range 2 {
				lo, hi, ok := seedSpan(false, j.match[m], 1, jp*nr, jp*nr+jmax, j.na)
				if !ok {
					continue
				}
				ip0, ip1 := lo/mr, (hi+mr-1)/mr
				span := (ip1 - ip0) * mr
				if cap(vals) < nr*span {
					vals = make([]float32, nr*span)
				}
				vals = vals[:nr*span]
				clear(cnt[:])
				cols := j.cols[0][m]
				bp := j.sb.packed[m][jp*j.words*nr : (jp+1)*j.words*nr]
				sb := j.selfB[m]
				for ip := ip0; ip < ip1; ip++ {
					ap := j.sa.packed[m][ip*j.words*mr : (ip+1)*j.words*mr]
					j.be.kernel(ap, bp, j.words, c, infThr, infThr, masks)
					for i := range min(mr, j.na-ip*mr) {
						row := ip*mr + i
						pos := j.a.Pos[j.sa.orig(m, row)]
						for jj, x := range c[i*nr : i*nr+jmax] {
							col := jp*nr + jj
							if x != x || sb != nil && sb[col] == int32(row) || sb == nil && pos == selfOf(j.b, j.sb.orig(m, col)) {
								continue
							}
							vals[jj*span+cnt[jj]] = x
							cnt[jj]++
						}
					}
				}
				for jj := range jmax {
					if cnt[jj] >= cols.k {
						col := jp*nr + jj
						kth := kthLargest(vals[jj*span:jj*span+cnt[jj]], cols.k)
						cols.raise(col, below(float64(kth)-float64(cols.win[col])))
					}
				}
			}
		}
	})
}

// kthLargest returns the k-th largest of v (1 <= k <= len(v), no NaN), reordering v. A long v
// with a small k (a seed's few hundred values) is first cut to the values at or above a pivot
// taken from a sample, which usually leaves a few times k; quickselect over all of v was most
// of seeding's time.
func kthLargest(v []float32, k int) float32 {
	const sample = 64
	if len(v) < 4*sample || 8*k > len(v) {
		return kthSmallest(v, len(v)-k+1)
	}
	var s [sample]float32
	for i := range s {
		s[i] = v[i*len(v)/sample]
	}
	// About r/sample of v lies at or above the sample's r-th largest: k and a margin.
	r := min(sample, k*sample/len(v)+3)
	pivot := kthSmallest(s[:], sample-r+1)
	n := 0 // v[:n] holds the values >= pivot seen so far
	for i, x := range v {
		if x >= pivot {
			v[i], v[n] = v[n], x
			n++
		}
	}
	if n >= k {
		return kthSmallest(v[:n], n-k+1)
	}
	return kthSmallest(v, len(v)-k+1) // the guess was too high: v holds the same values
}
