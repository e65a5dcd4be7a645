// Package samples holds the image-caption pairs that raw-format fixtures write and the
// conformance suite (package rawtest) reads back. It is separate from rawtest so the formats'
// Write functions, which ship in the lemon binary, do not pull in package testing.
package samples

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
)

// Sample is one image-caption pair as a fixture writes it. A nil Image means "no image" (a
// missing tar member, a null bytes cell, a path to a file that does not exist); an empty
// Caption is written as an empty caption.
type Sample struct {
	ID      string
	Caption string
	Image   []byte
	// Extra fields, written where the format has room for them (json members, extra columns).
	Extra map[string]string
}

// Make returns n samples with ids prefix0, prefix1, ..., small real images (PNG and JPEG in
// turn, of varying sizes) and captions that exercise quoting, commas, newlines and non-ASCII.
func Make(prefix string, n int, seed int) []Sample {
	out := make([]Sample, n)
	for i := range out {
		id := fmt.Sprintf("%s%d", prefix, i)
		var img []byte
		if (i+seed)%2 == 0 {
			img = PNG(8+i%5, 6+i%3, seed*100+i)
		} else {
			img = JPEG(10+i%4, 8+i%2, seed*100+i)
		}
		c := fmt.Sprintf("a photo of %s, with \"quotes\", commas and ünïcode", id)
		if i%4 == 3 {
			c = fmt.Sprintf("two lines:\nsecond line of %s", id)
		}
		out[i] = Sample{ID: id, Caption: c, Image: img, Extra: map[string]string{"url": "https://example.com/" + id + ".jpg"}}
	}
	return out
}

func picture(w, h, seed int) image.Image {
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			m.Set(x, y, color.RGBA{uint8(x*31 + seed*7), uint8(y*17 + seed*13), uint8((x + y + seed) * 5), 255})
		}
	}
	return m
}

// PNG encodes a small w x h picture that differs by seed.
func PNG(w, h, seed int) []byte {
	var b bytes.Buffer
	if err := png.Encode(&b, picture(w, h, seed)); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// JPEG encodes a small w x h picture that differs by seed.
func JPEG(w, h, seed int) []byte {
	var b bytes.Buffer
	if err := jpeg.Encode(&b, picture(w, h, seed), &jpeg.Options{Quality: 90}); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// Ext is the file extension for encoded image bytes: "png" for PNG, else "jpg".
func Ext(img []byte) string {
	if bytes.HasPrefix(img, []byte("\x89PNG\r\n\x1a\n")) {
		return "png"
	}
	return "jpg"
}
