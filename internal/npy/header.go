// Package npy reads and writes NumPy .npy files holding 2-D float16 or
// float32 matrices, the format of LAION / clip-retrieval embedding shards
// (img_emb/img_emb_N.npy: N rows of D-dimensional embeddings), and their arrays inside .npz
// archives (OpenNPZ), as DataComp ships its embeddings.
//
// Shards can be many GB and may live on cloud storage, so the Reader works
// on any io.ReaderAt, never loads the whole file, and reads batches of rows
// with few, large ReadAt calls. Values are always returned as float32,
// whatever the on-disk dtype (<f2, >f2, <f4, >f4) or order (C or Fortran).
//
// Only what embeddings need is supported: 2-D shapes and float16/float32.
// Anything else (1-D vectors, int or float64 data, object or structured
// arrays) is rejected with an error that names the problem, because
// silently misreading a shard would poison everything built from it.
// Besides float matrices, UIDPairsHeader writes the header of DataComp's
// uid lists (1-D, dtype "u8,u8"), whose data callers append themselves.
//
// Format reference: numpy/lib/format.py (NEP 1). A file is
//
//	"\x93NUMPY" major minor HEADER_LEN HEADER DATA
//
// where HEADER_LEN is a little-endian uint16 (version 1.0) or uint32
// (2.0, 3.0) and HEADER is a Python dict literal such as
// {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
// padded with spaces and a newline.
package npy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Error kinds, for errors.Is. Every error this package returns for a bad
// file wraps exactly one of them; the message says what precisely is wrong.
var (
	// ErrNotNPY: the bytes are not a .npy file at all.
	ErrNotNPY = errors.New("not a .npy file")
	// ErrTruncated: the file ends before the header or data does (or, for
	// NewReader, has bytes after the data).
	ErrTruncated = errors.New("truncated .npy file")
	// ErrUnsupported: a valid .npy file this package does not handle
	// (dtype, shape, version).
	ErrUnsupported = errors.New("unsupported .npy file")
	// ErrMalformed: the header dict cannot be parsed or lacks keys.
	ErrMalformed = errors.New("malformed .npy header")
)

// npyError carries a specific message while matching a kind via errors.Is.
type npyError struct {
	kind error
	msg  string
}

func (e *npyError) Error() string { return "npy: " + e.msg }
func (e *npyError) Unwrap() error { return e.kind }

