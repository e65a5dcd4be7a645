// Package hugepage allocates the large, short-lived, pointer-free buffers of a neighbour search
// (embeddings, packed panels, candidate buffers) outside the Go heap, backed by transparent huge
// pages where Linux allows it.
//
// Why: with transparent huge pages on request only ("madvise", Debian's default), each 4 KiB
// page of a fresh buffer costs a page fault on first touch. On virtual machines a fault costs
// microseconds (about 14 µs on the Firecracker VMs lemon is benchmarked on), so faulting in a
// few hundred MiB took seconds of system time per run. One 2 MiB page replaces 512 faults.
// Go's own heap cannot be advised reliably: the runtime zeroes reused memory inside make,
// before a caller could advise it. Advise does it where it can, for big slices that must stay
// on the heap because they hold pointers (neighbour lists, scored rows).
//
// Buffers from Alloc must be given back with Free; they are not garbage collected. Elsewhere
// than Linux, or where mapping fails, Alloc falls back to make and Free does nothing.
package hugepage

import (
	"fmt"
	"reflect"
	"sync"
	"unsafe"
)

const hugePage = 2 << 20

// MinBytes is the smallest buffer Alloc maps itself; smaller ones come from make.
const MinBytes = 4 << 20

var (
	mu          sync.Mutex
	mapped      = map[uintptr][]byte{} // first element's address -> the whole mapping
	mappedBytes int64                  // bytes ever mapped
)

// Alloc returns a zeroed slice of n T. T must hold no pointers (the garbage collector does
// not scan the memory); Alloc panics otherwise.
func Alloc[T any](n int) []T {
	var zero T
	size := uintptr(n) * unsafe.Sizeof(zero)
	if n <= 0 || size < MinBytes {
		return make([]T, n)
	}
	if t := reflect.TypeFor[T](); hasPointers(t) {
		panic(fmt.Sprintf("hugepage: %v holds pointers", t))
	}
	// Map a huge page more, so that the buffer can start on a huge page boundary: only whole,
	// aligned huge pages can back it.
	b := mapAdvised(size + hugePage)
	if b == nil {
		return make([]T, n)
	}
	base := uintptr(unsafe.Pointer(&b[0]))
	off := (base+hugePage-1)&^(hugePage-1) - base
	p := unsafe.Pointer(&b[off])
	mu.Lock()
	mapped[uintptr(p)] = b
	mappedBytes += int64(len(b))
	mu.Unlock()
	return unsafe.Slice((*T)(p), n)
}

// Free releases a slice returned by Alloc (any re-slicing that keeps its first element). Other
// slices, including Alloc's make fallbacks, are left to the garbage collector. The slice must
// not be used afterwards.
func Free[T any](s []T) {
	if cap(s) == 0 {
		return
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(s)))
	mu.Lock()
	b, ok := mapped[p]
	delete(mapped, p)
	mu.Unlock()
	if ok {
		unmap(b)
	}
}

// Stats reports how many bytes Alloc has mapped in all, and how many of them are not freed yet
// (for tests).
func Stats() (total, outstanding int64) {
	mu.Lock()
	defer mu.Unlock()
	for _, b := range mapped {
		outstanding += int64(len(b))
	}
	return mappedBytes, outstanding
}

func hasPointers(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return false
	case reflect.Array:
		return t.Len() > 0 && hasPointers(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if hasPointers(t.Field(i).Type) {
				return true
			}
		}
		return false
	}
	return true
}

// Advise asks for huge pages over the whole huge pages inside s, a buffer from make. It only
// helps where s's memory has not been touched yet (the runtime hands out fresh memory
// untouched, but zeroes reused memory inside make); elsewhere it does nothing.
func Advise[T any](s []T) {
	var zero T
	if size := uintptr(len(s)) * unsafe.Sizeof(zero); size >= MinBytes {
		advise(unsafe.Pointer(unsafe.SliceData(s)), size)
	}
}
