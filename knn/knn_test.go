package knn

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// ---- test data ----

type genOpts struct {
	clusters int     // number of cluster centres (0: plain random rows)
	noise    float64 // spread around a centre
	dupFrac  float64 // fraction of rows that copy an earlier row exactly (both modalities)
	same     bool    // every row identical
	captions int     // number of distinct captions (0: nil captions)
	seed     uint64  // nonzero: cluster centres drawn from this seed, so blocks can share them
}

func normalise(v []float32) {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	inv := 1 / math.Sqrt(s)
	for i := range v {
		v[i] = float32(float64(v[i]) * inv)
	}
}

// genBlock makes n rows with positions pos0, pos0+step, ...
func genBlock(rng *rand.Rand, n, dim int, pos0, step int64, o genOpts) *Block {
	b := &Block{Dim: dim, Image: make([]float32, n*dim), Text: make([]float32, n*dim),
		Pos: make([]int64, n), Dmm: make([]float64, n), ID: make([]string, n)}
	if o.captions > 0 {
		b.Caption = make([]string, n)
	}
	nc := max(o.clusters, 1)
	centres := make([][2][]float32, nc)
	crng := rng
	if o.seed != 0 {
		crng = rand.New(rand.NewPCG(o.seed, 0))
	}
	for c := range centres {
		for m := range 2 {
			v := make([]float32, dim)
			for d := range v {
				v[d] = float32(crng.NormFloat64())
			}
			normalise(v)
			centres[c][m] = v
		}
	}
	for i := 0; i < n; i++ {
		b.Pos[i] = pos0 + int64(i)*step
		b.ID[i] = fmt.Sprintf("id%d", b.Pos[i])
		b.Dmm[i] = rng.Float64()
		if b.Caption != nil {
			b.Caption[i] = fmt.Sprintf("caption %d", rng.IntN(o.captions))
		}
		img, txt := b.Image[i*dim:(i+1)*dim], b.Text[i*dim:(i+1)*dim]
		switch {
		case o.same:
			copy(img, centres[0][0])
			copy(txt, centres[0][1])
			continue
		case i > 0 && rng.Float64() < o.dupFrac:
			src := rng.IntN(i)
			copy(img, b.Image[src*dim:(src+1)*dim])
			copy(txt, b.Text[src*dim:(src+1)*dim])
			continue
		}
		c := rng.IntN(nc)
		for m, v := range [2][]float32{img, txt} {
			for d := range v {
				x := rng.NormFloat64()
				if o.clusters > 0 {
					x = float64(centres[c][m][d]) + o.noise*x/math.Sqrt(float64(dim))
				}
				v[d] = float32(x)
			}
			normalise(v)
		}
	}
	return b
}

// slice returns rows [i0, i1) of b as a new block sharing memory.
func (b *Block) slice(i0, i1 int) *Block {
	d := b.Dim
	s := &Block{Dim: d, Image: b.Image[i0*d : i1*d], Text: b.Text[i0*d : i1*d], Pos: b.Pos[i0:i1]}
	if b.Self != nil {
		s.Self = b.Self[i0:i1]
	}
	if b.Dmm != nil {
		s.Dmm = b.Dmm[i0:i1]
	}
	if b.Caption != nil {
		s.Caption = b.Caption[i0:i1]
	}
	if b.ID != nil {
		s.ID = b.ID[i0:i1]
	}
	return s
}

func withSelf(b *Block) *Block {
	c := *b
	c.Self = slices.Clone(b.Pos)
	return &c
}

// ---- brute-force reference ----

// distance is the float64 distance the package must report, via the Go reference code.
func distance(m Metric, a, b []float32) float64 {
	q := widen(nil, a)
	if m == Euclidean {
		return sqdist64Go(q, b, b)
	}
	return 1 - dot64Go(q, b, b)
}

