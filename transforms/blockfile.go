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
	size := len(blockMagic) + 16 + 3*8*b.Len() + 2*4*len(b.Image)
	for _, list := range [][]string{b.ID, b.Caption} {
		for _, s := range list {
			size += 4 + len(s)
		}
	}
	buf := make([]byte, 0, size)
	buf = append(buf, blockMagic...)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(b.Len()))
	buf = binary.LittleEndian.AppendUint64(buf, uint64(b.Dim))
	buf = append(buf, rawBytes(b.Pos)...)
	buf = append(buf, rawBytes(b.Self)...)
	buf = append(buf, rawBytes(b.Dmm)...)
	buf = append(buf, rawBytes(b.Image)...)
	buf = append(buf, rawBytes(b.Text)...)
	for _, list := range [][]string{b.ID, b.Caption} {
		for _, s := range list {
			buf = binary.LittleEndian.AppendUint32(buf, uint32(len(s)))
			buf = append(buf, s...)
		}
	}
	return storage.WriteFile(ctx, p, buf)
}

func readBlock(ctx context.Context, p string) (*knn.Block, error) {
	rc, err := storage.Open(ctx, p)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	r := bufio.NewReaderSize(rc, 1<<20)
	magic := make([]byte, len(blockMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != blockMagic {
		return nil, fmt.Errorf("%s: not a lemon block file", p)
	}
	var n, dim int64
	binary.Read(r, binary.LittleEndian, &n)
	if err := binary.Read(r, binary.LittleEndian, &dim); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	b := &knn.Block{Dim: int(dim), Pos: make([]int64, n), Self: make([]int64, n), Dmm: make([]float64, n),
		Image: make([]float32, n*dim), Text: make([]float32, n*dim), ID: make([]string, n), Caption: make([]string, n)}
	for _, dst := range [][]byte{rawBytes(b.Pos), rawBytes(b.Self), rawBytes(b.Dmm), rawBytes(b.Image), rawBytes(b.Text)} {
		if _, err := io.ReadFull(r, dst); err != nil {
			return nil, fmt.Errorf("%s: truncated block: %w", p, err)
		}
	}
	var l [4]byte
	for _, list := range [][]string{b.ID, b.Caption} {
		for i := range list {
			if _, err := io.ReadFull(r, l[:]); err != nil {
				return nil, fmt.Errorf("%s: truncated block: %w", p, err)
			}
			s := make([]byte, binary.LittleEndian.Uint32(l[:]))
			if _, err := io.ReadFull(r, s); err != nil {
				return nil, fmt.Errorf("%s: truncated block: %w", p, err)
			}
			list[i] = string(s)
		}
	}
	return b, nil
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
