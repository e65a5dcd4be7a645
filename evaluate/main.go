package evaluate

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/lemon-curation/lemon/internal/cli"
)

const usage = `Usage: lemon eval --run OUT --output REP [--truth-column is_error] [--split-column split] [flags]

Measures how well a 'lemon score' run found the label errors of a dataset whose errors are
known (for example one made with 'lemon dev make-dataset', or with injected noise). Reads
OUT/kept/ and OUT/rejected/ (the input's columns plus lemon_score, lemon_d_mm, lemon_s_n,
lemon_s_m) and compares five detectors:

  lemon            lemon_score (LEMoN)
  clip_similarity  lemon_d_mm alone (the CLIP-similarity baseline)
  s_n, s_m         each neighbour term alone
  deep_knn         share of a row's image neighbours whose caption differs; needs a run made
                   with --emit-neighbours, and is reported as unavailable otherwise

For each: AUROC and AUPRC (error = positive class), F1 at the threshold that maximises F1 on
the validation split, applied to the test split, and precision and recall when the top
--reject-fraction of rows is rejected. Without --split-column everything is computed on all
rows, the F1 threshold included (metrics.json says so).

Writes REP/metrics.json and REP/report.html (one self-contained page: score histograms, ROC
and precision-recall curves, the metrics table and the most suspect pairs).

Flags:
`

// Main is the `lemon eval` command: it parses args (the arguments after "eval"), runs the
// evaluation and prints a summary. -h prints the help and returns nil.
func Main(args []string) error {
	return runMain(args, os.Stdout, os.Stderr)
}

func runMain(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lemon eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o Options
	fs.StringVar(&o.RunDir, "run", "", "the `lemon score --output` directory to evaluate (local path or gs://...)")
	fs.StringVar(&o.OutDir, "output", "", "directory for metrics.json and report.html")
	fs.StringVar(&o.TruthColumn, "truth-column", "is_error", "column saying whether a row is a label error: true/false, 1/0 or yes/no")
	fs.StringVar(&o.SplitColumn, "split-column", "", "column naming each row's split (e.g. split); without it all rows are used for everything")
	fs.StringVar(&o.ValSplit, "val-split", "", "name of the validation split, which chooses the F1 threshold (default: val, validation or valid)")
	fs.StringVar(&o.TestSplit, "test-split", "test", "name of the test split, on which metrics are reported")
	fs.Float64Var(&o.RejectFraction, "reject-fraction", 0.1, "also report precision and recall when this fraction of rows, highest scores first, is rejected")
	fs.StringVar(&o.IDColumn, "id-column", "", "row id column, to join the scores' neighbour ids (default: first of key, uid, id)")
	fs.StringVar(&o.CaptionColumn, "caption-column", "", "caption column, for the report (default: first of caption, text)")
	fs.StringVar(&o.ImageColumn, "image-column", "", "column of image bytes or local image paths, for thumbnails (default: detect; - for none)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		cli.PrintFlags(fs, nil)
	}
	if help, err := cli.Parse(fs, args); help || err != nil {
		return err
	}
	if o.RunDir == "" || o.OutDir == "" {
		return cli.Usagef("--run and --output are required (see lemon eval -h)")
	}
	if !(o.RejectFraction >= 0 && o.RejectFraction <= 1) {
		return cli.Usagef("--reject-fraction %v is outside [0, 1]", o.RejectFraction)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	r, err := Run(ctx, o)
	if err != nil {
		return err
	}
	Summary(stdout, r)
	return nil
}

// Summary prints the metrics table as text.
func Summary(w io.Writer, r *Report) {
	fmt.Fprintf(w, "%d scored rows, %d label errors; metrics on %s (%d rows), F1 threshold from %s\n",
		r.Counts.Scored, r.Counts.Errors, r.EvaluatedOn, r.Counts.EvaluatedRows, r.F1ThresholdFrom)
	fmt.Fprintf(w, "%-16s %7s %7s %7s %9s %9s   (%%; P and R with the top %s rejected)\n", "method", "AUROC", "AUPRC", "F1", "P", "R", fracLabel(r.RejectFraction))
	for _, name := range r.MethodOrder {
		m := r.Methods[name]
		if !m.Available {
			fmt.Fprintf(w, "%-16s not available: %s\n", name, m.Reason)
			continue
		}
		fmt.Fprintf(w, "%-16s %7s %7s %7s %9s %9s\n", name, pct(m.AUROC), pct(m.AUPRC), pct(m.F1), pct(m.PrecisionAtReject), pct(m.RecallAtReject))
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	fmt.Fprintf(w, "wrote %s and %s\n", r.Outputs.MetricsJSON, r.Outputs.ReportHTML)
}
