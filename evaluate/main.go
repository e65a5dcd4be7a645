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
known (for example one made with 'lemon noise'), as the LEMoN paper measures. Reads OUT/kept/
and OUT/rejected/ (the input's columns plus lemon_score, lemon_d_mm, lemon_s_n, lemon_s_m) and
compares:

  lemon            the run's own lemon_score
  lemon_fix        LEMoN_fix: k = 30, cosine, beta = gamma = 5, tau1 = 0.1, tau2 = 5, re-scored
                   from the run's saved neighbour lists (--save-neighbour-lists, k >= 30) unless
                   the run used exactly that
  clip_similarity  d_mm alone (the CLIP-similarity baseline)
  clip_logits      -log p(caption | image), softmax over the distinct captions of cos / T
                   (--logit-temperature); for --discrete-text runs, or with --clip-logits
  deep_knn         share of a row's 10 nearest image neighbours with another label: the caption
                   on classification data, a k-means cluster of caption embeddings on captioning
                   data; needs a run made with --emit-neighbours
  ablation_s_n     d_mm + 5 s_n with the taus at 0 (k = 30), and ablation_s_m the same with s_m:
                   the paper's ablations, from the saved neighbour lists

CLIP Logits, the caption clusters and --downstream read the embeddings from the run's input
(the manifest's, or --input). For each method: AUROC and AUPRC (error = positive class), F1 at
the threshold that maximises F1 on the validation split applied to the test split, F1 at the
prevalence-matched threshold (the one that flags the noise rate's share of validation rows, no
labels used: the paper's LEMoN_fix F1; the noise rate is --noise-rate, else the validation
split's level in the input's noise.json), and precision and recall when the top
--reject-fraction of rows is rejected. Without --split-column everything is computed on all
rows (metrics.json says so).

--downstream (classification data) trains a logistic regression on the training split's image
embeddings with the noisy labels, on all rows, on the rows the run kept, and on as many rows
with the best CLIP similarity, and reports each one's accuracy on the test split's clean labels
(--clean-label-column).

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
	fs.StringVar(&o.Input, "input", "", "the dataset the run scored, for the baselines that need embeddings (default: the manifest's input)")
	noiseRate := fs.Float64("noise-rate", -1, "known share of label errors, for the prevalence-matched F1 threshold (default: from the input's noise.json)")
	fs.Float64Var(&o.LogitTemperature, "logit-temperature", DefaultLogitTemperature, "CLIP Logits' softmax temperature T")
	fs.BoolVar(&o.ClipLogits, "clip-logits", false, "compute CLIP Logits even though the run did not use --discrete-text")
	fs.IntVar(&o.CaptionClusters, "caption-clusters", DefaultCaptionClusters, "deep kNN on captioning data: k-means clusters of caption embeddings used as labels")
	fs.BoolVar(&o.Downstream, "downstream", false, "train and test the downstream classifiers (classification data; needs --split-column)")
	fs.StringVar(&o.TrainSplit, "train-split", "train", "name of the training split, for --downstream")
	fs.StringVar(&o.CleanLabelColumn, "clean-label-column", "original_caption", "column of each row's clean label, for --downstream's test accuracy")
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
	if *noiseRate > 1 {
		return cli.Usagef("--noise-rate %v is outside [0, 1]", *noiseRate)
	}
	if *noiseRate >= 0 {
		o.NoiseRate = noiseRate
	}
	if !(o.LogitTemperature > 0) {
		return cli.Usagef("--logit-temperature %v must be positive", o.LogitTemperature)
	}
	if o.CaptionClusters < 2 {
		return cli.Usagef("--caption-clusters %d: want at least 2", o.CaptionClusters)
	}
	if o.Downstream && o.SplitColumn == "" {
		return cli.Usagef("--downstream trains on the training split and tests on the test split: give --split-column")
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
	if r.NoiseRate != nil {
		fmt.Fprintf(w, "noise rate %.4g (%s) sets the prevalence-matched threshold (F1 prev.)\n", *r.NoiseRate, r.NoiseRateFrom)
	} else {
		fmt.Fprintf(w, "noise rate %s: no prevalence-matched F1 (give --noise-rate)\n", r.NoiseRateFrom)
	}
	fmt.Fprintf(w, "%-16s %7s %7s %7s %9s %9s %9s   (%%; P and R with the top %s rejected)\n", "method", "AUROC", "AUPRC", "F1", "F1 prev.", "P", "R", fracLabel(r.RejectFraction))
	for _, name := range r.MethodOrder {
		m := r.Methods[name]
		if !m.Available {
			fmt.Fprintf(w, "%-16s not available: %s\n", name, m.Reason)
			continue
		}
		fmt.Fprintf(w, "%-16s %7s %7s %7s %9s %9s %9s\n", name, pct(m.AUROC), pct(m.AUPRC), pct(m.F1), pct(m.F1Prevalence), pct(m.PrecisionAtReject), pct(m.RecallAtReject))
	}
	if d := r.Downstream; d != nil {
		fmt.Fprintf(w, "downstream: %s; trained on split %q (%d rows), accuracy on the clean labels (%s) of %q (%d rows)\n",
			d.Classifier, d.TrainSplit, d.TrainRows, d.CleanLabelColumn, d.TestSplit, d.TestRows)
		for _, s := range d.TrainSets {
			fmt.Fprintf(w, "  %-16s %7s%%  %6d rows, %5d wrong labels  (%s)\n", s.Name, pct(s.Accuracy), s.Rows, s.LabelErrors, s.Label)
			for _, why := range []string{s.Reason, s.Note} {
				if why != "" {
					fmt.Fprintf(w, "  %-16s %s\n", "", why)
				}
			}
		}
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	fmt.Fprintf(w, "wrote %s and %s\n", r.Outputs.MetricsJSON, r.Outputs.ReportHTML)
}
