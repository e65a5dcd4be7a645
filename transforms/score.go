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

// RejectThreshold computes the score at or above which rows are rejected: one element, or none
// when no row was scored (read it with thresholdOf). For a fraction F of n scored rows it is the
// r-th largest score, r = round(F*n), found exactly by radix selection over the scores' bits
// (one pass per 32-bit digit, with sparse histograms), so memory stays small whatever n is. No
// row is rejected when r is 0 (threshold +Inf).
//
// keys holds []uint64 batches of the scores as order-preserving keys (ScoredRows.Keys).
func RejectThreshold(s beam.Scope, keys beam.PCollection, f Filter) beam.PCollection {
	s = s.Scope("RejectThreshold")
	if f.UseThreshold {
		return beam.Create(s, f.Threshold)
	}
	// The first pass takes every key's top digit, and its histogram's total fixes the rank.
	// Only data that exists once the search is done feeds these stages (no early side input:
	// prism re-examines a stage whose side input is ready but main input is not, which took a
	// core during the search).
	hist := beam.Combine(s, &histogramFn{}, beam.ParDo(s, topDigits, keys))
	sel := beam.ParDo(s, &firstSelectionFn{Fraction: f.Fraction}, hist)
	for pass := 1; pass < score.RadixDigits; pass++ {
		digits := beam.ParDo(s, digitsOf, keys, beam.SideInput{Input: sel})
		hist := beam.Combine(s, &histogramFn{}, digits)
		sel = beam.ParDo(s, nextSelection, sel, beam.SideInput{Input: hist})
	}
	return beam.ParDo(s, selectionThreshold, sel)
}

// topDigits is a batch's keys' first digits.
func topDigits(keys []uint64) []uint32 {
	var first score.Selection
	ds := make([]uint32, len(keys))
	for i, k := range keys {
		ds[i] = first.Digit(k)
	}
	return ds
}

// scoreKeys is the rows' scores as order-preserving keys.
func scoreKeys(rows []Scored) []uint64 {
	keys := make([]uint64, len(rows))
	for i, r := range rows {
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

// firstSelectionFn fixes the first digit, wanting rank round(Fraction * rows).
type firstSelectionFn struct{ Fraction float64 }

func (fn *firstSelectionFn) ProcessElement(hist score.Histogram) score.Selection {
	return advance(score.Selection{Rank: score.RejectCount(fn.Fraction, hist.Total())}, hist)
}

// nextSelection fixes the next digit. The histogram comes as an iterable: a global combine of
// no digits (no key has the prefix) yields no value at all.
func nextSelection(sel score.Selection, hists func(*score.Histogram) bool) score.Selection {
	var hist, h score.Histogram
	for hists(&h) {
		hist = score.MergeHistograms(hist, h)
	}
	return advance(sel, hist)
}

func advance(sel score.Selection, hist score.Histogram) score.Selection {
	if sel.Rank == 0 {
		sel.Known++
		return sel
	}
	return sel.Next(hist)
}

// thresholdOf reads RejectThreshold's output as a side input: none when no row was scored
// (a global combine of nothing yields nothing), and then nothing is rejected.
func thresholdOf(iter func(*float64) bool) float64 {
	t := math.Inf(1)
	var v float64
	for iter(&v) {
		t = v
	}
	return t
}

func selectionThreshold(sel score.Selection) float64 {
	if sel.Rank == 0 {
		return math.Inf(1)
	}
	return score.FromOrderedKey(sel.Prefix)
}
