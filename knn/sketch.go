package knn

import (
	"math"
	"math/rand/v2"
	"sync/atomic"
)

// The sketch lets a search skip tiles in which no value can pass a threshold, at a sixteenth of
// a tile's cost (at 512 dimensions).
//
// A few directions U (the columns of a sketchLead x dim basis, orthonormal up to
// δ = ||UᵀU - I||_F) carry most of the rows' energy: they span the leading eigenvectors of the
// rows' second moment, found by subspace iteration on a sample. Every row x gets a sketch row
// s(x) = (p, t, 0): p = Uᵀx as computed in float32 (within e of the exact Uᵀx), and
// t ≥ ||x - Up||. Writing x = Up + r (and y likewise),
//
//	<x,y> = pᵀ(I+Δ)q + pᵀUᵀr_y + qᵀUᵀr_x + <r_x,r_y>,  with Uᵀr_y = e_y - Δq,
//
// so <x,y> ≤ <s(x),s(y)> + 3δ|p||q| + |p||e_y| + |q||e_x| (Cauchy-Schwarz on <r_x,r_y>), and
// ||r_x||² = |x|² - |p|² - 2pᵀe_x + pᵀΔp bounds t. The kernel computes <s(x),s(y)> within its
// own rounding (dotError of the sketch rows), and the full tile's values lie within dotError of
// the exact dots. A row's slack adds the three up: when every sketch value of a tile lies more
// than the slack below its row's threshold (and its column's), nothing in the full tile can
// reach them, and the tile is skipped. Which tiles are skipped never changes a result: a
// skipped tile would have pushed nothing.
//
// How much it skips depends on the data: on rows grouped in tight concepts most tiles between
// two concepts go; on rows spread evenly over many directions almost none would, and a test on
// a sample turns the sketch off (skipShare). Where it is on, a worker whose recent checks
// skipped little checks only now and then (see sketchState).
const (
	sketchLead   = 30   // leading directions per sketch row
	sketchDim    = 32   // coordinates per sketch row: the leading ones, the tail bound, a zero
	sketchSample = 1024 // rows the basis is found from
	sketchIters  = 3    // rounds of subspace iteration
)

// A sketch only pays where a full tile is much longer than a sketch tile and both blocks have
// enough rows to amortise finding the basis and projecting them. Variables so that tests can
// force it on.
var (
	sketchMinDim  = 4 * sketchDim
	sketchMinRows = 4096
	sketchMinSkip = 0.5 // the least share of pairs skipShare must expect the sketch to rule out
)

// sketch holds a job's sketch rows, packed like its sides, and each row's slack.
type sketch struct {
	on     [2]bool  // per modality: whether there is a usable sketch
	be     *backend // whose kernel computes the sketch tiles (see sketchBackend)
	words  int      // packed words per sketch row
	a, b   *side    // sketch rows in the packed order of j.sa, j.sb; a is nil on a diagonal (repacked per group from b)
	slackA [2][]float64
	slackB [2][]float64 // nil unless the job collects column lists
}

// sketchPlan is what is found before the sides are packed: per modality the basis and every
// row's leading coordinates (in block order), from which the rows' order is also taken.
type sketchPlan struct {
	on     [2]bool
	kern   kernelFunc // a float32 kernel of the job's backend family
	u      [2][]float32
	lead   [2]int
	delta  [2]float64
	pa, pb [2][]float32 // a's and b's rows' leading coordinates, lead per row; pa is pb on a diagonal
}