func errorf(kind error, format string, args ...any) error {
	return &npyError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

const (
	magic = "\x93NUMPY"
	// maxHeaderLen bounds the allocation for the header dict. A 2-D float
	// header is ~120 bytes; numpy itself refuses headers over 10000 bytes
	// by default. The bound keeps a corrupt length field from making us
	// allocate gigabytes.
	maxHeaderLen = 1 << 16
)

// Header is what the .npy header says.
type Header struct {
	Dtype      string // numpy descr, e.g. "<f4", "<f2", ">f4"
	Fortran    bool   // column-major data (numpy fortran_order)
	Rows, Cols int    // the 2-D shape
	DataOffset int64  // byte offset where the data starts
}

// ItemSize is the size in bytes of one element: 2 for float16, 4 for float32.
func (h Header) ItemSize() int {
	if len(h.Dtype) == 3 && h.Dtype[2] == '2' {
		return 2
	}
	return 4
}

// DataSize is the number of data bytes the header promises
// (Rows*Cols*ItemSize). ReadHeader guarantees it does not overflow int64.
func (h Header) DataSize() int64 {
	return int64(h.Rows) * int64(h.Cols) * int64(h.ItemSize())
}

// ReadHeader parses the magic string, version (1.0, 2.0 or 3.0) and header
// dict, and consumes exactly DataOffset bytes from r, so a caller streaming
// the file can read the data straight after it. It accepts only 2-D
// float16/float32 arrays.
func ReadHeader(r io.Reader) (Header, error) {
	var pre [10]byte // magic(6) + version(2) + at least the 2-byte v1 length
	n, err := io.ReadFull(r, pre[:8])
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return Header{}, fmt.Errorf("npy: reading header: %w", err)
	}
	got := pre[:n]
	if n < len(magic) {
		if n == 0 {
			return Header{}, errorf(ErrNotNPY, "not a .npy file (empty)")
		}
		if string(got) != magic[:n] {
			return Header{}, errorf(ErrNotNPY, "not a .npy file (bad magic)")
		}
		return Header{}, errorf(ErrTruncated, "truncated header (file is %d bytes)", n)
	}
	if string(got[:6]) != magic {
		return Header{}, errorf(ErrNotNPY, "not a .npy file (bad magic)")
	}
	if n < 8 {
		return Header{}, errorf(ErrTruncated, "truncated header (file is %d bytes)", n)
	}
	major, minor := pre[6], pre[7]
	var lenSize int
	switch {
	case major == 1 && minor == 0:
		lenSize = 2
	case (major == 2 || major == 3) && minor == 0:
		lenSize = 4
	default:
		return Header{}, errorf(ErrUnsupported, "unsupported .npy format version %d.%d (want 1.0, 2.0 or 3.0)", major, minor)
	}
	lenBuf := make([]byte, lenSize)
	if k, err := io.ReadFull(r, lenBuf); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return Header{}, errorf(ErrTruncated, "truncated header (file is %d bytes)", 8+k)
		}
		return Header{}, fmt.Errorf("npy: reading header: %w", err)
	}
	var hlen uint64
	if lenSize == 2 {
		hlen = uint64(binary.LittleEndian.Uint16(lenBuf))
	} else {
		hlen = uint64(binary.LittleEndian.Uint32(lenBuf))
	}
	if hlen > maxHeaderLen {
		return Header{}, errorf(ErrMalformed, "header length %d exceeds limit %d (a 2-D float array needs ~120 bytes)", hlen, maxHeaderLen)
	}
	dict := make([]byte, hlen)
	if k, err := io.ReadFull(r, dict); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return Header{}, errorf(ErrTruncated, "truncated header (header length says %d bytes, file has %d)", hlen, k)
		}
		return Header{}, fmt.Errorf("npy: reading header: %w", err)
	}
	h, err := parseDict(dict)
	if err != nil {
		return Header{}, err
	}
	h.DataOffset = int64(8+lenSize) + int64(hlen)
	return h, nil
}

// parseDict interprets the header dict and validates it for our purposes.
func parseDict(b []byte) (Header, error) {
	p := &parser{s: b}
	v, err := p.value(0)
	if err != nil {
		return Header{}, err
	}
	p.skipSpace()
	if p.i != len(p.s) {
		return Header{}, errorf(ErrMalformed, "unexpected %q after header dict", p.rest())
	}
	d, ok := v.(pyDict)
	if !ok {
		return Header{}, errorf(ErrMalformed, "header is not a dict")
	}
	// numpy insists on exactly these three keys; so do we, since anything
	// else means a format we do not understand.
	for _, k := range d.keys {
		switch k {
		case "descr", "fortran_order", "shape":
		default:
			return Header{}, errorf(ErrMalformed, "unexpected header key %q", k)
		}
	}
	var h Header

	descr, ok := d.m["descr"]
	if !ok {
		return Header{}, errorf(ErrMalformed, "header has no 'descr'")
	}
	switch dv := descr.(type) {
	case string:
		if err := checkDtype(dv); err != nil {
			return Header{}, err
		}
		h.Dtype = dv
	case pySeq:
		return Header{}, errorf(ErrUnsupported, "structured dtype (record array) is not supported: want float16 or float32")
	default:
		return Header{}, errorf(ErrMalformed, "'descr' is not a string")
	}

	fo, ok := d.m["fortran_order"]
	if !ok {
		return Header{}, errorf(ErrMalformed, "header has no 'fortran_order'")
	}
	if h.Fortran, ok = fo.(bool); !ok {
		return Header{}, errorf(ErrMalformed, "'fortran_order' is not True or False")
	}

	sv, ok := d.m["shape"]
	if !ok {
		return Header{}, errorf(ErrMalformed, "header has no 'shape'")
	}
	shape, ok := sv.(pySeq)
	if !ok || !shape.tuple {
		return Header{}, errorf(ErrMalformed, "'shape' is not a tuple")
	}
	dims := make([]int64, len(shape.items))
	for i, it := range shape.items {
		n, ok := it.(int64)
		if !ok || n < 0 {
			return Header{}, errorf(ErrMalformed, "'shape' %s has a non-integer or negative dimension", shape.src)
		}
		dims[i] = n
	}
	if len(dims) != 2 {
		hint := ""
		if len(dims) == 1 {
			hint = ": a 1-D array is a single vector, embeddings must be an N x D matrix"
		}
		return Header{}, errorf(ErrUnsupported, "shape %s is not 2-D%s", pyTuple(dims), hint)
	}
	// Reject sizes whose byte count overflows: they cannot be real files,
	// and later offset arithmetic must not wrap.
	item := int64(Header{Dtype: h.Dtype}.ItemSize())
	if dims[0] > math.MaxInt || dims[1] > math.MaxInt ||
		(dims[1] != 0 && dims[0] > math.MaxInt64/item/dims[1]) {
		return Header{}, errorf(ErrUnsupported, "shape %s is too large", pyTuple(dims))
	}
	h.Rows, h.Cols = int(dims[0]), int(dims[1])
	return h, nil
}

