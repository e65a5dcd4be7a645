package tune

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"

	"github.com/lemon-curation/lemon/score"

	"github.com/lemon-curation/lemon/internal/cli"
)

const usage = `Usage: lemon tune --run OUT --output tuned.yaml [--truth-column is_error] [--split-column split] [flags]

Chooses LEMoN's hyperparameters on a labelled validation split (LEMoN_opt) and writes them,
with the validation-optimal threshold, as a config for 'lemon score --config tuned.yaml'.

OUT must be a run made with 'lemon score --save-neighbour-lists --k 50': tuning re-scores the
rows from the saved neighbour lists for every candidate, so it needs no new search. The lists'
length bounds the k values tried. The truth and split columns are read from OUT/kept/ and
OUT/rejected/ (the input's columns); rows of other splits (train) are not used.

The search (as the paper's authors do it): for each k in 1,2,5,10,15,20,30,50 and distance
cosine and euclidean, a grid of beta, gamma in 0,5,...,100 and tau1, tau2 in 0,1,5,10
(tau1n = tau1m = tau1, tau2n = tau2m = tau2), each candidate at its best validation F1
threshold; then Nelder-Mead over all six weights (untied, each >= 0) from the best grid point
and from all-0, all-0.5, all-1 and all-10, for the --refine-top best (k, distance) pairs. The
single best validation F1 picks k, distance and weights. The test split, if any, is reported
on (AUROC, AUPRC, F1 at the validation threshold) but never used to choose.

Writes the YAML config (--output) and optionally a JSON report (--report) with the grid's best
per (k, distance), every refinement path, the CLIP-similarity and LEMoN_fix baselines and
timings.

Flags:
`

// Main is the `lemon tune` command: it parses args (the arguments after "tune"), tunes and
// prints a summary. -h prints the help and returns nil.
func Main(args []string) error {
	return runMain(args, os.Stdout, os.Stderr)
}

type intList struct{ v *[]int }

func (l intList) String() string {
	if l.v == nil || *l.v == nil {
		return ""
	}
	var s []string
	for _, k := range *l.v {
		s = append(s, strconv.Itoa(k))
	}
	return strings.Join(s, ",")
}

func (l intList) Set(s string) error {
	var out []int
	for _, f := range strings.Split(s, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || k < 1 {
			return fmt.Errorf("want positive integers separated by commas, got %q", s)
		}
		out = append(out, k)
	}
	*l.v = out
	return nil
}

type distList struct{ v *[]score.Distance }

func (l distList) String() string {
	if l.v == nil {
		return ""
	}
	var s []string
	for _, d := range *l.v {
		s = append(s, string(d))
	}
	return strings.Join(s, ",")
}

func (l distList) Set(s string) error {
	var out []score.Distance
	for _, f := range strings.Split(s, ",") {
		d := score.Distance(strings.TrimSpace(f))
		if d != score.Cosine && d != score.Euclidean {
			return fmt.Errorf("want cosine and/or euclidean separated by commas, got %q", s)
		}
		out = append(out, d)
	}
	*l.v = out
	return nil
}

