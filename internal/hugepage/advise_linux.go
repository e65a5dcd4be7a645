package hugepage

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Supported says whether Alloc maps buffers itself here.
const Supported = true

// mapAdvised maps size bytes of zeroed anonymous memory and asks for huge pages over it
// (refusal only costs the speed-up). It returns nil if the mapping fails.
func mapAdvised(size uintptr) []byte {
	b, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil
	}
	_ = unix.Madvise(b, unix.MADV_HUGEPAGE)
	return b
}

func unmap(b []byte) { _ = unix.Munmap(b) }

// advise asks for huge pages over the whole huge pages inside [p, p+size).
func advise(p unsafe.Pointer, size uintptr) {
	beg := (uintptr(p) + hugePage - 1) &^ (hugePage - 1)
	end := (uintptr(p) + size) &^ (hugePage - 1)
	if beg < end {
		_ = unix.Madvise(unsafe.Slice((*byte)(unsafe.Add(p, beg-uintptr(p))), end-beg), unix.MADV_HUGEPAGE)
	}
}
