// Package evaluate measures how well a `lemon score` run found the label errors of a dataset
// whose errors are known (spec/lemon.md, "Evaluation protocol"). It reads the run's kept/ and
// rejected/ files (the input's columns plus lemon_d_mm, lemon_s_n, lemon_s_m, lemon_score),
// takes the truth from a column such as is_error, and scores five detectors side by side:
// LEMoN itself, CLIP similarity (d_mm alone), each neighbour term alone, and the deep kNN
// baseline (the share of a row's image neighbours whose caption differs). It writes
// metrics.json and report.html, one self-contained page with the plots, the table and the most
// suspect pairs.
//
// The protocol: AUROC and AUPRC with "error" as the positive class, on the test split; F1 at the
// threshold that maximises F1 on the validation split, applied to the test split. Without a
// split column every number is computed on all rows, and the JSON says so.
package evaluate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/lemon-curation/lemon/metrics"
	"github.com/lemon-curation/lemon/storage"
)

// Options say which run to evaluate, where the truth is, and where the report goes.
type Options struct {
	RunDir         string  // a `lemon score --output` directory (local path or gs://...)
	TruthColumn    string  // column saying whether a row is a label error (default "is_error")
	SplitColumn    string  // column naming each row's split; "" = no splits, use all rows
	ValSplit       string  // validation split's name; "" = "val", "validation" or "valid"
	TestSplit      string  // test split's name; "" = "test"
	RejectFraction float64 // precision and recall are also reported at this reject fraction
	OutDir         string  // where metrics.json and report.html are written
	IDColumn       string  // row id column; "" = first of key, uid, id (as `lemon score`)
	CaptionColumn  string  // caption column; "" = first of caption, text
	ImageColumn    string  // image bytes or local paths, for thumbnails; "" = detect, "-" = none
}

// MethodNames are the detectors compared, in report order.
var MethodNames = []string{"lemon", "clip_similarity", "s_n", "s_m", "deep_knn"}

var methodInfo = map[string]struct{ label, source string }{
	"lemon":           {"LEMoN", "lemon_score = d_mm + beta*s_n + gamma*s_m"},
	"clip_similarity": {"CLIP similarity", "lemon_d_mm, the image-caption distance alone"},
	"s_n":             {"s_n only", "lemon_s_n, caption disagreement of image neighbours"},
	"s_m":             {"s_m only", "lemon_s_m, image disagreement of caption neighbours"},
	"deep_knn":        {"Deep kNN", "share of a row's image neighbours whose caption differs from its own"},
}

// Method holds one detector's numbers. Pointers are null in JSON when the detector is unavailable.
type Method struct {
	Label     string `json:"label"`
	Source    string `json:"source"`
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"` // why it is unavailable
	Note      string `json:"note,omitempty"`   // a caveat on the numbers

	AUROC *float64 `json:"auroc"`
	AUPRC *float64 `json:"auprc"`
	F1    *float64 `json:"f1"`
	// F1Threshold maximised F1 on the rows named by F1ThresholdFrom (F1OnThresholdRows is that
	// F1); F1 is that threshold applied to the evaluated rows.
	F1Threshold       *float64 `json:"f1_threshold"`
	F1ThresholdFrom   string   `json:"f1_threshold_from"`
	F1OnThresholdRows *float64 `json:"f1_on_threshold_rows"`

	RejectFraction float64 `json:"reject_fraction"`
	// RejectThreshold is the round(fraction*n)-th highest score of the evaluated rows (null when
	// that is no row); Rejected counts rows at or above it.
	RejectThreshold   *float64 `json:"reject_threshold"`
	Rejected          int      `json:"rejected"`
	PrecisionAtReject *float64 `json:"precision_at_reject_fraction"`
	RecallAtReject    *float64 `json:"recall_at_reject_fraction"`

	scores []float64 // every row's score, in table order (not in JSON)
}

