package score

import (
	"math"
	"slices"
)

// RejectCount is how many rows a reject fraction removes from n scored rows: round(f*n).
func RejectCount(fraction float64, n int64) int64 {
	r := int64(math.Round(fraction * float64(n)))
	if r < 0 {
		return 0
	}
	if r > n {
		return n
	}
	return r
}

// OrderedKey maps a float64 to a uint64 whose unsigned order is the float's numeric order, so
// scores can be ranked by radix selection. NaN sorts above +Inf.
func OrderedKey(f float64) uint64 {
	b := math.Float64bits(f)
	if b>>63 == 1 {
		return ^b
	}
	return b | 1<<63
}

// FromOrderedKey inverts OrderedKey.
func FromOrderedKey(k uint64) float64 {
	if k>>63 == 1 {
		return math.Float64frombits(k &^ (1 << 63))
	}
	return math.Float64frombits(^k)
}

// DigitBits is the width of a radix digit, and RadixDigits how many an OrderedKey has;
// selection takes one pass per digit. Histograms of 32-bit digits are sparse (see Histogram),
// so two passes suffice, each a round trip through the runner.
const (
	DigitBits   = 32
	RadixDigits = 64 / DigitBits
)

// Histogram counts keys by digit: Counts[i] keys have digit Digits[i], Digits ascending. It is
// sparse: a pass over n keys has at most n distinct digits.
type Histogram struct {
	Digits []uint32
	Counts []int64
}

// Total is how many keys h counts.
func (h Histogram) Total() int64 {
	var n int64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// HistogramOf counts digits (reordering them).
func HistogramOf(digits []uint32) Histogram {
	slices.Sort(digits)
	var h Histogram
	for i := 0; i < len(digits); {
		j := i + 1
		for j < len(digits) && digits[j] == digits[i] {
			j++
		}
		h.Digits, h.Counts = append(h.Digits, digits[i]), append(h.Counts, int64(j-i))
		i = j
	}
	return h
}

// MergeHistograms adds two histograms.
func MergeHistograms(a, b Histogram) Histogram {
	out := Histogram{Digits: make([]uint32, 0, len(a.Digits)+len(b.Digits)), Counts: make([]int64, 0, len(a.Digits)+len(b.Digits))}
	i, j := 0, 0
	for i < len(a.Digits) || j < len(b.Digits) {
		switch {
		case j == len(b.Digits) || (i < len(a.Digits) && a.Digits[i] < b.Digits[j]):
			out.Digits, out.Counts = append(out.Digits, a.Digits[i]), append(out.Counts, a.Counts[i])
			i++
		case i == len(a.Digits) || b.Digits[j] < a.Digits[i]:
			out.Digits, out.Counts = append(out.Digits, b.Digits[j]), append(out.Counts, b.Counts[j])
			j++
		default:
			out.Digits, out.Counts = append(out.Digits, a.Digits[i]), append(out.Counts, a.Counts[i]+b.Counts[j])
			i++
			j++
		}
	}
	return out
}

// Selection is the state of a radix selection of the r-th largest key: after each pass the top
// Known digits are fixed, and Rank is the rank still wanted among keys with that prefix.
type Selection struct {
	Prefix uint64 // the fixed high digits, in place
	Known  int    // how many digits are fixed
	Rank   int64  // 1-based rank from the top, among keys with Prefix
}

// Matches reports whether key has the selection's fixed prefix.
func (s Selection) Matches(key uint64) bool {
	if s.Known == 0 {
		return true
	}
	shift := uint(64 - DigitBits*s.Known)
	return key>>shift == s.Prefix>>shift
}

// Digit returns the digit of key examined by the selection's next pass.
func (s Selection) Digit(key uint64) uint32 {
	return uint32(key >> uint(64-DigitBits*(s.Known+1)))
}

// Next fixes one more digit given the histogram of that digit over keys matching the prefix.
func (s Selection) Next(h Histogram) Selection {
	rank := s.Rank
	for i := len(h.Digits) - 1; i >= 0; i-- {
		if rank <= h.Counts[i] {
			shift := uint(64 - DigitBits*(s.Known+1))
			return Selection{Prefix: s.Prefix | uint64(h.Digits[i])<<shift, Known: s.Known + 1, Rank: rank}
		}
		rank -= h.Counts[i]
	}
	return Selection{Prefix: s.Prefix, Known: s.Known + 1, Rank: 0} // fewer keys than the rank
}
