package score

import (
	"math"
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

// RadixDigits is how many 16-bit digits an OrderedKey has; selection takes one pass per digit.
const RadixDigits = 4

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
	shift := uint(64 - 16*s.Known)
	return key>>shift == s.Prefix>>shift
}

// Digit returns the digit of key examined by the selection's next pass.
func (s Selection) Digit(key uint64) int {
	return int(key >> uint(64-16*(s.Known+1)) & 0xffff)
}

// Next fixes one more digit given the histogram of that digit over keys matching the prefix.
func (s Selection) Next(hist []int64) Selection {
	rank := s.Rank
	for d := len(hist) - 1; d >= 0; d-- {
		if rank <= hist[d] {
			shift := uint(64 - 16*(s.Known+1))
			return Selection{Prefix: s.Prefix | uint64(d)<<shift, Known: s.Known + 1, Rank: rank}
		}
		rank -= hist[d]
	}
	return Selection{Prefix: s.Prefix, Known: s.Known + 1, Rank: 0} // fewer keys than the rank
}
