package npy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The fixtures in testdata/ were written by numpy 1.24.2 (make_fixtures.py);
// the tests only read them.

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixtureMat mirrors mat() in make_fixtures.py, in row-major order.
func fixtureMat(rows, cols int) []float32 {
	out := make([]float32, 0, rows*cols)
	for i := 0; i < rows; i++ {
		for j := 0; j < cols; j++ {
			v := float32(i*10+j) + 0.5
			if i%2 == 1 {
				v = -v
			}
			out = append(out, v)
		}
	}
	return out
}

func openBytes(t testing.TB, b []byte) *Reader {
	t.Helper()
	r, err := NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func sameFloats(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// checkAllRanges reads every [lo, hi) and compares with want, under several
// read sizings so chunk boundaries and column merging are all exercised.
func checkAllRanges(t *testing.T, r *Reader, want []float32) {
	t.Helper()
	h := r.Header()
	item := int64(h.ItemSize())
	type sizing struct{ chunk, gap int64 }
	sizings := []sizing{
		{chunkBytes, maxGapBytes}, // defaults: merge everything
		{item, maxGapBytes},       // one element per ReadAt
		{3 * item, maxGapBytes},   // chunks that split rows and strips
		{5 * item, 0},             // Fortran: never merge columns
		{64, maxGapBytes},
	}
	for _, s := range sizings {
		r.chunk, r.maxGap = s.chunk, s.gap
		for lo := 0; lo <= h.Rows; lo++ {
			for hi := lo; hi <= h.Rows; hi++ {
				dst := make([]float32, (hi-lo)*h.Cols)
				if err := r.ReadRows(lo, hi, dst); err != nil {
					t.Fatalf("chunk=%d gap=%d ReadRows(%d,%d): %v", s.chunk, s.gap, lo, hi, err)
				}
				if w := want[lo*h.Cols : hi*h.Cols]; !sameFloats(dst, w) {
					t.Fatalf("chunk=%d gap=%d ReadRows(%d,%d) = %v, want %v", s.chunk, s.gap, lo, hi, dst, w)
				}
			}
		}
	}
	r.chunk, r.maxGap = chunkBytes, maxGapBytes
}

func TestNumpyFixtures(t *testing.T) {
	tests := []struct {
		file       string
		want       Header
		rows, cols int
	}{
		{"f4_c.npy", Header{"<f4", false, 3, 4, 128}, 3, 4},
		{"f2_c.npy", Header{"<f2", false, 3, 4, 128}, 3, 4},
		{"f4_fortran.npy", Header{"<f4", true, 5, 3, 128}, 5, 3},
		{"f2_fortran.npy", Header{"<f2", true, 5, 3, 128}, 5, 3},
		{"f4_be.npy", Header{">f4", false, 3, 4, 128}, 3, 4},
		{"f2_be_fortran.npy", Header{">f2", true, 5, 3, 128}, 5, 3},
		{"f4_v2.npy", Header{"<f4", false, 3, 4, 128}, 3, 4},
		{"f4_v3.npy", Header{"<f4", false, 3, 4, 128}, 3, 4},
		{"f4_empty.npy", Header{"<f4", false, 0, 4, 128}, 0, 4},
		{"f2_empty.npy", Header{"<f2", false, 0, 4, 128}, 0, 4},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			b := readFixture(t, tc.file)
			h, err := ReadHeader(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			if h != tc.want {
				t.Fatalf("header = %+v, want %+v", h, tc.want)
			}
			r := openBytes(t, b)
			if r.Header() != tc.want {
				t.Fatalf("Reader.Header() = %+v", r.Header())
			}
			checkAllRanges(t, r, fixtureMat(tc.rows, tc.cols))
		})
	}
}

func TestNumpyFixtureErrors(t *testing.T) {
	tests := []struct {
		file string
		kind error
		msg  string
	}{
		{"vec_1d.npy", ErrUnsupported, "npy: shape (3,) is not 2-D: a 1-D array is a single vector"},
		{"f4_3d.npy", ErrUnsupported, "npy: shape (2, 2, 2) is not 2-D"},
		{"i8.npy", ErrUnsupported, "npy: unsupported dtype <i8: want float16 or float32"},
		{"f8.npy", ErrUnsupported, "npy: unsupported dtype <f8: want float16 or float32"},
		{"obj.npy", ErrUnsupported, "npy: object arrays are not supported (dtype |O)"},
		{"f4_truncated.npy", ErrTruncated, "npy: truncated: file has 43 bytes of data, header promises 48"},
		{"f4_trailing.npy", ErrTruncated, "npy: trailing garbage: file has 52 bytes of data, header promises 48"},
		{"make_fixtures.py", ErrNotNPY, "npy: not a .npy file (bad magic)"},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			b := readFixture(t, tc.file)
			_, err := NewReader(bytes.NewReader(b), int64(len(b)))
			if err == nil {
				t.Fatal("NewReader succeeded")
			}
			if !errors.Is(err, tc.kind) {
				t.Errorf("error %q is not %v", err, tc.kind)
			}
			if !strings.HasPrefix(err.Error(), tc.msg) {
				t.Errorf("error %q, want prefix %q", err, tc.msg)
			}
		})
	}
}

