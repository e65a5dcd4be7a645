// Package tune chooses LEMoN's hyperparameters on a labelled validation split (LEMoN_opt in
// spec/lemon.md): `lemon tune` reads a `lemon score --save-neighbour-lists` run, re-scores the
// validation rows for every candidate from the saved neighbour lists, and writes the best
// configuration as a YAML file that `lemon score --config` reads, threshold included.
//
// One neighbour search serves every candidate. The neighbours do not depend on beta, gamma or
// the taus; the first k of a list of k_max are the k-neighbour search's answer; and between
// unit vectors the euclidean distance is exactly twice the cosine distance, so both rank
// neighbours alike and the lists convert from one to the other by a factor of 2.
//
// The search is the authors': for each k in {1, 2, 5, 10, 15, 20, 30, 50} (those the lists
// hold) and each distance, a grid of beta, gamma in {0, 5, ..., 100} and tau1, tau2 in
// {0, 1, 5, 10} (tau_n = tau_m), then Nelder-Mead refinement of all six weights (untied, each
// >= 0) from the best grid point and from all-0, all-0.5, all-1 and all-10. The objective is
// the validation F1 at each candidate's own best threshold.
package tune

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"time"

	"github.com/lemon-curation/lemon/metrics"
	"github.com/lemon-curation/lemon/score"
)

// Grid values, as in the authors' code.
var (
	DefaultKs   = []int{1, 2, 5, 10, 15, 20, 30, 50}
	GridWeights = steps(0, 100, 5) // beta and gamma
	GridTau1    = []float64{0, 1, 5, 10}
	GridTau2    = []float64{0, 1, 5, 10}
	// RefineStarts are the fixed Nelder-Mead starts besides the best grid point: every one of
	// beta, gamma, tau1n, tau2n, tau1m, tau2m set to this value.
	RefineStarts = []float64{0, 0.5, 1, 10}
)

func steps(lo, hi, by float64) []float64 {
	var out []float64
	for x := lo; x <= hi; x += by {
		out = append(out, x)
	}
	return out
}

// Options say which run to tune on and how.
type Options struct {
	RunDir      string // a `lemon score --save-neighbour-lists` output directory
	TruthColumn string // column saying whether a row is a label error; "" = "is_error"
	SplitColumn string // column naming each row's split; "" = "split"
	ValSplit    string // validation split; "" = any of "val", "validation", "valid"
	TestSplit   string // test split, reported on if present; "" = "test"
	IDColumn    string // row id column of kept/ and rejected/; "" = first of key, uid, id

	Output string // the tuned YAML config (local path or gs://...)
	Report string // the JSON report; "" = none

	Ks        []int            // k values to try; nil = DefaultKs up to the lists' length
	Distances []score.Distance // nil = cosine and euclidean
	// RefineTop is how many (k, distance) pairs, best grid F1 first, are refined with
	// Nelder-Mead; 0 = no refinement.
	RefineTop int
	// MaxEvals bounds each Nelder-Mead run's objective evaluations.
	MaxEvals int
	Workers  int // goroutines; 0 = GOMAXPROCS

	Command []string  // recorded in the report and the YAML's comments
	Log     io.Writer // progress lines; nil = none
}

// DefaultOptions are the CLI's defaults.
func DefaultOptions() Options {
	return Options{TruthColumn: "is_error", SplitColumn: "split", TestSplit: "test", RefineTop: 3, MaxEvals: 200}
}

func (o *Options) valSplits() []string {
	if o.ValSplit != "" {
		return []string{o.ValSplit}
	}
	return []string{"val", "validation", "valid"}
}

func (o *Options) defaults() error {
	if o.RunDir == "" {
		return errors.New("no run directory (--run)")
	}
	if o.Output == "" {
		return errors.New("no output file (--output)")
	}
	if o.TruthColumn == "" {
		o.TruthColumn = "is_error"
	}
	if o.SplitColumn == "" {
		o.SplitColumn = "split"
	}
	if o.TestSplit == "" {
		o.TestSplit = "test"
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.RefineTop < 0 {
		return fmt.Errorf("refine-top must be >= 0, got %d", o.RefineTop)
	}
	if o.RefineTop > 0 && o.MaxEvals < 1 {
		return fmt.Errorf("max-evals must be >= 1, got %d", o.MaxEvals)
	}
	for _, k := range o.Ks {
		if k < 1 {
			return fmt.Errorf("k must be >= 1, got %d", k)
		}
	}
	if len(o.Distances) == 0 {
		o.Distances = []score.Distance{score.Cosine, score.Euclidean}
	}
	seen := map[score.Distance]bool{}
	for _, d := range o.Distances {
		if d != score.Cosine && d != score.Euclidean {
			return fmt.Errorf("distance must be cosine or euclidean, got %q", d)
		}
		if seen[d] {
			return fmt.Errorf("distance %s given twice", d)
		}
		seen[d] = true
	}
	return nil
}

func (o *Options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, "lemon tune: "+format+"\n", args...)
	}
}

