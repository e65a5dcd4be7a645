package knn

import "sync"

// Scratch buffers (packed panels, candidate buffers) of block-sized searches are recycled
// between calls: fresh multi-megabyte allocations cost page faults and zeroing on every call,
// which on a small machine is comparable to the arithmetic. Buffers come back dirty; users
// overwrite them. Buffers over poolMaxBytes (one search over a whole large reference) are left
// to the garbage collector instead, so they do not outlive the search that needed them.
const poolMaxBytes = 64 << 20

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
	if cap(s) > 0 && cap(s)*4 <= poolMaxBytes {
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
	if cap(s) > 0 && cap(s)*8 <= poolMaxBytes {
		candPool.Put(&s)
	}
}