// Write must reproduce numpy's np.save output byte for byte, including the
// header padding and float16 rounding.
func TestWriteMatchesNumpy(t *testing.T) {
	tests := []struct {
		file, dtype string
		rows, cols  int
		data        []float32
	}{
		{"f4_c.npy", "<f4", 3, 4, fixtureMat(3, 4)},
		{"f2_c.npy", "<f2", 3, 4, fixtureMat(3, 4)},
		{"f4_empty.npy", "<f4", 0, 4, nil},
		{"f2_empty.npy", "<f2", 0, 4, nil},
	}
	// round_f4.npy holds awkward float32 values; numpy's float16 version
	// of them is round_f2.npy.
	rr := openBytes(t, readFixture(t, "round_f4.npy"))
	rh := rr.Header()
	round := make([]float32, rh.Rows*rh.Cols)
	if err := rr.ReadRows(0, rh.Rows, round); err != nil {
		t.Fatal(err)
	}
	tests = append(tests,
		struct {
			file, dtype string
			rows, cols  int
			data        []float32
		}{"round_f4.npy", "<f4", rh.Rows, rh.Cols, round},
		struct {
			file, dtype string
			rows, cols  int
			data        []float32
		}{"round_f2.npy", "<f2", rh.Rows, rh.Cols, round})

	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			var buf bytes.Buffer
			if err := Write(&buf, tc.rows, tc.cols, tc.data, tc.dtype); err != nil {
				t.Fatal(err)
			}
			want := readFixture(t, tc.file)
			if got := buf.Bytes(); !bytes.Equal(got, want) {
				t.Fatalf("Write output differs from numpy's:\n got %q\nwant %q", got, want)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	shapes := [][2]int{{0, 0}, {0, 7}, {7, 0}, {1, 1}, {1, 768}, {17, 5}, {100, 512}, {1000, 3}}
	for _, dtype := range []string{"<f4", "<f2"} {
		for _, s := range shapes {
			rows, cols := s[0], s[1]
			data := make([]float32, rows*cols)
			for i := range data {
				data[i] = float32(rng.NormFloat64() * 0.1)
			}
			var buf bytes.Buffer
			if err := Write(&buf, rows, cols, data, dtype); err != nil {
				t.Fatal(err)
			}
			r := openBytes(t, buf.Bytes())
			h := r.Header()
			if h.Dtype != dtype || h.Rows != rows || h.Cols != cols || h.Fortran || h.DataOffset%64 != 0 {
				t.Fatalf("%s %v: header %+v", dtype, s, h)
			}
			got := make([]float32, rows*cols)
			if err := r.ReadRows(0, rows, got); err != nil {
				t.Fatal(err)
			}
			want := data
			if dtype == "<f2" {
				want = make([]float32, len(data))
				for i, v := range data {
					want[i] = halfToFloat32(float32ToHalf(v))
				}
			}
			if !sameFloats(got, want) {
				t.Fatalf("%s %v: round trip mismatch", dtype, s)
			}
			// Also a batch in the middle.
			if rows >= 3 {
				mid := make([]float32, cols)
				if err := r.ReadRows(rows/2, rows/2+1, mid); err != nil {
					t.Fatal(err)
				}
				if !sameFloats(mid, want[rows/2*cols:(rows/2+1)*cols]) {
					t.Fatalf("%s %v: middle row mismatch", dtype, s)
				}
			}
		}
	}
}

// The header must stay a multiple of 64 bytes and parse back for every
// width of the row count, including the exact-fit case where numpy adds a
// whole extra 64 bytes of padding.
func TestHeaderSizes(t *testing.T) {
	for rows := 1; rows > 0 && rows < math.MaxInt/10; rows *= 10 {
		for _, cols := range []int{0, 1, 768, math.MaxInt / 4} {
			for _, dtype := range []string{"<f4", "<f2"} {
				hb := header10("'"+dtype+"'", int64(rows), int64(cols))
				if len(hb)%64 != 0 || hb[len(hb)-1] != '\n' {
					t.Fatalf("header10(%d, %d) has length %d", rows, cols, len(hb))
				}
				h, err := ReadHeader(bytes.NewReader(hb))
				if err != nil {
					if errors.Is(err, ErrUnsupported) && strings.Contains(err.Error(), "too large") {
						continue
					}
					t.Fatalf("header10(%d, %d): %v", rows, cols, err)
				}
				if h.Rows != rows || h.Cols != cols || h.DataOffset != int64(len(hb)) {
					t.Fatalf("header10(%d, %d) parsed as %+v", rows, cols, h)
				}
			}
		}
	}
}

func TestFloat16Specials(t *testing.T) {
	r := openBytes(t, readFixture(t, "f2_specials.npy"))
	got := make([]float32, r.Header().Cols)
	if err := r.ReadRows(0, 1, got); err != nil {
		t.Fatal(err)
	}
	inf := float32(math.Inf(1))
	want := []float32{0, float32(math.Copysign(0, -1)), 0x1p-24, -0x1p-24, 1023 * 0x1p-24,
		0x1p-14, 65504, inf, -inf, float32(math.NaN()), 1, -2}
	for i := range want {
		w, g := want[i], got[i]
		if math.IsNaN(float64(w)) {
			if !math.IsNaN(float64(g)) {
				t.Errorf("[%d] = %v, want NaN", i, g)
			}
			continue
		}
		if math.Float32bits(g) != math.Float32bits(w) {
			t.Errorf("[%d] = %v (%#x), want %v (%#x)", i, g, math.Float32bits(g), w, math.Float32bits(w))
		}
	}
}

// Exhaustive float16 checks: every half survives half->float->half, and
// every rounding midpoint between adjacent halves goes to the even one.
func TestFloat16Exhaustive(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := halfToFloat32(h)
		back := float32ToHalf(f)
		if h&0x7c00 == 0x7c00 && h&0x3ff != 0 {
			if !math.IsNaN(float64(f)) || back&0x7c00 != 0x7c00 || back&0x3ff == 0 || back&0x8000 != h&0x8000 {
				t.Fatalf("NaN %#04x -> %v -> %#04x", h, f, back)
			}
			continue
		}
		if back != h {
			t.Fatalf("%#04x -> %v -> %#04x", h, f, back)
		}
	}
	// Positive finite halves 0..0x7bff; the step above 0x7bff (65504) is to
	// 65536, which is infinity in float16.
	for h := uint16(0); h <= 0x7bff; h++ {
		lo := float64(halfToFloat32(h))
		hi := float64(halfToFloat32(h + 1))
		if h == 0x7bff {
			hi = 65536
		}
		mid := float32((lo + hi) / 2) // exact: needs 12 significant bits
		even := h
		if h&1 == 1 {
			even = h + 1
		}
		for _, sign := range []float32{1, -1} {
			sb := uint16(0)
			if sign < 0 {
				sb = 0x8000
			}
			m := sign * mid
			if got := float32ToHalf(m); got != even|sb {
				t.Fatalf("midpoint %v of %#04x: got %#04x, want %#04x", m, h, got, even|sb)
			}
			up := sign * math.Nextafter32(mid, float32(math.Inf(1)))
			if got := float32ToHalf(up); got != (h+1)|sb {
				t.Fatalf("just above midpoint %v of %#04x: got %#04x", up, h, got)
			}
			down := sign * math.Nextafter32(mid, 0)
			if got := float32ToHalf(down); got != h|sb {
				t.Fatalf("just below midpoint %v of %#04x: got %#04x", down, h, got)
			}
		}
	}
	if got := float32ToHalf(float32(math.NaN())); got != 0x7e00 {
		t.Errorf("NaN -> %#04x, want 0x7e00", got)
	}
	if got := float32ToHalf(math.Float32frombits(0x7f800001)); got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
		t.Errorf("low-payload NaN -> %#04x, want a NaN", got)
	}
	if got := float32ToHalf(math.SmallestNonzeroFloat32); got != 0 {
		t.Errorf("float32 subnormal -> %#04x, want 0", got)
	}
	if got := float32ToHalf(-math.MaxFloat32); got != 0xfc00 {
		t.Errorf("-MaxFloat32 -> %#04x, want -inf", got)
	}
}