// brute computes the expected lists directly from the definition, in float64 over every pair.
func brute(q, r *Block, k int, metric Metric) Lists {
	n, dim := q.Len(), q.Dim
	out := Lists{Image: make([][]Neighbour, n), Text: make([][]Neighbour, n)}
	for i := 0; i < n; i++ {
		for m := range 2 {
			qm, rm, qo, ro := q.Image, r.Image, q.Text, r.Text
			if m == 1 {
				qm, rm, qo, ro = q.Text, r.Text, q.Image, r.Image
			}
			var all []Neighbour
			for jj := 0; jj < r.Len(); jj++ {
				if q.Self != nil && q.Self[i] >= 0 && r.Pos[jj] == q.Self[i] {
					continue
				}
				all = append(all, Neighbour{
					Pos:  r.Pos[jj],
					Dist: distance(metric, qm[i*dim:(i+1)*dim], rm[jj*dim:(jj+1)*dim]),
					Dmm:  float64(jj), // row index, replaced below
				})
			}
			slices.SortFunc(all, func(x, y Neighbour) int {
				if c := cmp.Compare(x.Dist, y.Dist); c != 0 {
					return c
				}
				return cmp.Compare(x.Pos, y.Pos)
			})
			if len(all) > k {
				all = all[:k]
			}
			all = slices.Clone(all)
			if all == nil {
				all = []Neighbour{}
			}
			for n := range all {
				jj := int(all[n].Dmm)
				all[n].Dmm = 0
				all[n].Cross = distance(metric, qo[i*dim:(i+1)*dim], ro[jj*dim:(jj+1)*dim])
				if r.ID != nil {
					all[n].ID = r.ID[jj]
				}
				if r.Dmm != nil {
					all[n].Dmm = r.Dmm[jj]
				}
				if q.Caption != nil && r.Caption != nil {
					all[n].SameCaption = q.Caption[i] == r.Caption[jj]
				}
			}
			if m == 0 {
				out.Image[i] = all
			} else {
				out.Text[i] = all
			}
		}
	}
	return out
}

// diffLists describes the first difference between two results, or returns "".
func diffLists(got, want Lists) string {
	if len(got.Image) != len(want.Image) || len(got.Text) != len(want.Text) {
		return fmt.Sprintf("row counts: got %d/%d, want %d/%d", len(got.Image), len(got.Text), len(want.Image), len(want.Text))
	}
	for m, pair := range [2][2][][]Neighbour{{got.Image, want.Image}, {got.Text, want.Text}} {
		for i := range pair[0] {
			g, w := pair[0][i], pair[1][i]
			if len(g) != len(w) {
				return fmt.Sprintf("modality %d row %d: got %d neighbours, want %d", m, i, len(g), len(w))
			}
			for n := range g {
				if g[n] != w[n] {
					return fmt.Sprintf("modality %d row %d entry %d: got %+v, want %+v", m, i, n, g[n], w[n])
				}
			}
		}
	}
	return ""
}

// forEachBackend runs f once per backend available here.
// forEachBackend runs f for every backend, and again with the sketch (see sketch.go) checking
// every tile whatever the sizes: skipping tiles must never change a result.
func forEachBackend(t *testing.T, f func(t *testing.T, backend string)) {
	for _, be := range Backends() {
		t.Run(be, func(t *testing.T) { f(t, be) })
		t.Run(be+"/sketch", func(t *testing.T) {
			forceSketch(t)
			f(t, be)
		})
	}
}

// forceSketch makes every search of the test use the sketch.
func forceSketch(t *testing.T) {
	dim, rows, skip := sketchMinDim, sketchMinRows, sketchMinSkip
	sketchMinDim, sketchMinRows, sketchMinSkip = 0, 0, 0
	t.Cleanup(func() { sketchMinDim, sketchMinRows, sketchMinSkip = dim, rows, skip })
}

// ---- tests ----

type searchCase struct {
	name       string
	nq, nr     int
	dim, k     int
	metric     Metric
	gen        genOpts
	selfJoin   bool // queries are the reference, with Self set
	nilSelf    bool // Self nil rather than -1
	shufflePos bool // reference positions not increasing within the block
}