// Candidate is one hyperparameter setting and how it does.
type Candidate struct {
	Params score.Params `json:"params"`
	ValF1  float64      `json:"val_f1"`
	// Threshold maximises F1 on the validation rows (rows scoring at least it are flagged).
	Threshold float64      `json:"threshold"`
	Test      *TestMetrics `json:"test,omitempty"`
}

// TestMetrics are a candidate's numbers on the test split, with the validation threshold.
type TestMetrics struct {
	Rows   int     `json:"rows"`
	Errors int     `json:"errors"`
	AUROC  float64 `json:"auroc"`
	AUPRC  float64 `json:"auprc"`
	F1     float64 `json:"f1"` // at the candidate's validation threshold
}

// GridBest is the best grid point of one (k, distance).
type GridBest struct {
	K         int            `json:"k"`
	Distance  score.Distance `json:"distance"`
	Best      Candidate      `json:"best"`
	Evaluated int            `json:"evaluated"`
}

// Step is a point where a Nelder-Mead run improved on its best so far. Its F1 is the search's,
// computed with one fused exponential per neighbour (see terms.rowFused); From and To of a
// Refinement are re-scored exactly.
type Step struct {
	Eval   int        `json:"eval"`
	ValF1  float64    `json:"val_f1"`
	Params [6]float64 `json:"x"` // beta, gamma, tau1n, tau2n, tau1m, tau2m
}

// Refinement is one Nelder-Mead run.
type Refinement struct {
	K         int            `json:"k"`
	Distance  score.Distance `json:"distance"`
	Start     string         `json:"start"` // "grid best", "all 0", ...
	From      Candidate      `json:"from"`
	To        Candidate      `json:"to"`
	Evals     int            `json:"evals"`
	Converged bool           `json:"converged"` // stopped by tolerance, not by the evaluation bound
	Path      []Step         `json:"path"`
}

// Timings are wall-clock seconds per phase.
type Timings struct {
	Load   float64 `json:"load_s"`
	Grid   float64 `json:"grid_s"`
	Refine float64 `json:"refine_s"`
	Final  float64 `json:"final_s"` // chosen config's metrics, baselines, writing
	Total  float64 `json:"total_s"`
}

// Report is what `lemon tune` did and found; --report writes it as JSON.
type Report struct {
	Run        string       `json:"run"`
	Command    []string     `json:"command,omitempty"`
	StartedAt  time.Time    `json:"started_at"`
	FinishedAt time.Time    `json:"finished_at"`
	RunParams  score.Params `json:"run_params"` // the run's own, from its manifest
	KMax       int          `json:"k_max"`      // neighbours per row in the saved lists

	IDColumn    string         `json:"id_column"`
	TruthColumn string         `json:"truth_column"`
	SplitColumn string         `json:"split_column"`
	ValSplits   []string       `json:"val_splits"`
	TestSplit   string         `json:"test_split"`
	Splits      map[string]int `json:"splits"` // rows per split value
	ScoredRows  int            `json:"scored_rows"`
	ValRows     int            `json:"val_rows"`
	ValErrors   int            `json:"val_errors"`
	TestRows    int            `json:"test_rows"`
	TestErrors  int            `json:"test_errors"`

	Ks        []int            `json:"ks"`
	Distances []score.Distance `json:"distances"`
	Objective string           `json:"objective"`
	Selection string           `json:"selection"`

	GridCandidates int          `json:"grid_candidates"`
	Grid           []GridBest   `json:"grid"`
	RefineEvals    int          `json:"refine_evals"`
	Refinement     []Refinement `json:"refinement"`

	Chosen   Candidate  `json:"chosen"`
	CLIP     Candidate  `json:"clip_similarity"` // beta = gamma = 0
	Fixed    *Candidate `json:"lemon_fix,omitempty"`
	Warnings []string   `json:"warnings,omitempty"`
	Timings  Timings    `json:"timings"`
	Output   string     `json:"output"`
	Report   string     `json:"report,omitempty"`
}

const objectiveText = "validation F1, each candidate at its own best threshold (metrics.BestF1Threshold on the validation rows)"

