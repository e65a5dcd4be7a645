package evaluate

import (
	"context"
	"fmt"

	"github.com/lemon-curation/lemon/storage"
)

// deepKNN is the deep kNN baseline (Bahri et al., "Deep k-NN for Noisy Labels", 2020) as the
// LEMoN authors run it: the share of a row's DeepKNNK nearest image neighbours whose label
// differs from the row's. On classification data (a --discrete-text run, or no more distinct
// captions than CaptionClusters) the label is the caption; on captioning data, where nearly
// every caption is unique and would make every neighbour "differ", it is the k-means cluster of
// the caption's embedding (captionClusters), as in the authors' run_deepknn.py. The neighbours
// are the run's own (scores/ image_neighbours, nearest first), so they come from the run's
// reference set. It returns nil and a reason when it cannot be computed.
func (r *Report) deepKNN(ctx context.Context, o Options) (vals []float64, note, reason string, err error) {
	t := r.table
	pq, err := listFiles(ctx, o.RunDir, "scores", "parquet")
	if err != nil {
		return nil, "", "", err
	}
	cs, err := listFiles(ctx, o.RunDir, "scores", "csv")
	if err != nil {
		return nil, "", "", err
	}
	files := append(pq, cs...)
	if len(files) == 0 {
		return nil, "", "the run has no scores/ files, which hold the neighbour ids", nil
	}
	if t.id == nil {
		return nil, "", fmt.Sprintf("kept/ and rejected/ have no id column (looked for %v) to join the scores' neighbours on; name it with --id-column", idColumns), nil
	}
	// Pass 1: every scored row's caption. Pass 2: each row's share of disagreeing neighbours.
	// Two passes keep only one string per row in memory, not k neighbour ids.
	captions := map[string]string{}
	var dup string
	_, err = readScores(ctx, files, false, func(s scoresRow) error {
		if _, ok := captions[s.id]; ok && dup == "" {
			dup = s.id
		}
		captions[s.id] = s.caption
		return nil
	})
	if err != nil {
		return nil, "", "", err
	}
	if dup != "" {
		return nil, "", fmt.Sprintf("id %q appears more than once in scores/, so neighbours cannot be matched to rows", dup), nil
	}
	if t.caption == nil {
		t.scoreCaptions = captions
	}
	label := captions
	distinct := map[string]bool{}
	for _, c := range captions {
		distinct[c] = true
	}
	discrete := r.runParams != nil && r.runParams.DiscreteText
	switch {
	case discrete:
		note = "labels: the captions (a --discrete-text run)"
	case len(distinct) <= o.CaptionClusters:
		note = fmt.Sprintf("labels: the captions (%d distinct, no more than the %d clusters)", len(distinct), o.CaptionClusters)
	default:
		v, why, err := r.vectors(ctx, o)
		if err != nil {
			return nil, "", "", err
		}
		if v == nil {
			return nil, "", fmt.Sprintf("%d distinct captions: deep kNN labels captioning data by clusters of caption embeddings, but %s", len(distinct), why), nil
		}
		train := t.otherIdx
		from := "training rows"
		if len(train) == 0 {
			train, from = allRows(t.n()), "all rows"
		}
		k := min(o.CaptionClusters, len(train))
		clusters := captionClusters(v, t.id, train, k)
		label = make(map[string]string, t.n())
		for i, id := range t.id {
			label[id] = clusters[i]
		}
		note = fmt.Sprintf("labels: %d k-means clusters of caption embeddings (fitted on the %d %s, seed %d), as the authors label captioning data", k, len(train), from, kmeansSeed)
	}
	share := make(map[string]float64, len(captions))
	var missing, short string
	noNeighbours, err := readScores(ctx, files, true, func(s scoresRow) error {
		if len(s.neighbours) < DefaultDeepKNNK {
			if short == "" {
				short = fmt.Sprintf("row %q has %d image neighbours in scores/", s.id, len(s.neighbours))
			}
			return nil
		}
		own, ok := label[s.id]
		if !ok {
			return nil // a row of scores/ that kept/ and rejected/ lack: reported below if needed
		}
		differ := 0
		for _, n := range s.neighbours[:DefaultDeepKNNK] {
			l, ok := label[n]
			if !ok {
				if missing == "" {
					missing = n
				}
				return nil
			}
			if l != own {
				differ++
			}
		}
		share[s.id] = float64(differ) / DefaultDeepKNNK
		return nil
	})
	switch {
	case err != nil:
		return nil, "", "", err
	case noNeighbours:
		return nil, "", "the run was made without --emit-neighbours: its scores files have no image_neighbours column", nil
	case missing != "":
		return nil, "", fmt.Sprintf("neighbour id %q is not among the run's scored rows (was a separate --reference used?); deep kNN needs every neighbour's label", missing), nil
	case short != "":
		return nil, "", fmt.Sprintf("deep kNN uses %d image neighbours, but %s (rerun lemon score with --k %d or more)", DefaultDeepKNNK, short, DefaultDeepKNNK), nil
	}
	out := make([]float64, t.n())
	for i, id := range t.id {
		v, ok := share[id]
		if !ok {
			return nil, "", fmt.Sprintf("row %q of %s has no row in scores/ (is --id-column right?)", id, storage.Base(t.files[t.file[i]])), nil
		}
		out[i] = v
	}
	return out, note, "", nil
}

func allRows(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}
