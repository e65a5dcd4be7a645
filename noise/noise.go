// Package noise injects known label errors into a clean dataset, as the LEMoN paper does to
// measure detection (spec: "Evaluation protocol"), and writes a noisy copy whose metadata says
// which rows were changed. It is `lemon noise`.
//
// Input is an embedding dataset: the clip-retrieval layout (embdir: img_emb/, text_emb/,
// metadata/) or Parquet with embedding columns ("parquet"). The output has the same layout and
// shard names, every shard rewritten: the caption column holds the noisy captions, and the
// metadata gains is_error ("true"/"false"), original_caption (and original_label for the
// classification kinds) and, when this command makes the split, split. All other columns are
// kept. A row that takes another row's caption also takes that row's text embedding, so the
// copy looks like a noisy dataset that was embedded, and `lemon score` on it is a fair test.
//
// Noise is applied inside each split (an existing split column, else a seeded 80/10/10
// train/val/test split): within a split, rows are visited in a seeded random order and made
// errors until floor(p*N_split) are. The kinds:
//
//	random      the row takes the caption of another random row of the split (one whose
//	            caption differs);
//	noun        one of the row's nouns is picked at random (WordNet nouns), then the row
//	            takes the caption of a random row of the split that has that noun and a
//	            different caption: the authors' rule (noise_captioning.py), term first;
//	cat         the same with the categories of --category-column;
//	symmetric   classification: the row's class becomes a uniformly random other class;
//	asymmetric  classification (pair flip): class c becomes (c+1) mod C.
//
// The classification kinds change an exact floor(p*N_split) rows per split, rather than
// flipping each row with probability p as the spec words it: the same expected level, without
// the binomial spread (±1.5 points at N = 1000), so a benchmark's level is what was asked for.
// A noun or cat row with no partner (no term, or a drawn term no other row of the split has
// with another caption) is skipped and counted, and the walk goes on to the next row, so the
// level falls short of p only when too few rows have partners. The authors instead choose
// floor(p*N) rows once and leave those without a partner unchanged, so their level falls a
// little short of p.
//
// Decisions are made on the global row order (shards in order, rows in file order) from
// --seed and the split's name, so the result does not depend on how the rows are sharded,
// and each split's noise does not depend on the other splits. Rows with bad input (a missing
// or empty caption, a missing embedding) are left as they are, with is_error false, and take
// no part: they are neither chosen nor donors, and do not count in N_split.
package noise

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/embdir"
	"github.com/lemon-curation/lemon/dataset/embparquet"
	"github.com/lemon-curation/lemon/storage"
)

// Options configure a run.
type Options struct {
	Input, Output  string
	InputFormat    string // "", "auto", "embdir" or "parquet"
	Kind           string
	Level          float64
	Seed           uint64
	SplitColumn    string // "" = the column "split" if there is one, else make one
	CategoryColumn string // cat
	LabelColumn    string // symmetric/asymmetric: "" = derive the class from the caption with Prompt
	Prompt         string // caption template, "{}" for the class (default "A photo of a {}")
	WordNet        string // noun: WordNet dict directory ("" = FindWordNet)
	// Lexicon, if set, is used for noun noise instead of loading WordNet (tests).
	Lexicon *Lexicon
	Columns dataset.Options
}

// DefaultPrompt is the prompt classification captions are assumed to follow.
const DefaultPrompt = "A photo of a {}"

// Output column names.
const (
	ColIsError         = "is_error"
	ColOriginalCaption = "original_caption"
	ColOriginalLabel   = "original_label"
	ColSplit           = "split"
)

// ReportFile is written into the output directory last, so its presence marks a finished run.
const ReportFile = "noise.json"

// SplitReport counts one split.
type SplitReport struct {
	Name    string  `json:"name"`
	Rows    int     `json:"rows"`    // rows with good input in the split (N_split)
	Target  int     `json:"target"`  // floor(p * rows)
	Errors  int     `json:"errors"`  // rows changed
	Skipped int     `json:"skipped"` // rows chosen that had no partner to take a caption from
	Level   float64 `json:"level"`   // errors / rows
}

