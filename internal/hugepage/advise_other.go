//go:build !linux

package hugepage

import "unsafe"

// Supported says whether Alloc maps buffers itself here.
const Supported = false

func mapAdvised(uintptr) []byte { return nil }

func unmap([]byte) {}

func advise(unsafe.Pointer, uintptr) {}