// hdr builds a version 1.0 file prefix around an arbitrary header dict.
func hdr(dict string) []byte {
	b := []byte(magic + "\x01\x00")
	b = append(b, byte(len(dict)), byte(len(dict)>>8))
	return append(b, dict...)
}

func TestReadHeaderErrors(t *testing.T) {
	long := func(major byte, n uint32) []byte {
		return append([]byte(magic), major, 0, byte(n), byte(n>>8), byte(n>>16), byte(n>>24))
	}
	tests := []struct {
		name string
		in   []byte
		kind error
		msg  string
	}{
		{"empty", nil, ErrNotNPY, "not a .npy file (empty)"},
		{"garbage", []byte("PK\x03\x04 this is a zip file"), ErrNotNPY, "not a .npy file (bad magic)"},
		{"short garbage", []byte("ab"), ErrNotNPY, "not a .npy file (bad magic)"},
		{"magic prefix", []byte("\x93NUM"), ErrTruncated, "truncated header"},
		{"no version", []byte(magic), ErrTruncated, "truncated header"},
		{"no length", []byte(magic + "\x01\x00\x10"), ErrTruncated, "truncated header"},
		{"v2 short length", []byte(magic + "\x02\x00\x10\x00"), ErrTruncated, "truncated header"},
		{"short dict", append([]byte(magic+"\x01\x00\x40\x00"), "{'descr'"...), ErrTruncated, "truncated header (header length says 64 bytes, file has 8)"},
		{"version 4", []byte(magic + "\x04\x00\x10\x00\x00\x00"), ErrUnsupported, "unsupported .npy format version 4.0"},
		{"version 1.1", []byte(magic + "\x01\x01\x10\x00"), ErrUnsupported, "unsupported .npy format version 1.1"},
		{"huge header", long(2, 1<<31), ErrMalformed, "header length 2147483648 exceeds limit"},
		{"not a dict", hdr("('descr', '<f4')"), ErrMalformed, "header is not a dict"},
		{"missing shape", hdr("{'descr': '<f4', 'fortran_order': False}"), ErrMalformed, "header has no 'shape'"},
		{"missing descr", hdr("{'fortran_order': False, 'shape': (1, 2)}"), ErrMalformed, "header has no 'descr'"},
		{"missing order", hdr("{'descr': '<f4', 'shape': (1, 2)}"), ErrMalformed, "header has no 'fortran_order'"},
		{"extra key", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), 'x': 1}"), ErrMalformed, `unexpected header key "x"`},
		{"dup key", hdr("{'descr': '<f4', 'descr': '<f4'}"), ErrMalformed, `duplicate header key "descr"`},
		{"bad order", hdr("{'descr': '<f4', 'fortran_order': 0, 'shape': (1, 2)}"), ErrMalformed, "'fortran_order' is not True or False"},
		{"bad word", hdr("{'descr': '<f4', 'fortran_order': None, 'shape': (1, 2)}"), ErrMalformed, "want a value"},
		{"shape int", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (3)}"), ErrMalformed, "'shape' is not a tuple"},
		{"shape list", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': [1, 2]}"), ErrMalformed, "'shape' is not a tuple"},
		{"negative dim", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 2)}"), ErrMalformed, "negative dimension"},
		{"huge dim", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999, 2)}"), ErrUnsupported, "dimension 99999999999999999999 is too large"},
		{"overflowing size", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 2)}"), ErrUnsupported, "shape (4611686018427387904, 2) is too large"},
		{"scalar", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': ()}"), ErrUnsupported, "shape () is not 2-D"},
		{"1-D", hdr("{'descr': '<f2', 'fortran_order': False, 'shape': (768,)}"), ErrUnsupported, "shape (768,) is not 2-D"},
		{"native order", hdr("{'descr': '=f4', 'fortran_order': False, 'shape': (1, 2)}"), ErrUnsupported, "unsupported dtype =f4: byte order must be '<' or '>'"},
		{"uint8", hdr("{'descr': '|u1', 'fortran_order': False, 'shape': (1, 2)}"), ErrUnsupported, "unsupported dtype |u1: want float16 or float32"},
		{"structured", hdr("{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (1, 2)}"), ErrUnsupported, "structured dtype"},
		{"escape", hdr("{'descr': '<f\\x34', 'fortran_order': False, 'shape': (1, 2)}"), ErrMalformed, "escape sequences"},
		{"newline in string", hdr("{'descr': '<f\n4'}"), ErrMalformed, "unterminated string"},
		{"lone minus", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (-, 2)}"), ErrMalformed, "want an integer"},
		{"bad tuple", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (1 2)}"), ErrMalformed, "want ',' or ')'"},
		{"bad dict sep", hdr("{'descr': '<f4' 'shape': (1, 2)}"), ErrMalformed, "want ',' or '}'"},
		{"int key", hdr("{1: 2}"), ErrMalformed, "want a string key"},
		{"descr int", hdr("{'descr': 4, 'fortran_order': False, 'shape': (1, 2)}"), ErrMalformed, "'descr' is not a string"},
		{"unterminated", hdr("{'descr': '<f4"), ErrMalformed, "unterminated string"},
		{"trailing junk", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2)} x"), ErrMalformed, "after header dict"},
		{"missing colon", hdr("{'descr' '<f4'}"), ErrMalformed, "want ':'"},
		{"deep nesting", hdr("{'descr': " + strings.Repeat("(", 100)), ErrMalformed, "nested too deeply"},
		{"ends early", hdr("{'descr': '<f4', "), ErrMalformed, "header dict ends early"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadHeader(bytes.NewReader(tc.in))
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, tc.kind) {
				t.Errorf("error %q is not %v", err, tc.kind)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not contain %q", err, tc.msg)
			}
		})
	}
}