// Report is what a run did; it is also written to OUTPUT/noise.json.
type Report struct {
	Input       string        `json:"input"`
	Output      string        `json:"output"`
	Format      string        `json:"format"`
	Shards      int           `json:"shards"`
	Kind        string        `json:"kind"`
	Level       float64       `json:"level"`
	Seed        uint64        `json:"seed"`
	Rows        int           `json:"rows"`
	BadRows     int           `json:"bad_rows"` // rows with bad input, left unchanged
	SplitColumn string        `json:"split_column"`
	MadeSplit   bool          `json:"made_split"`
	Splits      []SplitReport `json:"splits"`
	Target      int           `json:"target"`
	Errors      int           `json:"errors"`
	Skipped     int           `json:"skipped"`
	Achieved    float64       `json:"achieved_level"` // errors / rows with good input
	// noun/cat: good rows with no noun (or category) at all; they can be neither chosen nor donors.
	RowsWithoutTerms int      `json:"rows_without_terms,omitempty"`
	WordNet          string   `json:"wordnet,omitempty"`
	CategoryColumn   string   `json:"category_column,omitempty"`
	LabelColumn      string   `json:"label_column,omitempty"`
	Prompt           string   `json:"prompt,omitempty"`
	Classes          []string `json:"classes,omitempty"`
	Warnings         []string `json:"warnings,omitempty"`
}

// shardMeta is what the first pass learns about a shard's metadata file.
type shardMeta struct {
	path       string // the metadata file (embdir) or the data file (parquet)
	captionCol string
}

// Run injects the noise and writes the noisy copy.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Input == "" || o.Output == "" {
		return nil, fmt.Errorf("noise: input and output are required")
	}
	if !slices.Contains(Kinds, o.Kind) {
		return nil, fmt.Errorf("unknown noise kind %q (want one of %s)", o.Kind, strings.Join(Kinds, ", "))
	}
	if !(o.Level >= 0 && o.Level <= 1) {
		return nil, fmt.Errorf("noise level %v is outside [0, 1]", o.Level)
	}
	if o.Kind == "cat" && o.CategoryColumn == "" {
		return nil, fmt.Errorf("--kind cat needs --category-column")
	}
	if o.Prompt == "" {
		o.Prompt = DefaultPrompt
	}
	prompt, err := ParsePrompt(o.Prompt)
	if err != nil {
		return nil, err
	}
	if sameDir(o.Input, o.Output) {
		return nil, fmt.Errorf("--output %s is the input: write the noisy copy somewhere else", o.Output)
	}
	f, err := dataset.Open(ctx, o.Input, o.InputFormat)
	if err != nil {
		return nil, err
	}
	if f.Name() != (embdir.Format{}).Name() && f.Name() != (embparquet.Format{}).Name() {
		return nil, fmt.Errorf("%s: lemon noise reads embedding datasets (embdir or parquet), not %s", o.Input, f.Name())
	}
	shards, err := f.Plan(ctx, o.Input, o.Columns)
	if err != nil {
		return nil, err
	}
	if err := checkOutputEmpty(ctx, f.Name(), o.Output); err != nil {
		return nil, err
	}
	rep := &Report{Input: o.Input, Output: o.Output, Format: f.Name(), Shards: len(shards), Kind: o.Kind, Level: o.Level, Seed: o.Seed}

	// Pass 1: captions, read faults and the columns the noise needs, for every row.
	var lex *Lexicon
	if o.Kind == "noun" {
		if lex = o.Lexicon; lex == nil {
			dir := o.WordNet
			if dir == "" {
				if dir, err = FindWordNet(); err != nil {
					return nil, err
				}
			}
			if lex, err = LoadWordNet(ctx, dir); err != nil {
				return nil, err
			}
			rep.WordNet = dir
		}
	}
	sc, err := scan(ctx, f, shards, o)
	if err != nil {
		return nil, err
	}
	n := len(sc.captions)
	c := &corpus{captions: sc.captions, ok: make([]bool, n)}
	for i := range c.ok {
		c.ok[i] = sc.faults[i] == ""
		if !c.ok[i] {
			rep.BadRows++
		}
	}
	rep.Rows = n
	if sc.splitCol != "" {
		c.split, rep.SplitColumn = sc.aux[sc.splitCol], sc.splitCol
	} else {
		c.split, rep.SplitColumn, rep.MadeSplit = makeSplit(o.Seed, n), ColSplit, true
	}
	switch o.Kind {
	case "noun":
		c.terms = make([][]string, n)
		for i, cap := range c.captions {
			if c.ok[i] {
				c.terms[i] = lex.Nouns(cap)
			}
		}
	case "cat":
		rep.CategoryColumn = o.CategoryColumn
		c.terms = make([][]string, n)
		for i, v := range sc.aux[o.CategoryColumn] {
			if c.ok[i] {
				c.terms[i] = Categories(v)
			}
		}
	case "symmetric", "asymmetric":
		rep.LabelColumn, rep.Prompt = o.LabelColumn, o.Prompt
		if c.labels, err = labels(c, sc, o.LabelColumn, prompt); err != nil {
			return nil, err
		}
	}
	for i := range c.terms {
		if c.ok[i] && len(c.terms[i]) == 0 {
			rep.RowsWithoutTerms++
		}
	}

	d, err := decide(o.Kind, o.Level, o.Seed, c)
	if err != nil {
		return nil, err
	}
	rep.Splits, rep.Classes, rep.Warnings = d.splits, d.classes, d.warnings
	good := 0
	for _, s := range d.splits {
		rep.Target += s.Target
		rep.Errors += s.Errors
		rep.Skipped += s.Skipped
		good += s.Rows
	}
	if good > 0 {
		rep.Achieved = float64(rep.Errors) / float64(good)
	}

	// Pass 2: the text embeddings of the donors. Pass 3: the noisy copy, shard by shard.
	vecs, err := donorVectors(ctx, f, shards, o.Columns, d.donor)
	if err != nil {
		return nil, err
	}
	ed := &edits{captions: c.captions, donor: d.donor, vecs: vecs, isClass: classification(o.Kind), labelCol: o.LabelColumn}
	if ed.isClass {
		ed.labels, ed.newClass, ed.classes = c.labels, d.newClass, d.classes
	}
	if rep.MadeSplit {
		ed.split = c.split
	}
	for k, sh := range shards {
		if err := writeShard(ctx, f, sh, sc.meta[k], o, ed); err != nil {
			return nil, err
		}
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := storage.WriteFile(ctx, storage.Join(o.Output, ReportFile), append(b, '\n')); err != nil {
		return nil, err
	}
	return rep, nil
}

