package npy

import (
	"bytes"
	"fmt"
	"testing"
)

// BenchmarkReadRows measures decoding throughput for 1024-row batches of
// 768-d embeddings held in memory (so I/O cost is excluded).
func BenchmarkReadRows(b *testing.B) {
	const rows, cols, batch = 8192, 768, 1024
	data := make([]float32, rows*cols)
	for i := range data {
		data[i] = float32(i%1000) / 1000
	}
	for _, dtype := range []string{"<f2", "<f4"} {
		var buf bytes.Buffer
		if err := Write(&buf, rows, cols, data, dtype); err != nil {
			b.Fatal(err)
		}
		r := openBytes(b, buf.Bytes())
		dst := make([]float32, batch*cols)
		b.Run(fmt.Sprintf("C/%s", dtype[1:]), func(b *testing.B) {
			b.SetBytes(int64(batch * cols * r.Header().ItemSize()))
			for i := 0; b.Loop(); i++ {
				lo := (i * batch) % rows
				if err := r.ReadRows(lo, lo+batch, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	fb := writeFortran(rows, cols, data)
	r := openBytes(b, fb)
	dst := make([]float32, batch*cols)
	b.Run("Fortran/f4", func(b *testing.B) {
		b.SetBytes(int64(batch * cols * 4))
		for i := 0; b.Loop(); i++ {
			lo := (i * batch) % rows
			if err := r.ReadRows(lo, lo+batch, dst); err != nil {
				b.Fatal(err)
			}
		}
	})
}
