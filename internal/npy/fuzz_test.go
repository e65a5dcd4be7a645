package npy

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func addFuzzSeeds(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.npy"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte(magic + "\x02\x00\xff\xff\xff\xff"))
	f.Add(hdr("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3L, 0), }"))
	f.Add(hdr("{'descr': '>f2', 'fortran_order': True, 'shape': (2, 1), }\n\x00\x01\x02\x03"))
}

// FuzzReadHeader: ReadHeader never panics, and anything it accepts is
// self-consistent and consumed exactly.
func FuzzReadHeader(f *testing.F) {
	addFuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		br := bytes.NewReader(b)
		h, err := ReadHeader(br)
		if err != nil {
			return
		}
		if err := checkDtype(h.Dtype); err != nil {
			t.Fatalf("accepted dtype %q: %v", h.Dtype, err)
		}
		if h.Rows < 0 || h.Cols < 0 || h.DataSize() < 0 || h.DataOffset < 10 {
			t.Fatalf("accepted bad header %+v", h)
		}
		if consumed := int64(len(b) - br.Len()); consumed != h.DataOffset {
			t.Fatalf("consumed %d bytes, DataOffset %d", consumed, h.DataOffset)
		}
	})
}

// FuzzReader: opening and reading arbitrary bytes never panics and every
// row range of an accepted file can be read.
func FuzzReader(f *testing.F) {
	addFuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := NewReader(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		h := r.Header()
		if h.DataOffset+h.DataSize() != int64(len(b)) {
			t.Fatalf("accepted %d bytes for header %+v", len(b), h)
		}
		if h.Cols == 0 {
			if err := r.ReadRows(0, h.Rows, nil); err != nil {
				t.Fatal(err)
			}
			return
		}
		dst := make([]float32, h.Rows*h.Cols) // bounded by len(b)
		if err := r.ReadRows(0, h.Rows, dst); err != nil {
			t.Fatal(err)
		}
		r.chunk = 6 // odd chunk sizes hit every boundary case
		r.maxGap = int64(len(b) % 3 * 4)
		for lo := 0; lo < h.Rows && lo < 8; lo++ {
			got := make([]float32, (h.Rows-lo)*h.Cols)
			if err := r.ReadRows(lo, h.Rows, got); err != nil {
				t.Fatal(err)
			}
			if !sameFloats(got, dst[lo*h.Cols:]) {
				t.Fatalf("rows [%d, %d) differ between chunk sizes", lo, h.Rows)
			}
		}
	})
}