// Counts are row counts of the run and of the rows evaluated.
type Counts struct {
	Kept           int `json:"kept"`
	Rejected       int `json:"rejected"`
	Unscored       int `json:"unscored"` // rows in errors/ (bad input): no score, left out
	Scored         int `json:"scored"`
	Errors         int `json:"label_errors"` // truth = true among scored rows
	ValidationRows int `json:"validation_rows,omitempty"`
	TestRows       int `json:"test_rows,omitempty"`
	OtherSplitRows int `json:"other_split_rows,omitempty"` // e.g. train: used for neither
	EvaluatedRows  int `json:"evaluated_rows"`
	EvaluatedErrs  int `json:"evaluated_label_errors"`
	ThresholdRows  int `json:"f1_threshold_rows"`
}

// RunFilter scores the run's own decision: rejected/ versus kept/, on all scored rows.
type RunFilter struct {
	Threshold *float64 `json:"threshold"` // from manifest.json; null when unknown or nothing rejected
	Rejected  int      `json:"rejected"`
	Precision float64  `json:"precision"`
	Recall    float64  `json:"recall"`
}

// Suspect is one of the highest-scoring pairs, for the report's gallery.
type Suspect struct {
	Rank    int     `json:"rank"`
	ID      string  `json:"id,omitempty"`
	Caption string  `json:"caption"`
	Score   float64 `json:"score"`
	IsError bool    `json:"is_error"`
	Split   string  `json:"split,omitempty"`
	File    string  `json:"file"`
	Row     int     `json:"row"` // 0-based row within File

	thumb     string // data: URL of a thumbnail, or ""
	thumbNote string // why there is no thumbnail
}

// Report is what metrics.json holds.
type Report struct {
	Methods     map[string]*Method `json:"methods"`
	MethodOrder []string           `json:"method_order"`

	RunDir          string    `json:"run_dir"`
	TruthColumn     string    `json:"truth_column"`
	SplitColumn     string    `json:"split_column,omitempty"`
	ValSplits       []string  `json:"validation_split_names,omitempty"`
	TestSplit       string    `json:"test_split_name,omitempty"`
	EvaluatedOn     string    `json:"evaluated_on"`
	F1ThresholdFrom string    `json:"f1_threshold_from"`
	RejectFraction  float64   `json:"reject_fraction"`
	Counts          Counts    `json:"counts"`
	RunFilter       RunFilter `json:"run_filter"`
	// Params are the run's LEMoN parameters from manifest.json, as written there.
	Params   json.RawMessage `json:"run_params,omitempty"`
	Warnings []string        `json:"warnings,omitempty"`
	Suspects []Suspect       `json:"most_suspect"`
	Images   string          `json:"images"` // where thumbnails came from, or why there are none
	Outputs  struct {
		MetricsJSON string `json:"metrics_json"`
		ReportHTML  string `json:"report_html"`
	} `json:"outputs"`

	table *table
	input string // the run's input, from manifest.json: relative image paths may be under it
}

// GallerySize is how many of the most suspect pairs the report shows.
const GallerySize = 24

func (o *Options) defaults() error {
	if o.RunDir == "" {
		return errors.New("no run directory (--run)")
	}
	if o.OutDir == "" {
		return errors.New("no output directory (--output)")
	}
	if o.TruthColumn == "" {
		o.TruthColumn = "is_error"
	}
	if o.TestSplit == "" {
		o.TestSplit = "test"
	}
	if !(o.RejectFraction >= 0 && o.RejectFraction <= 1) {
		return fmt.Errorf("reject fraction %v is outside [0, 1]", o.RejectFraction)
	}
	return nil
}

func (o *Options) valSplits() []string {
	if o.ValSplit != "" {
		return []string{o.ValSplit}
	}
	return []string{"val", "validation", "valid"}
}

