package imageprep

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
)

func encodePNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func encodeJPEG(t testing.TB, img image.Image, q int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: q}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	if c.Size != 224 || c.MaxPixels != 89478485 || c.ApplyEXIFOrientation {
		t.Fatalf("DefaultConfig = %+v", c)
	}
	if c.Mean != [3]float32{0.48145466, 0.4578275, 0.40821073} || c.Std != [3]float32{0.26862954, 0.26130258, 0.27577711} {
		t.Fatalf("mean/std = %v %v", c.Mean, c.Std)
	}
}

// pngHeader is a PNG signature + IHDR claiming w x h RGB, with a valid CRC
// and no image data: what a decompression bomb looks like from the header.
func pngHeader(w, h uint32) []byte {
	ihdr := []byte("IHDR\x00\x00\x00\x00\x00\x00\x00\x00\x08\x02\x00\x00\x00")
	binary.BigEndian.PutUint32(ihdr[4:], w)
	binary.BigEndian.PutUint32(ihdr[8:], h)
	b := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0d")
	b = append(b, ihdr...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(ihdr))
}

func TestErrors(t *testing.T) {
	cfg := DefaultConfig()
	dst := make([]float32, 3*224*224)
	good := encodePNG(t, noiseImage(rand.New(rand.NewPCG(1, 1)), 64, 48, false))
	goodJPEG := encodeJPEG(t, noiseImage(rand.New(rand.NewPCG(1, 1)), 64, 48, false), 90)
	// A baseline JPEG whose SOF0 declares 65000x65000, 3 components,
	// followed by the start of a scan and no data.
	jpegBomb := []byte{0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0xFD, 0xE8, 0xFD, 0xE8, 0x03,
		0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01,
		0xFF, 0xDA, 0x00, 0x0C, 0x03, 0x01, 0x00, 0x02, 0x11, 0x03, 0x11, 0x00, 0x3F, 0x00}
	gifBomb := append([]byte("GIF89a\xff\xff\xff\xff\x00\x00\x00"), 0x3B)

	for _, tc := range []struct {
		name string
		data []byte
		is   error
		msg  string
	}{
		{"zero-byte", nil, ErrZeroByte, "imageprep: zero-byte image"},
		{"empty-slice", []byte{}, ErrZeroByte, "zero-byte image"},
		{"unknown", []byte("<!DOCTYPE html><html>not an image</html>"), ErrUnknownFormat, "imageprep: unknown image format (not JPEG, PNG, GIF, WebP, BMP or TIFF)"},
		{"one-byte", []byte{0xFF}, ErrUnknownFormat, "unknown image format"},
		{"png-bomb", pngHeader(100000, 100000), ErrTooLarge, "imageprep: decoded size 100000x100000 exceeds the 89478485-pixel limit"},
		{"jpeg-bomb", jpegBomb, ErrTooLarge, "decoded size 65000x65000 exceeds the 89478485-pixel limit"},
		{"gif-bomb", gifBomb, ErrTooLarge, "decoded size 65535x65535 exceeds"},
		{"png-truncated", good[:len(good)/2], ErrCorrupt, "imageprep: corrupt PNG: "},
		{"png-no-data", pngHeader(10, 10), ErrCorrupt, "imageprep: corrupt PNG: "},
		{"png-bad-crc", append(slices.Clone(good[:29]), 0, 0, 0, 0), ErrCorrupt, "imageprep: corrupt PNG: png: invalid format: invalid checksum"},
		{"jpeg-truncated", goodJPEG[:len(goodJPEG)/2], ErrCorrupt, "imageprep: corrupt JPEG: "},
		{"jpeg-garbage", append([]byte{0xFF, 0xD8, 0xFF, 0xC4, 0x00, 0x04}, bytes.Repeat([]byte{0x77}, 64)...), ErrCorrupt, "imageprep: corrupt JPEG: "},
		{"gif-truncated", []byte("GIF89a\x10\x00\x10\x00"), ErrCorrupt, "imageprep: corrupt GIF: "},
		{"webp-truncated", []byte("RIFF\x20\x00\x00\x00WEBPVP8 "), ErrCorrupt, "imageprep: corrupt WebP: "},
		{"png-zero-size", pngHeader(0, 10), ErrCorrupt, "imageprep: corrupt PNG: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Preprocess(tc.data, cfg, dst)
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not contain %q", err, tc.msg)
			}
		})
	}

	var ce *CorruptError
	if err := Preprocess(goodJPEG[:len(goodJPEG)/2], cfg, dst); !errors.As(err, &ce) || ce.Format != "JPEG" || ce.Err == nil {
		t.Errorf("truncated JPEG: %v, want *CorruptError{Format: JPEG}", err)
	}
	var tl *TooLargeError
	if err := Preprocess(pngHeader(100000, 100000), cfg, dst); !errors.As(err, &tl) || tl.Width != 100000 || tl.Height != 100000 || tl.Limit != DefaultMaxPixels {
		t.Errorf("bomb: %v, want *TooLargeError", err)
	}
}

