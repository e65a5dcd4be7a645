package knn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// sketchData are blocks on which to check the sketch's bound: tight concepts (where it skips
// most), plain random rows (where its tail bound is loose), rows whose energy lies along
// directions the sample misses, and exact duplicates.
func sketchData(dim int) map[string][2]*Block {
	rng := rand.New(rand.NewPCG(uint64(dim), 21))
	out := map[string][2]*Block{
		"concepts": {
			genBlock(rng, 300, dim, 0, 1, genOpts{clusters: 12, noise: 0.3, seed: 4}),
			genBlock(rng, 250, dim, 300, 1, genOpts{clusters: 12, noise: 0.3, seed: 4, dupFrac: 0.1}),
		},
		"random": {genBlock(rng, 200, dim, 0, 1, genOpts{}), genBlock(rng, 170, dim, 200, 1, genOpts{})},
	}
	// Off-sample: b's rows point where a's (most of the sample) do not.
	a := genBlock(rng, 400, dim, 0, 1, genOpts{clusters: 3, noise: 0.1, seed: 9})
	b := genBlock(rng, 60, dim, 400, 1, genOpts{clusters: 3, noise: 0.1, seed: 10})
	out["off-sample"] = [2]*Block{a, b}
	return out
}

// TestSketchBound checks the inequality the sketch rests on, pair by pair, with the real
// kernels: every full-tile value is at most the sketch value of the same pair plus the row's
// slack, and plus the column's.
func TestSketchBound(t *testing.T) {
	forceSketch(t)
	for _, be := range Backends() {
		bk, err := pickBackend(be)
		if err != nil {
			t.Fatal(err)
		}
		for _, dim := range []int{7, 64, 130} {
			for name, ab := range sketchData(dim) {
				for _, diag := range []bool{false, true} {
					t.Run(fmt.Sprintf("%s/%s/dim%d/diag=%v", be, name, dim, diag), func(t *testing.T) {
						a, b := ab[0], ab[1]
						if diag {
							a = b
						}
						j := newJob(bk, a, b, Options{K: 5}, true, 2)
						defer j.sa.release()
						defer j.sb.release()
						defer j.sk.release()
						if j.sk == nil || !j.sk.on[0] || !j.sk.on[1] {
							t.Fatal("no sketch, though forced on")
						}
						checkSketchBound(t, j)
					})
				}
			}
		}
	}
}

func checkSketchBound(t *testing.T, j *job) {
	t.Helper()
	sk := j.sk
	skA := sk.a
	if j.diag { // A panels are repacked per group in a search; here all at once
		skA = &side{n: j.na}
		for m := range 2 {
			skA.packed[m] = make([]uint32, j.sa.panels*mr*sk.words)
			repack(skA.packed[m], sk.b.packed[m], j.na, sk.words, 0, j.sa.panels)
		}
	}
	pa := j.sa
	if j.diag {
		pa = &side{n: j.na}
		for m := range 2 {
			pa.packed[m] = make([]uint32, j.sa.panels*mr*j.words)
			repack(pa.packed[m], j.sb.packed[m], j.na, j.words, 0, j.sa.panels)
		}
	}
	full, sketch := make([]float32, mr*nr), make([]float32, mr*nr)
	masks := new([2 * mr]uint32)
	var pairs, worst int
	worstGap := math.Inf(1)
	for m := range 2 {
		for ip := range j.sa.panels {
			for jp := range j.sb.panels {
				j.be.kernel(pa.packed[m][ip*j.words*mr:], j.sb.packed[m][jp*j.words*nr:], j.words, full, infThr, infThr, masks)
				sk.be.kernel(skA.packed[m][ip*sk.words*mr:], sk.b.packed[m][jp*sk.words*nr:], sk.words, sketch, infThr, infThr, masks)
				for i := range min(mr, j.na-ip*mr) {
					for jj := range min(nr, j.nb-jp*nr) {
						r, c := ip*mr+i, jp*nr+jj
						f, s := float64(full[i*nr+jj]), float64(sketch[i*nr+jj])
						for _, sl := range []float64{sk.slackA[m][r], sk.slackB[m][c]} {
							gap := s + sl - f
							if !(gap >= 0) {
								t.Fatalf("modality %d, pair (%d, %d): full %v > sketch %v + slack %v", m, r, c, f, s, sl)
							}
							worstGap = min(worstGap, gap)
						}
						pairs++
						if s+sk.slackA[m][r] < 0.5 {
							worst++
						}
					}
				}
			}
		}
	}
	t.Logf("%d pairs; closest approach of the bound %.3g; bound below 0.5 for %d", pairs, worstGap, worst)
}

// TestSketchSkipsAndStaysExact runs a self-join and a block pair on rows in tight concepts,
// where the sketch should skip most tiles, and checks the lists are those of a search without
// it.
func TestSketchSkipsAndStaysExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	o := genOpts{clusters: 40, noise: 0.25, dupFrac: 0.02, seed: 8}
	a := withSelf(genBlock(rng, 2500, 192, 0, 1, o))
	b := withSelf(genBlock(rng, 1500, 192, 2500, 1, o))
	forEachBackend(t, func(t *testing.T, be string) {
		var checked, skipped int64
		opt := Options{K: 10, Backend: be, Sketched: func(c, s int64) { checked, skipped = checked+c, skipped+s }}
		dim, rows := sketchMinDim, sketchMinRows
		sketchMinDim, sketchMinRows = math.MaxInt, math.MaxInt // off, for the reference
		wantD, _, err := SearchPair(a, a, opt)
		if err != nil {
			t.Fatal(err)
		}
		wantA, wantB, _ := SearchPair(a, b, opt)
		sketchMinDim, sketchMinRows = dim, rows
		if checked != 0 {
			t.Fatal("the sketch ran while off")
		}
		forceSketch(t)
		gotD, _, _ := SearchPair(a, a, opt)
		gotA, gotB, _ := SearchPair(a, b, opt)
		for _, c := range []struct {
			name      string
			got, want Lists
		}{{"diagonal", gotD, wantD}, {"pair forA", gotA, wantA}, {"pair forB", gotB, wantB}} {
			if d := diffLists(c.got, c.want); d != "" {
				t.Fatalf("%s: %s", c.name, d)
			}
		}
		t.Logf("sketch checked %d tiles, skipped %d", checked, skipped)
		if checked == 0 || skipped*2 < checked {
			t.Errorf("the sketch skipped %d of %d tiles it checked on concept data; want more than half", skipped, checked)
		}
	})
}
