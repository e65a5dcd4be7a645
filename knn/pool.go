package knn

import "sync"

// Large scratch buffers (packed panels, candidate buffers) are recycled between calls: fresh
// multi-megabyte allocations cost page faults and zeroing on every call, which on a small
// machine is comparable to the arithmetic. Buffers come back dirty; users overwrite them.
var (
	f32Pool  sync.Pool // *[]float32
	candPool sync.Pool // *[]cand
)

func getF32(n int) []float32 {
	if v, ok := f32Pool.Get().(*[]float32); ok && cap(*v) >= n {
		return (*v)[:n]
	}
	return make([]float32, n)
}

func putF32(s []float32) {
	if cap(s) > 0 {
		f32Pool.Put(&s)
	}
}

func getCands(n int) []cand {
	if v, ok := candPool.Get().(*[]cand); ok && cap(*v) >= n {
		return (*v)[:n]
	}
	return make([]cand, n)
}

func putCands(s []cand) {
	if cap(s) > 0 {
		candPool.Put(&s)
	}
}
