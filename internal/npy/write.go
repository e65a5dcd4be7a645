package npy

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strings"
)

// Write writes a rows x cols C-order matrix (data in row-major order) as a
// .npy file with dtype "<f4" (float32) or "<f2" (float16, rounded to
// nearest even). The output is byte for byte what numpy >= 1.23's np.save
// writes for the same array: a version 1.0 header with numpy's spare room
// for growing the first axis, padded so the data starts on a 64-byte
// boundary.
func Write(w io.Writer, rows, cols int, data []float32, dtype string) error {
	if dtype != "<f4" && dtype != "<f2" {
		return fmt.Errorf("npy: Write: unsupported dtype %q: want \"<f4\" or \"<f2\"", dtype)
	}
	if rows < 0 || cols < 0 {
		return fmt.Errorf("npy: Write: negative shape (%d, %d)", rows, cols)
	}
	if cols != 0 && rows > math.MaxInt/cols || len(data) != rows*cols {
		return fmt.Errorf("npy: Write: data has %d values, shape (%d, %d) needs %d", len(data), rows, cols, rows*cols)
	}
	if _, err := w.Write(header10("'"+dtype+"'", int64(rows), int64(cols))); err != nil {
		return err
	}
	// Encode in bounded chunks: one Write per chunk, not per value, and no
	// second full-size copy of a large matrix.
	item := 4
	if dtype == "<f2" {
		item = 2
	}
	buf := make([]byte, min(len(data), 1<<16)*item)
	for len(data) > 0 {
		m := min(len(data), len(buf)/item)
		b := buf[:m*item]
		if item == 4 {
			for i, v := range data[:m] {
				binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
			}
		} else {
			for i, v := range data[:m] {
				binary.LittleEndian.PutUint16(b[2*i:], float32ToHalf(v))
			}
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		data = data[m:]
	}
	return nil
}

// UIDPairsHeader is the header np.save writes for a 1-D array of n pairs of little-endian
// uint64 (numpy dtype "u8,u8", fields f0 and f1): the form of DataComp's uid lists, each
// 128-bit uid as its high and low halves. The data follows as n x 16 bytes, f0 then f1.
func UIDPairsHeader(n int64) []byte {
	return header10("[('f0', '<u8'), ('f1', '<u8')]", n)
}

// header10 builds a version 1.0 header the way numpy's
// _write_array_header does for a C-order array of shape dims and dtype descr
// (numpy's repr of it): sorted keys, repr values, then
// GROWTH_AXIS_MAX_DIGITS (21) minus len(str(dims[0])) spaces of growth room,
// then spaces and '\n' up to a multiple of 64 bytes. numpy always adds at
// least one pad space, so an exact fit gets 64 more; we copy that too.
func header10(descr string, dims ...int64) []byte {
	const growthAxisMaxDigits = 21
	dict := fmt.Sprintf("{'descr': %s, 'fortran_order': False, 'shape': %s, }", descr, pyTuple(dims))
	dict += strings.Repeat(" ", max(0, growthAxisMaxDigits-len(fmt.Sprint(dims[0]))))
	hlen := len(dict) + 1 // + '\n'
	pad := 64 - (len(magic)+4+hlen)%64
	b := make([]byte, 0, len(magic)+4+hlen+pad)
	b = append(b, magic...)
	b = append(b, 1, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(hlen+pad))
	b = append(b, dict...)
	b = append(b, strings.Repeat(" ", pad)...)
	b = append(b, '\n')
	return b
}

// RowWriter streams a rows x cols C-order matrix to a .npy file a batch of rows at a time,
// with the header and bytes Write would give the whole matrix. Close checks that every row
// promised came.
type RowWriter struct {
	w          io.Writer
	rows, cols int
	dtype      string
	done       int
	buf        []byte
}

// NewRowWriter writes the header of a rows x cols matrix of dtype ("<f4" or "<f2") to w.
func NewRowWriter(w io.Writer, rows, cols int, dtype string) (*RowWriter, error) {
	if dtype != "<f4" && dtype != "<f2" {
		return nil, fmt.Errorf("npy: NewRowWriter: unsupported dtype %q: want \"<f4\" or \"<f2\"", dtype)
	}
	if rows < 0 || cols < 0 {
		return nil, fmt.Errorf("npy: NewRowWriter: negative shape (%d, %d)", rows, cols)
	}
	if _, err := w.Write(header10("'"+dtype+"'", int64(rows), int64(cols))); err != nil {
		return nil, err
	}
	return &RowWriter{w: w, rows: rows, cols: cols, dtype: dtype}, nil
}

// WriteRows writes whole rows (len(data) a multiple of cols).
func (rw *RowWriter) WriteRows(data []float32) error {
	if rw.cols == 0 || len(data)%rw.cols != 0 {
		return fmt.Errorf("npy: WriteRows: %d values are not whole rows of %d", len(data), rw.cols)
	}
	n := len(data) / rw.cols
	if rw.done+n > rw.rows {
		return fmt.Errorf("npy: WriteRows: %d rows past the %d promised", rw.done+n, rw.rows)
	}
	b := rw.buf[:0]
	if rw.dtype == "<f4" {
		for _, v := range data {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
	} else {
		for _, v := range data {
			b = binary.LittleEndian.AppendUint16(b, float32ToHalf(v))
		}
	}
	rw.buf = b
	if _, err := rw.w.Write(b); err != nil {
		return err
	}
	rw.done += n
	return nil
}

// Close reports whether every promised row was written; it does not close the io.Writer.
func (rw *RowWriter) Close() error {
	if rw.done != rw.rows {
		return fmt.Errorf("npy: %d rows written of %d", rw.done, rw.rows)
	}
	return nil
}

// SplitRows copies the rows of r into len(dsts) .npy files: row i goes to dsts[to[i]]. Each
// file gets its rows in r's order, with r's precision ("<f2" for float16, else "<f4"), in C
// order: a little-endian C-order input's rows are copied byte for byte.
func SplitRows(r *Reader, to []int, dsts []io.Writer) error {
	h := r.Header()
	if len(to) != h.Rows {
		return fmt.Errorf("npy: SplitRows: %d destinations for %d rows", len(to), h.Rows)
	}
	counts := make([]int, len(dsts))
	for _, d := range to {
		if d < 0 || d >= len(dsts) {
			return fmt.Errorf("npy: SplitRows: destination %d of %d", d, len(dsts))
		}
		counts[d]++
	}
	dtype := "<f4"
	if h.ItemSize() == 2 {
		dtype = "<f2"
	}
	rws := make([]*RowWriter, len(dsts))
	batches := make([][]float32, len(dsts))
	for d, w := range dsts {
		var err error
		if rws[d], err = NewRowWriter(w, counts[d], h.Cols, dtype); err != nil {
			return err
		}
	}
	if h.Cols == 0 {
		return nil
	}
	const chunk = 1024
	buf := make([]float32, chunk*h.Cols)
	for lo := 0; lo < h.Rows; lo += chunk {
		hi := min(lo+chunk, h.Rows)
		if err := r.ReadRows(lo, hi, buf[:(hi-lo)*h.Cols]); err != nil {
			return err
		}
		for i := lo; i < hi; i++ {
			batches[to[i]] = append(batches[to[i]], buf[(i-lo)*h.Cols:(i-lo+1)*h.Cols]...)
		}
		for d, b := range batches {
			if len(b) > 0 {
				if err := rws[d].WriteRows(b); err != nil {
					return err
				}
				batches[d] = b[:0]
			}
		}
	}
	for _, rw := range rws {
		if err := rw.Close(); err != nil {
			return err
		}
	}
	return nil
}