// planSketch returns the job's sketch plan for K = k, or nil when a sketch would not pay (see
// sketchMinDim and skipShare). j's blocks are set; its sides are not packed yet.
func planSketch(j *job, k, nproc int) *sketchPlan {
	dim := j.a.Dim
	if dim < sketchMinDim || min(j.na, j.nb) < max(sketchMinRows, 1) || j.be.dev != nil {
		return nil
	}
	pl := &sketchPlan{kern: floatKernel(j.be)}
	for m := range 2 {
		src := [][]float32{rowsOf(j.b, m)}
		if !j.diag {
			src = append(src, rowsOf(j.a, m))
		}
		xs, total, ok := sampleRows(src, dim)
		if !ok {
			continue
		}
		u, lead, delta, ok := sketchBasis(pl.kern, xs, dim, nproc)
		if !ok || skipShare(pl.kern, xs, total, dim, u, lead, k, nproc) < sketchMinSkip {
			continue
		}
		pl.on[m], pl.u[m], pl.lead[m], pl.delta[m] = true, u, lead, delta
		pl.pb[m] = leading(pl.kern, u, lead, j.b, m, nproc)
		pl.pa[m] = pl.pb[m]
		if !j.diag {
			pl.pa[m] = leading(pl.kern, u, lead, j.a, m, nproc)
		}
	}
	if !pl.on[0] && !pl.on[1] {
		return nil
	}
	return pl
}

// orders returns the row orders of a's and b's sides: rows grouped by cluster in the sketch's
// leading coordinates (see sketchOrder), so that most tiles lie between two clusters and the
// sketch can skip them. A modality without a sketch keeps the block's order, except on a
// diagonal, where clusterOrder gives it one.
func (pl *sketchPlan) orders(j *job, nproc int) (oa, ob [2][]int32) {
	for m := range 2 {
		switch {
		case pl.on[m] && j.diag:
			ob[m] = sketchOrder(pl.kern, pl.pb[m], j.nb, pl.lead[m], nproc)
			oa[m] = ob[m]
		case pl.on[m]:
			// One clustering for both blocks, so that each row's cluster can be found on the
			// other side (see job.seedRange and job.seedColumns).
			cl := newClustering(pl.kern, [][]float32{pl.pa[m], pl.pb[m]}, pl.lead[m], nproc)
			if cl == nil {
				continue
			}
			var startA, startB []int
			oa[m], startA = cl.order(pl.pa[m], nproc)
			ob[m], startB = cl.order(pl.pb[m], nproc)
			j.match[m] = &[2]rowMatch{{startA, startB}, {startB, startA}}
		case j.diag:
			ob[m] = clusterOrder(j.b, nproc)[m]
			oa[m] = ob[m]
		}
	}
	return oa, ob
}

// build makes the sketch rows for the packed sides of j and their slacks.
func (pl *sketchPlan) build(j *job, nproc int) *sketch {
	dim := j.a.Dim
	be := sketchBackend(j.be)
	sk := &sketch{be: be, words: be.words(sketchDim), on: pl.on}
	var rowsA, rowsB [2][]float32
	var projA, projB [2]projection
	for m := range 2 {
		if !pl.on[m] {
			rowsB[m] = make([]float32, j.nb*sketchDim)
			if !j.diag {
				rowsA[m] = make([]float32, j.na*sketchDim)
			}
			continue
		}
		var ok bool
		rowsB[m], projB[m], ok = sketchRows(pl, m, pl.pb[m], j.sb, dim)
		if ok && !j.diag {
			rowsA[m], projA[m], ok = sketchRows(pl, m, pl.pa[m], j.sa, dim)
		}
		sk.on[m] = ok
	}
	if !sk.on[0] && !sk.on[1] {
		return nil
	}
	sk.b = prepareRows(be, rowsB, j.nb, sketchDim, nr, nproc, [2][]int32{}, true)
	if j.diag {
		projA = projB
		sk.a = &side{n: j.na, panels: (j.na + mr - 1) / mr, sq: sk.b.sq, approx: sk.b.approx, resid: sk.b.resid, stats: sk.b.stats}
	} else {
		sk.a = prepareRows(be, rowsA, j.na, sketchDim, mr, nproc, [2][]int32{}, true)
	}
	padded := max(j.sa.panels*mr, j.sb.panels*nr)
	gamma, skGamma := accumulationBound(dim), accumulationBound(sketchDim)
	for m := range 2 {
		if !sk.on[m] {
			continue
		}
		sk.slackA[m] = slack(j.sa, j.sb, sk.a, sk.b, m, projA[m], projB[m], gamma, skGamma, padded)
		switch {
		case j.diag:
			sk.slackB[m] = sk.slackA[m] // the same rows on both sides
		case j.pair:
			sk.slackB[m] = slack(j.sb, j.sa, sk.b, sk.a, m, projB[m], projA[m], gamma, skGamma, padded)
		}
	}
	return sk
}

