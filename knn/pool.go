package knn

import "sync"

// Large scratch buffers (packed panels, candidate buffers) are recycled between calls: fresh
// multi-megabyte allocations cost page faults and zeroing on every call, which on a small
// machine is comparable to the arithmetic. Buffers come back dirty; users overwrite them.
var (
	u32Pool  sync.Pool // *[]uint32
	candPool sync.Pool // *[]cand
)

func getU32(n int) []uint32 {
	if v, ok := u32Pool.Get().(*[]uint32); ok && cap(*v) >= n {
		return (*v)[:n]
	}
	return make([]uint32, n)
}

func putU32(s []uint32) {
	if cap(s) > 0 {
		u32Pool.Put(&s)
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
