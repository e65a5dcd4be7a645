package npy

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"sync"
)

// Reader reads rows of a 2-D float16/float32 .npy as float32, big- or
// little-endian, C or Fortran order. It holds no mutable state, so
// concurrent ReadRows calls are safe whenever the underlying io.ReaderAt
// allows parallel ReadAt calls (as the io.ReaderAt contract requires).
type Reader struct {
	ra     io.ReaderAt
	h      Header
	item   int // bytes per element
	decode func(dst []float32, stride int, src []byte)

	// Read sizing; the defaults are chunkBytes and maxGapBytes. Tests
	// shrink them to exercise chunk boundaries on tiny files.
	chunk, maxGap int64
}

// NewReader parses the header of the .npy file of the given size held in
// ra. It checks that the file is exactly as long as the header promises, so
// a partly uploaded or partly downloaded shard is caught here rather than
// as a failed read halfway through a job.
func NewReader(ra io.ReaderAt, size int64) (*Reader, error) {
	if size < 0 {
		return nil, fmt.Errorf("npy: negative size %d", size)
	}
	h, err := ReadHeader(io.NewSectionReader(ra, 0, size))
	if err != nil {
		return nil, err
	}
	have, want := size-h.DataOffset, h.DataSize()
	if have < want {
		return nil, errorf(ErrTruncated, "truncated: file has %d bytes of data, header promises %d", have, want)
	}
	if have > want {
		return nil, errorf(ErrTruncated, "trailing garbage: file has %d bytes of data, header promises %d", have, want)
	}
	r := &Reader{ra: ra, h: h, item: h.ItemSize(), chunk: chunkBytes, maxGap: maxGapBytes}
	switch h.Dtype {
	case "<f4":
		r.decode = decodeF4LE
	case ">f4":
		r.decode = decodeF4BE
	case "<f2":
		r.decode = decodeF2LE
	case ">f2":
		r.decode = decodeF2BE
	}
	return r, nil
}

// Header returns the parsed header.
func (r *Reader) Header() Header { return r.h }

const (
	// chunkBytes caps the bytes fetched by one ReadAt, bounding the
	// temporary buffer while keeping requests large enough to be efficient
	// on local disks and object stores alike.
	chunkBytes = 4 << 20
	// maxGapBytes: in Fortran order, neighbouring column strips are
	// merged into one ReadAt when the unwanted bytes between them are at
	// most this many. Reading a small gap is cheaper than another request.
	maxGapBytes = 64 << 10
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, chunkBytes); return &b }}

// ReadRows fills dst, which must have length (hi-lo)*Cols, with rows
// [lo, hi) in row-major order, converted to float32.
//
// C order reads one contiguous byte range (in chunks of at most 4 MiB).
// Fortran order stores each column contiguously, so the rows of a batch
// form one strip per column; strips are read one ReadAt each, or several
// columns per ReadAt when the gaps between them are small.
func (r *Reader) ReadRows(lo, hi int, dst []float32) error {
	if lo < 0 || hi < lo || hi > r.h.Rows {
		return fmt.Errorf("npy: rows [%d, %d) out of range: matrix has %d rows", lo, hi, r.h.Rows)
	}
	n := hi - lo
	if len(dst) != n*r.h.Cols {
		return fmt.Errorf("npy: dst has length %d, want %d (%d rows x %d cols)", len(dst), n*r.h.Cols, n, r.h.Cols)
	}
	if len(dst) == 0 {
		return nil
	}
	var buf []byte
	if r.chunk == chunkBytes {
		bp := bufPool.Get().(*[]byte)
		defer bufPool.Put(bp)
		buf = *bp
	} else {
		buf = make([]byte, r.chunk)
	}
	if r.h.Fortran {
		return r.readFortran(lo, n, dst, buf)
	}
	return r.readC(lo, dst, buf)
}

func (r *Reader) readC(lo int, dst []float32, buf []byte) error {
	off := r.h.DataOffset + int64(lo)*int64(r.h.Cols)*int64(r.item)
	per := len(buf) / r.item // elements per chunk
	for len(dst) > 0 {
		m := min(per, len(dst))
		b := buf[:m*r.item]
		if err := r.readAt(b, off); err != nil {
			return err
		}
		r.decode(dst[:m], 1, b)
		dst = dst[m:]
		off += int64(len(b))
	}
	return nil
}

