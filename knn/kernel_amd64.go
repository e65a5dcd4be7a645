//go:build amd64 && !purego

package knn

import "golang.org/x/sys/cpu"

//go:generate go run ./internal/asmgen -out kernel_amd64.s

// hasAVX512 reports whether the CPU and OS support what the assembly uses: AVX-512 F/DQ/BW/VL
// (x/sys/cpu also checks that the OS saves the ZMM and opmask registers), plus BMI2 (PEXT) and
// POPCNT, which every AVX-512 CPU has. The bf16 kernel also needs AVX512_BF16 (VDPBF16PS).
var hasAVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ && cpu.X86.HasAVX512BW &&
	cpu.X86.HasAVX512VL && cpu.X86.HasBMI2 && cpu.X86.HasPOPCNT

func init() {
	if !hasAVX512 {
		return
	}
	backends = append([]*backend{{name: "avx512", kernel: kernelAVX512}}, backends...)
	if cpu.X86.HasAVX512BF16 {
		backends = append([]*backend{{name: "avx512bf16", bf16: true, kernel: kernelBF16AVX512}}, backends...)
	}
	partitionGE = func(src []cand, pivot float32, ge, lt []cand) int {
		n := len(src)
		if n == 0 {
			return 0
		}
		_ = ge[n+7]
		_ = lt[n+7]
		return partitionGEAVX512(&src[0], n, pivot, &ge[0], &lt[0])
	}
	dot64 = func(q []float64, r, next []float32) float64 {
		n := min(len(q), len(r))
		if n == 0 || len(next) < n {
			return dot64Go(q, r, next)
		}
		return dot64AVX512(&q[0], &r[0], &next[0], n)
	}
	sqdist64 = func(q []float64, r, next []float32) float64 {
		n := min(len(q), len(r))
		if n == 0 || len(next) < n {
			return sqdist64Go(q, r, next)
		}
		return sqdist64AVX512(&q[0], &r[0], &next[0], n)
	}
}

//go:noescape
func tileAVX512(a, b *uint32, words int, c *float32, rowThr, colThr *float32, masks *uint32) uint64

//go:noescape
func tileBF16AVX512(a, b *uint32, words int, c *float32, rowThr, colThr *float32, masks *uint32) uint64

//go:noescape
func partitionGEAVX512(src *cand, n int, pivot float32, ge, lt *cand) int

//go:noescape
func dot64AVX512(q *float64, r, next *float32, n int) float64

//go:noescape
func sqdist64AVX512(q *float64, r, next *float32, n int) float64

// checkTile panics unless the slices are long enough for one tile, which makes the pointer
// arithmetic in assembly safe. It checks lengths only: thresholds may be raised concurrently
// (see topSet.threshold), so they are not read here.
func checkTile(a, b []uint32, words int, c, rowThr, colThr []float32) {
	if len(a) < words*mr || len(b) < words*nr || len(c) < mr*nr || len(rowThr) < mr || len(colThr) < nr {
		panic("knn: tile operands too short")
	}
}

// kernelAVX512 and kernelBF16AVX512 are the AVX-512 tile kernels (see backend).
func kernelAVX512(a, b []uint32, words int, c []float32, rowThr, colThr []float32, masks *[2 * mr]uint32) uint64 {
	checkTile(a, b, words, c, rowThr, colThr)
	return tileAVX512(&a[0], &b[0], words, &c[0], &rowThr[0], &colThr[0], &masks[0])
}

func kernelBF16AVX512(a, b []uint32, words int, c []float32, rowThr, colThr []float32, masks *[2 * mr]uint32) uint64 {
	checkTile(a, b, words, c, rowThr, colThr)
	return tileBF16AVX512(&a[0], &b[0], words, &c[0], &rowThr[0], &colThr[0], &masks[0])
}

//go:noescape
func peakFMA(iters int)

//go:noescape
func peakBF16(iters int)

// peakLoop returns the register-only loop for bf16 or float32 arithmetic and the FLOPs of one
// of its iterations (24 accumulators x 16 lanes x 2 FLOPs, twice that for two bf16 products a
// lane), or nil where the CPU lacks the instruction.
func peakLoop(bf16 bool) (func(int), float64) {
	switch {
	case bf16 && hasAVX512 && cpu.X86.HasAVX512BF16:
		return peakBF16, 24 * 16 * 4
	case !bf16 && hasAVX512:
		return peakFMA, 24 * 16 * 2
	}
	return nil, 0
}