// Headers numpy could read, though current numpy does not write them so.
func TestReadHeaderLenient(t *testing.T) {
	tests := []struct {
		dict string
		want Header
	}{
		// Python 2 era: long ints and no growth padding.
		{"{'descr': '<f4', 'fortran_order': False, 'shape': (3L, 4L), }  \n", Header{"<f4", false, 3, 4, 0}},
		// Double quotes, other key order, no trailing comma, tabs.
		{"{\"shape\":(2,5),\t\"fortran_order\":True,\"descr\":\">f2\"}\n", Header{">f2", true, 2, 5, 0}},
		{"{'descr': '<f2', 'fortran_order': False, 'shape': (0, 0,), }", Header{"<f2", false, 0, 0, 0}},
	}
	for _, tc := range tests {
		b := hdr(tc.dict)
		h, err := ReadHeader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%q: %v", tc.dict, err)
		}
		tc.want.DataOffset = int64(len(b))
		if h != tc.want {
			t.Errorf("%q: got %+v, want %+v", tc.dict, h, tc.want)
		}
	}
}

// ReadHeader must consume exactly the header so a stream can continue
// with the data.
func TestReadHeaderConsumesHeaderOnly(t *testing.T) {
	for _, f := range []string{"f4_c.npy", "f4_v2.npy", "f2_fortran.npy"} {
		b := readFixture(t, f)
		br := bytes.NewReader(b)
		h, err := ReadHeader(br)
		if err != nil {
			t.Fatal(err)
		}
		if rest := int64(br.Len()); rest != int64(len(b))-h.DataOffset || rest != h.DataSize() {
			t.Errorf("%s: %d bytes left after header, want %d", f, rest, h.DataSize())
		}
	}
}

