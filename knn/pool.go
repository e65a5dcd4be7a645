package knn

import (
	"sync"

	"github.com/lemon-curation/lemon/internal/hugepage"
)

// Scratch buffers (packed panels, candidate buffers) are fresh memory for every search unless
// recycled, and first touching fresh memory costs a page fault per page, which on a small
// (virtual) machine is comparable to the arithmetic. Buffers of hugepage.MinBytes or more are
// mapped on huge pages (see package hugepage) and unmapped when put back; smaller ones are
// recycled between calls (block-sized searches of the blockwise shape make many). Buffers come
// back dirty; users overwrite them.
var (
	u32Pool  sync.Pool // *[]uint32
	candPool sync.Pool // *[]cand
)

func getU32(n int) []uint32 {
	if n*4 >= hugepage.MinBytes {
		return hugepage.Alloc[uint32](n)
	}
	if v, ok := u32Pool.Get().(*[]uint32); ok && cap(*v) >= n {
		return (*v)[:n]
	}
	return make([]uint32, n)
}

func putU32(s []uint32) {
	switch {
	case cap(s)*4 >= hugepage.MinBytes:
		hugepage.Free(s)
	case cap(s) > 0:
		u32Pool.Put(&s)
	}
}

func getCands(n int) []cand {
	if n*8 >= hugepage.MinBytes {
		return hugepage.Alloc[cand](n)
	}
	if v, ok := candPool.Get().(*[]cand); ok && cap(*v) >= n {
		return (*v)[:n]
	}
	return make([]cand, n)
}

func putCands(s []cand) {
	switch {
	case cap(s)*8 >= hugepage.MinBytes:
		hugepage.Free(s)
	case cap(s) > 0:
		candPool.Put(&s)
	}
}
