package transforms

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/lemon-curation/lemon/knn"
)

// Compact binary coders for the elements that carry most of a job's bytes: partial neighbour
// lists (shuffled between search and scoring) and scored rows (from scoring to the writers).
// Beam's default row coder goes through reflection field by field, which on a small machine
// costs about as much as the scoring itself.

func encodePartialBlock(p PartialBlock) ([]byte, error) {
	var e encoder
	e.lists(p.Lists.Image)
	e.lists(p.Lists.Text)
	return e.b, nil
}

func decodePartialBlock(data []byte) (PartialBlock, error) {
	d := decoder{b: data}
	p := PartialBlock{Lists: knn.Lists{Image: d.lists(), Text: d.lists()}}
	return p, d.done("partial lists")
}

func encodeIDBatch(b IDBatch) ([]byte, error) {
	n := 0
	for _, id := range b.IDs {
		n += len(id) + 2*binary.MaxVarintLen64
	}
	e := encoder{b: make([]byte, 0, 8+n)}
	e.strs(b.IDs)
	for _, p := range b.Pos {
		e.varint(p)
	}
	return e.b, nil
}

func decodeIDBatch(data []byte) (IDBatch, error) {
	d := decoder{b: data}
	b := IDBatch{IDs: d.strs()}
	b.Pos = make([]int64, len(b.IDs))
	for i := range b.Pos {
		b.Pos[i] = d.varint()
	}
	return b, d.done("id batch")
}

// An Outcome is a tag (0 marker, 1 scored rows, 2 fault) and that value.
func encodeOutcome(o Outcome) []byte {
	var e encoder
	switch {
	case o.Scored != nil:
		e.b = make([]byte, 0, 16+scoredSize(o.Scored))
		e.uvarint(1)
		e.scoredRows(o.Scored)
	case o.Fault != nil:
		e.uvarint(2)
		f := o.Fault
		e.varint(f.Pos)
		e.varint(int64(f.Shard))
		e.varint(f.Index)
		e.str(f.ID)
		e.str(f.Reason)
	default:
		e.uvarint(0)
	}
	return e.b
}

func decodeOutcome(data []byte) (Outcome, error) {
	d := decoder{b: data}
	var o Outcome
	switch d.uvarint() {
	case 1:
		o.Scored = d.scoredRows()
	case 2:
		o.Fault = &Fault{Pos: d.varint(), Shard: int32(d.varint()), Index: d.varint(), ID: d.str(), Reason: d.str()}
	}
	return o, d.done("outcome")
}

// scoredSize bounds the encoded size of rows, so encoding allocates once.
func scoredSize(rows []Scored) int {
	n := 0
	for i := range rows {
		s := &rows[i]
		n += 3*binary.MaxVarintLen64 + 4*8 + len(s.ID) + len(s.Caption) + 6*binary.MaxVarintLen64
		for _, ids := range [][]string{s.ImageNeighbours, s.TextNeighbours} {
			for _, id := range ids {
				n += binary.MaxVarintLen64 + len(id)
			}
		}
		for _, ns := range [][]knn.Neighbour{s.ImageList, s.TextList} {
			for _, nb := range ns {
				n += 3*8 + 3*binary.MaxVarintLen64 + len(nb.ID)
			}
		}
	}
	return n
}

type encoder struct{ b []byte }

func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) f64(v float64)    { e.b = binary.LittleEndian.AppendUint64(e.b, math.Float64bits(v)) }

func (e *encoder) str(s string) {
	e.uvarint(uint64(len(s)))
	e.b = append(e.b, s...)
}

// Slices are written as length+1, with 0 for nil, so nil and empty survive a round trip.
func (e *encoder) strs(ss []string) {
	if ss == nil {
		e.uvarint(0)
		return
	}
	e.uvarint(uint64(len(ss)) + 1)
	for _, s := range ss {
		e.str(s)
	}
}

