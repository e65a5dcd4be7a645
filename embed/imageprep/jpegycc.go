package imageprep

import "image"

// libjpeg-turbo (which Pillow decodes JPEG with) does not convert YCbCr the
// way Go's image/color does: it upsamples subsampled chroma with a triangle
// ("fancy") filter instead of replicating it, and converts with its own
// 16-bit fixed-point tables. Reproducing both on Go's decoded planes leaves
// only the IDCT as a source of difference. The arithmetic below follows
// jdsample.c (h2v1/h1v2/h2v2_fancy_upsample, int_upsample) and jdcolor.c
// (build_ycc_rgb_table, ycc_rgb_convert).

const yccScaleBits = 16

var yccCrR, yccCbB, yccCrG, yccCbG [256]int32

func init() {
	fix := func(x float64) int64 { return int64(x*(1<<yccScaleBits) + 0.5) }
	half := int64(1) << (yccScaleBits - 1)
	for i := range 256 {
		x := int64(i - 128)
		yccCrR[i] = int32((fix(1.40200)*x + half) >> yccScaleBits)
		yccCbB[i] = int32((fix(1.77200)*x + half) >> yccScaleBits)
		yccCrG[i] = int32(-fix(0.71414) * x)
		yccCbG[i] = int32(-fix(0.34414)*x + half)
	}
}

func clampU8(v int32) uint8 {
	if uint32(v) > 255 {
		if v < 0 {
			return 0
		}
		return 255
	}
	return uint8(v)
}

// jpegYCbCrFill returns a row filler producing libjpeg-compatible RGB.
func jpegYCbCrFill(m *image.YCbCr, sc *scratch) func(y, x0, x1 int, dst []byte) {
	w, h := m.Rect.Dx(), m.Rect.Dy()
	hs, vs := 1, 1
	switch m.SubsampleRatio {
	case image.YCbCrSubsampleRatio422:
		hs = 2
	case image.YCbCrSubsampleRatio420:
		hs, vs = 2, 2
	case image.YCbCrSubsampleRatio440:
		vs = 2
	case image.YCbCrSubsampleRatio411:
		hs = 4
	case image.YCbCrSubsampleRatio410:
		hs, vs = 4, 2
	}
	// libjpeg's downsampled_width/height: ceil(size * samp / max_samp).
	cw, ch := (w+hs-1)/hs, (h+vs-1)/vs
	var fancyH, fancyV bool
	switch {
	case hs == 2 && vs == 1: // h2v1
		fancyH = cw > 2
	case hs == 1 && vs == 2: // h1v2: fancy regardless of width
		fancyV = true
	case hs == 2 && vs == 2: // h2v2
		fancyH, fancyV = cw > 2, cw > 2
	}
	cOff := func(cx, cy int) int { // chroma plane offset; JPEG images start at (0,0)
		return (cy+m.Rect.Min.Y/vs)*m.CStride + cx + m.Rect.Min.X/hs
	}
	cb := sc.buf(&sc.cb, w)
	cr := sc.buf(&sc.cr, w)
	return func(y, x0, x1 int, dst []byte) {
		n := x1 - x0
		cbRow, crRow := cb[:n], cr[:n]
		cy := y / vs
		switch {
		case hs == 1 && vs == 1:
			o := cOff(x0, cy)
			copy(cbRow, m.Cb[o:o+n])
			copy(crRow, m.Cr[o:o+n])
		case fancyH && fancyV: // h2v2 triangle filter in both directions
			r1 := cy + 1
			if y&1 == 0 {
				r1 = cy - 1
			}
			r1 = max(0, min(r1, ch-1))
			b0, b1 := m.Cb[cOff(0, cy):], m.Cb[cOff(0, r1):]
			c0, c1 := m.Cr[cOff(0, cy):], m.Cr[cOff(0, r1):]
			// Vertical column sums 3*near + far for chroma columns
			// cLo-1 .. cHi+1, edge-replicated like libjpeg's first/last
			// column special cases.
			cLo, cHi := x0>>1, (x1-1)>>1
			nb := cHi - cLo + 3
			sb, sr := sc.sums(nb)
			for k := range nb {
				c := max(0, min(cLo-1+k, cw-1))
				sb[k] = 3*int32(b0[c]) + int32(b1[c])
				sr[k] = 3*int32(c0[c]) + int32(c1[c])
			}
			for i := range n {
				x := x0 + i
				k := x>>1 - cLo + 1
				if x&1 == 0 {
					cbRow[i] = uint8((3*sb[k] + sb[k-1] + 8) >> 4)
					crRow[i] = uint8((3*sr[k] + sr[k-1] + 8) >> 4)
				} else {
					cbRow[i] = uint8((3*sb[k] + sb[k+1] + 7) >> 4)
					crRow[i] = uint8((3*sr[k] + sr[k+1] + 7) >> 4)
				}
			}
		case fancyH: // h2v1
			b0, c0 := m.Cb[cOff(0, cy):], m.Cr[cOff(0, cy):]
			for i := range n {
				x := x0 + i
				c := x >> 1
				cn, bias := c+1, int32(2)
				if x&1 == 0 {
					cn, bias = c-1, 1
				}
				cn = max(0, min(cn, cw-1))
				cbRow[i] = uint8((3*int32(b0[c]) + int32(b0[cn]) + bias) >> 2)
				crRow[i] = uint8((3*int32(c0[c]) + int32(c0[cn]) + bias) >> 2)
			}
		case fancyV: // h1v2
			r1, bias := cy+1, int32(2)
			if y&1 == 0 {
				r1, bias = cy-1, 1
			}
			r1 = max(0, min(r1, ch-1))
			b0, b1 := m.Cb[cOff(x0, cy):], m.Cb[cOff(x0, r1):]
			c0, c1 := m.Cr[cOff(x0, cy):], m.Cr[cOff(x0, r1):]
			for i := range n {
				cbRow[i] = uint8((3*int32(b0[i]) + int32(b1[i]) + bias) >> 2)
				crRow[i] = uint8((3*int32(c0[i]) + int32(c1[i]) + bias) >> 2)
			}
		default: // box replication (int_upsample, or too narrow for fancy)
			o := cOff(0, cy)
			for i := range n {
				c := o + (x0+i)/hs
				cbRow[i], crRow[i] = m.Cb[c], m.Cr[c]
			}
		}
		yRow := m.Y[m.YOffset(m.Rect.Min.X+x0, m.Rect.Min.Y+y):]
		yRow = yRow[:n]
		for i, yy := range yRow {
			Y := int32(yy)
			b, r := cbRow[i], crRow[i]
			d := dst[3*i : 3*i+3 : 3*i+3]
			d[0] = clampU8(Y + yccCrR[r])
			d[1] = clampU8(Y + (yccCbG[b]+yccCrG[r])>>yccScaleBits)
			d[2] = clampU8(Y + yccCbB[b])
		}
	}
}
