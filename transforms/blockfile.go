package transforms

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"unsafe"

	"github.com/x448/float16"

	"github.com/lemon-curation/lemon/knn"
	"github.com/lemon-curation/lemon/score"
	"github.com/lemon-curation/lemon/storage"
)

// Block files hold up to --block-rows valid rows of one shard in the run's temporary storage,
// so search tasks on any worker read the rows they need without the runner shuffling
// embeddings. They keep the input's precision: the vectors are stored as read, before
// normalisation, in float16 when every value of the block is a float16 (a float16 input),
// else float32, and loading normalises them exactly as the reader did, so what the search
// sees does not depend on the storage. Layout: magic, rows, dim, value bytes (2 or 4), then
// Pos (int64) and Dmm (float64), Image and Text (rows x dim values each), as little-endian
// arrays, then each row's ID and Caption as length-prefixed strings.
const blockMagic = "LEMONBLK2"

const blockHeaderBytes = len(blockMagic) + 24

// rawBlock is a block as written: vectors as read, not yet normalised.
type rawBlock struct {
	dim         int
	image, text []float32
	pos         []int64
	dmm         []float64
	id, caption []string
	notHalf     bool // some value is not exactly a float16
}

func (b *rawBlock) len() int { return len(b.pos) }

// reset empties the block, keeping its buffers.
func (b *rawBlock) reset() {
	*b = rawBlock{dim: b.dim, image: b.image[:0], text: b.text[:0], pos: b.pos[:0], dmm: b.dmm[:0], id: b.id[:0], caption: b.caption[:0]}
}

// add appends a row; img and txt are copied.
func (b *rawBlock) add(pos int64, id, caption string, img, txt []float32, dmm float64) {
	if !b.notHalf && !(IsHalf(img) && IsHalf(txt)) {
		b.notHalf = true
	}
	b.image = append(b.image, img...)
	b.text = append(b.text, txt...)
	b.pos = append(b.pos, pos)
	b.dmm = append(b.dmm, dmm)
	b.id = append(b.id, id)
	b.caption = append(b.caption, caption)
}

// IsHalf says whether every value of v is exactly a float16: what block files store in two
// bytes.
func IsHalf(v []float32) bool {
	for _, x := range v {
		if float16.Fromfloat32(x).Float32() != x {
			return false
		}
	}
	return true
}

