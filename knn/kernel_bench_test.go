package knn

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkKernel measures the tile kernel alone: hot (one A and one B micro-panel, in L1/L2)
// and streaming (many B panels, as in a search).
func BenchmarkKernel(b *testing.B) {
	for _, be := range backends {
		for _, dim := range []int{512, 768} {
			for _, panels := range []int{1, 128} {
				b.Run(fmt.Sprintf("%s/D=%d/bpanels=%d", be.name, dim, panels), func(b *testing.B) {
					rng := rand.New(rand.NewPCG(1, 1))
					words := be.words(dim)
					pa := make([]uint32, words*mr)
					pb := make([]uint32, words*nr*panels)
					for i := range pa {
						pa[i] = rng.Uint32() & 0x3fff3fff // finite values either way
					}
					for i := range pb {
						pb[i] = rng.Uint32() & 0x3fff3fff
					}
					c := make([]float32, mr*nr)
					var masks [2 * mr]uint32
					rt := make([]float32, mr)
					for i := range rt {
						rt[i] = 1e30
					}
					b.ResetTimer()
					n := 0
					for b.Loop() {
						for p := 0; p < panels; p++ {
							be.kernel(pa, pb[p*words*nr:(p+1)*words*nr], words, c, rt, infThr, &masks)
						}
						n += panels
					}
					b.ReportMetric(float64(n)*2*mr*nr*float64(dim)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				})
			}
		}
	}
}