func TestGarbageFile(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, 4096)
	for i := range b {
		b[i] = byte(rng.UintN(256))
	}
	b[0] = 'x'
	_, err := NewReader(bytes.NewReader(b), int64(len(b)))
	if !errors.Is(err, ErrNotNPY) || err.Error() != "npy: not a .npy file (bad magic)" {
		t.Fatalf("got %v", err)
	}
	if _, err := NewReader(bytes.NewReader(nil), 0); !errors.Is(err, ErrNotNPY) {
		t.Fatalf("empty file: got %v", err)
	}
	// The size argument wins over what the ReaderAt holds.
	f4 := readFixture(t, "f4_c.npy")
	if _, err := NewReader(bytes.NewReader(f4), 100); !errors.Is(err, ErrTruncated) {
		t.Fatalf("short size: got %v", err)
	}
	if _, err := NewReader(bytes.NewReader(f4), 20); !errors.Is(err, ErrTruncated) {
		t.Fatalf("size inside header: got %v", err)
	}
}

func TestEmptyMatrix(t *testing.T) {
	for _, f := range []string{"f4_empty.npy", "f2_empty.npy"} {
		r := openBytes(t, readFixture(t, f))
		if err := r.ReadRows(0, 0, nil); err != nil {
			t.Errorf("%s: ReadRows(0,0): %v", f, err)
		}
		if err := r.ReadRows(0, 1, make([]float32, 4)); err == nil {
			t.Errorf("%s: ReadRows(0,1) on 0 rows succeeded", f)
		}
	}
}