// labels returns each row's class: the label column's value, or the class named in the
// caption by the prompt.
func labels(c *corpus, sc *scanned, labelCol string, prompt Prompt) ([]string, error) {
	out := make([]string, len(c.captions))
	for i, cap := range c.captions {
		if !c.ok[i] {
			continue
		}
		if labelCol != "" {
			v := strings.TrimSpace(sc.aux[labelCol][i])
			if v == "" {
				return nil, fmt.Errorf("row %d (id %q): empty --label-column %q", i, sc.ids[i], labelCol)
			}
			out[i] = v
			continue
		}
		cl, ok := prompt.Class(cap)
		if !ok {
			return nil, fmt.Errorf("row %d (id %q): caption %q is not of the form %q; give the class column with --label-column, or the captions' template with --prompt", i, sc.ids[i], cap, prompt.Format("{}"))
		}
		out[i] = cl
	}
	return out, nil
}

// sameDir reports whether two paths name the same place.
func sameDir(a, b string) bool {
	clean := func(p string) string {
		if strings.Contains(p, "://") {
			return strings.TrimRight(p, "/")
		}
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
		return filepath.Clean(p)
	}
	return clean(a) == clean(b)
}

// checkOutputEmpty refuses an output that already holds a dataset of the format: mixing old
// and new shards would make a dataset that is neither.
func checkOutputEmpty(ctx context.Context, format, out string) error {
	globs := []string{"*.parquet"}
	if format == (embdir.Format{}).Name() {
		globs = []string{"img_emb/*", "text_emb/*", "metadata/*"}
	}
	for _, g := range append(globs, ReportFile) {
		files, err := storage.List(ctx, storage.Join(out, g))
		if err != nil {
			continue // nothing there yet
		}
		for _, f := range files {
			if !strings.HasPrefix(storage.Base(f), ".") {
				return fmt.Errorf("--output %s already holds %s: choose a new directory (or remove the old copy)", out, f)
			}
		}
	}
	return nil
}

// level formats a fraction as the summary prints it.
func level(x float64) string {
	if math.IsNaN(x) {
		return "-"
	}
	return fmt.Sprintf("%.4f", x)
}