var searchCases = []searchCase{
	{name: "random", nq: 37, nr: 101, dim: 16, k: 5},
	{name: "clustered-self", nq: 150, nr: 150, dim: 24, k: 7, selfJoin: true, gen: genOpts{clusters: 6, noise: 0.4, dupFrac: 0.15}},
	{name: "clustered-euclid", nq: 90, nr: 150, dim: 33, k: 10, metric: Euclidean, gen: genOpts{clusters: 4, noise: 0.3, dupFrac: 0.2}},
	{name: "duplicates-heavy", nq: 60, nr: 80, dim: 8, k: 12, selfJoin: true, gen: genOpts{clusters: 3, noise: 0.5, dupFrac: 0.6, captions: 4}},
	{name: "all-identical", nq: 45, nr: 45, dim: 12, k: 6, selfJoin: true, gen: genOpts{same: true}},
	{name: "all-identical-noself", nq: 20, nr: 70, dim: 12, k: 9, gen: genOpts{same: true}},
	{name: "k-larger-than-block", nq: 9, nr: 5, dim: 10, k: 30},
	{name: "k-larger-self", nq: 13, nr: 13, dim: 10, k: 20, selfJoin: true, gen: genOpts{dupFrac: 0.3}},
	{name: "one-row-ref", nq: 17, nr: 1, dim: 7, k: 3},
	{name: "one-row-query", nq: 1, nr: 40, dim: 7, k: 3},
	{name: "one-by-one", nq: 1, nr: 1, dim: 3, k: 1},
	{name: "k1", nq: 50, nr: 64, dim: 32, k: 1, gen: genOpts{clusters: 5, noise: 0.2}},
	{name: "nil-self", nq: 30, nr: 30, dim: 9, k: 4, nilSelf: true},
	{name: "clustered-wide", nq: 40, nr: 99, dim: 20, k: 4, gen: genOpts{clusters: 8, noise: 0.6}},
	// Rows a hair apart: hundreds within the selection stage's rounding of each row's K-th
	// neighbour, so candidate sets outgrow their slots.
	{name: "near-ties", nq: 45, nr: 400, dim: 40, k: 5, selfJoin: true, gen: genOpts{clusters: 2, noise: 0.0003}},
	{name: "shuffled-pos", nq: 33, nr: 77, dim: 14, k: 8, shufflePos: true, gen: genOpts{dupFrac: 0.3}},
	{name: "edges", nq: mr*3 + 5, nr: nr*2 + 3, dim: 64, k: 11, selfJoin: true, gen: genOpts{clusters: 3, noise: 0.3, dupFrac: 0.05}},
}

func (c searchCase) blocks(seed uint64) (q, r *Block) {
	rng := rand.New(rand.NewPCG(seed, 7))
	r = genBlock(rng, c.nr, c.dim, 100, 3, c.gen)
	if c.shufflePos {
		rng.Shuffle(len(r.Pos), func(i, j int) { r.Pos[i], r.Pos[j] = r.Pos[j], r.Pos[i] })
	}
	switch {
	case c.selfJoin:
		q = withSelf(r.slice(0, c.nq))
	default:
		q = genBlock(rng, c.nq, c.dim, 0, 1, c.gen)
		if !c.nilSelf {
			q.Self = make([]int64, c.nq)
			for i := range q.Self {
				q.Self[i] = -1
			}
		}
		if c.gen.same {
			// Same vectors as the reference, so every distance ties.
			copy(q.Image, r.Image[:min(len(q.Image), len(r.Image))])
			copy(q.Text, r.Text[:min(len(q.Text), len(r.Text))])
			for i := range c.nq {
				copy(q.Image[i*c.dim:(i+1)*c.dim], r.Image[:c.dim])
				copy(q.Text[i*c.dim:(i+1)*c.dim], r.Text[:c.dim])
			}
		}
	}
	return q, r
}

func TestSearchMatchesBruteForce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be string) {
		for _, c := range searchCases {
			t.Run(c.name, func(t *testing.T) {
				q, r := c.blocks(uint64(len(c.name)))
				opt := Options{K: c.k, Metric: c.metric, Backend: be}
				got, err := Search(q, r, opt)
				if err != nil {
					t.Fatal(err)
				}
				if d := diffLists(got, brute(q, r, c.k, c.metric)); d != "" {
					t.Fatal(d)
				}
			})
		}
	})
}

