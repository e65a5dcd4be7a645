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
// radix selection over the scores' bits (one pass per 32-bit digit), so memory stays small
// whatever n is. No row is rejected when r is 0 (threshold +Inf).
func RejectThreshold(s beam.Scope, scored beam.PCollection, f Filter) beam.PCollection {
	s = s.Scope("RejectThreshold")
	if f.UseThreshold {
		return beam.Create(s, f.Threshold)
	}
	keys := beam.ParDo(s, scoreKeys, scored)
	// The rank is not known before the first pass, whose histogram counts every key.
	sel := beam.Create(s, score.Selection{Rank: rankUnknown})
	for pass := 0; pass < score.RadixDigits; pass++ {
		digits := beam.ParDo(s, digitsOf, keys, beam.SideInput{Input: sel})
		hist := beam.Combine(s, &histogramFn{}, digits)
		sel = beam.ParDo(s, &nextSelectionFn{Fraction: f.Fraction}, sel, beam.SideInput{Input: hist})
	}
	return beam.ParDo(s, selectionThreshold, sel)
}

// rankUnknown marks a selection whose rank the first histogram's total will fix.
const rankUnknown = -1

// scoreKeys is a batch's scores as order-preserving keys.
func scoreKeys(b ScoredBatch) []uint64 {
	keys := make([]uint64, len(b.Rows))
	for i, r := range b.Rows {
		keys[i] = score.OrderedKey(r.Score)
	}
	return keys
}

// digitsOf emits, for a batch of keys, the next digit of each key that matches the prefix fixed
// so far.
func digitsOf(keys []uint64, sel score.Selection, emit func([]uint32)) {
	if sel.Rank == 0 {
		return
	}
	var ds []uint32
	for _, k := range keys {
		if sel.Matches(k) {
			ds = append(ds, sel.Digit(k))
		}
	}
	if len(ds) > 0 {
		emit(ds)
	}
}

type histogramFn struct{}

func (histogramFn) CreateAccumulator() score.Histogram { return score.Histogram{} }
func (histogramFn) AddInput(h score.Histogram, ds []uint32) score.Histogram {
	return score.MergeHistograms(h, score.HistogramOf(ds))
}
func (histogramFn) MergeAccumulators(a, b score.Histogram) score.Histogram {
	return score.MergeHistograms(a, b)
}
func (histogramFn) ExtractOutput(h score.Histogram) score.Histogram { return h }

// nextSelectionFn fixes the next digit; after the first pass it first sets the rank wanted,
// round(Fraction * rows). The histogram comes as an iterable: a global combine of no digits
// (no scored rows) yields no value at all.
type nextSelectionFn struct{ Fraction float64 }

func (fn *nextSelectionFn) ProcessElement(sel score.Selection, hists func(*score.Histogram) bool) score.Selection {
	var hist, h score.Histogram
	for hists(&h) {
		hist = score.MergeHistograms(hist, h)
	}
	if sel.Rank == rankUnknown {
		sel.Rank = score.RejectCount(fn.Fraction, hist.Total())
	}
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