func runMain(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lemon tune", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := DefaultOptions()
	fs.StringVar(&o.RunDir, "run", "", "a `lemon score --save-neighbour-lists --k 50` output directory (local path or gs://...)")
	fs.StringVar(&o.Output, "output", "", "where to write the tuned YAML config")
	fs.StringVar(&o.Report, "report", "", "where to write the JSON report (optional)")
	fs.StringVar(&o.TruthColumn, "truth-column", o.TruthColumn, "column saying whether a row is a label error: true/false, 1/0 or yes/no")
	fs.StringVar(&o.SplitColumn, "split-column", o.SplitColumn, "column naming each row's split")
	fs.StringVar(&o.ValSplit, "val-split", "", "name of the validation split, on which everything is chosen (default: val, validation or valid)")
	fs.StringVar(&o.TestSplit, "test-split", o.TestSplit, "name of the test split, reported on if present")
	fs.StringVar(&o.IDColumn, "id-column", "", "row id column of kept/ and rejected/ (default: first of key, uid, id, as lemon score)")
	fs.Var(intList{&o.Ks}, "ks", "k values to try, e.g. 5,10,30 (default 1,2,5,10,15,20,30,50, those the lists hold)")
	fs.Var(distList{&o.Distances}, "distances", "distances to try (default cosine,euclidean)")
	fs.IntVar(&o.RefineTop, "refine-top", o.RefineTop, "refine the best this many (k, distance) pairs with Nelder-Mead; 0 = grid only")
	fs.IntVar(&o.MaxEvals, "max-evals", o.MaxEvals, "objective evaluations per Nelder-Mead run")
	fs.IntVar(&o.Workers, "workers", 0, "goroutines (default: GOMAXPROCS)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		cli.PrintFlags(fs, nil)
	}
	if help, err := cli.Parse(fs, args); help || err != nil {
		return err
	}
	if o.RunDir == "" || o.Output == "" {
		return cli.Usagef("--run and --output are required (see lemon tune -h)")
	}
	if o.RefineTop < 0 || o.MaxEvals < 1 {
		return cli.Usagef("--refine-top must be >= 0 and --max-evals >= 1")
	}
	o.Command = append([]string{"lemon", "tune"}, args...)
	o.Log = stderr
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	r, err := Run(ctx, o)
	if err != nil {
		return err
	}
	Summary(stdout, r)
	return nil
}

// Summary prints what was chosen and how it compares.
func Summary(w io.Writer, r *Report) {
	fmt.Fprintf(w, "tuned on %s: %d validation rows (%d errors), %d test rows; lists of k_max=%d\n", r.Run, r.ValRows, r.ValErrors, r.TestRows, r.KMax)
	fmt.Fprintf(w, "%-4s %-10s %9s %11s\n", "k", "distance", "grid F1", "refined F1")
	for _, g := range r.Grid {
		ref := ""
		best := -1.0
		for _, x := range r.Refinement {
			if x.K == g.K && x.Distance == g.Distance && x.To.ValF1 > best {
				best = x.To.ValF1
			}
		}
		if best >= 0 {
			ref = pct(max(best, g.Best.ValF1))
		}
		fmt.Fprintf(w, "%-4d %-10s %9s %11s\n", g.K, g.Distance, pct(g.Best.ValF1), ref)
	}
	p := r.Chosen.Params
	fmt.Fprintf(w, "chosen: k=%d %s beta=%.4g gamma=%.4g tau1n=%.4g tau2n=%.4g tau1m=%.4g tau2m=%.4g threshold=%.6g\n",
		p.K, p.Distance, p.Beta, p.Gamma, p.Tau1n, p.Tau2n, p.Tau1m, p.Tau2m, r.Chosen.Threshold)
	line := func(name string, c *Candidate) {
		fmt.Fprintf(w, "  %-16s val F1 %5s", name, pct(c.ValF1))
		if t := c.Test; t != nil {
			fmt.Fprintf(w, "   test AUROC %5s  AUPRC %5s  F1 %5s", pct(t.AUROC), pct(t.AUPRC), pct(t.F1))
		}
		fmt.Fprintln(w)
	}
	line("LEMoN_opt", &r.Chosen)
	line("CLIP similarity", &r.CLIP)
	if r.Fixed != nil {
		line("LEMoN_fix", r.Fixed)
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	t := r.Timings
	out := r.Output
	if r.Report != "" {
		out += " and " + r.Report
	}
	fmt.Fprintf(w, "wrote %s in %.1fs (load %.1fs, grid %.1fs for %d candidates, refinement %.1fs for %d evaluations)\n",
		out, t.Total, t.Load, t.Grid, r.GridCandidates, t.Refine, r.RefineEvals)
}
