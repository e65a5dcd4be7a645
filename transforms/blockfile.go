package transforms

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"unsafe"

	"github.com/lemon-curation/lemon/knn"
	"github.com/lemon-curation/lemon/storage"
)

// Block files hold one knn.Block in the run's temporary storage, so search tasks on any worker
// can read the blocks they need without shuffling embeddings through the runner. Layout:
// magic, rows, dim, then Pos, Self, Dmm, Image, Text as raw little-endian arrays, then ID and
// Caption strings, each length-prefixed.
const blockMagic = "LEMONBLK1"

func writeBlock(ctx context.Context, p string, b *knn.Block) error {
	w, err := storage.Create(ctx, p)
	if err != nil {
		return err
	}
	defer w.Abort()
	// Streamed in large pieces: the embeddings go straight from the block's slices.
	bw := bufio.NewWriterSize(w, 1<<20)
	head := binary.LittleEndian.AppendUint64([]byte(blockMagic), uint64(b.Len()))
	head = binary.LittleEndian.AppendUint64(head, uint64(b.Dim))
	for _, part := range [][]byte{head, rawBytes(b.Pos), rawBytes(b.Self), rawBytes(b.Dmm), rawBytes(b.Image), rawBytes(b.Text)} {
		if _, err := bw.Write(part); err != nil {
			return fmt.Errorf("writing %s: %w", p, err)
		}
	}
	var l [4]byte
	for _, list := range [][]string{b.ID, b.Caption} {
		for _, s := range list {
			binary.LittleEndian.PutUint32(l[:], uint32(len(s)))
			bw.Write(l[:])
			bw.WriteString(s)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	return w.Commit()
}

func readBlock(ctx context.Context, p string) (*knn.Block, error) {
	b := &knn.Block{}
	if err := readBlockInto(ctx, p, b, -1, -1); err != nil {
		return nil, err
	}
	return b, nil
}

// readBlockHeader opens block file p and reads its header: row count and dimension.
func readBlockHeader(ctx context.Context, p string) (r *bufio.Reader, c io.Closer, rows, dim int, err error) {
	rc, err := storage.Open(ctx, p)
	if err != nil {
		return nil, nil, 0, 0, err
	}
	r = bufio.NewReaderSize(rc, 1<<20)
	var head [len(blockMagic) + 16]byte
	if _, err := io.ReadFull(r, head[:]); err != nil || string(head[:len(blockMagic)]) != blockMagic {
		rc.Close()
		return nil, nil, 0, 0, fmt.Errorf("%s: not a lemon block file", p)
	}
	rows = int(binary.LittleEndian.Uint64(head[len(blockMagic):]))
	dim = int(binary.LittleEndian.Uint64(head[len(blockMagic)+8:]))
	return r, rc, rows, dim, nil
}

// blockDim is the embedding dimension of block file p.
func blockDim(ctx context.Context, p string) (int, error) {
	_, c, _, dim, err := readBlockHeader(ctx, p)
	if err != nil {
		return 0, err
	}
	c.Close()
	return dim, nil
}

// readBlockInto reads block file p, which must hold want rows, into dst's rows [at, at+want).
// With at < 0 it sizes dst to the block instead (want < 0: any size).
func readBlockInto(ctx context.Context, p string, dst *knn.Block, at, want int) error {
	r, c, n, dim, err := readBlockHeader(ctx, p)
	if err != nil {
		return err
	}
	defer c.Close()
	if want >= 0 && n != want {
		return fmt.Errorf("%s: block has %d rows, its reference says %d", p, n, want)
	}
	if at < 0 {
		at = 0
		*dst = knn.Block{Dim: dim, Pos: make([]int64, n), Self: make([]int64, n), Dmm: make([]float64, n),
			Image: make([]float32, n*dim), Text: make([]float32, n*dim), ID: make([]string, n), Caption: make([]string, n)}
	}
	if dim != dst.Dim || at+n > dst.Len() {
		return fmt.Errorf("%s: block of %d rows of dim %d does not fit rows %d.. of %d (dim %d)", p, n, dim, at, dst.Len(), dst.Dim)
	}
	for _, part := range [][]byte{rawBytes(dst.Pos[at : at+n]), rawBytes(dst.Self[at : at+n]), rawBytes(dst.Dmm[at : at+n]),
		rawBytes(dst.Image[at*dim : (at+n)*dim]), rawBytes(dst.Text[at*dim : (at+n)*dim])} {
		if _, err := io.ReadFull(r, part); err != nil {
			return fmt.Errorf("%s: truncated block: %w", p, err)
		}
	}
	var l [4]byte
	for _, list := range [][]string{dst.ID[at : at+n], dst.Caption[at : at+n]} {
		for i := range list {
			if _, err := io.ReadFull(r, l[:]); err != nil {
				return fmt.Errorf("%s: truncated block: %w", p, err)
			}
			s := make([]byte, binary.LittleEndian.Uint32(l[:]))
			if _, err := io.ReadFull(r, s); err != nil {
				return fmt.Errorf("%s: truncated block: %w", p, err)
			}
			list[i] = string(s)
		}
	}
	return nil
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