// release returns the packed sketch panels to the pool.
func (sk *sketch) release() {
	if sk == nil {
		return
	}
	sk.a.release()
	sk.b.release()
}

// projection holds, per packed row of one side, |p| and the bound e on its float32 error (see
// the sketch), both rounded up, and their maxima.
type projection struct {
	p, e       []float64
	pMax, eMax float64
	delta      float64
}

// slack returns, per packed row r of x (padded to n with zeros), how far a sketch value of r
// with any row of y may lie below a full-tile value of the same pair: the kernels' rounding on
// both tiles plus the projection's terms (see the sketch).
func slack(x, y, sx, sy *side, m int, px, py projection, gamma, skGamma float64, n int) []float64 {
	out := make([]float64, n)
	for r := range x.n {
		e := dotError(x, m, r, y.stats[m], gamma) + dotError(sx, m, r, sy.stats[m], skGamma)
		e += 3*px.delta*px.p[r]*py.pMax + px.p[r]*py.eMax + py.pMax*px.e[r]
		out[r] = up(e*(1+1e-6)) + 1e-9 // 1e-9: subnormal products the kernels flush
	}
	return out
}

// sketchBackend is the backend for a search's sketch tiles: the fastest, bf16 where the CPU has
// it, whatever the search's own (its rounding is in the slack). The portable backend keeps
// its own, so that -tags purego runs no assembly.
func sketchBackend(be *backend) *backend {
	if be.name == "go" {
		return be
	}
	return backends[0]
}

// floatKernel is a float32 kernel of be's family: be's own, or for a bf16 backend the float32
// one it comes with.
func floatKernel(be *backend) kernelFunc {
	if !be.bf16 {
		return be.kernel
	}
	for _, b := range backends {
		if !b.bf16 && b.name != "go" {
			return b.kernel
		}
	}
	return kernelGo
}

type kernelFunc = func(a, b []uint32, words int, c []float32, rowThr, colThr []float32, masks *[2 * mr]uint32) uint64

// rowDots returns the n x nb matrix of dots of n rows (row(i) gives row i, dim float32 values)
// with nb <= nr basis rows (nb*dim values, row-major), computed with a float32 kernel.
func rowDots(kern kernelFunc, row func(i int) []float32, n, dim int, basis []float32, nb, nproc int) []float32 {
	bp := packB(basis, nb, dim)
	out := make([]float32, n*nb)
	eachRowPanel(row, n, dim, nproc, func(p, rows int, ap []uint32, c []float32, masks *[2 * mr]uint32) {
		kern(ap, bp, dim, c, infThr, infThr, masks)
		for l := range rows {
			copy(out[(p*mr+l)*nb:(p*mr+l+1)*nb], c[l*nr:l*nr+nb])
		}
	})
	return out
}

// packB lays out n rows of dim float32 values (row-major) as B micro-panels of nr rows,
// zero-padded, for a float32 kernel.
func packB(rows []float32, n, dim int) []uint32 {
	bp := make([]uint32, (n+nr-1)/nr*dim*nr)
	for j := range n {
		p, l := j/nr, j%nr
		for t, v := range rows[j*dim : (j+1)*dim] {
			bp[(p*dim+t)*nr+l] = math.Float32bits(v)
		}
	}
	return bp
}

// eachRowPanel packs n rows (row(i), dim float32 values each) mr at a time into an A
// micro-panel, zero-padded, and calls f with the panel's index, its number of real rows, the
// panel and per-goroutine tile scratch; panels are spread over nproc goroutines.
func eachRowPanel(row func(int) []float32, n, dim, nproc int, f func(p, rows int, ap []uint32, c []float32, masks *[2 * mr]uint32)) {
	panels := (n + mr - 1) / mr
	var next atomic.Int64
	parallel(min(nproc, panels), func(int) {
		ap := make([]uint32, dim*mr)
		c := make([]float32, mr*nr)
		masks := new([2 * mr]uint32)
		for p := int(next.Add(1) - 1); p < panels; p = int(next.Add(1) - 1) {
			rows := min(mr, n-p*mr)
			clear(ap)
			for l := range rows {
				for t, v := range row(p*mr + l)[:dim] {
					ap[t*mr+l] = math.Float32bits(v)
				}
			}
			f(p, rows, ap, c, masks)
		}
	})
}