const selectionText = "k and distance are those of the single best candidate: the (k, distance) pairs with the highest grid F1 are refined, " +
	"and the highest validation F1 over every grid best and refined point wins (the paper's \"mean validation F1\" averages over its repeated runs; " +
	"one run has one F1 per candidate). Ties go to the earlier: smaller k, distances in the order given, grid point before refinement."

// Run tunes on o.RunDir and writes o.Output (and o.Report).
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	start := time.Now()
	rep := &Report{Run: o.RunDir, Command: o.Command, StartedAt: start.UTC(), TruthColumn: o.TruthColumn,
		SplitColumn: o.SplitColumn, ValSplits: o.valSplits(), TestSplit: o.TestSplit, Distances: o.Distances,
		Objective: objectiveText, Selection: selectionText, Output: o.Output, Report: o.Report}

	data, err := load(ctx, o, o.Workers)
	if err != nil {
		return nil, err
	}
	rep.RunParams, rep.KMax, rep.IDColumn, rep.Splits, rep.ScoredRows = data.params, data.kmax, data.idColumn, data.splits, data.scored
	rep.ValRows, rep.ValErrors = data.val.Len(), count(data.val.Truth)
	rep.TestRows, rep.TestErrors = data.test.Len(), count(data.test.Truth)
	if rep.ValRows == 0 {
		return nil, fmt.Errorf("no validation rows: no row has %s = %s (rows per split: %v); name the split with --val-split", o.SplitColumn, orList(rep.ValSplits), data.splits)
	}
	if rep.ValErrors == 0 || rep.ValErrors == rep.ValRows {
		return nil, fmt.Errorf("the validation split has %d rows and %d label errors: F1 needs both errors and clean rows", rep.ValRows, rep.ValErrors)
	}
	if rep.Ks, err = chooseKs(o.Ks, data.kmax, &rep.Warnings); err != nil {
		return nil, err
	}
	rep.Timings.Load = since(start)
	o.logf("loaded %s in %.1fs: %d scored rows, %d validation (%d errors), %d test; lists of k_max=%d (%s)",
		o.RunDir, rep.Timings.Load, rep.ScoredRows, rep.ValRows, rep.ValErrors, rep.TestRows, data.kmax, data.params.Distance)

	e := &evaluator{val: data.val, pos: rep.ValErrors, discrete: data.params.DiscreteText}
	t := time.Now()
	grid, err := e.grid(ctx, rep.Ks, o.Distances, o.Workers)
	if err != nil {
		return nil, err
	}
	rep.Grid = grid
	for _, g := range grid {
		rep.GridCandidates += g.Evaluated
	}
	rep.Timings.Grid = since(t)
	o.logf("grid: %d candidates in %.1fs", rep.GridCandidates, rep.Timings.Grid)

	t = time.Now()
	if rep.Refinement, err = e.refine(ctx, grid, o.RefineTop, o.MaxEvals, o.Workers); err != nil {
		return nil, err
	}
	for _, r := range rep.Refinement {
		rep.RefineEvals += r.Evals
	}
	rep.Timings.Refine = since(t)
	if o.RefineTop > 0 {
		o.logf("refinement: %d Nelder-Mead runs, %d evaluations in %.1fs", len(rep.Refinement), rep.RefineEvals, rep.Timings.Refine)
	}

	t = time.Now()
	best := pickBest(grid, rep.Refinement)
	if rep.Chosen, err = finalise(best, data); err != nil {
		return nil, err
	}
	if rep.Chosen.ValF1 != best.ValF1 {
		return nil, fmt.Errorf("internal error: the chosen config's validation F1 is %v re-scored, %v in the search", rep.Chosen.ValF1, best.ValF1)
	}
	clip := best.Params
	clip.Beta, clip.Gamma, clip.Tau1n, clip.Tau2n, clip.Tau1m, clip.Tau2m = 0, 0, 0, 0, 0, 0
	if rep.CLIP, err = finalise(Candidate{Params: clip}, data); err != nil {
		return nil, err
	}
	if data.kmax >= score.Fixed().K {
		fix := score.Fixed()
		fix.DiscreteText = data.params.DiscreteText
		c, err := finalise(Candidate{Params: fix}, data)
		if err != nil {
			return nil, err
		}
		rep.Fixed = &c
	}
	switch {
	case rep.TestRows == 0:
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("no test rows (%s = %q): no test metrics", o.SplitColumn, o.TestSplit))
	case rep.Chosen.Test == nil:
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("the test split has %d rows and %d label errors: test metrics need both", rep.TestRows, rep.TestErrors))
	}
	rep.FinishedAt = time.Now().UTC()
	if err := writeConfig(ctx, o, rep); err != nil {
		return nil, err
	}
	rep.Timings.Final = since(t)
	rep.Timings.Total = since(start)
	if o.Report != "" {
		if err := writeReport(ctx, o.Report, rep); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

func since(t time.Time) float64 { return math.Round(time.Since(t).Seconds()*1000) / 1000 }

func count(b []bool) int {
	n := 0
	for _, x := range b {
		if x {
			n++
		}
	}
	return n
}

func orList(names []string) string {
	if len(names) == 1 {
		return fmt.Sprintf("%q", names[0])
	}
	s := ""
	for i, n := range names {
		switch {
		case i == 0:
		case i == len(names)-1:
			s += " or "
		default:
			s += ", "
		}
		s += fmt.Sprintf("%q", n)
	}
	return s
}

// chooseKs returns the k values to try, ascending. Explicit values above k_max are an error;
// default values above it are skipped with a warning.
func chooseKs(want []int, kmax int, warnings *[]string) ([]int, error) {
	explicit := want != nil
	if !explicit {
		want = DefaultKs
	}
	seen := map[int]bool{}
	var ks, skipped []int
	for _, k := range want {
		if seen[k] {
			continue
		}
		seen[k] = true
		if k > kmax {
			skipped = append(skipped, k)
			continue
		}
		ks = append(ks, k)
	}
	sortInts(ks)
	if len(skipped) > 0 {
		msg := fmt.Sprintf("the saved lists hold %d neighbours per row, so k = %v cannot be tried; rerun `lemon score --save-neighbour-lists --k %d` to include them", kmax, skipped, maxInt(skipped))
		if explicit {
			return nil, errors.New(msg)
		}
		*warnings = append(*warnings, msg)
	}
	if len(ks) == 0 {
		return nil, fmt.Errorf("no k to try: the lists hold %d neighbours", kmax)
	}
	return ks, nil
}

func sortInts(x []int) {
	for i := 1; i < len(x); i++ {
		for j := i; j > 0 && x[j] < x[j-1]; j-- {
			x[j], x[j-1] = x[j-1], x[j]
		}
	}
}

func maxInt(x []int) int {
	m := x[0]
	for _, v := range x {
		m = max(m, v)
	}
	return m
}

// pickBest returns the best candidate: the highest validation F1 over every (k, distance)'s grid
// best and every refined point, ties to the earlier in that order.
func pickBest(grid []GridBest, refs []Refinement) Candidate {
	best := grid[0].Best
	for _, g := range grid {
		c := g.Best
		for _, r := range refs {
			if r.K == g.K && r.Distance == g.Distance && r.To.ValF1 > c.ValF1 {
				c = r.To
			}
		}
		if c.ValF1 > best.ValF1 {
			best = c
		}
	}
	return best
}

// finalise re-scores c's parameters on the validation rows through the general path
// (Lists.Score) and metrics.BestF1Threshold, and on the test rows with that threshold.
func finalise(c Candidate, data *runData) (Candidate, error) {
	res, err := data.val.Score(c.Params)
	if err != nil {
		return Candidate{}, err
	}
	out := Candidate{Params: c.Params}
	if out.Threshold, out.ValF1, err = metrics.BestF1Threshold(scoresOf(res), data.val.Truth); err != nil {
		return Candidate{}, fmt.Errorf("validation: %w", err)
	}
	tm, err := testMetrics(c.Params, out.Threshold, data.test)
	if err != nil {
		return Candidate{}, err
	}
	out.Test = tm
	return out, nil
}

func scoresOf(res []score.Result) []float64 {
	s := make([]float64, len(res))
	for i, r := range res {
		s[i] = r.Score
	}
	return s
}

// testMetrics is nil when the test split is empty or has one class only.
func testMetrics(p score.Params, thr float64, test *Lists) (*TestMetrics, error) {
	pos := count(test.Truth)
	if test.Len() == 0 || pos == 0 || pos == test.Len() {
		return nil, nil
	}
	res, err := test.Score(p)
	if err != nil {
		return nil, err
	}
	s := scoresOf(res)
	m := &TestMetrics{Rows: test.Len(), Errors: pos}
	if m.AUROC, err = metrics.AUROC(s, test.Truth); err != nil {
		return nil, err
	}
	if m.AUPRC, err = metrics.AUPRC(s, test.Truth); err != nil {
		return nil, err
	}
	if m.F1, err = metrics.F1At(s, test.Truth, thr); err != nil {
		return nil, err
	}
	return m, nil
}
