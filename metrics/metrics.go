// Package metrics scores a label-error detector against ground truth: AUROC, AUPRC (average
// precision), F1 at the best threshold, precision and recall at a threshold or a reject
// fraction, and the ROC and precision-recall curves behind them. "Error" (truth = true) is the
// positive class and a higher score means "more likely an error", as in spec/lemon.md's
// evaluation protocol.
//
// Every number matches scikit-learn's on the same input (roc_auc_score,
// average_precision_score, roc_curve, precision_recall_curve, f1_score, precision_score,
// recall_score); testdata/reference.json holds scikit-learn's outputs and the tests pin them.
// Where this package differs from scikit-learn it says so on the function. The package is pure
// Go: no Beam, no I/O.
package metrics

import (
	"errors"
	"fmt"
	"math"
	"sort"
)

// Errors the functions return (wrapped, with details); test with errors.Is.
var (
	ErrEmpty          = errors.New("metrics: no rows")
	ErrLengthMismatch = errors.New("metrics: scores and truth differ in length")
	ErrNotFinite      = errors.New("metrics: score is NaN or infinite")
	// ErrOneClass: only errors or only clean rows. scikit-learn's roc_auc_score raises for this
	// ("Only one class present in y_true"); its other functions warn and return 0, 1 or NaN,
	// numbers that mean nothing, so every function here returns this error instead.
	ErrOneClass = errors.New("metrics: only one class present in truth (need both errors and clean rows)")
)

// curve is the confusion counts at each distinct score, highest score first: predicting
// "error" for score >= thr[i] gives tps[i] true and fps[i] false positives. It is
// scikit-learn's _binary_clf_curve. Counts are exact integers, so ties are whole steps.
type curve struct {
	thr      []float64
	tps, fps []int64
	pos, neg int64
}

func check(scores []float64, truth []bool) error {
	if len(scores) != len(truth) {
		return fmt.Errorf("%w: %d scores, %d truth values", ErrLengthMismatch, len(scores), len(truth))
	}
	if len(scores) == 0 {
		return ErrEmpty
	}
	var pos int
	for i, s := range scores {
		if math.IsNaN(s) || math.IsInf(s, 0) {
			return fmt.Errorf("%w: row %d has score %v", ErrNotFinite, i, s)
		}
		if truth[i] {
			pos++
		}
	}
	if pos == 0 || pos == len(truth) {
		return fmt.Errorf("%w: %d of %d rows are errors", ErrOneClass, pos, len(truth))
	}
	return nil
}

func newCurve(scores []float64, truth []bool) (*curve, error) {
	if err := check(scores, truth); err != nil {
		return nil, err
	}
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	// Order within a tie does not matter: a tie is one threshold, counted after all its rows.
	sort.Slice(idx, func(a, b int) bool { return scores[idx[a]] > scores[idx[b]] })
	c := &curve{}
	var tp, fp int64
	for n, i := range idx {
		if truth[i] {
			tp++
		} else {
			fp++
		}
		if n == len(idx)-1 || scores[idx[n+1]] != scores[i] {
			c.thr = append(c.thr, scores[i])
			c.tps = append(c.tps, tp)
			c.fps = append(c.fps, fp)
		}
	}
	c.pos, c.neg = tp, fp
	return c, nil
}

// AUROC is the area under the ROC curve with errors as the positive class: the chance that a
// random error scores above a random clean row, ties counting one half (the trapezoid over
// tied scores, as scikit-learn's roc_auc_score). It is exact up to one rounding: the area is
// summed in integers and divided once. One class only is an error, as in scikit-learn.
func AUROC(scores []float64, truth []bool) (float64, error) {
	c, err := newCurve(scores, truth)
	if err != nil {
		return 0, err
	}
	// Twice the area in units of one (fp, tp) cell; at most 2*pos*neg <= n*n/2, which fits an
	// int64 below n = 2^31. Beyond that, float64 sums (relative error ~1e-16 per step).
	if int64(len(scores)) < 1<<31 {
		var area2, ptp, pfp int64
		for i := range c.thr {
			area2 += (c.fps[i] - pfp) * (c.tps[i] + ptp)
			ptp, pfp = c.tps[i], c.fps[i]
		}
		return float64(area2) / (2 * float64(c.pos) * float64(c.neg)), nil
	}
	var area2, ptp, pfp float64
	for i := range c.thr {
		area2 += (float64(c.fps[i]) - pfp) * (float64(c.tps[i]) + ptp)
		ptp, pfp = float64(c.tps[i]), float64(c.fps[i])
	}
	return area2 / (2 * float64(c.pos) * float64(c.neg)), nil
}

