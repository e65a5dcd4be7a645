package standin

import (
	"bufio"
	"encoding/binary"
	"hash/fnv"
	"math"
)

// Random weights. Each tensor has its own generator, seeded from the model
// seed and the tensor's name, so a tensor's values do not depend on the
// order tensors are written in, and the generator is portable integer
// arithmetic (splitmix64) plus one float64 multiply per value: the same seed
// gives byte-identical files on every platform and Go version.

// randData is a float32 tensor of n values drawn uniformly from
// [-std*sqrt(3), std*sqrt(3)), a distribution with standard deviation std.
// (Uniform rather than normal: no transcendental functions, hence portable
// bits; the scale is what matters for keeping activations finite.)
type randData struct {
	n     int
	std   float64
	state uint64
}

func newRandData(seed uint64, name string, n int, std float64) *randData {
	h := fnv.New64a()
	h.Write([]byte(name))
	return &randData{n: n, std: std, state: seed ^ h.Sum64()}
}

func (d *randData) size() int { return 4 * d.n }

// next is splitmix64.
func (d *randData) next() uint64 {
	d.state += 0x9e3779b97f4a7c15
	z := d.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// value draws the next value: k is uniform on the 2^24 integers in
// [-2^23, 2^23), scaled onto [-a, a) with a = std*sqrt(3).
func (d *randData) value() float32 {
	k := int64(d.next()>>40) - 1<<23
	return float32(float64(k) * (d.std * math.Sqrt(3) / (1 << 23)))
}

// writeTo writes the values, from a copy of the generator so that writing
// twice gives the same bytes.
func (d *randData) writeTo(w *bufio.Writer) error {
	r := *d
	var buf [4096]byte
	for left := d.n; left > 0; {
		m := min(left, len(buf)/4)
		for i := range m {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(r.value()))
		}
		if _, err := w.Write(buf[:4*m]); err != nil {
			return err
		}
		left -= m
	}
	return nil
}

// values materialises the tensor, for the few small tensors that are
// combined in Go before being written (class token plus position).
func (d *randData) values() []float32 {
	r := *d
	out := make([]float32, r.n)
	for i := range out {
		out[i] = r.value()
	}
	return out
}

// constData is a float32 tensor of n copies of v (LayerNorm scales and
// shifts).
type constData struct {
	n int
	v float32
}

func (d constData) size() int { return 4 * d.n }

func (d constData) writeTo(w *bufio.Writer) error {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], math.Float32bits(d.v))
	for range d.n {
		if _, err := w.Write(b[:]); err != nil {
			return err
		}
	}
	return nil
}