func TestMaxPixels(t *testing.T) {
	data := encodePNG(t, noiseImage(rand.New(rand.NewPCG(1, 1)), 64, 48, false))
	dst := make([]float32, 3*224*224)
	cfg := DefaultConfig()
	cfg.MaxPixels = 64 * 48
	if err := Preprocess(data, cfg, dst); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	cfg.MaxPixels = 64*48 - 1
	if err := Preprocess(data, cfg, dst); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "decoded size 64x48 exceeds the 3071-pixel limit") {
		t.Fatalf("over the limit: %v", err)
	}
	cfg.MaxPixels = -1 // disabled
	if err := Preprocess(data, cfg, dst); err != nil {
		t.Fatalf("disabled limit: %v", err)
	}
	cfg.MaxPixels = 0 // default
	if err := Preprocess(pngHeader(100000, 100000), cfg, dst); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("MaxPixels 0 should mean the default: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	data := encodePNG(t, noiseImage(rand.New(rand.NewPCG(1, 1)), 64, 48, false))
	cfg := DefaultConfig()
	if err := Preprocess(data, cfg, make([]float32, 3*224*224-1)); err == nil || !strings.Contains(err.Error(), "dst has") {
		t.Errorf("short dst: %v", err)
	}
	if err := Preprocess(data, Config{Size: 224}, make([]float32, 3*224*224)); err == nil || !strings.Contains(err.Error(), "Std") {
		t.Errorf("zero Std: %v", err)
	}
	cfg.Size = 0
	if err := Preprocess(data, cfg, nil); err == nil || !strings.Contains(err.Error(), "Size") {
		t.Errorf("zero Size: %v", err)
	}
}

// A flat image stays flat through any resize, so its tensor is known
// exactly without a reference implementation.
func TestFlatColour(t *testing.T) {
	cfg := DefaultConfig()
	want := func(v uint8, c int) float32 { return (float32(v)/float32(255) - cfg.Mean[c]) / cfg.Std[c] }
	col := color.NRGBA{10, 128, 250, 255}
	flat := func(w, h int) *image.NRGBA {
		m := image.NewNRGBA(image.Rect(0, 0, w, h))
		for i := 0; i < len(m.Pix); i += 4 {
			m.Pix[i], m.Pix[i+1], m.Pix[i+2], m.Pix[i+3] = col.R, col.G, col.B, col.A
		}
		return m
	}
	gray := image.NewGray(image.Rect(0, 0, 300, 170))
	for i := range gray.Pix {
		gray.Pix[i] = 77
	}
	dst := make([]float32, 3*224*224)
	for name, tc := range map[string]struct {
		data    []byte
		r, g, b uint8
	}{
		"png-downscale": {encodePNG(t, flat(640, 480)), 10, 128, 250},
		"png-upscale":   {encodePNG(t, flat(9, 13)), 10, 128, 250},
		"png-gray":      {encodePNG(t, gray), 77, 77, 77},
		"jpeg-gray":     {encodeJPEG(t, gray, 95), 77, 77, 77},
	} {
		if err := Preprocess(tc.data, cfg, dst); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		n := 224 * 224
		for i := range n {
			if dst[i] != want(tc.r, 0) || dst[n+i] != want(tc.g, 1) || dst[2*n+i] != want(tc.b, 2) {
				t.Fatalf("%s: pixel %d = (%v, %v, %v), want (%v, %v, %v)", name, i,
					dst[i], dst[n+i], dst[2*n+i], want(tc.r, 0), want(tc.g, 1), want(tc.b, 2))
			}
		}
	}
}

