package imageprep

import (
	"image"
	"image/color"
)

// layout is the packed pixel format the resampler works on; each mirrors a
// Pillow mode so that resampling happens in the same space as Pillow's.
type layout int

const (
	layoutL    layout = iota // 1 byte: grey ("L", "1")
	layoutRGB                // 3 bytes ("RGB", and "P" after palette lookup)
	layoutRGBa               // 4 bytes, premultiplied alpha ("RGBa", what "RGBA"/"LA" resize in)
	layoutCMYK               // 4 bytes ("CMYK")
)

func (l layout) channels() int {
	switch l {
	case layoutL:
		return 1
	case layoutRGB:
		return 3
	}
	return 4
}

// source is a decoded image seen as rows of packed pixels.
type source struct {
	w, h    int
	layout  layout
	nearest bool // Pillow resizes this mode ("P", "1") nearest-neighbour
	// fill writes row y, columns [x0, x1), packed in layout, to dst. Rows
	// are converted on demand, one at a time, so no full-size RGB copy of
	// the image is ever made and typed loops avoid image.At.
	fill func(y, x0, x1 int, dst []byte)
}

// mulDiv255 is Pillow's MULDIV255: round(a*b/255) in integers.
func mulDiv255(a, b uint32) uint8 {
	t := a*b + 128
	return uint8((t>>8 + t) >> 8)
}

