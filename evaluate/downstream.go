package evaluate

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/lemon-curation/lemon/evaluate/logreg"
)

// DownstreamC is the downstream classifier's penalty (scikit-learn's C; its default).
const DownstreamC = 1.0

// Downstream is what filtering buys a model trained on the data (classification data): a
// classifier trained on the training split's image embeddings with the noisy labels, on all
// rows and on the rows each filter keeps, scored on the test split's clean labels.
type Downstream struct {
	Classifier       string     `json:"classifier"`
	TrainSplit       string     `json:"train_split"`
	TestSplit        string     `json:"test_split"`
	CleanLabelColumn string     `json:"clean_label_column"`
	TrainRows        int        `json:"train_rows"`
	TestRows         int        `json:"test_rows"`
	TrainSets        []TrainSet `json:"train_sets"`
}

// TrainSet is one training set and how its classifier did.
type TrainSet struct {
	Name        string `json:"name"` // all, lemon, clip_similarity, clean
	Label       string `json:"label"`
	Rows        int    `json:"train_rows"`
	LabelErrors int    `json:"train_label_errors"` // rows of the set whose label is wrong
	Classes     int    `json:"classes"`            // distinct labels in the set
	// Accuracy on the test split's clean labels; null (with Reason) when the set is empty.
	Accuracy   *float64 `json:"accuracy"`
	Reason     string   `json:"reason,omitempty"`
	Note       string   `json:"note,omitempty"`
	Iterations int      `json:"solver_iterations"`
	Converged  bool     `json:"solver_converged"`
}

// downstream runs the experiment: multinomial logistic regression (logreg, C = DownstreamC)
// on the training split's L2-normalised image embeddings, standardised (scaler), with the
// noisy labels (the captions), trained on (a) all training rows, (b) those the run kept (its
// own filter: rejected/ versus kept/), (c) as many as (b) with the lowest CLIP-similarity
// distance d_mm (ties by id), and (d) the rows whose label is right (an oracle, the ceiling),
// each tested on the clean labels (CleanLabelColumn, `lemon noise`'s original_caption) of the
// test split.
func (r *Report) downstream(ctx context.Context, o Options) (*Downstream, error) {
	t := r.table
	v, why, err := r.vectors(ctx, o)
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, fmt.Errorf("--downstream needs the image embeddings of the run's input, but %s", why)
	}
	var train []int
	for i, s := range t.split {
		if strings.EqualFold(strings.TrimSpace(s), o.TrainSplit) {
			train = append(train, i)
		}
	}
	if len(train) == 0 {
		return nil, fmt.Errorf("--downstream: no rows of the training split (%s = %q); name it with --train-split", o.SplitColumn, o.TrainSplit)
	}
	d := &Downstream{
		Classifier: fmt.Sprintf("multinomial logistic regression, L2 penalty C = %g (scikit-learn's objective), on L2-normalised image embeddings standardised with the training rows' mean and deviation", DownstreamC),
		TrainSplit: o.TrainSplit, TestSplit: o.TestSplit, CleanLabelColumn: o.CleanLabelColumn,
		TrainRows: len(train), TestRows: len(t.evalIdx),
	}
	var kept, clean []int
	for _, i := range train {
		if !t.isRejected[i] {
			kept = append(kept, i)
		}
		if !t.truth[i] {
			clean = append(clean, i)
		}
	}
	byDmm := append([]int(nil), train...)
	sort.Slice(byDmm, func(a, b int) bool {
		x, y := byDmm[a], byDmm[b]
		if t.dmm[x] != t.dmm[y] {
			return t.dmm[x] < t.dmm[y]
		}
		return t.id[x] < t.id[y]
	})
	sets := []struct {
		name, label string
		rows        []int
	}{
		{"all", "all training rows, noisy labels", train},
		{"lemon", fmt.Sprintf("rows the run kept (its own filter: %d of %d)", len(kept), len(train)), kept},
		{"clip_similarity", fmt.Sprintf("the %d rows with the lowest d_mm (CLIP similarity at the same fraction)", len(kept)), byDmm[:len(kept)]},
		{"clean", "rows whose label is right (oracle)", clean},
	}
	for _, s := range sets {
		ts, err := fitAndTest(v, v.caption, t.cleanLabel, s.rows, t.evalIdx)
		if err != nil {
			return nil, fmt.Errorf("downstream %s: %w", s.name, err)
		}
		ts.Name, ts.Label = s.name, s.label
		for _, i := range s.rows {
			if t.truth[i] {
				ts.LabelErrors++
			}
		}
		d.TrainSets = append(d.TrainSets, *ts)
	}
	return d, nil
}

