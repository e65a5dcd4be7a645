package npy

import (
	"archive/zip"
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

func openNPZ(t *testing.T, b []byte) *NPZ {
	t.Helper()
	z, err := OpenNPZ(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return z
}

func readArray(t *testing.T, z *NPZ, name string) (Header, []float32) {
	t.Helper()
	r, err := z.Array(name)
	if err != nil {
		t.Fatal(err)
	}
	h := r.Header()
	dst := make([]float32, h.Rows*h.Cols)
	if err := r.ReadRows(0, h.Rows, dst); err != nil {
		t.Fatal(err)
	}
	return h, dst
}

func negated(v []float32) []float32 {
	out := slices.Clone(v)
	for i := range out {
		out[i] = -out[i]
	}
	return out
}

// numpy's own archives (make_fixtures.py): np.savez stores the members, np.savez_compressed
// deflates them; both read back as the arrays numpy wrote.
func TestNPZFromNumpy(t *testing.T) {
	want := map[string][]float32{
		"b32_img": fixtureMat(3, 4), "b32_txt": negated(fixtureMat(3, 4)),
		"l14_img": fixtureMat(3, 6), "l14_txt": fixtureMat(3, 6),
	}
	for _, file := range []string{"datacomp_stored.npz", "datacomp_deflated.npz"} {
		z := openNPZ(t, readFixture(t, file))
		if got := z.Names(); !slices.Equal(got, []string{"b32_img", "b32_txt", "l14_img", "l14_txt"}) {
			t.Fatalf("%s: Names = %v", file, got)
		}
		for name, w := range want {
			h, got := readArray(t, z, name)
			if !sameFloats(got, w) {
				t.Errorf("%s %s = %v, want %v", file, name, got, w)
			}
			hh, err := z.Header(name)
			if err != nil || hh != h {
				t.Errorf("%s %s: Header = %+v, %v; Array's header %+v", file, name, hh, err, h)
			}
		}
		if _, err := z.Array("l14_emb"); err == nil || !strings.Contains(err.Error(), `no array "l14_emb"`) || !strings.Contains(err.Error(), "b32_img, b32_txt") {
			t.Errorf("%s: a missing array: err = %v, want one naming it and the arrays there", file, err)
		}
	}
}

func TestNPZFaults(t *testing.T) {
	if _, err := OpenNPZ(bytes.NewReader(readFixture(t, "datacomp_truncated.npz")), int64(len(readFixture(t, "datacomp_truncated.npz")))); err == nil {
		t.Error("a truncated archive opened")
	}
	// A deflated member whose bytes were damaged: the checksum (or the stream) says so.
	b := slices.Clone(readFixture(t, "datacomp_deflated.npz"))
	z := openNPZ(t, b)
	f := z.members["b32_img"]
	off, err := f.DataOffset()
	if err != nil {
		t.Fatal(err)
	}
	b[off+int64(f.CompressedSize64)/2] ^= 0x55
	if _, err := openNPZ(t, b).Array("b32_img"); err == nil {
		t.Error("a damaged deflated member read without error")
	}
	// A member of another compression method is refused by name.
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	zw.RegisterCompressor(12, func(w io.Writer) (io.WriteCloser, error) { return nopCloser{w}, nil })
	w, _ := zw.CreateHeader(&zip.FileHeader{Name: "x.npy", Method: 12})
	Write(w, 1, 1, []float32{1}, "<f4")
	zw.Close()
	if _, err := openNPZ(t, buf.Bytes()).Array("x"); err == nil || !strings.Contains(err.Error(), "method 12") {
		t.Errorf("a member of zip method 12: err = %v", err)
	}
	// A stored member that is not a .npy file.
	buf.Reset()
	zw = zip.NewWriter(&buf)
	w, _ = zw.CreateHeader(&zip.FileHeader{Name: "y.npy", Method: zip.Store})
	w.Write([]byte("not an array"))
	zw.Close()
	if _, err := openNPZ(t, buf.Bytes()).Array("y"); !errors.Is(err, ErrNotNPY) {
		t.Errorf("a member that is no .npy: err = %v, want ErrNotNPY", err)
	}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// bytesRead counts the bytes read through it.
type bytesRead struct {
	r *bytes.Reader
	n atomic.Int64
}

func (c *bytesRead) ReadAt(b []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(b, off)
	c.n.Add(int64(n))
	return n, err
}

// Reading one array of a stored archive reads that array's bytes, not the others'.
func TestNPZStoredReadsOnlyItsArray(t *testing.T) {
	const rows, cols = 2000, 64
	data := fixtureMat(rows, cols)
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, name := range []string{"a.npy", "big.npy"} {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		if err := Write(w, rows, cols, data, "<f4"); err != nil {
			t.Fatal(err)
		}
	}
	zw.Close()
	ra := &bytesRead{r: bytes.NewReader(buf.Bytes())}
	z, err := OpenNPZ(ra, int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	r, err := z.Array("a")
	if err != nil {
		t.Fatal(err)
	}
	got := make([]float32, rows*cols)
	if err := r.ReadRows(0, rows, got); err != nil {
		t.Fatal(err)
	}
	if !sameFloats(got, data) {
		t.Fatal("array a read back wrong")
	}
	array := int64(rows * cols * 4)
	if n := ra.n.Load(); n > array+8<<10 {
		t.Fatalf("reading one %d-byte array of a %d-byte archive read %d bytes", array, buf.Len(), n)
	}
}