func TestSplitReferenceAndMerge(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be string) {
		for _, c := range searchCases {
			t.Run(c.name, func(t *testing.T) {
				q, r := c.blocks(uint64(len(c.name)) + 99)
				opt := Options{K: c.k, Metric: c.metric, Backend: be}
				whole, err := Search(q, r, opt)
				if err != nil {
					t.Fatal(err)
				}
				rng := rand.New(rand.NewPCG(uint64(c.nr), 1))
				var cut int // lists a bound made shorter than K
				for trial := 0; trial < 4; trial++ {
					var merged Lists
					for i0 := 0; i0 < r.Len(); {
						size := 1 + rng.IntN(max(1, r.Len()/2))
						if trial == 0 {
							size = 1 // one-row blocks
						}
						i1 := min(r.Len(), i0+size)
						o := opt
						if trial%2 == 1 && i0 > 0 {
							o.Within = Bounds(merged, c.k) // later parts only need what beats the lists so far
						}
						part, err := Search(q, r.slice(i0, i1), o)
						if err != nil {
							t.Fatal(err)
						}
						for _, ns := range part.Image {
							if o.Within[0] != nil && len(ns) < min(c.k, i1-i0) {
								cut++
							}
						}
						if i0 == 0 {
							merged = part
						} else {
							merged = MergeLists(merged, part, c.k)
						}
						i0 = i1
					}
					if d := diffLists(merged, whole); d != "" {
						t.Fatalf("trial %d: %s", trial, d)
					}
				}
				if c.metric == Cosine && !c.gen.same && q.Len() > 0 && r.Len() > 4*c.k && cut == 0 { // identical rows all tie: nothing to cut
					t.Errorf("bounds from earlier parts never left a row's list short: they were not applied")
				}
				// Splitting the queries must not matter either.
				mid := q.Len() / 2
				top, _ := Search(q.slice(0, mid), r, opt)
				bot, _ := Search(q.slice(mid, q.Len()), r, opt)
				joined := Lists{Image: append(top.Image, bot.Image...), Text: append(top.Text, bot.Text...)}
				if d := diffLists(joined, whole); d != "" {
					t.Fatalf("split queries: %s", d)
				}
			})
		}
	})
}

func TestSearchPair(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be string) {
		for _, c := range searchCases {
			t.Run(c.name, func(t *testing.T) {
				q, r := c.blocks(uint64(len(c.name)) + 5)
				if r.Self == nil && !c.nilSelf {
					r = withSelf(r)
				}
				opt := Options{K: c.k, Metric: c.metric, Backend: be}
				forA, forB, err := SearchPair(q, r, opt)
				if err != nil {
					t.Fatal(err)
				}
				wantA, _ := Search(q, r, opt)
				wantB, _ := Search(r, q, opt)
				if d := diffLists(forA, wantA); d != "" {
					t.Fatalf("forA: %s", d)
				}
				if d := diffLists(forB, wantB); d != "" {
					t.Fatalf("forB: %s", d)
				}
				// Diagonal block.
				d1, d2, err := SearchPair(r, r, opt)
				if err != nil {
					t.Fatal(err)
				}
				wantD, _ := Search(r, r, opt)
				if d := diffLists(d1, wantD); d != "" {
					t.Fatalf("diagonal: %s", d)
				}
				if d := diffLists(d2, wantD); d != "" {
					t.Fatalf("diagonal second: %s", d)
				}
				if d := diffLists(wantD, brute(r, r, c.k, c.metric)); d != "" {
					t.Fatalf("diagonal vs brute: %s", d)
				}
			})
		}
	})
}

func TestBackendsAgree(t *testing.T) {
	bes := Backends()
	if len(bes) < 2 {
		t.Skip("only one backend here")
	}
	for _, c := range searchCases {
		q, r := c.blocks(uint64(len(c.name)) + 11)
		opt := Options{K: c.k, Metric: c.metric}
		var first Lists
		for i, be := range bes {
			opt.Backend = be
			got, err := Search(q, r, opt)
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				first = got
			} else if d := diffLists(got, first); d != "" {
				t.Errorf("%s: %s vs %s: %s", c.name, be, bes[0], d)
			}
		}
	}
}