func TestReadRowsArgs(t *testing.T) {
	r := openBytes(t, readFixture(t, "f4_c.npy")) // 3 x 4
	bad := []struct{ lo, hi, n int }{
		{-1, 1, 8}, {2, 1, 0}, {0, 4, 16}, {3, 4, 4}, // out of range
		{0, 1, 3}, {0, 1, 5}, {0, 2, 4}, // wrong dst length
	}
	for _, b := range bad {
		if err := r.ReadRows(b.lo, b.hi, make([]float32, b.n)); err == nil {
			t.Errorf("ReadRows(%d, %d, len %d) succeeded", b.lo, b.hi, b.n)
		}
	}
	if err := r.ReadRows(3, 3, nil); err != nil {
		t.Errorf("empty range at end: %v", err)
	}
}

// countingReaderAt records ReadAt calls, to check batches are read with
// few large requests rather than one per element.
type countingReaderAt struct {
	ra    io.ReaderAt
	mu    sync.Mutex
	calls int
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	c.calls++
	c.mu.Unlock()
	return c.ra.ReadAt(p, off)
}

// writeFortran builds a Fortran-order '<f4' file from row-major data.
func writeFortran(rows, cols int, data []float32) []byte {
	var buf bytes.Buffer
	_ = Write(&buf, rows, cols, data, "<f4")
	b := buf.Bytes()
	// "False," and "True, " have the same length, so offsets are kept.
	hb := bytes.Replace(b[:128], []byte("'fortran_order': False,"), []byte("'fortran_order': True, "), 1)
	out := append([]byte(nil), hb...)
	for j := 0; j < cols; j++ {
		for i := 0; i < rows; i++ {
			out = append(out, b[128+4*(i*cols+j):128+4*(i*cols+j)+4]...)
		}
	}
	return out
}