func TestResizedSizeAndCrop(t *testing.T) {
	for _, tc := range []struct{ w, h, rw, rh int }{
		{640, 480, 298, 224}, // int(224*640/480) = int(298.67)
		{480, 640, 224, 298},
		{224, 500, 224, 500}, // short side already 224: untouched
		{500, 224, 500, 224},
		{1, 1, 224, 224},
		{3, 1000, 224, 74666}, // int(74666.67)
		{451, 300, 336, 224},  // int(336.7466)
		{300, 300, 224, 224},
	} {
		rw, rh := resizedSize(tc.w, tc.h, 224)
		if rw != tc.rw || rh != tc.rh {
			t.Errorf("resizedSize(%d, %d) = %d, %d; want %d, %d", tc.w, tc.h, rw, rh, tc.rw, tc.rh)
		}
	}
	// Python's round() is half-to-even: (225-224)/2 = 0.5 -> 0, 1.5 -> 2, 2.5 -> 2.
	for n, want := range map[int]int{224: 0, 225: 0, 226: 1, 227: 2, 229: 2, 231: 4, 298: 37} {
		if got := cropOffset(n, 224); got != want {
			t.Errorf("cropOffset(%d) = %d, want %d", n, got, want)
		}
	}
}

func jpegWithExif(t *testing.T, o int, bigEndian bool) []byte {
	t.Helper()
	var tiff []byte
	if bigEndian {
		tiff = []byte("MM\x00\x2a\x00\x00\x00\x08\x00\x02" +
			"\x01\x0f\x00\x02\x00\x00\x00\x04CAM\x00" + // Make, to skip over
			"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00")
		binary.BigEndian.PutUint16(tiff[30:], uint16(o))
	} else {
		tiff = []byte("II\x2a\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
		binary.LittleEndian.PutUint16(tiff[18:], uint16(o))
	}
	app1 := append([]byte("Exif\x00\x00"), tiff...)
	seg := []byte{0xFF, 0xE1, 0, 0}
	binary.BigEndian.PutUint16(seg[2:], uint16(len(app1)+2))
	seg = append(seg, app1...)
	j := encodeJPEG(t, noiseImage(rand.New(rand.NewPCG(3, 3)), 40, 30, false), 90)
	return slices.Concat(j[:2], seg, j[2:])
}

func TestEXIFOrientation(t *testing.T) {
	for o := 1; o <= 8; o++ {
		for _, be := range []bool{false, true} {
			if got := exifOrientation("jpeg", jpegWithExif(t, o, be)); got != o {
				t.Errorf("JPEG orientation %d (big endian %v): got %d", o, be, got)
			}
		}
		p := withPNGExif(encodePNG(t, grayNoise(rand.New(rand.NewPCG(1, 1)), 5, 4)), o)
		if got := exifOrientation("png", p); got != o {
			t.Errorf("PNG orientation %d: got %d", o, got)
		}
	}
	if got := exifOrientation("jpeg", jpegWithExif(t, 9, false)); got != 0 {
		t.Errorf("invalid orientation 9 read as %d", got)
	}
	if got := exifOrientation("jpeg", encodeJPEG(t, grayNoise(rand.New(rand.NewPCG(1, 1)), 5, 4), 90)); got != 0 {
		t.Errorf("JPEG without EXIF: %d", got)
	}

	// Orientation 6 (rotate 90° clockwise) turns a 40x30 image into 30x40:
	// a different result from the untransposed default, and the tag is
	// ignored unless ApplyEXIFOrientation is set.
	data := jpegWithExif(t, 6, false)
	plain := slices.Concat(data[:2], data[2+4+6+26:])
	cfg := DefaultConfig()
	a, b, c := make([]float32, 3*224*224), make([]float32, 3*224*224), make([]float32, 3*224*224)
	if err := Preprocess(data, cfg, a); err != nil {
		t.Fatal(err)
	}
	if err := Preprocess(plain, cfg, b); err != nil {
		t.Fatal(err)
	}
	cfg.ApplyEXIFOrientation = true
	if err := Preprocess(data, cfg, c); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a, b) {
		t.Error("EXIF orientation changed the default (CLIP-compatible) output")
	}
	if slices.Equal(a, c) {
		t.Error("ApplyEXIFOrientation had no effect")
	}
}