// A bigger self-join: several workers, many groups, a diagonal block with a real triangle.
func TestLargerSelfJoin(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	r := withSelf(genBlock(rng, 700, 48, 0, 1, genOpts{clusters: 20, noise: 0.5, dupFrac: 0.05, captions: 10}))
	want := brute(r, r, 30, Cosine)
	forEachBackend(t, func(t *testing.T, be string) {
		opt := Options{K: 30, Backend: be}
		got, err := Search(r, r, opt)
		if err != nil {
			t.Fatal(err)
		}
		if d := diffLists(got, want); d != "" {
			t.Fatal(d)
		}
		a, b, err := SearchPair(r, r, opt)
		if err != nil {
			t.Fatal(err)
		}
		if d := diffLists(a, want); d != "" {
			t.Fatal(d)
		}
		if d := diffLists(b, want); d != "" {
			t.Fatal(d)
		}
		// Blockwise self-join: every unordered block pair once, merged.
		cuts := []int{0, 100, 333, 334, 700}
		parts := make([]*Block, len(cuts)-1)
		res := make([]Lists, len(parts))
		for p := range parts {
			parts[p] = r.slice(cuts[p], cuts[p+1])
		}
		add := func(p int, l Lists) {
			if res[p].Image == nil {
				res[p] = l
			} else {
				res[p] = MergeLists(res[p], l, 30)
			}
		}
		for x := range parts {
			for y := x; y < len(parts); y++ {
				fa, fb, err := SearchPair(parts[x], parts[y], opt)
				if err != nil {
					t.Fatal(err)
				}
				add(x, fa)
				if x != y {
					add(y, fb)
				}
			}
		}
		var joined Lists
		for _, l := range res {
			joined.Image = append(joined.Image, l.Image...)
			joined.Text = append(joined.Text, l.Text...)
		}
		if d := diffLists(joined, want); d != "" {
			t.Fatal("blockwise:", d)
		}
	})
}

func TestDistancesAccurate(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, dim := range []int{1, 3, 7, 8, 9, 16, 31, 32, 33, 40, 63, 512, 768, 1001} {
		a, b := make([]float32, dim), make([]float32, dim)
		for i := range a {
			a[i], b[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
		}
		var dot, sq float64
		for i := range a {
			dot += float64(a[i]) * float64(b[i])
			e := float64(a[i]) - float64(b[i])
			sq += e * e
		}
		q := widen(nil, a)
		for _, impl := range []struct {
			name    string
			dot, sq func(q []float64, r, next []float32) float64
		}{{"go", dot64Go, sqdist64Go}, {"active", dot64, sqdist64}} {
			if g := impl.dot(q, b, b); math.Abs(g-dot) > 1e-12*float64(dim) {
				t.Errorf("%s dot dim %d: %v vs %v", impl.name, dim, g, dot)
			}
			if g := impl.sq(q, b, b); math.Abs(g-sq) > 1e-12*float64(dim) {
				t.Errorf("%s sqdist dim %d: %v vs %v", impl.name, dim, g, sq)
			}
		}
		// The active (possibly assembly) versions must match the Go reference bit for bit.
		if g, w := dot64(q, b, a), dot64Go(q, b, a); g != w {
			t.Errorf("dot64 dim %d not bit-identical: %v vs %v", dim, g, w)
		}
		if g, w := sqdist64(q, b, a), sqdist64Go(q, b, a); g != w {
			t.Errorf("sqdist64 dim %d not bit-identical: %v vs %v", dim, g, w)
		}
	}
}

// Every kernel must give, for a pair, the same float32 dot wherever the pair sits in a tile.
func TestKernelPositionIndependent(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	dim := 37
	rows := make([]float32, 40*dim)
	for i := range rows {
		rows[i] = float32(rng.NormFloat64())
	}
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			c := make([]float32, mr*nr)
			ref := map[[2]int]float32{}
			for trial := 0; trial < 20; trial++ {
				// Random rows into random slots.
				ai, bi := rng.Perm(40)[:mr], rng.Perm(40)[:nr]
				asrc, bsrc := make([]float32, mr*dim), make([]float32, nr*dim)
				for s, r := range ai {
					copy(asrc[s*dim:], rows[r*dim:(r+1)*dim])
				}
				for s, r := range bi {
					copy(bsrc[s*dim:], rows[r*dim:(r+1)*dim])
				}
				pa, pb := packRows(be, asrc, mr, dim, mr), packRows(be, bsrc, nr, dim, nr)
				be.kernel(pa.packed[0], pb.packed[0], be.words(dim), c, infThr[:mr], infThr, new([2 * mr]uint32))
				for s, x := range ai {
					for u, y := range bi {
						v := c[s*nr+u]
						key := [2]int{min(x, y), max(x, y)}
						if old, ok := ref[key]; ok && math.Float32bits(old) != math.Float32bits(v) {
							t.Fatalf("pair %v: %v then %v", key, old, v)
						}
						ref[key] = v
					}
				}
			}
		})
	}
}