// newSource picks the typed fast path for img's concrete type.
func newSource(img image.Image, h modeHint, sc *scratch) *source {
	b := img.Bounds()
	s := &source{w: b.Dx(), h: b.Dy()}
	mx, my := b.Min.X, b.Min.Y
	switch m := img.(type) {
	case *image.Gray:
		s.layout, s.nearest = layoutL, h.nearest
		s.fill = func(y, x0, x1 int, dst []byte) {
			o := m.PixOffset(mx+x0, my+y)
			copy(dst, m.Pix[o:o+x1-x0])
		}
	case *image.Gray16:
		s.layout, s.nearest = layoutL, h.nearest
		s.fill = func(y, x0, x1 int, dst []byte) {
			p := m.Pix[m.PixOffset(mx+x0, my+y):]
			for i := range x1 - x0 {
				dst[i] = p[2*i] // high byte (deliberately not Pillow's clip, see package doc)
			}
		}
	case *image.YCbCr:
		s.layout = layoutRGB
		s.fill = ycbcrFiller(m, h, sc)
	case *image.NYCbCrA:
		s.layout = layoutRGBa
		yf := ycbcrFiller(&m.YCbCr, h, sc)
		s.fill = func(y, x0, x1 int, dst []byte) {
			yf(y, x0, x1, dst) // RGB into the front, then spread backwards
			a := m.A[m.AOffset(mx+x0, my+y):]
			for i := x1 - x0 - 1; i >= 0; i-- {
				al := uint32(a[i])
				r, g, bl := dst[3*i], dst[3*i+1], dst[3*i+2]
				d := dst[4*i : 4*i+4 : 4*i+4]
				d[0], d[1], d[2], d[3] = mulDiv255(uint32(r), al), mulDiv255(uint32(g), al), mulDiv255(uint32(bl), al), a[i]
			}
		}
	case *image.RGBA:
		if h.alpha && !m.Opaque() { // already premultiplied
			s.layout = layoutRGBa
			s.fill = func(y, x0, x1 int, dst []byte) {
				o := m.PixOffset(mx+x0, my+y)
				copy(dst, m.Pix[o:o+4*(x1-x0)])
			}
		} else {
			s.layout = layoutRGB
			s.fill = func(y, x0, x1 int, dst []byte) {
				p := m.Pix[m.PixOffset(mx+x0, my+y):]
				for i := range x1 - x0 {
					d, q := dst[3*i:3*i+3:3*i+3], p[4*i:4*i+3:4*i+3]
					d[0], d[1], d[2] = q[0], q[1], q[2]
				}
			}
		}
	case *image.NRGBA:
		s.fill = nrgbaFill(h, s, 4, 1, func(y, x0 int) []byte { return m.Pix[m.PixOffset(mx+x0, my+y):] })
	case *image.RGBA64:
		if h.alpha && !m.Opaque() {
			s.layout = layoutRGBa
			s.fill = func(y, x0, x1 int, dst []byte) {
				p := m.Pix[m.PixOffset(mx+x0, my+y):]
				for i := range x1 - x0 {
					d, q := dst[4*i:4*i+4:4*i+4], p[8*i:8*i+8:8*i+8]
					d[0], d[1], d[2], d[3] = q[0], q[2], q[4], q[6]
				}
			}
		} else {
			s.layout = layoutRGB
			if h.gray {
				s.layout = layoutL
			}
			s.fill = func(y, x0, x1 int, dst []byte) {
				p := m.Pix[m.PixOffset(mx+x0, my+y):]
				if s.layout == layoutL {
					for i := range x1 - x0 {
						dst[i] = p[8*i]
					}
					return
				}
				for i := range x1 - x0 {
					d, q := dst[3*i:3*i+3:3*i+3], p[8*i:8*i+5:8*i+5]
					d[0], d[1], d[2] = q[0], q[2], q[4]
				}
			}
		}
	case *image.NRGBA64:
		// High bytes, like Pillow's "RGBA;16B"/"LA;16B" unpackers.
		s.fill = nrgbaFill(h, s, 8, 2, func(y, x0 int) []byte { return m.Pix[m.PixOffset(mx+x0, my+y):] })
	case *image.CMYK:
		s.layout = layoutCMYK
		s.fill = func(y, x0, x1 int, dst []byte) {
			o := m.PixOffset(mx+x0, my+y)
			copy(dst, m.Pix[o:o+4*(x1-x0)])
		}
	case *image.Paletted:
		var pal [256][3]uint8
		for i, c := range m.Palette {
			if i == 256 {
				break
			}
			n := color.NRGBAModel.Convert(c).(color.NRGBA)
			if rc, ok := c.(color.RGBA); ok && rc.A == 255 {
				n = color.NRGBA{rc.R, rc.G, rc.B, 255}
			}
			pal[i] = [3]uint8{n.R, n.G, n.B}
		}
		s.layout, s.nearest = layoutRGB, true
		s.fill = func(y, x0, x1 int, dst []byte) {
			p := m.Pix[m.PixOffset(mx+x0, my+y):]
			for i := range x1 - x0 {
				c := &pal[p[i]]
				d := dst[3*i : 3*i+3 : 3*i+3]
				d[0], d[1], d[2] = c[0], c[1], c[2]
			}
		}
	default:
		// Slow generic path for image types no decoder above produces.
		s.layout = layoutRGB
		if h.alpha && !opaque(img) {
			s.layout = layoutRGBa
		}
		s.fill = func(y, x0, x1 int, dst []byte) {
			for i := range x1 - x0 {
				c := color.NRGBAModel.Convert(img.At(mx+x0+i, my+y)).(color.NRGBA)
				if s.layout == layoutRGBa {
					d := dst[4*i : 4*i+4 : 4*i+4]
					a := uint32(c.A)
					d[0], d[1], d[2], d[3] = mulDiv255(uint32(c.R), a), mulDiv255(uint32(c.G), a), mulDiv255(uint32(c.B), a), c.A
				} else {
					d := dst[3*i : 3*i+3 : 3*i+3]
					d[0], d[1], d[2] = c.R, c.G, c.B
				}
			}
		}
	}
	return s
}

func opaque(img image.Image) bool {
	if o, ok := img.(interface{ Opaque() bool }); ok {
		return o.Opaque()
	}
	return false
}

// nrgbaFill handles non-premultiplied RGBA with bpp bytes per pixel and the
// high byte of each channel every step bytes (NRGBA: 4,1; NRGBA64: 8,2).
// It sets s.layout from the mode hint.
func nrgbaFill(h modeHint, s *source, bpp, step int, row func(y, x0 int) []byte) func(y, x0, x1 int, dst []byte) {
	switch {
	case h.alpha: // "RGBA"/"LA": premultiply like convert("RGBa")
		s.layout = layoutRGBa
		return func(y, x0, x1 int, dst []byte) {
			p := row(y, x0)
			for i := range x1 - x0 {
				q := p[bpp*i : bpp*i+bpp : bpp*i+bpp]
				a := uint32(q[3*step])
				d := dst[4*i : 4*i+4 : 4*i+4]
				d[0], d[1], d[2], d[3] = mulDiv255(uint32(q[0]), a), mulDiv255(uint32(q[step]), a), mulDiv255(uint32(q[2*step]), a), q[3*step]
			}
		}
	case h.gray: // "L" with a tRNS chunk: transparency ignored
		s.layout = layoutL
		return func(y, x0, x1 int, dst []byte) {
			p := row(y, x0)
			for i := range x1 - x0 {
				dst[i] = p[bpp*i]
			}
		}
	default: // "RGB" with a tRNS chunk: transparency ignored
		s.layout = layoutRGB
		return func(y, x0, x1 int, dst []byte) {
			p := row(y, x0)
			for i := range x1 - x0 {
				q := p[bpp*i : bpp*i+bpp : bpp*i+bpp]
				d := dst[3*i : 3*i+3 : 3*i+3]
				d[0], d[1], d[2] = q[0], q[step], q[2*step]
			}
		}
	}
}

