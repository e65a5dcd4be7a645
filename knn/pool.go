package knn

import (
	"sync"
	"unsafe"

	"github.com/lemon-curation/lemon/internal/hugepage"
)

// Scratch buffers (packed panels, candidate buffers) are fresh memory for every search unless
// recycled, and first touching fresh memory costs a page fault per page, which on a small
// (virtual) machine is comparable to the arithmetic. Buffers of hugepage.MinBytes or more are
// mapped on huge pages (see package hugepage) and unmapped when put back; smaller ones are
// recycled between calls (block-sized searches of the blockwise shape make many). Buffers come
// back dirty; users overwrite them.
type pool[T any] struct{ small sync.Pool } // of *[]T

var (
	u32Pool  pool[uint32]
	candPool pool[cand]
)

func (p *pool[T]) get(n int) []T {
	var zero T
	if uintptr(n)*unsafe.Sizeof(zero) >= hugepage.MinBytes {
		return hugepage.Alloc[T](n)
	}
	if v, ok := p.small.Get().(*[]T); ok && cap(*v) >= n {
		return (*v)[:n]
	}
	return make([]T, n)
}

func (p *pool[T]) put(s []T) {
	var zero T
	switch {
	case uintptr(cap(s))*unsafe.Sizeof(zero) >= hugepage.MinBytes:
		hugepage.Free(s)
	case cap(s) > 0:
		p.small.Put(&s)
	}
}
