package noise

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"

	"github.com/lemon-curation/lemon/internal/cli"
)

const usage = `Usage: lemon noise --input DIR --output DIR [--kind random|noun|cat|symmetric|asymmetric]
                   [--level 0.4] [--seed N] [flags]

Injects known label errors into a clean embedding dataset, as the LEMoN paper does to measure
detection, and writes a noisy copy in the same layout (clip-retrieval img_emb/ text_emb/
metadata/, or Parquet with embedding columns), every shard rewritten under its own name. The
caption column holds the noisy captions; the metadata gains is_error (true/false) and
original_caption (symmetric/asymmetric also original_label), plus split when this command
makes the split. A row that takes another row's caption also takes its text embedding, as if
the noisy dataset had been embedded. Score the copy with 'lemon score' and measure with
'lemon eval --truth-column is_error --split-column split'.

Noise is applied inside each split: the --split-column, else a column named split if there
is one, else a seeded 80/10/10 train/val/test split written to column split. In each split
exactly floor(level * rows) rows are made errors (for symmetric and asymmetric too: a fixed
count with the same expected level as flipping each row with probability level):

  random      the row takes the caption of another random row of the split
  noun        one of the row's nouns at random, then the caption of a random row with that
              noun and another caption, as the LEMoN authors do (nouns from WordNet: run
              scripts/fetch-wordnet.sh, or pass --wordnet)
  cat         the same with the categories in --category-column (one category, a list
              separated by commas or semicolons, or a list column)
  symmetric   classification: the class becomes a uniformly random other class
  asymmetric  classification (pair flip): class c becomes c+1 mod C, classes in numeric
              order if all are integers, else sorted by name

For the classification kinds the class is --label-column, or read from captions of the form
--prompt; the caption becomes the new class's caption and the text embedding that of a row
with it. Noun and cat rows with no partner are skipped (counted) and the next row is taken.
The result depends only on --seed and the rows in order, not on how they are sharded. A
summary is printed and written to OUTPUT/noise.json, last: its presence marks a finished copy.

Flags:
`

// Main is the `lemon noise` command: it parses args (the arguments after "noise"), writes the
// noisy copy and prints a summary. -h prints the help and returns nil.
func Main(args []string) error {
	return runMain(args, os.Stdout, os.Stderr)
}