// ycbcrFiller picks the YCbCr->RGB conversion of the decoder Pillow uses.
func ycbcrFiller(m *image.YCbCr, h modeHint, sc *scratch) func(y, x0, x1 int, dst []byte) {
	switch {
	case h.jpeg:
		return jpegYCbCrFill(m, sc)
	case h.webp && m.SubsampleRatio == image.YCbCrSubsampleRatio420 && m.Rect.Min == (image.Point{}):
		return webpYCbCrFill(m)
	}
	return ycbcrFill(m)
}

// ycbcrFill converts with Go's YCbCr->RGB and nearest chroma (what
// image.YCbCr.At does), for YCbCr from decoders not handled above.
func ycbcrFill(m *image.YCbCr) func(y, x0, x1 int, dst []byte) {
	mx, my := m.Rect.Min.X, m.Rect.Min.Y
	return func(y, x0, x1 int, dst []byte) {
		yo := m.YOffset(mx+x0, my+y)
		for i := range x1 - x0 {
			co := m.COffset(mx+x0+i, my+y)
			r, g, b := color.YCbCrToRGB(m.Y[yo+i], m.Cb[co], m.Cr[co])
			d := dst[3*i : 3*i+3 : 3*i+3]
			d[0], d[1], d[2] = r, g, b
		}
	}
}

// fillIndexed serves an index plane through a palette (nil: index is grey).
func fillIndexed(idx []uint8, w int, pal *[256][3]uint8) func(y, x0, x1 int, dst []byte) {
	return func(y, x0, x1 int, dst []byte) {
		p := idx[y*w+x0 : y*w+x1]
		if pal == nil {
			copy(dst, p)
			return
		}
		for i, v := range p {
			c := &pal[v]
			d := dst[3*i : 3*i+3 : 3*i+3]
			d[0], d[1], d[2] = c[0], c[1], c[2]
		}
	}
}

// orient returns src transposed per EXIF orientation o (2..8), with PIL's
// ImageOps.exif_transpose semantics. It materialises the image once; the
// orientation is rare enough that the copy does not matter.
func orient(src *source, o int) *source {
	w, h, nc := src.w, src.h, src.layout.channels()
	buf := make([]byte, w*h*nc)
	for y := range h {
		src.fill(y, 0, w, buf[y*w*nc:(y+1)*w*nc])
	}
	ow, oh := w, h
	if o >= 5 {
		ow, oh = h, w
	}
	// at maps an output pixel to the input pixel it comes from.
	at := func(x, y int) (int, int) {
		switch o {
		case 2: // FLIP_LEFT_RIGHT
			return w - 1 - x, y
		case 3: // ROTATE_180
			return w - 1 - x, h - 1 - y
		case 4: // FLIP_TOP_BOTTOM
			return x, h - 1 - y
		case 5: // TRANSPOSE
			return y, x
		case 6: // ROTATE_270 (90° clockwise)
			return y, h - 1 - x
		case 7: // TRANSVERSE
			return w - 1 - y, h - 1 - x
		}
		return w - 1 - y, x // 8: ROTATE_90 (90° counter-clockwise)
	}
	return &source{w: ow, h: oh, layout: src.layout, nearest: src.nearest,
		fill: func(y, x0, x1 int, dst []byte) {
			for x := x0; x < x1; x++ {
				sx, sy := at(x, y)
				copy(dst[(x-x0)*nc:(x-x0+1)*nc], buf[(sy*w+sx)*nc:])
			}
		}}
}
