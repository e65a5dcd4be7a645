// Package golden loads the project's golden cases (testdata/golden/*.json, copied from
// shared/golden): small datasets with exact expected LEMoN scores and neighbour ids.
package golden

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"sort"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/score"
)

// Case is one golden file.
type Case struct {
	Name           string       `json:"name"`
	Params         score.Params `json:"params"`
	IDs            []string     `json:"ids"`
	Captions       []string     `json:"captions"`
	ImageEmbedding [][]float32  `json:"image_embedding"`
	TextEmbedding  [][]float32  `json:"text_embedding"`
	ReferenceIDs   []string     `json:"reference_ids"`
	IsError        []bool       `json:"is_error"`
	Expected       struct {
		Dmm   []float64 `json:"d_mm"`
		Sn    []float64 `json:"s_n"`
		Sm    []float64 `json:"s_m"`
		Score []float64 `json:"score"`
	} `json:"expected"`
	ExpectedNeighbours struct {
		Image [][]string `json:"image"`
		Text  [][]string `json:"text"`
	} `json:"expected_neighbours"`
	File string `json:"-"`
}

// Dir is testdata/golden in the repository.
func Dir() string {
	_, f, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(f), "..", "..", "testdata", "golden")
}

// All loads every case, sorted by file name.
func All() ([]*Case, error) {
	files, err := filepath.Glob(filepath.Join(Dir(), "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var out []*Case
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		c := &Case{File: f}
		if err := json.Unmarshal(b, c); err != nil {
			return nil, err
		}
		if c.Name == "" {
			c.Name = filepath.Base(f)
		}
		out = append(out, c)
	}
	return out, nil
}

// Rows returns the dataset rows, with is_error as an extra column.
func (c *Case) Rows() []dataset.Row {
	rows := make([]dataset.Row, len(c.IDs))
	for i := range rows {
		rows[i] = dataset.Row{ID: c.IDs[i], Caption: c.Captions[i], Image: c.ImageEmbedding[i], Text: c.TextEmbedding[i]}
		if c.IsError != nil {
			rows[i].Extra = map[string]string{"is_error": map[bool]string{true: "true", false: "false"}[c.IsError[i]]}
		}
	}
	return rows
}

// ReferenceRows returns the reference set's rows, in reference order (nil for a self-join).
func (c *Case) ReferenceRows() []dataset.Row {
	if c.ReferenceIDs == nil {
		return nil
	}
	all := c.Rows()
	idx := map[string]int{}
	for i, id := range c.IDs {
		idx[id] = i
	}
	out := make([]dataset.Row, len(c.ReferenceIDs))
	for i, id := range c.ReferenceIDs {
		out[i] = all[idx[id]]
	}
	return out
}