func (r *Reader) readFortran(lo, n int, dst []float32, buf []byte) error {
	cols := r.h.Cols
	item := int64(r.item)
	colBytes := int64(r.h.Rows) * item // distance between column starts
	stripBytes := int64(n) * item      // wanted bytes per column
	base := r.h.DataOffset + int64(lo)*item
	for j := 0; j < cols; {
		colOff := base + int64(j)*colBytes
		if stripBytes > int64(len(buf)) {
			// One column's strip alone exceeds the buffer: read it in pieces.
			per := len(buf) / r.item
			for i := 0; i < n; i += per {
				m := min(per, n-i)
				b := buf[:m*r.item]
				if err := r.readAt(b, colOff+int64(i)*item); err != nil {
					return err
				}
				r.decode(dst[i*cols+j:], cols, b)
			}
			j++
			continue
		}
		// Merge g columns into one read when the gaps are small.
		g := 1
		if colBytes-stripBytes <= r.maxGap {
			g = int((int64(len(buf))-stripBytes)/colBytes) + 1
			g = min(g, cols-j)
		}
		span := int64(g-1)*colBytes + stripBytes
		b := buf[:span]
		if err := r.readAt(b, colOff); err != nil {
			return err
		}
		for k := 0; k < g; k++ {
			s := int64(k) * colBytes
			r.decode(dst[j+k:], cols, b[s:s+stripBytes])
		}
		j += g
	}
	return nil
}

// readAt fills b completely. io.ReaderAt may return io.EOF together with a
// full read at the end of the file; that is success.
func (r *Reader) readAt(b []byte, off int64) error {
	k, err := r.ra.ReadAt(b, off)
	if k == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		// The size checked in NewReader was wrong or the file shrank.
		return errorf(ErrTruncated, "truncated: short read of %d bytes at offset %d (got %d)", len(b), off, k)
	}
	return fmt.Errorf("npy: read %d bytes at offset %d: %w", len(b), off, err)
}

// Decoders convert len(src)/itemsize elements into dst[0], dst[stride],
// dst[2*stride], ... A stride of 1 serves C order, Cols serves Fortran.

func decodeF4LE(dst []float32, stride int, src []byte) {
	if stride == 1 { // C order: a plain loop the compiler keeps tight
		dst = dst[:len(src)/4]
		for k := range dst {
			dst[k] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*k:]))
		}
		return
	}
	for i, k := 0, 0; i+4 <= len(src); i, k = i+4, k+stride {
		dst[k] = math.Float32frombits(binary.LittleEndian.Uint32(src[i:]))
	}
}

func decodeF4BE(dst []float32, stride int, src []byte) {
	if stride == 1 { // C order: a plain loop the compiler keeps tight
		dst = dst[:len(src)/4]
		for k := range dst {
			dst[k] = math.Float32frombits(binary.BigEndian.Uint32(src[4*k:]))
		}
		return
	}
	for i, k := 0, 0; i+4 <= len(src); i, k = i+4, k+stride {
		dst[k] = math.Float32frombits(binary.BigEndian.Uint32(src[i:]))
	}
}

// halfTable maps every float16 bit pattern to its float32 value. A 256 KiB
// lookup is several times faster than converting bit by bit, and float16
// decoding would otherwise be slower than a local NVMe disk. It is built
// on first use so programs that never read float16 do not pay for it.
var halfTable = sync.OnceValue(func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for i := range t {
		t[i] = halfToFloat32(uint16(i))
	}
	return &t
})

func decodeF2LE(dst []float32, stride int, src []byte) {
	t := halfTable()
	if stride == 1 { // C order: a plain loop the compiler keeps tight
		dst = dst[:len(src)/2]
		for k := range dst {
			dst[k] = t[binary.LittleEndian.Uint16(src[2*k:])]
		}
		return
	}
	for i, k := 0, 0; i+2 <= len(src); i, k = i+2, k+stride {
		dst[k] = t[binary.LittleEndian.Uint16(src[i:])]
	}
}

func decodeF2BE(dst []float32, stride int, src []byte) {
	t := halfTable()
	if stride == 1 { // C order: a plain loop the compiler keeps tight
		dst = dst[:len(src)/2]
		for k := range dst {
			dst[k] = t[binary.BigEndian.Uint16(src[2*k:])]
		}
		return
	}
	for i, k := 0, 0; i+2 <= len(src); i, k = i+2, k+stride {
		dst[k] = t[binary.BigEndian.Uint16(src[i:])]
	}
}
