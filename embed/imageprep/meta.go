package imageprep

import (
	"bytes"
	"encoding/binary"
	"errors"
	"image"
)

// modeHint says which Pillow mode the file opens as, where Go's decoded
// image type alone does not tell (Go decodes a PNG with a tRNS chunk to
// NRGBA, but Pillow keeps it "RGB"/"L" and ignores the transparency).
type modeHint struct {
	alpha   bool // Pillow mode RGBA/LA: resize with premultiplied alpha
	nearest bool // Pillow mode "P" or "1": resize nearest-neighbour
	gray    bool // Pillow mode "L"/"I"
	jpeg    bool // YCbCr comes from a JPEG: use libjpeg's conversion
	webp    bool // YCbCr comes from a lossy WebP: use libwebp's conversion
}

// pngHint reads the IHDR chunk (always first, at a fixed offset).
func pngHint(data []byte) modeHint {
	if len(data) < 26 || string(data[12:16]) != "IHDR" {
		return modeHint{alpha: true}
	}
	depth, colorType := data[24], data[25]
	switch colorType {
	case 0: // gray: "1" for 1-bit, else "L" (or "I" for 16-bit)
		return modeHint{gray: true, nearest: depth == 1}
	case 2: // truecolor: "RGB" (tRNS ignored)
		return modeHint{}
	case 3: // palette: "P"
		return modeHint{nearest: true}
	case 4: // gray + alpha: "LA"
		return modeHint{alpha: true, gray: true}
	}
	return modeHint{alpha: true} // 6: "RGBA"
}

// gifSource rebuilds the first frame the way Pillow 9.4 presents it: the
// full logical screen (Go returns only the frame's rectangle), the area
// outside the frame filled with the transparent index (else index 0), the
// palette's real colours (Go blanks the transparent entry), and mode "L"
// instead of "P" when the palette is the identity grey ramp.
func gifSource(p *image.Paletted, data []byte) (*source, error) {
	g, err := parseGIF(data)
	if err != nil {
		return nil, err
	}
	fill := uint8(0)
	if g.trans >= 0 {
		fill = uint8(g.trans)
	}
	w, h := g.width, g.height
	idx := make([]uint8, w*h)
	if fill != 0 {
		for i := range idx {
			idx[i] = fill
		}
	}
	fr := p.Bounds().Intersect(image.Rect(0, 0, w, h))
	for y := fr.Min.Y; y < fr.Max.Y; y++ {
		copy(idx[y*w+fr.Min.X:y*w+fr.Max.X], p.Pix[p.PixOffset(fr.Min.X, y):])
	}
	var pal [256][3]uint8
	for i := 0; i < 256 && 3*i+2 < len(g.palette); i++ {
		pal[i] = [3]uint8{g.palette[3*i], g.palette[3*i+1], g.palette[3*i+2]}
	}
	if g.palette == nil || identityGray(g.palette) {
		// Pillow mode "L": the index is the grey level, resized bicubic.
		return &source{w: w, h: h, layout: layoutL, fill: fillIndexed(idx, w, nil)}, nil
	}
	return &source{w: w, h: h, layout: layoutRGB, nearest: true, fill: fillIndexed(idx, w, &pal)}, nil
}

type gifInfo struct {
	width, height int
	palette       []byte // RGB triples of the first frame's colour table
	trans         int    // transparent index of the first frame, or -1
}

var errGIFHeader = errors.New("malformed GIF header")

// parseGIF walks the GIF block structure up to the first image descriptor.
func parseGIF(d []byte) (gifInfo, error) {
	g := gifInfo{trans: -1}
	if len(d) < 13 {
		return g, errGIFHeader
	}
	g.width = int(binary.LittleEndian.Uint16(d[6:]))
	g.height = int(binary.LittleEndian.Uint16(d[8:]))
	flags := d[10]
	p := 13
	if flags&0x80 != 0 {
		n := 3 << (flags&7 + 1)
		if p+n > len(d) {
			return g, errGIFHeader
		}
		g.palette = d[p : p+n]
		p += n
	}
	for p < len(d) {
		switch d[p] {
		case 0x21: // extension
			if p+2 > len(d) {
				return g, errGIFHeader
			}
			label := d[p+1]
			p += 2
			if label == 0xF9 && p+5 < len(d) && d[p] >= 4 {
				// Graphic control: flags, delay(2), transparent index.
				g.trans = -1
				if d[p+1]&1 != 0 {
					g.trans = int(d[p+4])
				}
			}
			for p < len(d) && d[p] != 0 { // sub-blocks
				p += int(d[p]) + 1
			}
			p++
		case 0x2C: // image descriptor
			if p+10 > len(d) {
				return g, errGIFHeader
			}
			if f := d[p+9]; f&0x80 != 0 {
				n := 3 << (f&7 + 1)
				if p+10+n > len(d) {
					return g, errGIFHeader
				}
				g.palette = d[p+10 : p+10+n]
			}
			return g, nil
		default:
			return g, errGIFHeader
		}
	}
	return g, errGIFHeader
}