// sampleRows returns up to sketchSample rows of srcs (dim floats per row), spread evenly over
// them (a block's order says nothing about its content), and how many rows srcs hold. ok is
// false when there are none or one is not finite.
func sampleRows(srcs [][]float32, dim int) (rows [][]float32, total int, ok bool) {
	for _, s := range srcs {
		total += len(s) / dim
	}
	ns := min(total, sketchSample)
	if ns == 0 {
		return nil, total, false
	}
	rows = make([][]float32, ns)
	for k := range ns {
		i := int(int64(k) * int64(total) / int64(ns))
		s := 0
		for i >= len(srcs[s])/dim {
			i -= len(srcs[s]) / dim
			s++
		}
		rows[k] = srcs[s][i*dim : (i+1)*dim]
		for _, v := range rows[k] {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, total, false
			}
		}
	}
	return rows, total, true
}

// sketchBasis finds, from the sample rows xs (dim floats each), up to sketchLead orthonormal
// directions spanning their leading eigenvectors. It returns them as float32 rows, how many
// there are, and δ = ||UᵀU - I||_F for those float32 values (rounded up). ok is false when no
// usable basis came out.
func sketchBasis(kern kernelFunc, xs [][]float32, dim, nproc int) (u []float32, lead int, delta float64, ok bool) {
	ns := len(xs)
	row := func(i int) []float32 { return xs[i] }
	// The sample's columns as B panels (nr coordinates of every sample row per panel), for
	// the products Zᵀ·X.
	cols := (dim + nr - 1) / nr
	xt := make([]uint32, cols*ns*nr)
	for p := range cols {
		w := min(nr, dim-p*nr)
		for t, r := range xs {
			dst := xt[(p*ns+t)*nr : (p*ns+t+1)*nr]
			for l, v := range r[p*nr : p*nr+w] {
				dst[l] = math.Float32bits(v)
			}
		}
	}
	lead = min(sketchLead, dim, ns)
	rng := rand.New(rand.NewPCG(0x5ce7c4, uint64(dim))) // fixed: the basis only affects speed
	q := make([]float64, lead*dim)
	for i := range q {
		q[i] = rng.NormFloat64()
	}
	lead = orthonormalise(q, lead, dim)
	ap := make([]uint32, ns*mr)
	c := make([]float32, mr*nr)
	masks := new([2 * mr]uint32)
	for range sketchIters {
		if lead == 0 {
			return nil, 0, 0, false
		}
		z := rowDots(kern, row, ns, dim, toFloat32(q[:lead*dim]), lead, nproc) // ns x lead: X·Q
		// Qᵀ ← (Xᵀ·Z)ᵀ = Zᵀ·X, mr rows of Zᵀ by nr columns of X at a time.
		for i0 := 0; i0 < lead; i0 += mr {
			h := min(mr, lead-i0)
			clear(ap)
			for t := range ns {
				for i := range h {
					ap[t*mr+i] = math.Float32bits(z[t*lead+i0+i])
				}
			}
			for p := range cols {
				kern(ap, xt[p*ns*nr:(p+1)*ns*nr], ns, c, infThr, infThr, masks)
				for i := range h {
					for l := range min(nr, dim-p*nr) {
						q[(i0+i)*dim+p*nr+l] = float64(c[i*nr+l])
					}
				}
			}
		}
		lead = orthonormalise(q, lead, dim)
	}
	if lead == 0 {
		return nil, 0, 0, false
	}
	u = toFloat32(q[:lead*dim])
	// δ from the float32 values themselves; each product of two float32 is exact in float64,
	// and the sums' rounding is covered by the margin.
	var ss float64
	for a := range lead {
		for b := range lead {
			var g float64
			for t := range dim {
				g += float64(u[a*dim+t]) * float64(u[b*dim+t])
			}
			if a == b {
				g--
			}
			ss += g * g
		}
	}
	delta = up(math.Sqrt(ss)) + float64(dim)*float64(lead)*math.Ldexp(1, -50)
	if math.IsNaN(delta) || delta > 0.01 {
		return nil, 0, 0, false
	}
	return u, lead, delta, true
}

