package knn

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
)

// Benchmarks report GFLOP/s counting 2*Nq*Nr*D flops per modality (two modalities), i.e. what
// a plain matrix product computes. For SearchPair "eff-GFLOP/s" counts both directions (what
// two Search calls would do) although one product serves both, and "GFLOP/s" the product done.
//
// Wall-clock rates depend on what else the machine runs. "cpu-GFLOP/s" divides the same flops
// by the process's CPU time and multiplies by GOMAXPROCS: the rate if every core were ours.
//
//	go test ./knn/ -run '^$' -bench . -benchtime 3x
var benchSizes = []struct{ n, dim int }{{4096, 512}, {4096, 768}}

func benchBlocks(n, dim int) (*Block, *Block) {
	rng := rand.New(rand.NewPCG(1, uint64(dim)))
	// Two blocks of one dataset: 256 clusters shared by both, with image and text noise drawn
	// independently, so image and text neighbour lists overlap partly, as with real captions.
	o := genOpts{clusters: 256, noise: 1, seed: 42}
	a := withSelf(genBlock(rng, n, dim, 0, 1, o))
	b := withSelf(genBlock(rng, n, dim, int64(n), 1, o))
	return a, b
}

// reportRates reports the rates for flops per operation.
func reportRates(b *testing.B, flops float64, cpu0 float64, names ...string) {
	sec := b.Elapsed().Seconds() / float64(b.N)
	cpu := (cpuSeconds() - cpu0) / float64(b.N)
	for i, name := range names {
		f := flops * float64(i+1)
		b.ReportMetric(f/sec/1e9, name)
		if cpu > 0 {
			b.ReportMetric(f/(cpu/float64(runtime.GOMAXPROCS(0)))/1e9, "cpu-"+name)
		}
	}
}

func BenchmarkSearch(b *testing.B) {
	for _, be := range Backends() {
		for _, s := range benchSizes {
			b.Run(fmt.Sprintf("%s/N=%d/D=%d", be, s.n, s.dim), func(b *testing.B) {
				q, r := benchBlocks(s.n, s.dim)
				opt := Options{K: 30, Backend: be}
				cpu0 := cpuSeconds()
				for b.Loop() {
					if _, err := Search(q, r, opt); err != nil {
						b.Fatal(err)
					}
				}
				reportRates(b, 2*float64(s.n)*float64(s.n)*float64(s.dim)*2, cpu0, "GFLOP/s")
			})
		}
	}
}

func BenchmarkSearchPair(b *testing.B) {
	for _, be := range Backends() {
		for _, s := range benchSizes {
			b.Run(fmt.Sprintf("%s/N=%d/D=%d", be, s.n, s.dim), func(b *testing.B) {
				x, y := benchBlocks(s.n, s.dim)
				opt := Options{K: 30, Backend: be}
				cpu0 := cpuSeconds()
				for b.Loop() {
					if _, _, err := SearchPair(x, y, opt); err != nil {
						b.Fatal(err)
					}
				}
				reportRates(b, 2*float64(s.n)*float64(s.n)*float64(s.dim)*2, cpu0, "GFLOP/s", "eff-GFLOP/s")
			})
		}
	}
}

// BenchmarkSearchPairDiagonal is the self-join diagonal block: only the upper triangle is
// computed; eff-GFLOP/s counts the full square.
func BenchmarkSearchPairDiagonal(b *testing.B) {
	for _, be := range Backends() {
		s := benchSizes[1]
		b.Run(fmt.Sprintf("%s/N=%d/D=%d", be, s.n, s.dim), func(b *testing.B) {
			x, _ := benchBlocks(s.n, s.dim)
			opt := Options{K: 30, Backend: be}
			cpu0 := cpuSeconds()
			for b.Loop() {
				if _, _, err := SearchPair(x, x, opt); err != nil {
					b.Fatal(err)
				}
			}
			reportRates(b, 2*float64(s.n)*float64(s.n)*float64(s.dim)*2, cpu0, "eff-GFLOP/s")
		})
	}
}

// BenchmarkSketch compares searches with and without the sketch (sketch.go) on data it suits
// (rows in tight concepts) and on data it cannot separate (rows spread evenly, where skipShare
// turns it off), as a self-join diagonal block and as a pair of blocks, on the fastest backend.
// Compare the on/off pairs' ns/op: on the random rows, "on" shows what deciding costs.
func BenchmarkSketch(b *testing.B) {
	const n, dim = 8192, 512
	data := map[string]genOpts{
		"concepts": {clusters: 40, noise: 0.6, seed: 3},
		"random":   {},
	}
	for _, name := range []string{"concepts", "random"} {
		rng := rand.New(rand.NewPCG(5, 5))
		x := withSelf(genBlock(rng, n, dim, 0, 1, data[name]))
		y := withSelf(genBlock(rng, n, dim, n, 1, data[name]))
		for _, shape := range []string{"diagonal", "pair"} {
			for _, on := range []bool{true, false} {
				b.Run(fmt.Sprintf("%s/%s/sketch=%v", name, shape, on), func(b *testing.B) {
					if !on {
						minDim := sketchMinDim
						sketchMinDim = 1 << 30
						defer func() { sketchMinDim = minDim }()
					}
					var checked, skipped int64
					other := y
					if shape == "diagonal" {
						other = x
					}
					for b.Loop() {
						opt := Options{K: 30, Sketched: func(c, s int64) { checked, skipped = checked+c, skipped+s }}
						if _, _, err := SearchPair(x, other, opt); err != nil {
							b.Fatal(err)
						}
					}
					if checked > 0 {
						b.ReportMetric(float64(skipped)/float64(checked), "skipped/checked")
					}
				})
			}
		}
	}
}