func runMain(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lemon noise", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o Options
	fs.StringVar(&o.Input, "input", "", "the clean dataset: an embdir directory or embedding Parquet (local path or gs://...)")
	fs.StringVar(&o.Output, "output", "", "directory for the noisy copy (must not hold a dataset already)")
	fs.StringVar(&o.InputFormat, "input-format", "auto", "embdir, parquet or auto")
	fs.StringVar(&o.Kind, "kind", "random", "noise kind: "+strings.Join(Kinds, ", "))
	fs.Float64Var(&o.Level, "level", 0.4, "noise level p in [0, 1]: floor(p*N) rows of each split become errors")
	fs.Uint64Var(&o.Seed, "seed", 0, "random seed; the same seed and input give the same copy")
	fs.StringVar(&o.SplitColumn, "split-column", "", "column naming each row's split (default: split if present, else make a seeded 80/10/10 split)")
	fs.StringVar(&o.CategoryColumn, "category-column", "", "cat: column of each row's categories")
	fs.StringVar(&o.LabelColumn, "label-column", "", "symmetric/asymmetric: column of each row's class (default: read the class from the caption with --prompt)")
	fs.StringVar(&o.Prompt, "prompt", DefaultPrompt, "symmetric/asymmetric: caption template, {} for the class name")
	fs.StringVar(&o.WordNet, "wordnet", "", "noun: WordNet dict directory holding index.noun (default: $WNSEARCHDIR, /usr/share/wordnet, third_party/wordnet/usr/share/wordnet)")
	fs.StringVar(&o.Columns.IDColumn, "id-column", "", "row id column (default: first of key, uid, id)")
	fs.StringVar(&o.Columns.CaptionColumn, "caption-column", "", "caption column (default: first of caption, text)")
	fs.StringVar(&o.Columns.ImageEmbeddingColumn, "image-embedding-column", "", "parquet: image embedding column (default image_embedding)")
	fs.StringVar(&o.Columns.TextEmbeddingColumn, "text-embedding-column", "", "parquet: text embedding column (default text_embedding)")
	fs.StringVar(&o.Columns.ImageEmbeddingColumn, "image-column", "", "deprecated name of --image-embedding-column")
	fs.StringVar(&o.Columns.TextEmbeddingColumn, "text-column", "", "deprecated name of --text-embedding-column")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		cli.PrintFlags(fs, nil)
	}
	if help, err := cli.Parse(fs, args); help || err != nil {
		return err
	}
	if err := checkFlags(fs, o); err != nil {
		return cli.UsageError{Err: err}
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

func checkFlags(fs *flag.FlagSet, o Options) error {
	if o.Input == "" || o.Output == "" {
		return errors.New("--input and --output are required (see lemon noise -h)")
	}
	if !slices.Contains(Kinds, o.Kind) {
		return fmt.Errorf("unknown --kind %q (want one of %s)", o.Kind, strings.Join(Kinds, ", "))
	}
	if !(o.Level >= 0 && o.Level <= 1) {
		return fmt.Errorf("--level %v is outside [0, 1]", o.Level)
	}
	if o.Kind == "cat" && o.CategoryColumn == "" {
		return errors.New("--kind cat needs --category-column (the column of each row's categories)")
	}
	if o.Kind != "cat" && o.CategoryColumn != "" {
		return fmt.Errorf("--category-column applies to --kind cat only, not %s", o.Kind)
	}
	if !classification(o.Kind) && o.LabelColumn != "" {
		return fmt.Errorf("--label-column applies to --kind symmetric and asymmetric only, not %s", o.Kind)
	}
	if o.Kind != "noun" && o.WordNet != "" {
		return fmt.Errorf("--wordnet applies to --kind noun only, not %s", o.Kind)
	}
	if _, err := ParsePrompt(o.Prompt); err != nil {
		return err
	}
	return nil
}

// Summary prints what a run did.
func Summary(w io.Writer, r *Report) {
	split := fmt.Sprintf("split from column %q", r.SplitColumn)
	if r.MadeSplit {
		split = fmt.Sprintf("made an 80/10/10 split into column %q", r.SplitColumn)
	}
	fmt.Fprintf(w, "%s noise at level %g (seed %d): %d rows, %s\n", r.Kind, r.Level, r.Seed, r.Rows, split)
	fmt.Fprintf(w, "%-12s %9s %9s %9s %9s %9s\n", "split", "rows", "target", "errors", "skipped", "level")
	for _, s := range r.Splits {
		fmt.Fprintf(w, "%-12s %9d %9d %9d %9d %9s\n", s.Name, s.Rows, s.Target, s.Errors, s.Skipped, level(s.Level))
	}
	fmt.Fprintf(w, "%-12s %9d %9d %9d %9d %9s\n", "all", r.Rows-r.BadRows, r.Target, r.Errors, r.Skipped, level(r.Achieved))
	if r.BadRows > 0 {
		fmt.Fprintf(w, "%d rows with bad input (missing or empty caption, missing embedding) were left unchanged and not counted\n", r.BadRows)
	}
	if r.RowsWithoutTerms > 0 {
		what := "noun"
		if r.Kind == "cat" {
			what = "category"
		}
		fmt.Fprintf(w, "%d rows have no %s, so can neither take nor give a caption\n", r.RowsWithoutTerms, what)
	}
	if r.Skipped > 0 {
		fmt.Fprintf(w, "%d chosen rows had no partner to swap with and were skipped\n", r.Skipped)
	}
	if len(r.Classes) > 0 {
		fmt.Fprintf(w, "%d classes\n", len(r.Classes))
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	fmt.Fprintf(w, "wrote %s (%s, %d shards)\n", r.Output, r.Format, r.Shards)
}