// skipShare estimates, from the sample rows xs (of total rows) and the basis u, what share of
// pairs the sketch would rule out: for a few probe rows, the share of sample rows whose sketch
// bound lies below the probe's K-th best dot (as the sample shows it) less a margin. On data
// the leading coordinates do not separate (rows spread evenly over many directions) it is near
// 0, and a sketch would only cost.
func skipShare(kern kernelFunc, xs [][]float32, total, dim int, u []float32, lead, k, nproc int) float64 {
	const probes, margin = 64, 0.01
	ns := len(xs)
	np := min(probes, ns)
	row := func(i int) []float32 { return xs[i] }
	p := rowDots(kern, row, ns, dim, u, lead, nproc)
	tail := make([]float64, ns)
	for i := range ns {
		var sq, pp float64
		for _, v := range row(i) {
			sq += float64(v) * float64(v)
		}
		for _, v := range p[i*lead : (i+1)*lead] {
			pp += float64(v) * float64(v)
		}
		tail[i] = math.Sqrt(max(0, sq-pp))
	}
	// The K-th best of total rows is about the (K*ns/total)-th best of the sample.
	kk := min(max(1, k*ns/max(total, 1)), ns-1)
	if kk < 1 {
		return 0
	}
	var ruled, pairs int
	for p0 := 0; p0 < np; p0 += nr {
		nb := min(nr, np-p0)
		idx := make([]int, nb) // the probes: rows spread over the sample
		basis := make([]float32, 0, nb*dim)
		for b := range nb {
			idx[b] = (p0 + b) * ns / np
			basis = append(basis, row(idx[b])...)
		}
		dots := rowDots(kern, row, ns, dim, basis, nb, nproc) // ns x nb
		vals := make([]float32, 0, ns)
		for b, pi := range idx {
			vals = vals[:0]
			for i := range ns {
				if i != pi {
					vals = append(vals, dots[i*nb+b])
				}
			}
			theta := float64(kthLargest(vals, kk)) - margin
			for i := range ns {
				if i == pi {
					continue
				}
				var bound float64
				for l := range lead {
					bound += float64(p[pi*lead+l]) * float64(p[i*lead+l])
				}
				if bound+tail[pi]*tail[i] < theta {
					ruled++
				}
				pairs++
			}
		}
	}
	if pairs == 0 {
		return 0
	}
	return float64(ruled) / float64(pairs)
}

// orthonormalise makes the first n rows of q (dim each) orthonormal by modified Gram-Schmidt,
// twice over for accuracy, dropping rows that are (numerically) combinations of earlier ones.
// It returns how many rows remain; they are moved to the front.
func orthonormalise(q []float64, n, dim int) int {
	kept := 0
	for i := range n {
		v := q[i*dim : (i+1)*dim]
		var norm0 float64
		for _, x := range v {
			norm0 += x * x
		}
		for range 2 {
			for k := range kept {
				w := q[k*dim : (k+1)*dim]
				var d float64
				for t := range v {
					d += v[t] * w[t]
				}
				for t := range v {
					v[t] -= d * w[t]
				}
			}
		}
		var norm float64
		for _, x := range v {
			norm += x * x
		}
		if !(norm > 1e-12*norm0) || math.IsInf(norm, 0) {
			continue
		}
		inv := 1 / math.Sqrt(norm)
		dst := q[kept*dim : (kept+1)*dim]
		for t := range v {
			dst[t] = v[t] * inv
		}
		kept++
	}
	return kept
}

// leading returns the leading coordinates Uᵀx of every row of blk in modality m, lead per
// row, in block order, as a float32 kernel computes them.
func leading(kern kernelFunc, u []float32, lead int, blk *Block, m, nproc int) []float32 {
	dim, src := blk.Dim, rowsOf(blk, m)
	return rowDots(kern, func(i int) []float32 { return src[i*dim : (i+1)*dim] }, blk.Len(), dim, u, lead, nproc)
}

