package imageprep

import (
	"math"
	"sync"
)

// precisionBits is Pillow's PRECISION_BITS: 8 bits for the result and two
// spare bits because the bicubic filter has negative lobes.
const precisionBits = 32 - 8 - 2

// scratch holds per-call buffers, pooled so steady-state Preprocess calls
// allocate only what the image decoder does.
type scratch struct {
	rgb, row, tmp, res, cb, cr []byte
	acc, sumB, sumR            []int32
	kx, ky                     kernel
	wf                         []float64
	xtab, ytab                 []int
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func getScratch() *scratch  { return scratchPool.Get().(*scratch) }
func putScratch(s *scratch) { scratchPool.Put(s) }

// sums returns two int32 scratch slices of length n.
func (sc *scratch) sums(n int) ([]int32, []int32) {
	if cap(sc.sumB) < n {
		sc.sumB, sc.sumR = make([]int32, n), make([]int32, n)
	}
	return sc.sumB[:n], sc.sumR[:n]
}

// buf returns (*p)[:n], growing it if needed.
func (sc *scratch) buf(p *[]byte, n int) []byte {
	if cap(*p) < n {
		*p = make([]byte, n)
	}
	return (*p)[:n]
}

// resizedSize is torchvision's Resize(int) on a PIL image: the shorter side
// becomes size and the longer int(size*long/short) (truncated; Python's
// true division of two exact integers is one correctly rounded division,
// as here).
func resizedSize(w, h, size int) (int, int) {
	if w <= h {
		if w == size {
			return w, h
		}
		return size, int(float64(size*h) / float64(w))
	}
	if h == size {
		return w, h
	}
	return int(float64(size*w) / float64(h)), size
}

// cropOffset is torchvision CenterCrop's int(round((n - size) / 2.0)), with
// Python's round-half-to-even.
func cropOffset(n, size int) int {
	return int(math.RoundToEven(float64(n-size) / 2.0))
}

// resizeCrop writes CenterCrop(size)(Resize(size)(src)) converted to RGB
// (HWC uint8, size*size*3) into out.
func resizeCrop(src *source, size int, out []byte, sc *scratch) {
	rw, rh := resizedSize(src.w, src.h, size)
	left, top := cropOffset(rw, size), cropOffset(rh, size)
	nc := src.layout.channels()
	res := sc.buf(&sc.res, size*size*nc)
	if src.nearest {
		nearestCrop(src, rw, rh, left, top, size, res, sc)
	} else {
		bicubicCrop(src, rw, rh, left, top, size, res, sc)
	}
	toRGB(res, src.layout, out)
}

// kernel is the fixed-point bicubic filter for a window of output pixels,
// as computed by Pillow's precompute_coeffs + normalize_coeffs_8bpc.
type kernel struct {
	ksize  int
	start  []int   // first input index of each output, relative to lo
	n      []int   // number of taps of each output
	k      []int32 // ksize coefficients per output
	lo, hi int     // input range [lo, hi) that the window reads
}

// bicubic is Pillow's bicubic_filter (a = -0.5). The float64() conversions
// forbid fused multiply-adds, which would round differently from Pillow.
func bicubic(x float64) float64 {
	if x < 0 {
		x = -x
	}
	if x < 1 {
		t := float64(1.5*x) - 2.5
		t = float64(t * x)
		t = float64(t * x)
		return t + 1
	}
	if x < 2 {
		t := float64((x-5)*x) + 8
		t = float64(t*x) - 4
		return t * -0.5
	}
	return 0
}

// setup fills k with the coefficients of outputs [o0, o0+cnt) of an
// inSize -> outSize bicubic resample.
func (k *kernel) setup(inSize, outSize, o0, cnt int, sc *scratch) {
	// Pillow passes the box as C floats: (double)(in1 - in0) / outSize.
	scale := float64(float32(inSize)) / float64(outSize)
	filterscale := max(scale, 1.0)
	support := 2.0 * filterscale
	ksize := int(math.Ceil(support))*2 + 1
	k.ksize = ksize
	k.start = growInts(k.start, cnt)
	k.n = growInts(k.n, cnt)
	if cap(k.k) < cnt*ksize {
		k.k = make([]int32, cnt*ksize)
	}
	k.k = k.k[:cnt*ksize]
	clear(k.k)
	if cap(sc.wf) < ksize {
		sc.wf = make([]float64, ksize)
	}
	wf := sc.wf[:ksize]
	ss := 1.0 / filterscale
	k.lo, k.hi = inSize, 0
	for i := range cnt {
		xx := o0 + i
		center := float64((float64(xx) + 0.5) * scale)
		xmin := int(center - support + 0.5) // C (int) truncates toward zero
		xmin = max(xmin, 0)
		xmax := min(int(center+support+0.5), inSize) - xmin
		ww := 0.0
		for x := range xmax {
			w := bicubic(float64(float64(x+xmin)-center+0.5) * ss)
			wf[x] = w
			ww += w
		}
		kk := k.k[i*ksize : i*ksize+xmax]
		for x := range xmax {
			w := wf[x]
			if ww != 0 {
				w /= ww
			}
			if w < 0 {
				kk[x] = int32(-0.5 + float64(w*(1<<precisionBits)))
			} else {
				kk[x] = int32(0.5 + float64(w*(1<<precisionBits)))
			}
		}
		k.start[i], k.n[i] = xmin, xmax
		k.lo, k.hi = min(k.lo, xmin), max(k.hi, xmin+xmax)
	}
	for i := range cnt {
		k.start[i] -= k.lo
	}
}

func growInts(s []int, n int) []int {
	if cap(s) < n {
		return make([]int, n)
	}
	return s[:n]
}

// clip8 is Pillow's clip8: drop the fraction bits, clamp to 0..255.
func clip8(ss int32) uint8 {
	v := ss >> precisionBits
	if uint32(v) > 255 {
		if v < 0 {
			return 0
		}
		return 255
	}
	return uint8(v)
}

// bicubicCrop runs Pillow's two-pass resampler (horizontal into uint8, then
// vertical into uint8) for the size*size window at (left, top) of the
// rw x rh resized image, into res (packed in src.layout).
func bicubicCrop(src *source, rw, rh, left, top, size int, res []byte, sc *scratch) {
	nc := src.layout.channels()
	needH, needV := rw != src.w, rh != src.h

	// Rows of the source the vertical pass reads.
	yFirst, yLast := top, top+size
	ky := &sc.ky
	if needV {
		ky.setup(src.h, rh, top, size, sc)
		yFirst, yLast = ky.lo, ky.hi
	}
	xLo, xHi := left, left+size
	kx := &sc.kx
	if needH {
		kx.setup(src.w, rw, left, size, sc)
		xLo, xHi = kx.lo, kx.hi
	}

	rowLen := size * nc
	tmp := res
	if needV {
		tmp = sc.buf(&sc.tmp, (yLast-yFirst)*rowLen)
	}
	row := sc.buf(&sc.row, (xHi-xLo)*4) // 4: room for any layout
	for y := yFirst; y < yLast; y++ {
		t := tmp[(y-yFirst)*rowLen : (y-yFirst+1)*rowLen]
		if !needH {
			src.fill(y, xLo, xHi, t)
			continue
		}
		src.fill(y, xLo, xHi, row)
		horizontal(row, t, kx, size, nc)
	}
	if needV {
		vertical(tmp, res, ky, size, rowLen, sc)
	}
}

// horizontal is ImagingResampleHorizontal_8bpc for one row.
func horizontal(row, out []byte, k *kernel, size, nc int) {
	ks := k.ksize
	switch nc {
	case 1:
		for x := range size {
			kk := k.k[x*ks : x*ks+k.n[x]]
			p := row[k.start[x]:]
			p = p[:len(kk)]
			ss := int32(1 << (precisionBits - 1))
			for i, c := range kk {
				ss += int32(p[i]) * c
			}
			out[x] = clip8(ss)
		}
	case 3:
		for x := range size {
			kk := k.k[x*ks : x*ks+k.n[x]]
			p := row[3*k.start[x]:]
			p = p[:3*len(kk)]
			s0 := int32(1 << (precisionBits - 1))
			s1, s2 := s0, s0
			for i, c := range kk {
				q := p[3*i : 3*i+3 : 3*i+3]
				s0 += int32(q[0]) * c
				s1 += int32(q[1]) * c
				s2 += int32(q[2]) * c
			}
			o := out[3*x : 3*x+3 : 3*x+3]
			o[0], o[1], o[2] = clip8(s0), clip8(s1), clip8(s2)
		}
	default:
		for x := range size {
			kk := k.k[x*ks : x*ks+k.n[x]]
			p := row[4*k.start[x]:]
			p = p[:4*len(kk)]
			s0 := int32(1 << (precisionBits - 1))
			s1, s2, s3 := s0, s0, s0
			for i, c := range kk {
				q := p[4*i : 4*i+4 : 4*i+4]
				s0 += int32(q[0]) * c
				s1 += int32(q[1]) * c
				s2 += int32(q[2]) * c
				s3 += int32(q[3]) * c
			}
			o := out[4*x : 4*x+4 : 4*x+4]
			o[0], o[1], o[2], o[3] = clip8(s0), clip8(s1), clip8(s2), clip8(s3)
		}
	}
}

// vertical is ImagingResampleVertical_8bpc. It accumulates whole rows at a
// time (same sums in the same order as Pillow's per-pixel loop, so the
// same results) because that streams through memory.
func vertical(tmp, res []byte, k *kernel, size, rowLen int, sc *scratch) {
	if cap(sc.acc) < rowLen {
		sc.acc = make([]int32, rowLen)
	}
	acc := sc.acc[:rowLen]
	ks := k.ksize
	for y := range size {
		for j := range acc {
			acc[j] = 1 << (precisionBits - 1)
		}
		kk := k.k[y*ks : y*ks+k.n[y]]
		base := k.start[y] * rowLen
		for i, c := range kk {
			r := tmp[base+i*rowLen : base+(i+1)*rowLen]
			r = r[:len(acc)]
			for j, v := range r {
				acc[j] += int32(v) * c
			}
		}
		o := res[y*rowLen : (y+1)*rowLen]
		o = o[:len(acc)]
		for j, s := range acc {
			o[j] = clip8(s)
		}
	}
}

// nearestTable maps outputs [o0, o0+cnt) of an in -> out nearest resize to
// input indices like Pillow's ImagingScaleAffine: the source coordinate
// starts at scale/2 and is advanced by repeated addition (so it carries
// Pillow's accumulated rounding), then truncated. -1 marks outputs that
// fall outside the input (Pillow leaves those zero).
func nearestTable(tab []int, in, out, o0, cnt int) []int {
	tab = growInts(tab, cnt)
	a0 := float64(float32(in)) / float64(out)
	coord := func(v float64) int {
		if v < 0 {
			return -1
		}
		if c := int(v); c < in {
			return c
		}
		return -1
	}
	if o0+cnt > 1<<26 {
		// Absurd aspect ratios: don't loop billions of times; the direct
		// product can differ from the running sum in the last bit.
		for i := range cnt {
			tab[i] = coord(float64(a0*0.5) + float64(float64(o0+i)*a0))
		}
		return tab
	}
	xo := float64(a0 * 0.5)
	for x := range o0 + cnt {
		if x >= o0 {
			tab[x-o0] = coord(xo)
		}
		xo += a0
	}
	return tab
}

// nearestCrop is Pillow's NEAREST resize (used for modes "P" and "1")
// restricted to the crop window.
func nearestCrop(src *source, rw, rh, left, top, size int, res []byte, sc *scratch) {
	nc := src.layout.channels()
	sc.xtab = nearestTable(sc.xtab, src.w, rw, left, size)
	sc.ytab = nearestTable(sc.ytab, src.h, rh, top, size)
	xLo, xHi := src.w, 0
	for _, x := range sc.xtab {
		if x >= 0 {
			xLo, xHi = min(xLo, x), max(xHi, x+1)
		}
	}
	xHi = max(xHi, xLo)
	row := sc.buf(&sc.row, (xHi-xLo)*4)
	last := -1
	for y, sy := range sc.ytab {
		o := res[y*size*nc : (y+1)*size*nc]
		if sy < 0 {
			clear(o)
			continue
		}
		if sy != last {
			src.fill(sy, xLo, xHi, row)
			last = sy
		}
		for x, sx := range sc.xtab {
			d := o[x*nc : (x+1)*nc]
			if sx < 0 {
				clear(d)
				continue
			}
			copy(d, row[(sx-xLo)*nc:])
		}
	}
}

// toRGB is Pillow's convert("RGB") from the resized layout.
func toRGB(res []byte, l layout, out []byte) {
	n := len(out) / 3
	switch l {
	case layoutL:
		for i, v := range res[:n] {
			o := out[3*i : 3*i+3 : 3*i+3]
			o[0], o[1], o[2] = v, v, v
		}
	case layoutRGB:
		copy(out, res[:3*n])
	case layoutRGBa:
		// RGBa -> RGBA (Pillow's rgba2rgbA: truncating division, alpha 0
		// and 255 pass through), then RGBA -> RGB drops alpha.
		for i := range n {
			p := res[4*i : 4*i+4 : 4*i+4]
			o := out[3*i : 3*i+3 : 3*i+3]
			a := uint32(p[3])
			if a == 0 || a == 255 {
				o[0], o[1], o[2] = p[0], p[1], p[2]
				continue
			}
			o[0] = uint8(min(255*uint32(p[0])/a, 255))
			o[1] = uint8(min(255*uint32(p[1])/a, 255))
			o[2] = uint8(min(255*uint32(p[2])/a, 255))
		}
	case layoutCMYK:
		// Pillow's cmyk2rgb.
		for i := range n {
			p := res[4*i : 4*i+4 : 4*i+4]
			o := out[3*i : 3*i+3 : 3*i+3]
			nk := 255 - uint32(p[3])
			o[0] = uint8(nk) - mulDiv255(uint32(p[0]), nk)
			o[1] = uint8(nk) - mulDiv255(uint32(p[1]), nk)
			o[2] = uint8(nk) - mulDiv255(uint32(p[2]), nk)
		}
	}
}
