package tune

import (
	"cmp"
	"math"
	"slices"
)

// f1Scratch finds the best-F1 threshold of many score vectors over the same rows, reusing its
// buffers. It gives exactly what metrics.BestF1Threshold gives (same ties, same threshold), but
// sorts with an LSD radix sort, several times faster than a comparison sort for the hundreds
// of thousands of candidates a grid search scores: four 8-bit passes over the top 32 bits of
// an order-preserving key (sign, exponent and 20 bits of mantissa), then an exact sort of the
// rare runs of rows whose keys agree in those bits. Not safe for concurrent use.
type f1Scratch struct {
	a, b []item
}

type item struct {
	key   uint64 // sorts ascending as the score sorts descending
	truth bool
}

// descKey maps a float64 to a uint64 whose ascending order is the float's descending order.
// -0 is folded into +0 first, because they are one score (equal as floats).
func descKey(x float64) uint64 {
	if x == 0 {
		x = 0
	}
	u := math.Float64bits(x)
	if u>>63 != 0 {
		u = ^u // negative: larger magnitude sorts lower
	} else {
		u |= 1 << 63
	}
	return ^u
}

func keyFloat(k uint64) float64 {
	u := ^k
	if u>>63 != 0 {
		u &^= 1 << 63
	} else {
		u = ^u
	}
	return math.Float64frombits(u)
}

// bestF1 returns the threshold t maximising the F1 of "error if score >= t" and that F1; ties
// go to the highest threshold, as in metrics.BestF1Threshold. pos is the number of true rows
// (> 0). ok is false if a score is NaN or infinite (the candidate cannot be used).
func (s *f1Scratch) bestF1(scores []float64, truth []bool, pos int) (thr, best float64, ok bool) {
	n := len(scores)
	if cap(s.a) < n {
		s.a, s.b = make([]item, n), make([]item, n)
	}
	a, b := s.a[:n], s.b[:n]
	var hist [4][256]int
	for i, x := range scores {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return 0, 0, false
		}
		k := descKey(x)
		a[i] = item{k, truth[i]}
		for d := 0; d < 4; d++ {
			hist[d][byte(k>>(32+8*d))]++
		}
	}
	for d := 0; d < 4; d++ {
		h := &hist[d]
		shift := 32 + 8*d
		if h[byte(a[0].key>>shift)] == n {
			continue // every key has this digit: the pass would not move anything
		}
		sum := 0
		for v := range h {
			c := h[v]
			h[v] = sum
			sum += c
		}
		for _, it := range a {
			v := byte(it.key >> shift)
			b[h[v]] = it
			h[v]++
		}
		a, b = b, a
	}
	// Rows whose keys share the top 32 bits are adjacent now; order each such run by the
	// whole key.
	for i := 0; i < n; {
		j := i + 1
		for j < n && a[j].key>>32 == a[i].key>>32 {
			j++
		}
		if j-i > 1 {
			run := a[i:j]
			if len(run) <= 16 {
				for x := 1; x < len(run); x++ {
					for y := x; y > 0 && run[y].key < run[y-1].key; y-- {
						run[y], run[y-1] = run[y-1], run[y]
					}
				}
			} else {
				slices.SortFunc(run, func(p, q item) int { return cmp.Compare(p.key, q.key) })
			}
		}
		i = j
	}
	// a is now sorted by score, highest first. Walk the distinct scores, counting as
	// metrics' curve does; strict ">" keeps the first (highest) threshold of exact F1 ties.
	best = -1
	var tp, fp int
	for i, it := range a {
		if it.truth {
			tp++
		} else {
			fp++
		}
		if i == n-1 || a[i+1].key != it.key {
			if f := 2 * float64(tp) / float64(tp+fp+pos); f > best {
				thr, best = keyFloat(it.key), f
			}
		}
	}
	return thr, best, true
}