// fitAndTest trains on rows (labels: their noisy labels) and returns the accuracy on test
// against the clean labels. A test row whose clean label is no class of the training set
// counts as wrong. A set with one label predicts it for every row; an empty set has no
// accuracy.
func fitAndTest(v *vectors, labels, cleanLabels []string, rows, test []int) (*TrainSet, error) {
	names := map[string]int{}
	for _, i := range rows {
		names[labels[i]] = 0
	}
	switch len(names) {
	case 0:
		return &TrainSet{Reason: "no training rows"}, nil
	case 1:
		only := labels[rows[0]]
		right := 0
		for _, i := range test {
			if cleanLabels[i] == only {
				right++
			}
		}
		acc := float64(right) / float64(len(test))
		return &TrainSet{Rows: len(rows), Classes: 1, Accuracy: &acc, Converged: true,
			Note: fmt.Sprintf("one label in the training rows (%q): every test row is predicted as it", only)}, nil
	}
	order := make([]string, 0, len(names))
	for n := range names {
		order = append(order, n)
	}
	sort.Strings(order)
	for k, n := range order {
		names[n] = k
	}
	x := make([]float64, 0, len(rows)*v.dim)
	y := make([]int, len(rows))
	for a, i := range rows {
		x = append(x, v.img(i)...)
		y[a] = names[labels[i]]
	}
	sc := newScaler(x, v.dim)
	sc.apply(x)
	m, err := logreg.Fit(x, v.dim, y, len(order), DownstreamC)
	if err != nil {
		return nil, err
	}
	right := 0
	row := make([]float64, v.dim)
	for _, i := range test {
		copy(row, v.img(i))
		sc.apply(row)
		if order[m.Predict(row)] == cleanLabels[i] {
			right++
		}
	}
	acc := float64(right) / float64(len(test))
	return &TrainSet{Rows: len(rows), Classes: len(order), Accuracy: &acc, Iterations: m.Iterations, Converged: m.Converged}, nil
}

// scaler standardises features with the training rows' mean and standard deviation per
// dimension, as scikit-learn's StandardScaler does (population deviation; a constant dimension
// keeps scale 1). Without it the penalty's strength would depend on the embeddings' spread:
// unit vectors from a weak encoder differ by little, and C = 1 would then forbid the large
// weights that separate them.
type scaler struct{ mean, scale []float64 }

func newScaler(x []float64, dim int) *scaler {
	n := len(x) / dim
	s := &scaler{mean: make([]float64, dim), scale: make([]float64, dim)}
	for i := 0; i < n; i++ {
		for j, v := range x[i*dim : (i+1)*dim] {
			s.mean[j] += v
		}
	}
	for j := range s.mean {
		s.mean[j] /= float64(n)
	}
	for i := 0; i < n; i++ {
		for j, v := range x[i*dim : (i+1)*dim] {
			d := v - s.mean[j]
			s.scale[j] += d * d
		}
	}
	for j := range s.scale {
		if s.scale[j] = math.Sqrt(s.scale[j] / float64(n)); s.scale[j] == 0 {
			s.scale[j] = 1
		}
	}
	return s
}

// apply standardises rows of len(s.mean) values in place.
func (s *scaler) apply(x []float64) {
	dim := len(s.mean)
	for i := 0; i+dim <= len(x); i += dim {
		for j := 0; j < dim; j++ {
			x[i+j] = (x[i+j] - s.mean[j]) / s.scale[j]
		}
	}
}
