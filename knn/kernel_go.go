package knn

import (
	"math"
	"sync/atomic"
	"unsafe"
)

// kernelGo is the portable tile kernel (see backend), over float32 words. It walks the tile in
// 2 x 4 sub-tiles so that eight accumulators stay in registers. Each product is explicitly
// rounded to float32 before the add, so no compiler on any architecture fuses it into an FMA:
// the portable backend gives the same float32 values everywhere.
func kernelGo(aw, bw []uint32, dim int, c []float32, rowThr, colThr []float32, masks *[2 * mr]uint32) uint64 {
	a := asFloat32(aw[:dim*mr])
	b := asFloat32(bw[:dim*nr])
	c = c[:mr*nr]
	for i := 0; i < mr; i += 2 {
		for j := 0; j < nr; j += 4 {
			var c00, c01, c02, c03, c10, c11, c12, c13 float32
			ai, bj := i, j
			for d := 0; d < dim; d++ {
				x := a[ai : ai+2 : ai+2]
				y := b[bj : bj+4 : bj+4]
				x0, x1 := x[0], x[1]
				y0, y1, y2, y3 := y[0], y[1], y[2], y[3]
				c00 += float32(x0 * y0)
				c01 += float32(x0 * y1)
				c02 += float32(x0 * y2)
				c03 += float32(x0 * y3)
				c10 += float32(x1 * y0)
				c11 += float32(x1 * y1)
				c12 += float32(x1 * y2)
				c13 += float32(x1 * y3)
				ai += mr
				bj += nr
			}
			r0 := c[i*nr+j : i*nr+j+4 : i*nr+j+4]
			r0[0], r0[1], r0[2], r0[3] = c00, c01, c02, c03
			r1 := c[(i+1)*nr+j : (i+1)*nr+j+4 : (i+1)*nr+j+4]
			r1[0], r1[1], r1[2], r1[3] = c10, c11, c12, c13
		}
	}
	return tileMasks(c, rowThr, colThr, masks)
}

// tileMasks computes a kernel's masks and result from a finished tile.
func tileMasks(c []float32, rowThr, colThr []float32, masks *[2 * mr]uint32) uint64 {
	// Thresholds may be raised by other goroutines meanwhile (see topSet.threshold).
	var rt [mr]float32
	var ct [nr]float32
	for i := range rt {
		rt[i] = loadF32(&rowThr[i])
	}
	for i := range ct {
		ct[i] = loadF32(&colThr[i])
	}
	rowThr, colThr = rt[:], ct[:]
	var rows, cols uint32
	for i := 0; i < mr; i++ {
		var rm, cm uint32
		t := rowThr[i]
		for j, v := range c[i*nr : i*nr+nr] {
			if v >= t {
				rm |= 1 << j
			}
			if v >= colThr[j] {
				cm |= 1 << j
			}
		}
		masks[i], masks[mr+i] = rm, cm
		rows |= rm
		cols |= cm
	}
	return uint64(rows) | uint64(cols)<<32
}

func loadF32(p *float32) float32 {
	return math.Float32frombits(atomic.LoadUint32((*uint32)(unsafe.Pointer(p))))
}

// asFloat32 views packed float32 words as float32 values (the bits are the values).
func asFloat32(w []uint32) []float32 {
	if len(w) == 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&w[0])), len(w))
}
