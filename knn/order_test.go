package knn

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/lemon-curation/lemon/internal/hugepage"
)

// Threshold seeding and chunked re-ranking only change the order of work: a self-join gives
// the brute-force answer with seeding off, with a seed span larger than the block, and with
// re-ranking chunks of one row, an odd size or many rows, for both metrics.
func TestSeedingAndChunkingIndependent(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	r := withSelf(genBlock(rng, 900, 32, 0, 1, genOpts{clusters: 15, noise: 0.4, dupFrac: 0.08, captions: 7}))
	oldSeed, oldChunk := seedRows, rescoreChunk
	defer func() { seedRows, rescoreChunk = oldSeed, oldChunk }()
	for _, metric := range []Metric{Cosine, Euclidean} {
		want := brute(r, r, 25, metric)
		forEachBackend(t, func(t *testing.T, be string) {
			for _, c := range []struct{ seed, chunk int }{{0, 64}, {256, 1}, {2000, 7}, {64, 1000}} {
				seedRows, rescoreChunk = c.seed, c.chunk
				got, _, err := SearchPair(r, r, Options{K: 25, Metric: metric, Backend: be})
				if err != nil {
					t.Fatal(err)
				}
				if d := diffLists(got, want); d != "" {
					t.Fatalf("%v, seed rows %d, chunk %d: %s", metric, c.seed, c.chunk, d)
				}
			}
		})
	}
}

func TestKthLargest(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	for trial := range 600 {
		n := 1 + rng.IntN(200)
		if trial%2 == 1 {
			n = 256 + rng.IntN(600) // long enough for the sampled pivot
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.IntN(20)) // many ties
			if trial%3 == 0 {
				v[i] = float32(rng.NormFloat64())
			}
		}
		k := 1 + rng.IntN(n)
		if trial%4 == 1 {
			k = 1 + rng.IntN(max(1, n/8)) // small k: the filtered path
		}
		sorted := slices.Clone(v)
		slices.Sort(sorted)
		if got, want := kthLargest(slices.Clone(v), k), sorted[n-k]; got != want {
			t.Fatalf("trial %d: %d-th largest of %v = %v, want %v", trial, k, v, got, want)
		}
	}
}

func TestSortByRow(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 10))
	for _, n := range []int{1, 2, 255, 256, 257, 70000, 1 << 27} {
		var pairs []uint64
		for slot := range 50 {
			for range rng.IntN(40) {
				pairs = append(pairs, uint64(rng.IntN(n))<<32|uint64(slot))
			}
		}
		want := slices.Clone(pairs)
		slices.Sort(want)
		got, _ := sortByRow(pairs, nil, n)
		if !slices.Equal(got, want) {
			t.Fatalf("n=%d: radix order differs from a sort", n)
		}
	}
}

// Searches give back every huge-page buffer they map (they are not garbage collected).
func TestSearchFreesBuffers(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	r := withSelf(genBlock(rng, 6000, 8, 0, 1, genOpts{clusters: 30, noise: 0.3})) // candidate buffers over hugepage.MinBytes
	total0, before := hugepage.Stats()
	if _, _, err := SearchPair(r, r, Options{K: 20}); err != nil {
		t.Fatal(err)
	}
	q := withSelf(genBlock(rng, 3000, 8, 0, 1, genOpts{clusters: 30, noise: 0.3}))
	if _, err := Search(q, r, Options{K: 20}); err != nil {
		t.Fatal(err)
	}
	total, got := hugepage.Stats()
	if total == total0 && hugepage.Supported {
		t.Fatal("the searches mapped no huge-page buffers: this test checks nothing")
	}
	if got != before {
		t.Fatalf("%d bytes of huge-page buffers outstanding after the searches, want %d", got, before)
	}
}

// The K best of a slot, by selection then sorting, equal the first K of a full sort, with many
// ties, infinities and NaNs.
func TestBestOfSlot(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 12))
	vals := []float64{math.NaN(), math.Inf(1), math.Inf(-1), 0, 0.5, 1, 1, 2}
	for trial := range 500 {
		n := 1 + rng.IntN(120)
		k := 1 + rng.IntN(40)
		cands := make([]scored, n)
		for i := range cands {
			d := vals[rng.IntN(len(vals))]
			if rng.IntN(3) == 0 {
				d = rng.Float64()
			}
			cands[i] = scored{dist: d, idx: int32(i), pos: int64(rng.IntN(30))}
		}
		s := &rescorer{k: k}
		s.cands[0] = cands
		s.start[0] = []int32{0, int32(n)}
		want := slices.Clone(cands)
		slices.SortFunc(want, cmpScored)
		want = want[:min(k, n)]
		if got := s.best(0, 0); !slices.EqualFunc(got, want, func(x, y scored) bool { return x.idx == y.idx }) {
			t.Fatalf("trial %d (n=%d k=%d): got %v, want %v", trial, n, k, got, want)
		}
	}
}

// Repacking B micro-panels as A micro-panels gives what packing the rows as A panels gives.
func TestRepackMatchesPack(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 13))
	for _, n := range []int{1, 13, 14, 33, 100, 451} {
		blk := genBlock(rng, n, 37, 0, 1, genOpts{})
		for _, be := range backends {
			if be.dev != nil {
				continue
			}
			b := prepareSide(be, blk, nr, 2, [2][]int32{}, true)
			a := prepareSide(be, blk, mr, 2, [2][]int32{}, true)
			words := be.words(blk.Dim)
			for m := range 2 {
				got := make([]uint32, a.panels*words*mr)
				repack(got, b.packed[m], n, words, 0, a.panels)
				if !slices.Equal(got, a.packed[m][:len(got)]) {
					t.Fatalf("%s, %d rows, modality %d: repacked panels differ from packed ones", be.name, n, m)
				}
				// A window of panels starting past the first, as the self-join packs them.
				if a.panels > 2 {
					win := make([]uint32, 2*words*mr)
					repack(win, b.packed[m], n, words, 1, 3)
					if !slices.Equal(win, a.packed[m][words*mr:3*words*mr]) {
						t.Fatalf("%s, %d rows: repacked window differs", be.name, n)
					}
				}
			}
			a.release()
			b.release()
		}
	}
}

// Blocks whose positions repeat: a Self excludes every row with that position (the per-candidate
// comparison, since no one-to-one index of rows exists).
func TestRepeatedPositions(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 14))
	r := withSelf(genBlock(rng, 400, 16, 0, 1, genOpts{clusters: 10, noise: 0.5}))
	for i := 0; i < 400; i += 7 {
		r.Pos[i] = r.Pos[i/2] // repeats; Self stays the row's original position
	}
	for _, metric := range []Metric{Cosine, Euclidean} {
		want := brute(r, r, 12, metric)
		forEachBackend(t, func(t *testing.T, be string) {
			got, _, err := SearchPair(r, r, Options{K: 12, Metric: metric, Backend: be})
			if err != nil {
				t.Fatal(err)
			}
			if d := diffLists(got, want); d != "" {
				t.Fatalf("%v: %s", metric, d)
			}
		})
	}
}

// cmpScored orders re-ranked candidates as lessScored does, for slices.SortFunc.
func cmpScored(x, y scored) int {
	if lessScored(x, y) {
		return -1
	}
	if lessScored(y, x) {
		return 1
	}
	return 0
}