func TestReadAtCounts(t *testing.T) {
	const rows, cols = 10000, 8 // Fortran column stride 40000 bytes
	data := make([]float32, rows*cols)
	for i := range data {
		data[i] = float32(i)
	}
	var cbuf bytes.Buffer
	if err := Write(&cbuf, rows, cols, data, "<f4"); err != nil {
		t.Fatal(err)
	}
	fbytes := writeFortran(rows, cols, data)

	read := func(b []byte, lo, hi int, maxGap int64) (int, []float32) {
		c := &countingReaderAt{ra: bytes.NewReader(b)}
		r, err := NewReader(c, int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		r.maxGap = maxGap
		c.calls = 0
		dst := make([]float32, (hi-lo)*cols)
		if err := r.ReadRows(lo, hi, dst); err != nil {
			t.Fatal(err)
		}
		return c.calls, dst
	}
	check := func(name string, got []float32, lo, hi int) {
		if !sameFloats(got, data[lo*cols:hi*cols]) {
			t.Fatalf("%s: wrong data", name)
		}
	}

	n, got := read(cbuf.Bytes(), 100, 5100, maxGapBytes)
	check("C", got, 100, 5100)
	if n != 1 {
		t.Errorf("C order batch used %d ReadAt calls, want 1", n)
	}
	// Fortran, gap 40000-4*1000 bytes < 64 KiB: all 8 strips in one read.
	n, got = read(fbytes, 100, 1100, maxGapBytes)
	check("Fortran merged", got, 100, 1100)
	if n != 1 {
		t.Errorf("Fortran merged batch used %d ReadAt calls, want 1", n)
	}
	// Gaps too large to merge: one read per column.
	n, got = read(fbytes, 100, 1100, 1024)
	check("Fortran strips", got, 100, 1100)
	if n != cols {
		t.Errorf("Fortran batch used %d ReadAt calls, want %d", n, cols)
	}
}

// A ReaderAt that fails or comes up short must produce an error, not
// partial data.
type failingReaderAt struct {
	b       []byte
	failAt  int64
	failErr error
}

func (f *failingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.failAt {
		n := 0
		if off < f.failAt {
			n = copy(p, f.b[off:f.failAt])
		}
		return n, f.failErr
	}
	return copy(p, f.b[off:]), nil
}

func TestReadErrors(t *testing.T) {
	b := readFixture(t, "f4_c.npy")
	boom := errors.New("boom")
	r, err := NewReader(&failingReaderAt{b: b, failAt: 140, failErr: boom}, int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.ReadRows(0, 3, make([]float32, 12)); !errors.Is(err, boom) {
		t.Errorf("got %v, want boom", err)
	}
	if err := r.ReadRows(0, 0, nil); err != nil {
		t.Errorf("empty read touched the ReaderAt: %v", err)
	}
	r, _ = NewReader(&failingReaderAt{b: b, failAt: 140, failErr: io.EOF}, int64(len(b)))
	if err := r.ReadRows(1, 3, make([]float32, 8)); !errors.Is(err, ErrTruncated) {
		t.Errorf("got %v, want ErrTruncated", err)
	}
	// Fortran order, both the merged path and the chunked-strip path.
	fb := readFixture(t, "f4_fortran.npy") // 5 x 3, data at 128..188
	for _, chunk := range []int64{chunkBytes, 8} {
		r, err := NewReader(&failingReaderAt{b: fb, failAt: 150, failErr: boom}, int64(len(fb)))
		if err != nil {
			t.Fatal(err)
		}
		r.chunk = chunk
		if err := r.ReadRows(0, 5, make([]float32, 15)); !errors.Is(err, boom) {
			t.Errorf("Fortran chunk %d: got %v, want boom", chunk, err)
		}
	}
	// A header read failure is reported as such.
	if _, err := NewReader(&failingReaderAt{b: b, failAt: 50, failErr: boom}, int64(len(b))); !errors.Is(err, boom) {
		t.Errorf("header read: got %v, want boom", err)
	}
}

func TestConcurrentReadRows(t *testing.T) {
	const rows, cols = 300, 16
	data := make([]float32, rows*cols)
	for i := range data {
		data[i] = float32(i) / 7
	}
	var buf bytes.Buffer
	if err := Write(&buf, rows, cols, data, "<f4"); err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{buf.Bytes(), writeFortran(rows, cols, data)} {
		r := openBytes(t, b)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for lo := g; lo < rows; lo += 8 {
					hi := min(rows, lo+g+1)
					dst := make([]float32, (hi-lo)*cols)
					if err := r.ReadRows(lo, hi, dst); err != nil {
						errs <- err
						return
					}
					if !sameFloats(dst, data[lo*cols:hi*cols]) {
						errs <- fmt.Errorf("rows [%d,%d) wrong", lo, hi)
						return
					}
				}
			}(g)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
}

func TestWriteErrors(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, 2, 2, make([]float32, 4), "<f8"); err == nil {
		t.Error("dtype <f8 accepted")
	}
	if err := Write(&buf, 2, 2, make([]float32, 3), "<f4"); err == nil {
		t.Error("wrong data length accepted")
	}
	if err := Write(&buf, -1, 2, nil, "<f4"); err == nil {
		t.Error("negative rows accepted")
	}
	if err := Write(&buf, math.MaxInt, 3, nil, "<f4"); err == nil {
		t.Error("overflowing shape accepted")
	}
	if err := Write(errWriter{}, 1, 1, []float32{1}, "<f2"); err == nil {
		t.Error("writer error swallowed")
	}
}

type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// UIDPairsHeader followed by the pairs is byte for byte what np.save writes for
// np.array([(1, 2), (3, 4)], np.dtype("u8,u8")), and for an empty such array.
func TestUIDPairsHeaderMatchesNumpy(t *testing.T) {
	pad := strings.Repeat(" ", 35)
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{2, "\x93NUMPY\x01\x00v\x00{'descr': [('f0', '<u8'), ('f1', '<u8')], 'fortran_order': False, 'shape': (2,), }" + pad + "\n"},
		{0, "\x93NUMPY\x01\x00v\x00{'descr': [('f0', '<u8'), ('f1', '<u8')], 'fortran_order': False, 'shape': (0,), }" + pad + "\n"},
	} {
		if got := string(UIDPairsHeader(tc.n)); got != tc.want {
			t.Errorf("UIDPairsHeader(%d):\n got %q\nwant %q", tc.n, got, tc.want)
		}
	}
}

