package imageprep

import "image"

// Lossy WebP (VP8) is limited-range BT.601 4:2:0, which Go's image/color
// would convert as full-range JFIF, several levels off. libwebp (Pillow's
// decoder) upsamples chroma with its "fancy" bilinear filter and converts
// with 14-bit fixed-point constants; both are reproduced here from
// src/dsp/upsampling.c (UPSAMPLE_FUNC), src/dec/io_dec.c (EmitFancyRGB: the
// row pairing) and src/dsp/yuv.h (VP8YuvToRgb). The VP8 planes themselves
// are bit-exact by specification, so lossy WebP matches Pillow exactly.

// webpClip8 is libwebp's VP8Clip8 with YUV_FIX2 = 6.
func webpClip8(v int32) uint8 {
	if v&^(256<<6-1) == 0 {
		return uint8(v >> 6)
	}
	if v < 0 {
		return 0
	}
	return 255
}

func multHi(v, c int32) int32 { return (v * c) >> 8 }

// webpFancy computes the upsampled chroma of output column x from the
// nearer (n) and farther (f) chroma rows of a width-w image.
func webpFancy(n, f []uint8, x, w int) int32 {
	if x == 0 {
		return (3*int32(n[0]) + int32(f[0]) + 2) >> 2
	}
	j := (x + 1) >> 1
	if x&1 == 1 && j > (w-1)>>1 { // last column of an even width
		return (3*int32(n[j-1]) + int32(f[j-1]) + 2) >> 2
	}
	a, b, c, d := int32(n[j-1]), int32(n[j]), int32(f[j-1]), int32(f[j])
	avg := a + b + c + d + 8
	if x&1 == 1 {
		return (((avg + 2*(b+c)) >> 3) + a) >> 1
	}
	return (((avg + 2*(a+d)) >> 3) + b) >> 1
}

// webpYCbCrFill returns a row filler producing libwebp-identical RGB from
// a 4:2:0 image decoded by golang.org/x/image/webp.
func webpYCbCrFill(m *image.YCbCr) func(y, x0, x1 int, dst []byte) {
	w, h := m.Rect.Dx(), m.Rect.Dy()
	ch := (h + 1) / 2
	return func(y, x0, x1 int, dst []byte) {
		var near, far int
		switch {
		case y == 0:
		case y&1 == 1:
			near, far = (y-1)/2, (y+1)/2
			if far >= ch {
				far = near
			}
		default:
			near, far = y/2, y/2-1
		}
		nu, nv := m.Cb[near*m.CStride:], m.Cr[near*m.CStride:]
		fu, fv := m.Cb[far*m.CStride:], m.Cr[far*m.CStride:]
		yRow := m.Y[y*m.YStride:]
		for x := x0; x < x1; x++ {
			u, v := webpFancy(nu, fu, x, w), webpFancy(nv, fv, x, w)
			yy := multHi(int32(yRow[x]), 19077)
			d := dst[3*(x-x0) : 3*(x-x0)+3 : 3*(x-x0)+3]
			d[0] = webpClip8(yy + multHi(v, 26149) - 14234)
			d[1] = webpClip8(yy - multHi(u, 6419) - multHi(v, 13320) + 8708)
			d[2] = webpClip8(yy + multHi(u, 33050) - 17685)
		}
	}
}
