// Package evaluate measures how well a `lemon score` run found the label errors of a dataset
// whose errors are known (spec/lemon.md, "Evaluation protocol"), the way the LEMoN paper does.
// It reads the run's kept/ and rejected/ files (the input's columns plus lemon_d_mm, lemon_s_n,
// lemon_s_m, lemon_score), takes the truth from a column such as is_error, and scores the
// detectors side by side: the run's own LEMoN score; LEMoN_fix (k = 30 and the published fixed
// weights, re-scored from the run's saved neighbour lists when the run used other settings);
// the paper's ablations (d_mm + beta*s_n and d_mm + gamma*s_m with the taus at 0); and the
// baselines CLIP similarity, CLIP Logits and deep kNN (with caption clusters on captioning
// data). Baselines that need embeddings read them back from the run's input. With Downstream
// it also trains a classifier on the training split with and without filtering (classification
// data). It writes metrics.json and report.html, one self-contained page with the plots, the
// table and the most suspect pairs.
//
// The protocol: AUROC and AUPRC with "error" as the positive class, on the test split; F1 at the
// threshold that maximises F1 on the validation split, applied to the test split; and, when the
// noise rate is known, F1 at the label-free prevalence-matched threshold (the paper's LEMoN_fix
// F1): the threshold that flags the noise rate's share of validation rows. Without a split
// column every number is computed on all rows, and the JSON says so.
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
	"github.com/lemon-curation/lemon/noise"
	"github.com/lemon-curation/lemon/rundir"
	"github.com/lemon-curation/lemon/score"
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

	// Input is the dataset the run scored, for the baselines that need embeddings; "" = the
	// manifest's input.
	Input string
	// NoiseRate is the known share of label errors, for the prevalence-matched threshold;
	// nil = read it from the input's noise.json (`lemon noise`), if there is one.
	NoiseRate *float64
	// LogitTemperature is CLIP Logits' softmax temperature (0 = DefaultLogitTemperature).
	LogitTemperature float64
	// ClipLogits computes CLIP Logits even when the run did not use --discrete-text.
	ClipLogits bool
	// CaptionClusters is the number of caption clusters deep kNN labels captioning data with
	// (0 = DefaultCaptionClusters).
	CaptionClusters int
	// Downstream trains the downstream classifiers (classification data); see downstream.go.
	Downstream       bool
	TrainSplit       string // training split's name; "" = "train"
	CleanLabelColumn string // the clean label column; "" = "original_caption" (`lemon noise`)
}

// MethodNames are the detectors compared, in report order.
var MethodNames = []string{"lemon", "lemon_fix", "clip_similarity", "clip_logits", "deep_knn", "ablation_s_n", "ablation_s_m"}