// sketchRows makes the sketch rows of one side in modality m, in its packed order, from the
// rows' leading coordinates p (block order) and squared norms (sd.sq). ok is false if any
// figure is not finite.
func sketchRows(pl *sketchPlan, m int, p []float32, sd *side, dim int) (rows []float32, pr projection, ok bool) {
	u, lead, delta := pl.u[m], pl.lead[m], pl.delta[m]
	var uf float64 // ||U||_F
	for _, v := range u {
		uf += float64(v) * float64(v)
	}
	uf = up(math.Sqrt(uf))
	gamma := accumulationBound(dim)
	rows = make([]float32, sd.n*sketchDim)
	pr = projection{p: make([]float64, sd.n), e: make([]float64, sd.n), delta: delta}
	for r := range sd.n {
		i := sd.orig(m, r)
		out := rows[r*sketchDim : (r+1)*sketchDim]
		var pp float64
		for l, v := range p[i*lead : (i+1)*lead] {
			out[l] = v
			pp += float64(v) * float64(v)
		}
		sq := sd.sq[m][r]
		pn := up(math.Sqrt(pp))
		e := up(gamma * up(math.Sqrt(sq)) * uf)
		t2 := sq - pp + 2*pn*e + delta*pp + 1e-12*(sq+pp)
		t := up(math.Sqrt(max(t2, 0)))
		tf := float32(t)
		if float64(tf) < t {
			tf = math.Nextafter32(tf, float32(math.Inf(1)))
		}
		if math.IsNaN(t2) || math.IsInf(float64(tf), 0) || math.IsNaN(pn) || math.IsInf(pn, 0) {
			return nil, projection{}, false
		}
		out[sketchLead] = tf
		pr.p[r], pr.e[r] = pn, e
		pr.pMax, pr.eMax = max(pr.pMax, pn), max(pr.eMax, e)
	}
	return rows, pr, true
}

func toFloat32(x []float64) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = float32(v)
	}
	return out
}

// sketchState is one worker's use of the sketch: the A sketch panels of its current group (on
// a diagonal) and how often checking paid lately. A worker whose checks
// skip fewer than one tile in sketchPayoff stops checking for sketchPause tiles, then tries
// again: on data the sketch cannot separate, it costs little.
type sketchState struct {
	a                *side
	checked, skipped int
	paused           int
	Checked, Skipped int64 // totals, for tests and profiling
}

const (
	sketchWindow = 512  // checks per verdict
	sketchPayoff = 16   // a check costs about 1/16 of a tile: it pays when more than 1 in 16 skip
	sketchPause  = 4096 // tiles run without checking after a verdict against
)

// want reports whether the worker should check the next tile.
func (ss *sketchState) want() bool {
	if ss.paused > 0 {
		ss.paused--
		return false
	}
	return true
}

// record counts a check and decides whether checking still pays.
func (ss *sketchState) record(skipped bool) {
	ss.checked++
	ss.Checked++
	if skipped {
		ss.skipped++
		ss.Skipped++
	}
	if ss.checked == sketchWindow {
		if ss.skipped*sketchPayoff < ss.checked {
			ss.paused = sketchPause
		}
		ss.checked, ss.skipped = 0, 0
	}
}

// sketchSkips reports whether tile (ip, jp) of modality m can be skipped: no sketch value
// reaches its row's sketch threshold (the row's threshold less its slack), nor its column's
// (when columns collect).
func (j *job) sketchSkips(ss *sketchState, m, ip, jp int, rows, cols *topSet, c []float32, masks *[2 * mr]uint32) bool {
	sk := j.sk
	ct := infThr
	if cols != nil {
		ct = cols.skThr[jp*nr : (jp+1)*nr]
	}
	w := sk.words
	ap := ss.a.packed[m][(ip-ss.a.first)*w*mr : (ip-ss.a.first+1)*w*mr]
	bp := sk.b.packed[m][jp*w*nr : (jp+1)*w*nr]
	skip := sk.be.kernel(ap, bp, w, c, rows.skThr[ip*mr:(ip+1)*mr], ct, masks) == 0
	ss.record(skip)
	return skip
}