func TestKernelMask(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	dim := 20
	a, b := make([]float32, mr*dim), make([]float32, nr*dim)
	for i := range a {
		a[i] = float32(rng.NormFloat64())
	}
	for i := range b {
		b[i] = float32(rng.NormFloat64())
	}
	for _, be := range backends {
		sa, sb := packRows(be, a, mr, dim, mr), packRows(be, b, nr, dim, nr)
		pa, pb := sa.packed[0], sb.packed[0]
		words := be.words(dim)
		c := make([]float32, mr*nr)
		for trial := 0; trial < 50; trial++ {
			rt, ct := make([]float32, mr), make([]float32, nr)
			for i := range rt {
				rt[i] = float32(rng.NormFloat64() * 6)
			}
			for i := range ct {
				ct[i] = float32(rng.NormFloat64() * 6)
			}
			if trial%5 == 0 {
				rt[3] = float32(math.Inf(-1))
				ct[7] = float32(math.NaN())
			}
			var gotMasks, wantMasks [2 * mr]uint32
			got := be.kernel(pa, pb, words, c, rt, ct, &gotMasks)
			want := tileMasks(c, rt, ct, &wantMasks)
			if got != want || gotMasks != wantMasks {
				t.Fatalf("%s trial %d: result %x masks %x, want %x %x", be.name, trial, got, gotMasks, want, wantMasks)
			}
			// Check the tile itself against a float64 dot, within the bound window() relies on
			// (half a window: E for this pair), and that the bound is not vacuous.
			for i := 0; i < mr; i++ {
				win := window(Cosine, dim, &side{n: 1, approx: [2][]float64{{sa.approx[0][i]}}, resid: [2][]float64{{sa.resid[0][i]}}}, 0, sb.stats[0])
				e := float64(win[0]) / 2
				if e > 0.02*sb.stats[0].norm*sa.approx[0][i] {
					t.Fatalf("%s: error bound %v is uselessly wide", be.name, e)
				}
				for j := 0; j < nr; j++ {
					w := 1 - distance(Cosine, a[i*dim:(i+1)*dim], b[j*dim:(j+1)*dim])
					if math.Abs(float64(c[i*nr+j])-w) > e {
						t.Fatalf("%s: c[%d][%d] = %v, want %v within %v", be.name, i, j, c[i*nr+j], w, e)
					}
				}
			}
		}
	}
}