// pyTuple formats dims the way Python prints a tuple: (), (3,), (3, 4).
func pyTuple(dims []int64) string {
	parts := make([]string, len(dims))
	for i, d := range dims {
		parts[i] = strconv.FormatInt(d, 10)
	}
	if len(dims) == 1 {
		return "(" + parts[0] + ",)"
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// checkDtype accepts float16/float32 with an explicit byte order.
func checkDtype(d string) error {
	if len(d) == 2 && d[1] == 'O' || d == "O" {
		return errorf(ErrUnsupported, "object arrays are not supported (dtype %s): want float16 or float32", d)
	}
	if len(d) != 3 || (d[1:] != "f2" && d[1:] != "f4") {
		return errorf(ErrUnsupported, "unsupported dtype %s: want float16 or float32", d)
	}
	if d[0] != '<' && d[0] != '>' {
		// numpy always writes '<' or '>' for multi-byte types; '=' (native)
		// or '|' would make the byte order depend on the machine.
		return errorf(ErrUnsupported, "unsupported dtype %s: byte order must be '<' or '>'", d)
	}
	return nil
}

// A tiny parser for the subset of Python literals numpy writes in headers:
// dicts, strings, True/False, ints (with Python 2's optional L suffix),
// tuples and lists (lists only appear in structured dtypes, which we parse
// so we can name them in the error). Nesting is bounded so hostile input
// cannot exhaust the stack.

type pyDict struct {
	keys []string
	m    map[string]any
}

type pySeq struct {
	items []any
	tuple bool
	src   string // source text, for error messages like "shape (3,)"
}

type parser struct {
	s []byte
	i int
}

const maxDepth = 16

func (p *parser) rest() string {
	r := p.s[p.i:]
	if len(r) > 20 {
		r = r[:20]
	}
	return string(r)
}

func (p *parser) skipSpace() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) errAt(what string) error {
	if p.i >= len(p.s) {
		return errorf(ErrMalformed, "header dict ends early: want %s", what)
	}
	return errorf(ErrMalformed, "header dict: want %s at offset %d, found %q", what, p.i, p.rest())
}

func (p *parser) value(depth int) (any, error) {
	if depth > maxDepth {
		return nil, errorf(ErrMalformed, "header dict nested too deeply")
	}
	p.skipSpace()
	if p.i >= len(p.s) {
		return nil, p.errAt("a value")
	}
	c := p.s[p.i]
	switch {
	case c == '{':
		return p.dict(depth)
	case c == '(' || c == '[':
		return p.seq(depth)
	case c == '\'' || c == '"':
		return p.str()
	case c == '-' || c == '+' || (c >= '0' && c <= '9'):
		return p.int()
	case c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z':
		start := p.i
		for p.i < len(p.s) && (p.s[p.i] >= 'A' && p.s[p.i] <= 'Z' || p.s[p.i] >= 'a' && p.s[p.i] <= 'z') {
			p.i++
		}
		switch w := string(p.s[start:p.i]); w {
		case "True":
			return true, nil
		case "False":
			return false, nil
		default:
			p.i = start
			return nil, p.errAt("a value")
		}
	}
	return nil, p.errAt("a value")
}

func (p *parser) dict(depth int) (any, error) {
	p.i++ // '{'
	d := pyDict{m: map[string]any{}}
	for {
		p.skipSpace()
		if p.i < len(p.s) && p.s[p.i] == '}' {
			p.i++
			return d, nil
		}
		if p.i >= len(p.s) || (p.s[p.i] != '\'' && p.s[p.i] != '"') {
			return nil, p.errAt("a string key or '}'")
		}
		k, err := p.str()
		if err != nil {
			return nil, err
		}
		p.skipSpace()
		if p.i >= len(p.s) || p.s[p.i] != ':' {
			return nil, p.errAt("':'")
		}
		p.i++
		v, err := p.value(depth + 1)
		if err != nil {
			return nil, err
		}
		ks := k.(string)
		if _, dup := d.m[ks]; dup {
			return nil, errorf(ErrMalformed, "duplicate header key %q", ks)
		}
		d.keys = append(d.keys, ks)
		d.m[ks] = v
		p.skipSpace()
		if p.i < len(p.s) && p.s[p.i] == ',' {
			p.i++
			continue
		}
		if p.i < len(p.s) && p.s[p.i] == '}' {
			continue
		}
		return nil, p.errAt("',' or '}'")
	}
}

func (p *parser) seq(depth int) (any, error) {
	start := p.i
	open := p.s[p.i]
	close := byte(')')
	if open == '[' {
		close = ']'
	}
	p.i++
	var items []any
	commas := 0
	for {
		p.skipSpace()
		if p.i < len(p.s) && p.s[p.i] == close {
			p.i++
			break
		}
		v, err := p.value(depth + 1)
		if err != nil {
			return nil, err
		}
		items = append(items, v)
		p.skipSpace()
		if p.i < len(p.s) && p.s[p.i] == ',' {
			p.i++
			commas++
			continue
		}
		if p.i < len(p.s) && p.s[p.i] == close {
			continue
		}
		return nil, p.errAt(fmt.Sprintf("',' or '%c'", close))
	}
	// In Python "(3)" is the int 3, not a tuple; only "(3,)" is.
	if open == '(' && len(items) == 1 && commas == 0 {
		return items[0], nil
	}
	return pySeq{items: items, tuple: open == '(', src: string(p.s[start:p.i])}, nil
}

func (p *parser) str() (any, error) {
	q := p.s[p.i]
	p.i++
	var sb strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		p.i++
		switch {
		case c == q:
			return sb.String(), nil
		case c == '\\':
			// numpy's headers never need escapes; refusing them beats
			// guessing at Python's escape rules.
			return nil, errorf(ErrMalformed, "header dict: escape sequences in strings are not supported")
		case c == '\n':
			return nil, errorf(ErrMalformed, "header dict: unterminated string")
		default:
			sb.WriteByte(c)
		}
	}
	return nil, errorf(ErrMalformed, "header dict: unterminated string")
}

func (p *parser) int() (any, error) {
	start := p.i
	if p.s[p.i] == '-' || p.s[p.i] == '+' {
		p.i++
	}
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		p.i++
	}
	num := string(p.s[start:p.i])
	// Python 2 numpy wrote longs as "3L".
	if p.i < len(p.s) && (p.s[p.i] == 'L' || p.s[p.i] == 'l') {
		p.i++
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return nil, errorf(ErrUnsupported, "dimension %s is too large", num)
		}
		p.i = start
		return nil, p.errAt("an integer")
	}
	return n, nil
}