var methodInfo = map[string]struct{ label, source string }{
	"lemon":           {"LEMoN (this run)", "lemon_score = d_mm + beta*s_n + gamma*s_m with the run's parameters"},
	"lemon_fix":       {"LEMoN_fix", "k = 30, cosine, beta = gamma = 5, tau1 = 0.1, tau2 = 5 (Zhang et al. 2025, the fixed setting)"},
	"clip_similarity": {"CLIP similarity", "d_mm, the image-caption distance alone"},
	"clip_logits":     {"CLIP Logits", "-log softmax over the dataset's distinct captions of cos(image, caption)/T, at the row's caption (Feng et al. 2024; Liang et al. 2023)"},
	"deep_knn":        {"Deep kNN", "share of the row's 10 nearest image neighbours whose label differs (Bahri et al. 2020)"},
	"ablation_s_n":    {"d_mm + β·s_n (τ = 0)", "ablation: LEMoN_fix without s_m and without the tau weights (k = 30, beta = 5)"},
	"ablation_s_m":    {"d_mm + γ·s_m (τ = 0)", "ablation: LEMoN_fix without s_n and without the tau weights (k = 30, gamma = 5)"},
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
	// F1Prevalence is F1 at the prevalence-matched threshold: PrevalenceThreshold flags the
	// noise rate's share of the threshold rows (no labels used). Null without a noise rate.
	F1Prevalence        *float64 `json:"f1_prevalence"`
	PrevalenceThreshold *float64 `json:"prevalence_threshold"`

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
	// NeighbourCaptions are the captions of the row's nearest image neighbours, nearest first
	// (lemon report, from a run made with --emit-neighbours).
	NeighbourCaptions []string `json:"neighbour_captions,omitempty"`

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
	// NoiseRate is the known share of label errors that sets every method's prevalence-matched
	// threshold (null: unknown), and NoiseRateFrom where it came from.
	NoiseRate     *float64 `json:"noise_rate"`
	NoiseRateFrom string   `json:"noise_rate_from"`
	// Settings of the baselines.
	LogitTemperature float64 `json:"logit_temperature"`
	CaptionClusters  int     `json:"caption_clusters"`
	DeepKNNK         int     `json:"deep_knn_k"`
	// Downstream is the downstream classification experiment, when asked for.
	Downstream *Downstream `json:"downstream,omitempty"`
	// Params are the run's LEMoN parameters from manifest.json, as written there.
	Params   json.RawMessage `json:"run_params,omitempty"`
	Warnings []string        `json:"warnings,omitempty"`
	Suspects []Suspect       `json:"most_suspect"`
	Images   string          `json:"images"` // where thumbnails came from, or why there are none
	Outputs  struct {
		MetricsJSON string `json:"metrics_json"`
		ReportHTML  string `json:"report_html"`
	} `json:"outputs"`

	table     *table
	input     string           // the run's input, from manifest.json: relative image paths may be under it
	manifest  *rundir.Manifest // the run's: its input, format and columns, for thumbnails
	runParams *score.Params    // parsed Params; nil when the manifest has none
	vec       *vectors         // the input's embeddings, read on first use (see vectors)
	vecReason string           // why vec is nil after a read
	vecRead   bool
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
	if o.NoiseRate != nil && !(*o.NoiseRate >= 0 && *o.NoiseRate <= 1) {
		return fmt.Errorf("noise rate %v is outside [0, 1]", *o.NoiseRate)
	}
	if o.LogitTemperature == 0 {
		o.LogitTemperature = DefaultLogitTemperature
	}
	if !(o.LogitTemperature > 0) || math.IsInf(o.LogitTemperature, 0) {
		return fmt.Errorf("logit temperature %v must be positive", o.LogitTemperature)
	}
	if o.CaptionClusters == 0 {
		o.CaptionClusters = DefaultCaptionClusters
	}
	if o.CaptionClusters < 2 {
		return fmt.Errorf("caption clusters %d: want at least 2", o.CaptionClusters)
	}
	if o.TrainSplit == "" {
		o.TrainSplit = "train"
	}
	if o.CleanLabelColumn == "" {
		o.CleanLabelColumn = "original_caption"
	}
	if o.Downstream && o.SplitColumn == "" {
		return errors.New("the downstream experiment trains on the training split and tests on the test split: it needs a split column (--split-column)")
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
		LogitTemperature: o.LogitTemperature, CaptionClusters: o.CaptionClusters, DeepKNNK: DefaultDeepKNNK,
	}
	if err := r.readManifest(ctx, o); err != nil {
		return nil, err
	}
	t, err := readTable(ctx, o)
	if err != nil {
		return nil, err
	}
	r.table = t
	if err := r.count(o); err != nil {
		return nil, err
	}
	r.noiseRate(ctx, o)

	// Each detector's score for every table row, or why there is none.
	columns := map[string][]float64{"lemon": t.score, "clip_similarity": t.dmm}
	reasons, notes := map[string]string{}, map[string]string{}
	fixed, reason, err := r.fixedScores(ctx, o)
	if err != nil {
		return nil, err
	}
	for _, name := range []string{"lemon_fix", "ablation_s_n", "ablation_s_m"} {
		columns[name], reasons[name] = fixed[name], reason
	}
	if columns["clip_logits"], notes["clip_logits"], reasons["clip_logits"], err = r.clipLogits(ctx, o); err != nil {
		return nil, err
	}
	if columns["deep_knn"], notes["deep_knn"], reasons["deep_knn"], err = r.deepKNN(ctx, o); err != nil {
		return nil, err
	}
	for _, name := range MethodNames {
		m := &Method{Label: methodInfo[name].label, Source: methodInfo[name].source, F1ThresholdFrom: r.F1ThresholdFrom,
			RejectFraction: o.RejectFraction, Note: notes[name]}
		if name == "lemon" && r.runParams != nil {
			p := r.runParams
			m.Source = fmt.Sprintf("lemon_score with the run's parameters: k = %d, %s, beta = %g, gamma = %g, tau1n = %g, tau2n = %g, tau1m = %g, tau2m = %g", p.K, p.Distance, p.Beta, p.Gamma, p.Tau1n, p.Tau2n, p.Tau1m, p.Tau2m)
		}
		r.Methods[name] = m
		if columns[name] == nil {
			m.Reason = reasons[name]
			continue
		}
		if err := m.compute(columns[name], t, r.NoiseRate); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	r.runFilter()
	if o.Downstream {
		if r.Downstream, err = r.downstream(ctx, o); err != nil {
			return nil, err
		}
	}
	if err := r.gallery(ctx, o); err != nil {
		return nil, err
	}
	if err := r.write(ctx, o); err != nil {
		return nil, err
	}
	return r, nil
}

// vectors returns the input's embeddings of the table rows, reading them on first use, or nil
// and why they cannot be had.
func (r *Report) vectors(ctx context.Context, o Options) (*vectors, string, error) {
	if !r.vecRead {
		var err error
		if r.vec, r.vecReason, err = r.readVectors(ctx, o); err != nil {
			return nil, "", err
		}
		r.vecRead = true
	}
	return r.vec, r.vecReason, nil
}

// noiseRate sets the noise rate: --noise-rate, else the validation split's share of errors in
// the input's noise.json (what the authors use: the validation prevalence), else its overall
// share.
func (r *Report) noiseRate(ctx context.Context, o Options) {
	if o.NoiseRate != nil {
		rate := *o.NoiseRate
		r.NoiseRate, r.NoiseRateFrom = &rate, "given (--noise-rate)"
		return
	}
	in := r.inputPath(o)
	if in == "" {
		r.NoiseRateFrom = "unknown: no --noise-rate and no input in manifest.json"
		return
	}
	p := storage.Join(in, noise.ReportFile)
	b, err := storage.ReadFile(ctx, p)
	if err != nil {
		r.NoiseRateFrom = fmt.Sprintf("unknown: no --noise-rate, and the input has no %s (it was not made by `lemon noise`)", noise.ReportFile)
		return
	}
	var nr noise.Report
	if err := json.Unmarshal(b, &nr); err != nil {
		r.Warnings = append(r.Warnings, fmt.Sprintf("%s is unreadable (%v): no noise rate", p, err))
		r.NoiseRateFrom = "unknown: " + p + " is unreadable"
		return
	}
	for _, s := range nr.Splits {
		if o.SplitColumn != "" && matchesAny(s.Name, r.ValSplits) && s.Rows > 0 {
			rate := float64(s.Errors) / float64(s.Rows)
			r.NoiseRate = &rate
			r.NoiseRateFrom = fmt.Sprintf("%s: validation split %q, %d errors of %d rows", p, s.Name, s.Errors, s.Rows)
			return
		}
	}
	rate := nr.Achieved
	r.NoiseRate = &rate
	r.NoiseRateFrom = fmt.Sprintf("%s: all splits, %d errors of %d rows", p, nr.Errors, nr.Rows-nr.BadRows)
}

func (r *Report) readManifest(ctx context.Context, o Options) error {
	m, err := rundir.RequireComplete(ctx, o.RunDir)
	if err != nil {
		return err
	}
	r.Params, r.RunFilter.Threshold, r.input, r.manifest = m.Params, m.Threshold, m.Input, m
	var p score.Params
	if len(m.Params) > 0 && json.Unmarshal(m.Params, &p) == nil && p.K > 0 {
		r.runParams = &p
	}
	return nil
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
				t.otherIdx = append(t.otherIdx, i)
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

func (m *Method) compute(scores []float64, t *table, noiseRate *float64) error {
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
	if noiseRate != nil {
		pthr := metrics.ThresholdAtFraction(ts, *noiseRate)
		f1p, err := metrics.F1At(es, et, pthr)
		if err != nil {
			return err
		}
		m.F1Prevalence, m.PrevalenceThreshold = ptr(f1p), ptr(pthr)
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