func TestMerge(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 4))
	mk := func(n int) []Neighbour {
		out := make([]Neighbour, n)
		for i := range out {
			p := int64(rng.IntN(30))
			// Distances are a function of Pos so duplicates agree, with ties between Pos.
			out[i] = Neighbour{Pos: p, Dist: float64(p / 3), ID: fmt.Sprint(p)}
		}
		slices.SortFunc(out, compareNeighbour)
		return out
	}
	for trial := 0; trial < 300; trial++ {
		x, y, z := mk(rng.IntN(12)), mk(rng.IntN(12)), mk(rng.IntN(12))
		k := 1 + rng.IntN(10)
		xy := Merge(x, y, k)
		if !reflect.DeepEqual(xy, Merge(y, x, k)) {
			t.Fatalf("not commutative: %v %v", x, y)
		}
		if a, b := Merge(Merge(x, y, k), z, k), Merge(x, Merge(y, z, k), k); !reflect.DeepEqual(a, b) {
			t.Fatalf("not associative:\n%v\n%v", a, b)
		}
		if len(xy) > k {
			t.Fatal("too long")
		}
		seen := map[int64]bool{}
		for i, nb := range xy {
			if seen[nb.Pos] {
				t.Fatalf("duplicate pos %d", nb.Pos)
			}
			seen[nb.Pos] = true
			if i > 0 && compareNeighbour(xy[i-1], nb) >= 0 {
				t.Fatal("not sorted")
			}
		}
		// Expected: the k best distinct positions.
		want := map[int64]bool{}
		for _, nb := range append(slices.Clone(x), y...) {
			want[nb.Pos] = true
		}
		ps := slices.Sorted(func(yield func(int64) bool) {
			for p := range want {
				if !yield(p) {
					return
				}
			}
		})
		if len(ps) > k {
			ps = ps[:k]
		}
		for i, p := range ps {
			if xy[i].Pos != p {
				t.Fatalf("got %v, want positions %v", xy, ps)
			}
		}
	}
	if got := Merge(nil, nil, 3); len(got) != 0 {
		t.Fatal("empty merge")
	}
}

func TestErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	good := genBlock(rng, 5, 4, 0, 1, genOpts{})
	other := genBlock(rng, 5, 6, 0, 1, genOpts{})
	ragged := genBlock(rng, 5, 4, 0, 1, genOpts{})
	ragged.Text = ragged.Text[:17]
	badSelf := genBlock(rng, 5, 4, 0, 1, genOpts{})
	badSelf.Self = []int64{1}
	cases := []struct {
		name string
		q, r *Block
		opt  Options
		want string
	}{
		{"k0", good, good, Options{K: 0}, "K must be at least 1"},
		{"dim", good, other, Options{K: 1}, "dimension mismatch"},
		{"ragged", good, ragged, Options{K: 1}, "len(Text)"},
		{"self", badSelf, good, Options{K: 1}, "len(Self)"},
		{"nil", nil, good, Options{K: 1}, "nil"},
		{"metric", good, good, Options{K: 1, Metric: 7}, "metric"},
		{"backend", good, good, Options{K: 1, Backend: "tpu"}, "unknown backend"},
	}
	for _, c := range cases {
		_, err := Search(c.q, c.r, c.opt)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want error containing %q", c.name, err, c.want)
		}
		_, _, err = SearchPair(c.q, c.r, c.opt)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s pair: got %v, want error containing %q", c.name, err, c.want)
		}
	}
}