// writeBlock writes b to p atomically and returns the file's size.
func writeBlock(ctx context.Context, p string, b *rawBlock) (int64, error) {
	w, err := storage.Create(ctx, p)
	if err != nil {
		return 0, err
	}
	defer w.Abort()
	cw := &countingWriter{w: w}
	bw := bufio.NewWriterSize(cw, 1<<20)
	vb := 4
	if !b.notHalf {
		vb = 2
	}
	head := []byte(blockMagic)
	for _, v := range []int{b.len(), b.dim, vb} {
		head = binary.LittleEndian.AppendUint64(head, uint64(v))
	}
	parts := [][]byte{head, rawBytes(b.pos), rawBytes(b.dmm)}
	if vb == 4 {
		parts = append(parts, rawBytes(b.image), rawBytes(b.text))
	}
	for _, part := range parts {
		if _, err := bw.Write(part); err != nil {
			return 0, fmt.Errorf("writing %s: %w", p, err)
		}
	}
	if vb == 2 {
		var buf [2048]byte
		for _, v := range [][]float32{b.image, b.text} {
			for len(v) > 0 {
				n := min(len(v), len(buf)/2)
				for i, x := range v[:n] {
					binary.LittleEndian.PutUint16(buf[2*i:], float16.Fromfloat32(x).Bits())
				}
				bw.Write(buf[:2*n])
				v = v[n:]
			}
		}
	}
	var l [4]byte
	for _, list := range [][]string{b.id, b.caption} {
		for _, s := range list {
			binary.LittleEndian.PutUint32(l[:], uint32(len(s)))
			bw.Write(l[:])
			bw.WriteString(s)
		}
	}
	if err := bw.Flush(); err != nil {
		return 0, fmt.Errorf("writing %s: %w", p, err)
	}
	return cw.n, w.Commit()
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

// blockHeader is what a block file's header says.
type blockHeader struct{ rows, dim, valueBytes int }

// openBlock opens block file p and reads its header.
func openBlock(ctx context.Context, p string) (*bufio.Reader, *countingReader, io.Closer, blockHeader, error) {
	rc, err := storage.Open(ctx, p)
	if err != nil {
		return nil, nil, nil, blockHeader{}, err
	}
	cr := &countingReader{r: rc}
	r := bufio.NewReaderSize(cr, 1<<20)
	var head [blockHeaderBytes]byte
	if _, err := io.ReadFull(r, head[:]); err != nil || string(head[:len(blockMagic)]) != blockMagic {
		rc.Close()
		return nil, nil, nil, blockHeader{}, fmt.Errorf("%s: not a lemon block file (or one from another lemon version)", p)
	}
	u := func(i int) int { return int(binary.LittleEndian.Uint64(head[len(blockMagic)+8*i:])) }
	h := blockHeader{rows: u(0), dim: u(1), valueBytes: u(2)}
	if h.valueBytes != 2 && h.valueBytes != 4 {
		rc.Close()
		return nil, nil, nil, h, fmt.Errorf("%s: corrupt block file: %d-byte values", p, h.valueBytes)
	}
	return r, cr, rc, h, nil
}

// blockDim is the embedding dimension of block file p.
func blockDim(ctx context.Context, p string) (int, error) {
	_, _, c, h, err := openBlock(ctx, p)
	if err != nil {
		return 0, err
	}
	c.Close()
	return h.dim, nil
}

// readBlockRaw reads a whole block file into a new knn.Block, with the vectors as the input held
// them (not normalised), and returns the bytes read.
func readBlockRaw(ctx context.Context, p string) (*knn.Block, int64, error) {
	b := &knn.Block{}
	n, err := readBlockFile(ctx, p, b, -1, -1, false)
	if err != nil {
		return nil, 0, err
	}
	return b, n, nil
}

// readBlockInto reads block file p, which must hold want rows, into dst's rows [at, at+want),
// normalising each vector, and returns the bytes read. With at < 0 it sizes dst to the block
// instead (want < 0: any size). Every row's Self is set to -1.
func readBlockInto(ctx context.Context, p string, dst *knn.Block, at, want int) (int64, error) {
	return readBlockFile(ctx, p, dst, at, want, true)
}

func readBlockFile(ctx context.Context, p string, dst *knn.Block, at, want int, normalize bool) (int64, error) {
	r, cr, c, h, err := openBlock(ctx, p)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	n, dim := h.rows, h.dim
	if want >= 0 && n != want {
		return 0, fmt.Errorf("%s: block has %d rows, its reference says %d", p, n, want)
	}
	if at < 0 {
		at = 0
		*dst = knn.Block{Dim: dim, Pos: make([]int64, n), Self: make([]int64, n), Dmm: make([]float64, n),
			Image: make([]float32, n*dim), Text: make([]float32, n*dim), ID: make([]string, n), Caption: make([]string, n)}
	}
	if dim != dst.Dim || at+n > dst.Len() {
		return 0, fmt.Errorf("%s: block of %d rows of dim %d does not fit rows %d.. of %d (dim %d)", p, n, dim, at, dst.Len(), dst.Dim)
	}
	truncated := func(err error) error { return fmt.Errorf("%s: truncated block: %w", p, err) }
	for _, part := range [][]byte{rawBytes(dst.Pos[at : at+n]), rawBytes(dst.Dmm[at : at+n])} {
		if _, err := io.ReadFull(r, part); err != nil {
			return 0, truncated(err)
		}
	}
	vecs := [][]float32{dst.Image[at*dim : (at+n)*dim], dst.Text[at*dim : (at+n)*dim]}
	for _, v := range vecs {
		if h.valueBytes == 4 {
			if _, err := io.ReadFull(r, rawBytes(v)); err != nil {
				return 0, truncated(err)
			}
			continue
		}
		var buf [4096]byte
		for len(v) > 0 {
			k := min(len(v), len(buf)/2)
			if _, err := io.ReadFull(r, buf[:2*k]); err != nil {
				return 0, truncated(err)
			}
			for i := range v[:k] {
				v[i] = float16.Frombits(binary.LittleEndian.Uint16(buf[2*i:])).Float32()
			}
			v = v[k:]
		}
	}
	for i := at; i < at+n; i++ {
		dst.Self[i] = -1
		if !normalize {
			continue
		}
		for _, v := range vecs {
			row := v[(i-at)*dim : (i-at+1)*dim]
			if err := score.Normalize(row); err != nil {
				return 0, fmt.Errorf("%s: corrupt block: row %d: %w", p, i-at, err)
			}
		}
	}
	var l [4]byte
	for _, list := range [][]string{dst.ID[at : at+n], dst.Caption[at : at+n]} {
		for i := range list {
			if _, err := io.ReadFull(r, l[:]); err != nil {
				return 0, truncated(err)
			}
			s := make([]byte, binary.LittleEndian.Uint32(l[:]))
			if _, err := io.ReadFull(r, s); err != nil {
				return 0, truncated(err)
			}
			list[i] = string(s)
		}
	}
	// The reader is buffered: count what the file held, not what was buffered ahead.
	return cr.n - int64(r.Buffered()), nil
}

// rawBytes views a numeric slice as its bytes. lemon runs on little-endian machines (amd64,
// arm64), so this is the file's byte order; init checks it.
func rawBytes[T int64 | float64 | float32](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(s[0])))
}

func init() {
	x := uint16(1)
	if *(*byte)(unsafe.Pointer(&x)) != 1 {
		panic("lemon's block files assume a little-endian machine")
	}
}
