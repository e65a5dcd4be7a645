// Package synth generates CLIP-like datasets with known label errors: rows drawn around concept
// clusters shared by both modalities, a modality gap between image and text embeddings, and a
// fraction of rows whose caption (and text embedding) was swapped with another row's. It is for
// demos, tests and benchmarks; nothing here comes from a real encoder.
package synth

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/lemon-curation/lemon/dataset"
)

// Options shape a generated dataset.
type Options struct {
	Rows     int
	Dim      int
	Concepts int     // clusters
	Spread   float64 // within-cluster noise relative to the cluster centre's scale
	// Modality is the noise each modality adds on its own (what an image shows that its caption
	// does not say, and vice versa); larger values blur the image-caption match. 0 means
	// Spread/2.
	Modality float64
	Gap      float64 // size of the constant offset between the modalities
	Noise    float64 // fraction of rows whose caption is swapped with another row's
	Seed     uint64
	// Groups > 0 makes concepts come in Groups families whose centres sit close together
	// (GroupSpread apart), and Hard makes every swap take a caption from another concept of the
	// same family: a semantically close swap, like the paper's "cat" noise.
	Groups      int
	GroupSpread float64
	Hard        bool
	// Split adds a seeded 80/10/10 split column (train, val, test).
	Split bool
}

// Defaults is a small, easy-to-read dataset.
func Defaults() Options {
	return Options{Rows: 2000, Dim: 64, Concepts: 40, Spread: 0.6, Gap: 0.5, Noise: 0.2, Seed: 1}
}

// Generate returns the rows with extra columns is_error ("true"/"false"), concept, family (the
// concept's family; the concept itself without families) and original_caption.
func Generate(o Options) ([]dataset.Row, error) {
	if o.Rows < 1 || o.Dim < 2 || o.Concepts < 1 {
		return nil, fmt.Errorf("synth: need rows >= 1, dim >= 2, concepts >= 1")
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x1e40))
	gauss := func(scale float64) []float64 {
		v := make([]float64, o.Dim)
		for i := range v {
			v[i] = rng.NormFloat64() * scale / math.Sqrt(float64(o.Dim))
		}
		return v
	}
	centres := make([][]float64, o.Concepts)
	family := make([]int, o.Concepts)
	var families [][]float64
	for g := 0; g < o.Groups; g++ {
		families = append(families, gauss(1))
	}
	for i := range centres {
		if o.Groups > 0 {
			family[i] = i % o.Groups
			off := gauss(o.GroupSpread)
			centres[i] = make([]float64, o.Dim)
			for d := range centres[i] {
				centres[i][d] = families[family[i]][d] + off[d]
			}
		} else {
			family[i] = i
			centres[i] = gauss(1)
		}
	}
	gapImg, gapTxt := gauss(o.Gap), gauss(o.Gap)
	rows := make([]dataset.Row, o.Rows)
	concept := make([]int, o.Rows)
	for i := range rows {
		c := rng.IntN(o.Concepts)
		concept[i] = c
		shared := gauss(o.Spread) // what the image and its true caption have in common
		img, txt := make([]float32, o.Dim), make([]float32, o.Dim)
		m := o.Modality
		if m == 0 {
			m = o.Spread * 0.5
		}
		ni, nt := gauss(m), gauss(m)
		for d := 0; d < o.Dim; d++ {
			img[d] = float32(centres[c][d] + shared[d] + ni[d] + gapImg[d])
			txt[d] = float32(centres[c][d] + shared[d] + nt[d] + gapTxt[d])
		}
		caption := fmt.Sprintf("a photo of concept %d, scene %d", c, i)
		rows[i] = dataset.Row{ID: fmt.Sprintf("s%07d", i), Caption: caption, Image: img, Text: txt,
			Extra: map[string]string{"is_error": "false", "concept": fmt.Sprint(c), "family": fmt.Sprint(family[c]), "original_caption": caption}}
		if o.Split {
			u := rng.Float64()
			rows[i].Extra["split"] = map[bool]string{true: "train", false: map[bool]string{true: "val", false: "test"}[u < 0.9]}[u < 0.8]
		}
	}
	// Rows of each family, for hard swaps.
	byFamily := map[int][]int{}
	for i := range rows {
		byFamily[family[concept[i]]] = append(byFamily[family[concept[i]]], i)
	}
	// Swap captions: row i takes the caption and text embedding of a random other row.
	orig := make([]dataset.Row, len(rows))
	copy(orig, rows)
	for _, i := range rng.Perm(o.Rows)[:int(math.Floor(o.Noise*float64(o.Rows)))] {
		j := rng.IntN(o.Rows - 1)
		if j >= i {
			j++
		}
		if o.Hard {
			// Another concept of the same family; fall back to any row if there is none.
			cands := byFamily[family[concept[i]]]
			for try := 0; try < 20; try++ {
				k := cands[rng.IntN(len(cands))]
				if concept[k] != concept[i] {
					j = k
					break
				}
			}
		}
		rows[i].Caption, rows[i].Text = orig[j].Caption, orig[j].Text
		rows[i].Extra["is_error"] = "true"
	}
	return rows, nil
}

// Split cuts rows into n nearly equal shards, in order.
func Split(rows []dataset.Row, n int) [][]dataset.Row {
	if n < 1 {
		n = 1
	}
	var out [][]dataset.Row
	for i := 0; i < n; i++ {
		lo, hi := i*len(rows)/n, (i+1)*len(rows)/n
		out = append(out, rows[lo:hi])
	}
	return out
}