// AUPRC is average precision as scikit-learn's average_precision_score computes it: the step
// sum over distinct thresholds of (recall gain) x (precision there), with no interpolation.
func AUPRC(scores []float64, truth []bool) (float64, error) {
	c, err := newCurve(scores, truth)
	if err != nil {
		return 0, err
	}
	var ap, prevRecall float64
	for i := range c.thr {
		// The same float operations as scikit-learn: recall = tps/pos, precision = tps/(tps+fps).
		recall := float64(c.tps[i]) / float64(c.pos)
		precision := float64(c.tps[i]) / float64(c.tps[i]+c.fps[i])
		ap += (recall - prevRecall) * precision
		prevRecall = recall
	}
	return ap, nil
}

// f1 of predicting "error" with tp true and fp false positives out of pos errors: 2tp/(tp+fp+pos),
// which is 2PR/(P+R) and 0 when nothing is predicted (scikit-learn's zero_division result).
func f1(tp, fp, pos int64) float64 {
	return 2 * float64(tp) / float64(tp+fp+pos)
}

// BestF1Threshold returns the threshold t that maximises the F1 of predicting "error" for
// score >= t on the given rows, and that F1. t is always one of the scores. When several
// thresholds give the same best F1, the highest wins (it flags the fewest rows).
func BestF1Threshold(scores []float64, truth []bool) (threshold, best float64, err error) {
	c, err := newCurve(scores, truth)
	if err != nil {
		return 0, 0, err
	}
	best = -1
	for i := range c.thr {
		// Equal fractions round to the same float64, so ">" keeps the first (highest) of exact ties.
		if f := f1(c.tps[i], c.fps[i], c.pos); f > best {
			threshold, best = c.thr[i], f
		}
	}
	return threshold, best, nil
}

// counts returns the true and false positives of predicting "error" for score >= threshold.
func counts(scores []float64, truth []bool, threshold float64) (tp, fp, pos int64, err error) {
	if err := check(scores, truth); err != nil {
		return 0, 0, 0, err
	}
	if math.IsNaN(threshold) {
		return 0, 0, 0, fmt.Errorf("metrics: threshold is NaN")
	}
	for i, s := range scores {
		if truth[i] {
			pos++
		}
		if s >= threshold {
			if truth[i] {
				tp++
			} else {
				fp++
			}
		}
	}
	return tp, fp, pos, nil
}

// F1At is the F1 of predicting "error" for score >= threshold (scikit-learn's f1_score; 0 when
// nothing is flagged).
func F1At(scores []float64, truth []bool, threshold float64) (float64, error) {
	tp, fp, pos, err := counts(scores, truth, threshold)
	if err != nil {
		return 0, err
	}
	return f1(tp, fp, pos), nil
}

// PrecisionRecallAt returns the precision and recall of predicting "error" for
// score >= threshold. Precision is 0 when nothing is flagged (scikit-learn's zero_division
// result, without its warning).
func PrecisionRecallAt(scores []float64, truth []bool, threshold float64) (precision, recall float64, err error) {
	tp, fp, pos, err := counts(scores, truth, threshold)
	if err != nil {
		return 0, 0, err
	}
	if tp+fp > 0 {
		precision = float64(tp) / float64(tp+fp)
	}
	return precision, float64(tp) / float64(pos), nil
}

// AtFraction is the outcome of rejecting a fraction of rows, highest scores first.
type AtFraction struct {
	Precision, Recall float64
	// Threshold is the r-th highest score, r = round(fraction*n); +Inf when r is 0.
	Threshold float64
	// Rejected counts rows with score >= Threshold: r, or more when the r-th score is tied
	// with lower-ranked rows (all of a tie go together, as `lemon score --reject-fraction` does).
	Rejected int
}