// orient must agree with a direct implementation of the 8 EXIF cases.
func TestOrientMapping(t *testing.T) {
	const w, h = 5, 3
	g := image.NewGray(image.Rect(0, 0, w, h))
	for i := range g.Pix {
		g.Pix[i] = uint8(i)
	}
	src := newSource(g, modeHint{gray: true}, getScratch())
	at := func(x, y int) uint8 { return g.Pix[y*w+x] }
	want := map[int]func(x, y int) uint8{
		2: func(x, y int) uint8 { return at(w-1-x, y) },
		3: func(x, y int) uint8 { return at(w-1-x, h-1-y) },
		4: func(x, y int) uint8 { return at(x, h-1-y) },
		5: func(x, y int) uint8 { return at(y, x) },
		6: func(x, y int) uint8 { return at(y, h-1-x) },     // clockwise
		7: func(x, y int) uint8 { return at(w-1-y, h-1-x) }, // transverse
		8: func(x, y int) uint8 { return at(w-1-y, x) },     // counter-clockwise
	}
	for o, f := range want {
		s := orient(src, o)
		if (o >= 5) != (s.w == h && s.h == w) {
			t.Fatalf("orientation %d: size %dx%d", o, s.w, s.h)
		}
		row := make([]byte, s.w)
		for y := range s.h {
			s.fill(y, 0, s.w, row)
			for x := range s.w {
				if row[x] != f(x, y) {
					t.Fatalf("orientation %d: (%d,%d) = %d, want %d", o, x, y, row[x], f(x, y))
				}
			}
		}
	}
}

// Pillow's rgba2rgbA (unpremultiply) and cmyk2rgb, spot-checked.
func TestToRGBFormulas(t *testing.T) {
	out := make([]byte, 3)
	toRGB([]byte{100, 50, 0, 200}, layoutRGBa, out)
	if !slices.Equal(out, []byte{127, 63, 0}) { // 255*100/200 = 127 (truncated)
		t.Errorf("RGBa: %v", out)
	}
	toRGB([]byte{9, 8, 7, 0}, layoutRGBa, out)
	if !slices.Equal(out, []byte{9, 8, 7}) { // alpha 0 passes through
		t.Errorf("RGBa alpha 0: %v", out)
	}
	toRGB([]byte{0, 255, 128, 0}, layoutCMYK, out)
	if !slices.Equal(out, []byte{255, 0, 127}) {
		t.Errorf("CMYK: %v", out)
	}
	toRGB([]byte{0, 0, 0, 255}, layoutCMYK, out)
	if !slices.Equal(out, []byte{0, 0, 0}) {
		t.Errorf("CMYK black: %v", out)
	}
}

