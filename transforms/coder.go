package transforms

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/lemon-curation/lemon/knn"
)

// PartialBlock is the bulk of the blockwise search's shuffle (k entries per row, modality and
// task), so it gets a compact binary coder instead of Beam's reflective one.

func encodePartialBlock(p PartialBlock) ([]byte, error) {
	var buf bytes.Buffer
	put := func(v uint64) { var b [binary.MaxVarintLen64]byte; buf.Write(b[:binary.PutUvarint(b[:], v)]) }
	f64 := func(f float64) {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], math.Float64bits(f))
		buf.Write(b[:])
	}
	for _, lists := range [][][]knn.Neighbour{p.Lists.Image, p.Lists.Text} {
		put(uint64(len(lists)))
		for _, ns := range lists {
			put(uint64(len(ns)))
			for _, n := range ns {
				put(uint64(n.Pos))
				f64(n.Dist)
				f64(n.Cross)
				f64(n.Dmm)
				flag := uint64(0)
				if n.SameCaption {
					flag = 1
				}
				put(flag)
				put(uint64(len(n.ID)))
				buf.WriteString(n.ID)
			}
		}
	}
	return buf.Bytes(), nil
}

func decodePartialBlock(data []byte) (PartialBlock, error) {
	r := bytes.NewReader(data)
	var err error
	get := func() uint64 {
		v, e := binary.ReadUvarint(r)
		if e != nil && err == nil {
			err = e
		}
		return v
	}
	f64 := func() float64 {
		var b [8]byte
		if _, e := r.Read(b[:]); e != nil && err == nil {
			err = e
		}
		return math.Float64frombits(binary.LittleEndian.Uint64(b[:]))
	}
	var out [2][][]knn.Neighbour
	for m := range out {
		rows := get()
		if err != nil || rows > uint64(len(data)) {
			return PartialBlock{}, fmt.Errorf("decoding partial lists: bad row count")
		}
		out[m] = make([][]knn.Neighbour, rows)
		for i := range out[m] {
			n := get()
			if err != nil || n > uint64(len(data)) {
				return PartialBlock{}, fmt.Errorf("decoding partial lists: bad list length")
			}
			ns := make([]knn.Neighbour, n)
			for j := range ns {
				ns[j].Pos = int64(get())
				ns[j].Dist, ns[j].Cross, ns[j].Dmm = f64(), f64(), f64()
				ns[j].SameCaption = get() == 1
				l := get()
				if err != nil || l > uint64(r.Len()) {
					return PartialBlock{}, fmt.Errorf("decoding partial lists: bad id length")
				}
				id := make([]byte, l)
				r.Read(id)
				ns[j].ID = string(id)
			}
			out[m][i] = ns
		}
	}
	if err != nil {
		return PartialBlock{}, fmt.Errorf("decoding partial lists: %w", err)
	}
	return PartialBlock{Lists: knn.Lists{Image: out[0], Text: out[1]}}, nil
}