// PrecisionRecallAtFraction rejects the top round(fraction*n) rows by score, the way
// `lemon score --reject-fraction` does (every row scoring at least the r-th highest score),
// and returns the precision and recall of that rejection.
func PrecisionRecallAtFraction(scores []float64, truth []bool, fraction float64) (AtFraction, error) {
	if err := check(scores, truth); err != nil {
		return AtFraction{}, err
	}
	if !(fraction >= 0 && fraction <= 1) {
		return AtFraction{}, fmt.Errorf("metrics: reject fraction %v is outside [0, 1]", fraction)
	}
	out := AtFraction{Threshold: ThresholdAtFraction(scores, fraction)}
	tp, fp, _, err := counts(scores, truth, out.Threshold)
	if err != nil {
		return AtFraction{}, err
	}
	out.Precision, out.Recall, _ = PrecisionRecallAt(scores, truth, out.Threshold)
	out.Rejected = int(tp + fp)
	return out, nil
}

// ThresholdAtFraction is the threshold that flags the top round(fraction*n) scores: the r-th
// highest score (+Inf when r is 0). Rows tied with it are flagged too. fraction must be in
// [0, 1]. It needs no labels: with fraction = the known noise rate it is the paper's
// "prevalence-matched" threshold.
func ThresholdAtFraction(scores []float64, fraction float64) float64 {
	r := int(math.Round(fraction * float64(len(scores))))
	if r <= 0 {
		return math.Inf(1)
	}
	r = min(r, len(scores))
	sorted := append([]float64(nil), scores...)
	sort.Sort(sort.Reverse(sort.Float64Slice(sorted)))
	return sorted[r-1]
}

// ROCCurve returns the ROC curve as scikit-learn's roc_curve does: points from (0, 0) at
// threshold +Inf through one point per distinct score, highest first, to (1, 1). With
// dropIntermediate it drops points collinear with their neighbours, as scikit-learn's default
// drop_intermediate=True; without, every distinct score keeps its point.
// One difference: thr[0] is +Inf, as in scikit-learn 1.3 and later; scikit-learn 1.2 and
// earlier put max(score)+1 there. One class only is an error (scikit-learn warns and returns NaN).
func ROCCurve(scores []float64, truth []bool, dropIntermediate bool) (fpr, tpr, thr []float64, err error) {
	c, err := newCurve(scores, truth)
	if err != nil {
		return nil, nil, nil, err
	}
	keep := make([]bool, len(c.thr))
	for i := range keep {
		// A point stays if it is an end or a corner: the second difference of fps or tps is non-zero.
		keep[i] = !dropIntermediate || len(c.thr) <= 2 || i == 0 || i == len(c.thr)-1 ||
			c.fps[i+1]-2*c.fps[i]+c.fps[i-1] != 0 || c.tps[i+1]-2*c.tps[i]+c.tps[i-1] != 0
	}
	fpr, tpr, thr = []float64{0}, []float64{0}, []float64{math.Inf(1)}
	for i, k := range keep {
		if k {
			fpr = append(fpr, float64(c.fps[i])/float64(c.neg))
			tpr = append(tpr, float64(c.tps[i])/float64(c.pos))
			thr = append(thr, c.thr[i])
		}
	}
	return fpr, tpr, thr, nil
}

// PRCurve returns the precision-recall curve as scikit-learn's precision_recall_curve does
// (scikit-learn 1.1 and later, default drop_intermediate=False): thresholds ascending, one per
// distinct score; precision[i] and recall[i] belong to thr[i]; a final point (precision 1,
// recall 0) has no threshold, so precision and recall are one longer than thr.
func PRCurve(scores []float64, truth []bool) (precision, recall, thr []float64, err error) {
	c, err := newCurve(scores, truth)
	if err != nil {
		return nil, nil, nil, err
	}
	m := len(c.thr)
	precision, recall, thr = make([]float64, m+1), make([]float64, m+1), make([]float64, m)
	for i := range c.thr {
		j := m - 1 - i
		precision[j] = float64(c.tps[i]) / float64(c.tps[i]+c.fps[i])
		recall[j] = float64(c.tps[i]) / float64(c.pos)
		thr[j] = c.thr[i]
	}
	precision[m], recall[m] = 1, 0
	return precision, recall, thr, nil
}