func TestDecodeFormats(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	img := noiseImage(rng, 120, 90, false)
	var g bytes.Buffer
	if err := gif.Encode(&g, img, nil); err != nil {
		t.Fatal(err)
	}
	cmyk := image.NewCMYK(image.Rect(0, 0, 64, 64))
	for i := range cmyk.Pix {
		cmyk.Pix[i] = uint8(rng.IntN(256))
	}
	dst := make([]float32, 3*224*224)
	for name, data := range map[string][]byte{
		"png": encodePNG(t, img), "jpeg": encodeJPEG(t, img, 80), "gif": g.Bytes(),
		"jpeg-cmyk": encodeJPEG(t, cmyk, 90), "jpeg-gray": encodeJPEG(t, grayNoise(rng, 50, 70), 90),
		"png-16": encodePNG(t, rgb16Noise(rng, 30, 20, true)),
	} {
		if err := Preprocess(data, DefaultConfig(), dst); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		for i, v := range dst {
			if math.IsNaN(float64(v)) || v < -2 || v > 2.2 {
				t.Fatalf("%s: value %d = %v out of range", name, i, v)
			}
		}
	}
}

func TestConcurrent(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	inputs := [][]byte{
		encodePNG(t, noiseImage(rng, 500, 300, false)),
		encodeJPEG(t, noiseImage(rng, 300, 500, false), 85),
		encodePNG(t, noiseImage(rng, 100, 100, true)),
		encodePNG(t, paletteNoise(rng, 260, 250, 64, false)),
	}
	cfg := DefaultConfig()
	want := make([][]float32, len(inputs))
	for i, d := range inputs {
		want[i] = make([]float32, 3*224*224)
		if err := Preprocess(d, cfg, want[i]); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			got := make([]float32, 3*224*224)
			for k := range 12 {
				i := (g + k) % len(inputs)
				if err := Preprocess(inputs[i], cfg, got); err != nil {
					t.Error(err)
					return
				}
				if !slices.Equal(got, want[i]) {
					t.Errorf("goroutine %d input %d: result differs from sequential run", g, i)
					return
				}
			}
		})
	}
	wg.Wait()
}

// FuzzPreprocess: arbitrary bytes give an error or a tensor, never a panic.
func FuzzPreprocess(f *testing.F) {
	rng := rand.New(rand.NewPCG(4, 4))
	f.Add(encodePNG(f, noiseImage(rng, 20, 10, true)))
	f.Add(encodePNG(f, paletteNoise(rng, 9, 11, 16, true)))
	f.Add(encodeJPEG(f, noiseImage(rng, 17, 23, false), 70))
	var g bytes.Buffer
	_ = gif.Encode(&g, noiseImage(rng, 12, 9, false), nil)
	f.Add(g.Bytes())
	f.Add(pngHeader(3, 3))
	f.Add([]byte("GIF89a\x05\x00\x05\x00\x80\x00\x00"))
	cfg := DefaultConfig()
	cfg.Size = 16
	cfg.MaxPixels = 1 << 20
	cfg.ApplyEXIFOrientation = true
	dst := make([]float32, 3*16*16)
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = Preprocess(data, cfg, dst)
	})
}

// Errors land in output files, and a path CSV may name any file: no error quotes the bytes
// (they once held the size and the first 8 bytes).
func TestErrorsQuoteNoBytes(t *testing.T) {
	cfg := DefaultConfig()
	dst := make([]float32, 3*cfg.Size*cfg.Size)
	for _, data := range []string{
		"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n",
		"\x89PNG\r\n\x1a\nsecret-after-the-magic",
		"GIF87b secret",
	} {
		err := Preprocess([]byte(data), cfg, dst)
		if err == nil {
			t.Fatalf("%q: no error", data)
		}
		msg := err.Error()
		for i := 0; i+4 <= len(data); i++ {
			chunk := data[i : i+4]
			if strings.Contains(msg, chunk) || strings.Contains(msg, fmt.Sprintf("% x", chunk)) || strings.Contains(msg, fmt.Sprint(len(data))) {
				t.Fatalf("error %q quotes the data %q (or its size)", msg, data)
			}
		}
	}
}
