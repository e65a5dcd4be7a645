package imageprep

import (
	"fmt"
	"image"
	"math"
	"math/rand/v2"
	"testing"
)

// photoLike is smooth structure plus mild noise, so JPEG sizes and decode
// times resemble camera photos rather than worst-case noise.
func photoLike(w, h int) *image.NRGBA {
	rng := rand.New(rand.NewPCG(uint64(w), uint64(h)))
	m := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			fx, fy := float64(x)/float64(w), float64(y)/float64(h)
			o := m.PixOffset(x, y)
			for c := range 3 {
				v := 128 + 60*math.Sin(fx*float64(7+c)*3.1+fy*5) + 40*math.Cos(fy*float64(11-c)*2.3-fx*3)
				v += float64(rng.IntN(17) - 8)
				m.Pix[o+c] = uint8(max(0, min(255, v)))
			}
			m.Pix[o+3] = 255
		}
	}
	return m
}

var benchSizes = [][2]int{{640, 480}, {1920, 1080}, {4032, 3024}}

// BenchmarkPreprocess measures decode + resize + crop + normalise per image
// on one goroutine; BenchmarkPreprocessParallel the throughput on all
// GOMAXPROCS cores.
func BenchmarkPreprocess(b *testing.B) {
	for _, sz := range benchSizes {
		data := encodeJPEG(b, photoLike(sz[0], sz[1]), 90)
		b.Run(fmt.Sprintf("jpeg_%dx%d", sz[0], sz[1]), func(b *testing.B) {
			benchPreprocess(b, data)
		})
	}
	b.Run("png_512x512", func(b *testing.B) {
		benchPreprocess(b, encodePNG(b, photoLike(512, 512)))
	})
}

func benchPreprocess(b *testing.B, data []byte) {
	cfg := DefaultConfig()
	dst := make([]float32, 3*224*224)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if err := Preprocess(data, cfg, dst); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "images/s")
}

func BenchmarkPreprocessParallel(b *testing.B) {
	for _, sz := range benchSizes[:2] {
		data := encodeJPEG(b, photoLike(sz[0], sz[1]), 90)
		b.Run(fmt.Sprintf("jpeg_%dx%d", sz[0], sz[1]), func(b *testing.B) {
			cfg := DefaultConfig()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				dst := make([]float32, 3*224*224)
				for pb.Next() {
					if err := Preprocess(data, cfg, dst); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "images/s")
		})
	}
}

// BenchmarkResize isolates the resampler (no decoding): the JPEG is decoded
// once and only colour conversion + resize + crop run per iteration.
func BenchmarkResize(b *testing.B) {
	for _, sz := range benchSizes {
		data := encodeJPEG(b, photoLike(sz[0], sz[1]), 90)
		b.Run(fmt.Sprintf("ycbcr_%dx%d", sz[0], sz[1]), func(b *testing.B) {
			sc := getScratch()
			src, err := decode(data, DefaultConfig(), sc)
			if err != nil {
				b.Fatal(err)
			}
			out := make([]byte, 3*224*224)
			b.ReportAllocs()
			for b.Loop() {
				resizeCrop(src, 224, out, sc)
			}
		})
	}
}