func TestEmptyBlocks(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	q := genBlock(rng, 3, 4, 0, 1, genOpts{})
	empty := &Block{Dim: 4}
	got, err := Search(q, empty, Options{K: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Image) != 3 || len(got.Image[0]) != 0 || got.Image[0] == nil {
		t.Fatalf("got %+v", got)
	}
	got, err = Search(empty, q, Options{K: 2})
	if err != nil || len(got.Image) != 0 {
		t.Fatalf("got %+v, %v", got, err)
	}
}

// A topSet must keep, whatever the arrival order, every candidate within the window of the
// row's k-th best, and nothing it was not given.
func TestTopSetWindow(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	for trial := 0; trial < 500; trial++ {
		n := 1 + rng.IntN(400)
		k := 1 + rng.IntN(20)
		win := float32(rng.IntN(4)) * 0.5
		all := make([]cand, n)
		for i := range all {
			all[i] = cand{float32(rng.IntN(12)) / 2, int32(i)}
		}
		if trial%7 == 0 {
			for i := range all {
				all[i].dot = 1 // all tied: every one must stay
			}
		}
		ts := newTopSet(1, mr, k, []float32{win})
		var s selector
		for _, x := range all {
			if x.dot >= ts.thr[0] {
				ts.push(0, x, &s)
			}
		}
		got := map[int32]bool{}
		for _, x := range ts.final(0, &s) {
			if got[x.idx] || all[x.idx] != x {
				t.Fatalf("trial %d: candidate %v duplicated or not given", trial, x)
			}
			got[x.idx] = true
		}
		sorted := slices.Clone(all)
		slices.SortFunc(sorted, func(x, y cand) int { return cmp.Compare(y.dot, x.dot) })
		floor := float32(math.Inf(-1))
		if n >= k {
			floor = sorted[k-1].dot - win
		}
		for _, x := range all {
			if x.dot >= floor && !got[x.idx] {
				t.Fatalf("trial %d (n=%d k=%d win=%v): lost %v (floor %v)", trial, n, k, win, x, floor)
			}
		}
		ts.release()
	}
}

// packRows packs n rows of src (dim floats each) into micro-panels of w rows for backend be,
// returning the packed words and the per-row figures.
func packRows(be *backend, src []float32, n, dim, w int) *side {
	blk := &Block{Dim: dim, Image: src, Text: src, Pos: make([]int64, n)}
	return prepareSide(be, blk, w, 1, [2][]int32{}, true)
}

func TestPartitionGE(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	for trial := 0; trial < 2000; trial++ {
		n := rng.IntN(70)
		src := make([]cand, n)
		for i := range src {
			src[i] = cand{float32(rng.IntN(10)), int32(rng.IntN(1000))}
		}
		pivot := float32(rng.IntN(12)) - 1
		ge1, lt1 := make([]cand, n+8), make([]cand, n+8)
		ge2, lt2 := make([]cand, n+8), make([]cand, n+8)
		g1 := partitionGE(src, pivot, ge1, lt1)
		g2 := partitionGEGo(src, pivot, ge2, lt2)
		if g1 != g2 || !slices.Equal(ge1[:g1], ge2[:g2]) || !slices.Equal(lt1[:n-g1], lt2[:n-g2]) {
			t.Fatalf("n=%d pivot=%v: %d %v %v vs %d %v %v", n, pivot, g1, ge1[:g1], lt1[:n-g1], g2, ge2[:g2], lt2[:n-g2])
		}
	}
}

// BenchmarkCompact compacts many different buffers (reusing one would let the branch
// predictor learn it).
func BenchmarkCompact(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	const sets, k = 1024, 30
	ts := newTopSet(1, mr, k, []float32{0.01})
	n := ts.c
	src := make([]cand, n*sets)
	for i := range src {
		src[i] = cand{float32(rng.NormFloat64()), int32(rng.IntN(4096))}
	}
	h := make([]cand, n)
	var s selector
	i := 0
	for b.Loop() {
		copy(h, src[(i%sets)*n:])
		ts.thr[0] = 0 // keeps about half
		ts.compact(0, h, &s)
		i++
	}
}

// Results must not depend on how many goroutines share the work (stripes, per-worker sets).
func TestWorkerCountIndependent(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	o := genOpts{clusters: 12, noise: 0.6, dupFrac: 0.05, seed: 6}
	a := withSelf(genBlock(rng, 600, 40, 0, 1, o))
	b := withSelf(genBlock(rng, 500, 40, 600, 1, o))
	forEachBackend(t, func(t *testing.T, be string) {
		opt := Options{K: 20, Backend: be}
		var ref [3]Lists
		for n, procs := range []int{1, 2, 7} {
			old := runtime.GOMAXPROCS(procs)
			fa, fb, err := SearchPair(a, b, opt)
			da, _, err2 := SearchPair(a, a, opt)
			runtime.GOMAXPROCS(old)
			if err != nil || err2 != nil {
				t.Fatal(err, err2)
			}
			if n == 0 {
				ref = [3]Lists{fa, fb, da}
				if d := diffLists(fa, brute(a, b, 20, Cosine)); d != "" {
					t.Fatal("vs brute:", d)
				}
				continue
			}
			for k, got := range [3]Lists{fa, fb, da} {
				if d := diffLists(got, ref[k]); d != "" {
					t.Fatalf("GOMAXPROCS=%d result %d: %s", procs, k, d)
				}
			}
		}
	})
}