func (e *encoder) neighbours(ns []knn.Neighbour) {
	if ns == nil {
		e.uvarint(0)
		return
	}
	e.uvarint(uint64(len(ns)) + 1)
	for _, n := range ns {
		e.varint(n.Pos)
		e.f64(n.Dist)
		e.f64(n.Cross)
		e.f64(n.Dmm)
		flag := uint64(0)
		if n.SameCaption {
			flag = 1
		}
		e.uvarint(flag)
		e.str(n.ID)
	}
}

func (e *encoder) lists(ls [][]knn.Neighbour) {
	e.uvarint(uint64(len(ls)))
	for _, ns := range ls {
		e.neighbours(ns)
	}
}

func (e *encoder) scoredRows(rows []Scored) {
	if rows == nil {
		e.uvarint(0)
		return
	}
	e.uvarint(uint64(len(rows)) + 1)
	for i := range rows {
		e.scored(&rows[i])
	}
}

func (e *encoder) scored(s *Scored) {
	e.varint(s.Pos)
	e.varint(int64(s.Shard))
	e.varint(s.Index)
	e.str(s.ID)
	e.str(s.Caption)
	for _, v := range []float64{s.Dmm, s.Sn, s.Sm, s.Score} {
		e.f64(v)
	}
	e.strs(s.ImageNeighbours)
	e.strs(s.TextNeighbours)
	e.neighbours(s.ImageList)
	e.neighbours(s.TextList)
}

// decoder reads what encoder wrote. The first error sticks; later reads return zero values.
type decoder struct {
	b   []byte
	err error
}

var errShort = errors.New("truncated or corrupt data")

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errShort
	}
	d.b = nil
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) f64() float64 {
	if len(d.b) < 8 {
		d.fail()
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(d.b))
	d.b = d.b[8:]
	return v
}

func (d *decoder) str() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// count reads a length written as length+1 (0: nil) and checks it against the bytes left, each
// element taking at least one byte.
func (d *decoder) count() (n int, isNil bool) {
	v := d.uvarint()
	if v == 0 {
		return 0, true
	}
	if v-1 > uint64(len(d.b)) {
		d.fail()
		return 0, true
	}
	return int(v - 1), false
}

func (d *decoder) strs() []string {
	n, isNil := d.count()
	if isNil {
		return nil
	}
	out := make([]string, n)
	for i := range out {
		out[i] = d.str()
	}
	return out
}

func (d *decoder) neighbours() []knn.Neighbour {
	n, isNil := d.count()
	if isNil {
		return nil
	}
	out := make([]knn.Neighbour, n)
	for i := range out {
		out[i] = knn.Neighbour{Pos: d.varint(), Dist: d.f64(), Cross: d.f64(), Dmm: d.f64(), SameCaption: d.uvarint() == 1, ID: d.str()}
	}
	return out
}

func (d *decoder) lists() [][]knn.Neighbour {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	out := make([][]knn.Neighbour, n)
	for i := range out {
		out[i] = d.neighbours()
	}
	return out
}

func (d *decoder) scoredRows() []Scored {
	n, isNil := d.count()
	if isNil {
		return nil
	}
	out := make([]Scored, n)
	for i := range out {
		d.scored(&out[i])
	}
	return out
}

func (d *decoder) scored(s *Scored) {
	s.Pos, s.Shard, s.Index = d.varint(), int32(d.varint()), d.varint()
	s.ID, s.Caption = d.str(), d.str()
	s.Dmm, s.Sn, s.Sm, s.Score = d.f64(), d.f64(), d.f64(), d.f64()
	s.ImageNeighbours, s.TextNeighbours = d.strs(), d.strs()
	s.ImageList, s.TextList = d.neighbours(), d.neighbours()
}

// done reports the first error, or trailing bytes, naming what was decoded.
func (d *decoder) done(what string) error {
	if d.err == nil && len(d.b) > 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return fmt.Errorf("decoding %s: %w", what, d.err)
	}
	return nil
}
