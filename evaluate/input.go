package evaluate

import (
	"context"
	"fmt"
	"math"

	"github.com/lemon-curation/lemon/dataset"
	_ "github.com/lemon-curation/lemon/dataset/embdir"     // the clip-retrieval layout
	_ "github.com/lemon-curation/lemon/dataset/embparquet" // Parquet with embedding columns
)

// vectors are the embeddings of the table's rows, read back from the run's input: the baselines
// that need them (CLIP Logits, caption clusters for deep kNN, the downstream classifier) are
// computed from the same vectors the run scored.
type vectors struct {
	source string // the dataset read
	dim    int
	// image and text hold row i's L2-normalised embedding at [i*dim, (i+1)*dim), in float64.
	image, text []float64
	caption     []string // row i's caption, as the input has it
}

func (v *vectors) img(i int) []float64 { return v.image[i*v.dim : (i+1)*v.dim] }
func (v *vectors) txt(i int) []float64 { return v.text[i*v.dim : (i+1)*v.dim] }

// inputPath is the dataset the run scored: --input, else the manifest's input (a relative path
// there is relative to where `lemon score` ran, which is usually where eval runs too).
func (r *Report) inputPath(o Options) string {
	if o.Input != "" {
		return o.Input
	}
	return r.input
}

// readVectors reads the embeddings of every table row from the run's input, joining on the id
// (the first occurrence of an id, as `lemon score` keeps it). It returns a reason, not an error,
// when the input cannot serve: none known, raw images, or rows missing.
func (r *Report) readVectors(ctx context.Context, o Options) (*vectors, string, error) {
	t := r.table
	in := r.inputPath(o)
	switch {
	case in == "":
		return nil, "the run's input is unknown (no manifest.json input); name it with --input", nil
	case t.id == nil:
		return nil, fmt.Sprintf("kept/ and rejected/ have no id column (looked for %v) to join the input's embeddings on; name it with --id-column", idColumns), nil
	}
	f, err := dataset.Open(ctx, in, "auto")
	if err != nil {
		return nil, fmt.Sprintf("the run's input is not an embedding dataset readable from here (%v); a run on raw images has no stored embeddings (embed them with `lemon embed` and score that), and a relative input path in manifest.json is relative to where `lemon score` ran (name the dataset with --input)", err), nil
	}
	cols := dataset.Options{IDColumn: o.IDColumn, CaptionColumn: o.CaptionColumn}
	shards, err := f.Plan(ctx, in, cols)
	if err != nil {
		return nil, "", fmt.Errorf("reading the run's input for the baselines: %w", err)
	}
	if len(shards) == 0 {
		return nil, fmt.Sprintf("the run's input %s has no shards", in), nil
	}
	pos := make(map[string]int, t.n())
	for i, id := range t.id {
		pos[id] = i
	}
	v := &vectors{source: in, dim: shards[0].Dim}
	v.image, v.text = make([]float64, t.n()*v.dim), make([]float64, t.n()*v.dim)
	v.caption = make([]string, t.n())
	found := make([]bool, t.n())
	nFound := 0
	for _, sh := range shards {
		if sh.Dim != v.dim {
			return nil, "", fmt.Errorf("%s: shard %s has dimension %d, shard %s %d", in, sh.Name, sh.Dim, shards[0].Name, v.dim)
		}
		err := f.Read(ctx, sh, cols, func(rec dataset.Record) error {
			i, ok := pos[rec.ID]
			if !ok || found[i] || rec.Err != "" {
				return nil // not scored (bad input), or a later duplicate of a scored id
			}
			if len(rec.Image) != v.dim || len(rec.Text) != v.dim {
				return fmt.Errorf("%s row %d: embeddings of %d and %d values, want %d", sh.Name, rec.Index, len(rec.Image), len(rec.Text), v.dim)
			}
			if !normalise(v.img(i), rec.Image) || !normalise(v.txt(i), rec.Text) {
				return fmt.Errorf("%s row %d (id %q): a zero or non-finite embedding, yet the run scored the row: is --input the run's input?", sh.Name, rec.Index, rec.ID)
			}
			v.caption[i] = rec.Caption
			found[i] = true
			nFound++
			return nil
		})
		if err != nil {
			return nil, "", fmt.Errorf("reading the run's input for the baselines: %w", err)
		}
	}
	if nFound != t.n() {
		for i, ok := range found {
			if !ok {
				return nil, fmt.Sprintf("%d scored rows are not in the run's input %s (row %q for one): is --input the dataset the run scored?", t.n()-nFound, in, t.id[i]), nil
			}
		}
	}
	return v, "", nil
}

// normalise writes x / ||x|| into dst in float64; false for a zero or non-finite vector.
func normalise(dst []float64, x []float32) bool {
	var ss float64
	for _, a := range x {
		ss += float64(a) * float64(a)
	}
	norm := math.Sqrt(ss)
	if !(norm > 0) || math.IsInf(norm, 0) {
		return false
	}
	for j, a := range x {
		dst[j] = float64(a) / norm
	}
	return true
}

func dot(a, b []float64) float64 {
	var s float64
	for j := range a {
		s += a[j] * b[j]
	}
	return s
}
