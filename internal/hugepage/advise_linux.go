package hugepage

import "golang.org/x/sys/unix"

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