// Run evaluates the run in o.RunDir and writes o.OutDir/metrics.json and o.OutDir/report.html.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	r := &Report{
		Methods: map[string]*Method{}, MethodOrder: MethodNames, RunDir: o.RunDir,
		TruthColumn: o.TruthColumn, SplitColumn: o.SplitColumn, RejectFraction: o.RejectFraction,
	}
	r.readManifest(ctx, o)
	t, err := readTable(ctx, o)
	if err != nil {
		return nil, err
	}
	r.table = t
	if err := r.count(o); err != nil {
		return nil, err
	}
	dk, reason, err := deepKNN(ctx, o, t)
	if err != nil {
		return nil, err
	}
	columns := map[string][]float64{"lemon": t.score, "clip_similarity": t.dmm, "s_n": t.sn, "s_m": t.sm, "deep_knn": dk}
	for _, name := range MethodNames {
		m := &Method{Label: methodInfo[name].label, Source: methodInfo[name].source, F1ThresholdFrom: r.F1ThresholdFrom, RejectFraction: o.RejectFraction}
		r.Methods[name] = m
		if columns[name] == nil {
			m.Reason = reason
			continue
		}
		if err := m.compute(columns[name], t, r.Counts); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	r.Methods["deep_knn"].Note = t.deepKNNNote
	r.runFilter()
	if err := r.gallery(ctx, o); err != nil {
		return nil, err
	}
	if err := r.write(ctx, o); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Report) readManifest(ctx context.Context, o Options) {
	b, err := storage.ReadFile(ctx, storage.Join(o.RunDir, "manifest.json"))
	if err != nil {
		r.Warnings = append(r.Warnings, "no manifest.json in the run directory: the run may not have finished")
		return
	}
	var m struct {
		Input     string          `json:"input"`
		Params    json.RawMessage `json:"params"`
		Threshold *float64        `json:"threshold"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		r.Warnings = append(r.Warnings, fmt.Sprintf("manifest.json is unreadable: %v", err))
		return
	}
	r.Params, r.RunFilter.Threshold, r.input = m.Params, m.Threshold, m.Input
}

// count fills Counts and decides which rows choose the F1 threshold and which are evaluated.
func (r *Report) count(o Options) error {
	t := r.table
	c := &r.Counts
	c.Kept, c.Rejected, c.Unscored, c.Scored = t.kept, t.rejected, t.unscored, t.n()
	for _, e := range t.truth {
		if e {
			c.Errors++
		}
	}
	t.evalIdx, t.thrIdx = nil, nil
	if o.SplitColumn == "" {
		r.EvaluatedOn, r.F1ThresholdFrom = "all rows", "all rows"
		for i := range t.truth {
			t.evalIdx = append(t.evalIdx, i)
		}
		t.thrIdx = t.evalIdx
	} else {
		r.ValSplits, r.TestSplit = o.valSplits(), o.TestSplit
		r.EvaluatedOn = fmt.Sprintf("test split (%s = %q)", o.SplitColumn, o.TestSplit)
		r.F1ThresholdFrom = fmt.Sprintf("validation split (%s = %s)", o.SplitColumn, orList(r.ValSplits))
		seen := map[string]int{}
		for i, s := range t.split {
			seen[s]++
			switch {
			case strings.EqualFold(strings.TrimSpace(s), o.TestSplit):
				t.evalIdx = append(t.evalIdx, i)
			case matchesAny(s, r.ValSplits):
				t.thrIdx = append(t.thrIdx, i)
			default:
				c.OtherSplitRows++
			}
		}
		c.ValidationRows, c.TestRows = len(t.thrIdx), len(t.evalIdx)
		if len(t.evalIdx) == 0 || len(t.thrIdx) == 0 {
			var names []string
			for s, n := range seen {
				names = append(names, fmt.Sprintf("%q (%d rows)", s, n))
			}
			sort.Strings(names)
			return fmt.Errorf("column %q has %d test rows (%q) and %d validation rows (%s); values found: %s; name the splits with --test-split and --val-split",
				o.SplitColumn, len(t.evalIdx), o.TestSplit, len(t.thrIdx), orList(r.ValSplits), strings.Join(names, ", "))
		}
	}
	c.EvaluatedRows, c.ThresholdRows = len(t.evalIdx), len(t.thrIdx)
	for _, i := range t.evalIdx {
		if t.truth[i] {
			c.EvaluatedErrs++
		}
	}
	// Both classes are needed on both row sets; say which, rather than a bare metrics error.
	for _, s := range []struct {
		what string
		idx  []int
	}{{r.EvaluatedOn, t.evalIdx}, {"the rows choosing the F1 threshold (" + r.F1ThresholdFrom + ")", t.thrIdx}} {
		pos := 0
		for _, i := range s.idx {
			if t.truth[i] {
				pos++
			}
		}
		if pos == 0 || pos == len(s.idx) {
			return fmt.Errorf("%s: %d rows, %d of them label errors (%s): AUROC, AUPRC and F1 need both errors and clean rows",
				s.what, len(s.idx), pos, o.TruthColumn)
		}
	}
	return nil
}

// orList quotes names and joins them: "a", "b" or "c".
func orList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

func matchesAny(s string, names []string) bool {
	for _, n := range names {
		if strings.EqualFold(strings.TrimSpace(s), n) {
			return true
		}
	}
	return false
}

func pick(x []float64, idx []int) []float64 {
	out := make([]float64, len(idx))
	for k, i := range idx {
		out[k] = x[i]
	}
	return out
}

func pickBool(x []bool, idx []int) []bool {
	out := make([]bool, len(idx))
	for k, i := range idx {
		out[k] = x[i]
	}
	return out
}

func ptr(x float64) *float64 {
	if math.IsInf(x, 0) || math.IsNaN(x) {
		return nil // JSON has no Inf: null
	}
	return &x
}

func (m *Method) compute(scores []float64, t *table, c Counts) error {
	m.scores = scores
	es, et := pick(scores, t.evalIdx), pickBool(t.truth, t.evalIdx)
	ts, tt := pick(scores, t.thrIdx), pickBool(t.truth, t.thrIdx)
	auroc, err := metrics.AUROC(es, et)
	if err != nil {
		return err
	}
	auprc, err := metrics.AUPRC(es, et)
	if err != nil {
		return err
	}
	thr, f1thr, err := metrics.BestF1Threshold(ts, tt)
	if err != nil {
		return err
	}
	f1, err := metrics.F1At(es, et, thr)
	if err != nil {
		return err
	}
	at, err := metrics.PrecisionRecallAtFraction(es, et, m.RejectFraction)
	if err != nil {
		return err
	}
	m.Available = true
	m.AUROC, m.AUPRC, m.F1, m.F1Threshold, m.F1OnThresholdRows = ptr(auroc), ptr(auprc), ptr(f1), ptr(thr), ptr(f1thr)
	m.RejectThreshold, m.Rejected, m.PrecisionAtReject, m.RecallAtReject = ptr(at.Threshold), at.Rejected, ptr(at.Precision), ptr(at.Recall)
	return nil
}

func (r *Report) runFilter() {
	t := r.table
	var tp int
	for i, rej := range t.isRejected {
		if rej {
			r.RunFilter.Rejected++
			if t.truth[i] {
				tp++
			}
		}
	}
	if r.RunFilter.Rejected > 0 {
		r.RunFilter.Precision = float64(tp) / float64(r.RunFilter.Rejected)
	}
	if r.Counts.Errors > 0 {
		r.RunFilter.Recall = float64(tp) / float64(r.Counts.Errors)
	}
}

func (r *Report) write(ctx context.Context, o Options) error {
	r.Outputs.MetricsJSON = storage.Join(o.OutDir, "metrics.json")
	r.Outputs.ReportHTML = storage.Join(o.OutDir, "report.html")
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := storage.WriteFile(ctx, r.Outputs.MetricsJSON, append(b, '\n')); err != nil {
		return err
	}
	return storage.WriteFile(ctx, r.Outputs.ReportHTML, []byte(r.html()))
}