// identityGray mirrors Pillow's GifImageFile._is_palette_needed == False.
func identityGray(p []byte) bool {
	for i := 0; i+2 < len(p); i += 3 {
		if int(p[i]) != i/3 || p[i+1] != p[i] || p[i+2] != p[i] {
			return false
		}
	}
	return true
}

// exifOrientation returns the EXIF orientation tag (1..8) of a JPEG (first
// APP1 "Exif" segment), PNG (eXIf chunk) or WebP (EXIF chunk), or 0.
func exifOrientation(format string, d []byte) int {
	switch format {
	case "jpeg":
		return tiffOrientation(jpegExif(d))
	case "png":
		return tiffOrientation(pngExif(d))
	case "webp":
		return tiffOrientation(webpExif(d))
	}
	return 0
}

func jpegExif(d []byte) []byte {
	p := 2 // after SOI
	for p+4 <= len(d) {
		if d[p] != 0xFF {
			return nil
		}
		m := d[p+1]
		switch {
		case m == 0xFF: // fill byte
			p++
			continue
		case m == 0x01 || (m >= 0xD0 && m <= 0xD7): // no length
			p += 2
			continue
		case m == 0xDA || m == 0xD9: // start of scan / end: no EXIF after this
			return nil
		}
		n := int(binary.BigEndian.Uint16(d[p+2:]))
		if n < 2 || p+2+n > len(d) {
			return nil
		}
		seg := d[p+4 : p+2+n]
		if m == 0xE1 && bytes.HasPrefix(seg, []byte("Exif\x00\x00")) {
			return seg[6:]
		}
		p += 2 + n
	}
	return nil
}

func pngExif(d []byte) []byte {
	p := 8
	for p+12 <= len(d) {
		n := int(binary.BigEndian.Uint32(d[p:]))
		typ := string(d[p+4 : p+8])
		if n < 0 || p+12+n > len(d) || typ == "IEND" {
			return nil
		}
		if typ == "eXIf" {
			return d[p+8 : p+8+n]
		}
		p += 12 + n
	}
	return nil
}

func webpExif(d []byte) []byte {
	if len(d) < 12 || string(d[0:4]) != "RIFF" || string(d[8:12]) != "WEBP" {
		return nil
	}
	p := 12
	for p+8 <= len(d) {
		n := int(binary.LittleEndian.Uint32(d[p+4:]))
		if n < 0 || p+8+n > len(d) {
			return nil
		}
		if string(d[p:p+4]) == "EXIF" {
			return bytes.TrimPrefix(d[p+8:p+8+n], []byte("Exif\x00\x00"))
		}
		p += 8 + n + n&1
	}
	return nil
}

// tiffOrientation reads tag 0x0112 from IFD0 of a TIFF-structured EXIF blob.
func tiffOrientation(t []byte) int {
	if len(t) < 8 {
		return 0
	}
	var bo binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 0
	}
	off := int(bo.Uint32(t[4:]))
	if off < 8 || off+2 > len(t) {
		return 0
	}
	n := int(bo.Uint16(t[off:]))
	for i := range n {
		e := off + 2 + 12*i
		if e+12 > len(t) {
			return 0
		}
		if bo.Uint16(t[e:]) != 0x0112 {
			continue
		}
		var v int
		switch bo.Uint16(t[e+2:]) {
		case 3: // SHORT
			v = int(bo.Uint16(t[e+8:]))
		case 4: // LONG
			v = int(bo.Uint32(t[e+8:]))
		default:
			return 0
		}
		if v < 1 || v > 8 {
			return 0
		}
		return v
	}
	return 0
}
