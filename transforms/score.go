package transforms

import (
	"math"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/lemon-curation/lemon/score"
)

// Filter says which rows are rejected: the top Fraction by score, or those scoring at least
// Threshold.
type Filter struct {
	Fraction     float64 // used when UseThreshold is false
	Threshold    float64
	UseThreshold bool
}

// RejectThreshold computes the score at or above which rows are rejected, as a singleton. For a
// fraction F of n scored rows it is the r-th largest score, r = round(F*n), found exactly by
// radix selection over the scores' bits (one pass per 16-bit digit), so memory stays small
// whatever n is. No row is rejected when r is 0 (threshold +Inf).
func RejectThreshold(s beam.Scope, scored beam.PCollection, f Filter) beam.PCollection {
	s = s.Scope("RejectThreshold")
	if f.UseThreshold {
		return beam.Create(s, f.Threshold)
	}
	keys := beam.ParDo(s, scoreKeys, scored)
	n := beam.Combine(s, &countFn{}, keys)
	sel := beam.ParDo(s, &startSelectionFn{Fraction: f.Fraction}, n)
	for pass := 0; pass < score.RadixDigits; pass++ {
		digits := beam.ParDo(s, digitsOf, keys, beam.SideInput{Input: sel})
		hist := beam.Combine(s, &histogramFn{}, digits)
		sel = beam.ParDo(s, nextSelection, sel, beam.SideInput{Input: hist})
	}
	return beam.ParDo(s, selectionThreshold, sel)
}

// scoreKeys is a batch's scores as order-preserving keys.
func scoreKeys(b ScoredBatch) []uint64 {
	keys := make([]uint64, len(b.Rows))
	for i, r := range b.Rows {
		keys[i] = score.OrderedKey(r.Score)
	}
	return keys
}

type countFn struct{}

func (countFn) CreateAccumulator() int64           { return 0 }
func (countFn) AddInput(a int64, k []uint64) int64 { return a + int64(len(k)) }
func (countFn) MergeAccumulators(a, b int64) int64 { return a + b }
func (countFn) ExtractOutput(a int64) int64        { return a }

type startSelectionFn struct{ Fraction float64 }

func (fn *startSelectionFn) ProcessElement(n int64) score.Selection {
	return score.Selection{Rank: score.RejectCount(fn.Fraction, n)}
}

// digitsOf emits, for a batch of keys, the next digit of each key that matches the prefix fixed
// so far.
func digitsOf(keys []uint64, sel score.Selection, emit func([]uint16)) {
	if sel.Rank == 0 {
		return
	}
	var ds []uint16
	for _, k := range keys {
		if sel.Matches(k) {
			ds = append(ds, uint16(sel.Digit(k)))
		}
	}
	if len(ds) > 0 {
		emit(ds)
	}
}

type histogramFn struct{}

func (histogramFn) CreateAccumulator() []int64 { return make([]int64, 1<<16) }
func (histogramFn) AddInput(h []int64, ds []uint16) []int64 {
	for _, d := range ds {
		h[d]++
	}
	return h
}
func (histogramFn) MergeAccumulators(a, b []int64) []int64 {
	for i, v := range b {
		a[i] += v
	}
	return a
}
func (histogramFn) ExtractOutput(h []int64) []int64 { return h }

func nextSelection(sel score.Selection, hist []int64) score.Selection {
	if sel.Rank == 0 {
		sel.Known++
		return sel
	}
	return sel.Next(hist)
}

func selectionThreshold(sel score.Selection) float64 {
	if sel.Rank == 0 {
		return math.Inf(1)
	}
	return score.FromOrderedKey(sel.Prefix)
}