// RowWriter, fed a matrix in uneven batches of rows, writes what Write writes; fewer or more
// rows than promised are errors.
func TestRowWriterMatchesWrite(t *testing.T) {
	rows, cols := 37, 5
	data := fixtureMat(rows, cols)
	for _, dtype := range []string{"<f4", "<f2"} {
		var want, got bytes.Buffer
		if err := Write(&want, rows, cols, data, dtype); err != nil {
			t.Fatal(err)
		}
		rw, err := NewRowWriter(&got, rows, cols, dtype)
		if err != nil {
			t.Fatal(err)
		}
		for lo, step := 0, 1; lo < rows; lo, step = lo+step, step+3 {
			hi := min(rows, lo+step)
			if err := rw.WriteRows(data[lo*cols : hi*cols]); err != nil {
				t.Fatal(err)
			}
		}
		if err := rw.Close(); err != nil || !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Errorf("%s: RowWriter's file differs from Write's (close: %v)", dtype, err)
		}
		if err := rw.WriteRows(data[:cols]); err == nil {
			t.Errorf("%s: a row past the promised ones was accepted", dtype)
		}
	}
	rw, _ := NewRowWriter(io.Discard, 2, 3, "<f4")
	rw.WriteRows(make([]float32, 3))
	if err := rw.Close(); err == nil {
		t.Error("Close after 1 of 2 rows: no error")
	}
}

// SplitRows routes each row to its file in order, and a C-order input's rows come out byte
// for byte; a Fortran-order input of the same matrix gives the same files.
func TestSplitRows(t *testing.T) {
	rows, cols := 2500, 3 // more than one chunk of rows
	data := fixtureMat(rows, cols)
	to := make([]int, rows)
	for i := range to {
		to[i] = (i * i) % 3
	}
	split := func(file []byte) [3][]byte {
		var outs [3]bytes.Buffer
		if err := SplitRows(openBytes(t, file), to, []io.Writer{&outs[0], &outs[1], &outs[2]}); err != nil {
			t.Fatal(err)
		}
		return [3][]byte{outs[0].Bytes(), outs[1].Bytes(), outs[2].Bytes()}
	}
	var c bytes.Buffer
	if err := Write(&c, rows, cols, data, "<f4"); err != nil {
		t.Fatal(err)
	}
	got := split(c.Bytes())
	for d := range 3 {
		var want []float32
		for i, dst := range to {
			if dst == d {
				want = append(want, data[i*cols:(i+1)*cols]...)
			}
		}
		var wb bytes.Buffer
		if err := Write(&wb, len(want)/cols, cols, want, "<f4"); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[d], wb.Bytes()) {
			t.Errorf("file %d differs from Write of its %d rows", d, len(want)/cols)
		}
	}
	if fortran := split(writeFortran(rows, cols, data)); !(bytes.Equal(fortran[0], got[0]) && bytes.Equal(fortran[1], got[1]) && bytes.Equal(fortran[2], got[2])) {
		t.Error("a Fortran-order input splits differently from the C-order one")
	}
}
