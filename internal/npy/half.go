package npy

import "math"

// IEEE 754 binary16 <-> binary32 conversion. It is written out here rather
// than imported because it is short, it is on the hot path of every float16
// shard, and its exact behaviour (round half to even, gradual underflow,
// overflow to infinity, NaNs stay NaN) must match numpy's astype, which the
// tests check bit for bit.

// halfToFloat32 converts float16 bits to float32. Every float16 value is
// exactly representable as a float32, so this never rounds.
func halfToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch exp {
	case 0:
		// Zero or subnormal: mant * 2^-24, exact in float32.
		f := float32(mant) * (1.0 / (1 << 24))
		return math.Float32frombits(math.Float32bits(f) | sign)
	case 0x1f:
		// Inf or NaN; the NaN payload moves to the top of the float32 mantissa.
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	default:
		// Normal: rebias the exponent from 15 to 127.
		return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
	}
}

// float32ToHalf converts float32 to float16 bits, rounding to nearest with
// ties to even, as numpy does.
func float32ToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	mant := b & 0x7fffff

	if exp == 0xff {
		if mant != 0 {
			// NaN: keep the top payload bits and force the quiet bit, so it
			// can never collapse into the infinity pattern.
			return sign | 0x7e00 | uint16(mant>>13)
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15 // float16 biased exponent
	if e >= 0x1f {
		return sign | 0x7c00 // too large: overflows to infinity
	}
	if e <= 0 {
		// Result is subnormal (or zero). The half mantissa is
		// value / 2^-24 = (1.mant as a 24-bit integer) >> (14 - e).
		shift := uint(14 - e)
		if shift > 24 {
			return sign // below half the smallest subnormal: rounds to ±0
		}
		m := mant | 0x800000
		h := m >> shift
		rem := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || rem == half && h&1 == 1 {
			h++ // may carry into the smallest normal, which is correct
		}
		return sign | uint16(h)
	}
	// Normal: keep the top 10 mantissa bits, round on the 13 dropped ones.
	h := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || rem == 0x1000 && h&1 == 1 {
		h++ // a carry out of the mantissa bumps the exponent, up to infinity
	}
	return sign | uint16(h)
}
