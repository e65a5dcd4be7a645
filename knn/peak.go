package knn

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"time"
)

// Measurements of this machine's limits, for benchmarks (bench/peak): how fast the kernels'
// arithmetic can go at all, and how close the tile kernel comes to it.

// Peak measures the machine's peak rate in GFLOP/s for the kernels' arithmetic on workers
// goroutines at once (each locked to a thread), for about d: a register-only loop of
// VFMADD231PS (bf16 false, what the avx512 kernel runs) or VDPBF16PS (bf16 true, the
// avx512bf16 kernel's), with no memory traffic. ok is false where the CPU lacks the
// instruction.
func Peak(bf16 bool, workers int, d time.Duration) (gflops float64, ok bool) {
	loop, perIter := peakLoop(bf16)
	if loop == nil {
		return 0, false
	}
	return rate(workers, d, perIter, loop), true
}

// KernelRate measures a backend's tile kernel in GFLOP/s on workers goroutines at once, for
// about d, with its operands hot in cache (one A micro-panel against a few B micro-panels of
// dim coordinates): the kernel's own speed, without packing, selection or memory traffic.
func KernelRate(backend string, dim, workers int, d time.Duration) (float64, error) {
	be, err := pickBackend(backend)
	if err != nil {
		return 0, err
	}
	if be.kernel == nil {
		return 0, nil // a device backend: no CPU kernel
	}
	words := be.words(dim)
	const panels = 4
	rng := rand.New(rand.NewPCG(1, 2))
	pa := make([]uint32, words*mr)
	pb := make([]uint32, words*nr*panels)
	for i := range pa {
		pa[i] = rng.Uint32() & 0x3fff3fff // finite values either way
	}
	for i := range pb {
		pb[i] = rng.Uint32() & 0x3fff3fff
	}
	high := make([]float32, mr)
	for i := range high {
		high[i] = 1e30 // nothing passes: the tile is computed and compared, as most are
	}
	perIter := float64(panels) * 2 * mr * nr * float64(dim)
	return rate(workers, d, perIter, func(iters int) {
		c := make([]float32, mr*nr)
		var masks [2 * mr]uint32
		for range iters {
			for p := range panels {
				be.kernel(pa, pb[p*words*nr:(p+1)*words*nr], words, c, high, infThr, &masks)
			}
		}
	}), nil
}

// rate runs f(iters) on workers threads at once, with iters chosen so a run takes about d, and
// returns the GFLOP/s of perIter FLOPs an iteration.
func rate(workers int, d time.Duration, perIter float64, f func(iters int)) float64 {
	iters := 1
	for { // calibrate on one thread
		start := time.Now()
		f(iters)
		if el := time.Since(start); el > d/20 || iters > 1<<40 {
			iters = int(float64(iters) * float64(d) / float64(el))
			break
		}
		iters *= 4
	}
	iters = max(1, iters)
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			f(iters)
		}()
	}
	wg.Wait()
	return float64(workers) * float64(iters) * perIter / time.Since(start).Seconds() / 1e9
}
