package transforms

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/lemon-curation/lemon/storage"
)

// Manifest is manifest.json: what ran, on what, and what came out. The job's last stage writes
// it, with the finish time and wall time, once every shard is written and the temporary
// blocks are removed, so it is there (and complete) however the job was launched.
type Manifest struct {
	Tool       string             `json:"tool"`
	Version    string             `json:"version"`
	Command    []string           `json:"command,omitempty"`
	Input      string             `json:"input"`
	Format     string             `json:"format"`
	Shards     int                `json:"shards"`
	Dim        int                `json:"dim"`
	Reference  json.RawMessage    `json:"reference"`
	Params     json.RawMessage    `json:"params"`
	Filter     json.RawMessage    `json:"filter"`
	Search     ManifestSearch     `json:"search"`
	Threshold  *float64           `json:"threshold"` // null when nothing is rejected
	Counts     ManifestCounts     `json:"counts"`
	Outputs    map[string]string  `json:"outputs"`
	Versions   map[string]string  `json:"versions"`
	StartedAt  time.Time          `json:"started_at"`
	FinishedAt time.Time          `json:"finished_at"`
	Timings    map[string]float64 `json:"timings,omitempty"`
}

// ManifestSearch is the manifest's "search": how the search was cut into tasks, what it did
// (SearchFigures, measured by the job) and what the plan predicted it would do.
type ManifestSearch struct {
	Shape            string `json:"shape"`
	BlockRows        int64  `json:"block_rows"`
	KNNBackend       string `json:"knn_backend"`
	Exact            bool   `json:"exact"`
	WorkerMemoryMiB  int    `json:"worker_memory_mib"`
	Workers          int    `json:"workers"`
	QueryRowsPerTask int64  `json:"query_rows_per_task"`
	TileRows         int64  `json:"tile_rows"`
	SearchFigures
	Predicted SearchFigures `json:"predicted"`
}

// SearchFigures are the search's costs: tasks run, bytes read from and written to the run's
// temporary storage, bytes of scored rows handed to the runner's shuffle, the most memory one
// task held (its embeddings, packed copies, candidate sets and lists, as accounted by the
// task), and the floating-point operations of the products (2 per multiply-add).
type SearchFigures struct {
	Tasks               int64   `json:"tasks"`
	TempReadBytes       int64   `json:"temp_read_bytes"`
	TempWriteBytes      int64   `json:"temp_write_bytes"`
	ShuffleBytes        int64   `json:"shuffle_bytes"`
	PeakTaskMemoryBytes int64   `json:"peak_task_memory_bytes"`
	Flops               float64 `json:"flops"`
}

// ManifestCounts proves that every row went somewhere: RowsIn = Kept + Rejected + Errors.
type ManifestCounts struct {
	RowsIn   int64 `json:"rows_in"`
	Kept     int64 `json:"kept"`
	Rejected int64 `json:"rejected"`
	Errors   int64 `json:"errors"`
}

// runTempDirs are the folders a run writes under its temporary directory: block files (the
// readers' block writer) and partial neighbour lists (the pairs shape).
var runTempDirs = []string{"blocks", "partials"}

// ManifestName is the manifest's file name in the output directory.
const ManifestName = "manifest.json"

// WriteManifest is the job's last stage: it sums the writers' counts and the search's figures
// (stats: SearchStats), fails the job if the counts do not add up, removes the run's temporary
// files from tempDir (every stage that reads them is upstream of the counts), and writes the
// manifest last, with the finish time and wall time (since m.StartedAt). Work that must happen
// once a run has succeeded belongs here.
func WriteManifest(s beam.Scope, m Manifest, tempDir string, counts, threshold, stats beam.PCollection) {
	s = s.Scope("WriteManifest")
	total := beam.Combine(s, &sumCountsFn{}, counts)
	search := beam.Combine(s, &sumStatsFn{}, stats)
	beam.ParDo0(s, &writeManifestFn{Manifest: m, TempDir: tempDir}, total, beam.SideInput{Input: threshold}, beam.SideInput{Input: search})
}

type sumStatsFn struct{}

func (sumStatsFn) CreateAccumulator() SearchStats                 { return SearchStats{} }
func (sumStatsFn) AddInput(a, s SearchStats) SearchStats          { return a.add(s) }
func (sumStatsFn) MergeAccumulators(a, b SearchStats) SearchStats { return a.add(b) }
func (sumStatsFn) ExtractOutput(a SearchStats) SearchStats        { return a }

type sumCountsFn struct{}

func (sumCountsFn) CreateAccumulator() Counts { return Counts{} }
func (sumCountsFn) AddInput(a, c Counts) Counts {
	return Counts{a.RowsIn + c.RowsIn, a.Kept + c.Kept, a.Rejected + c.Rejected, a.Errors + c.Errors}
}
func (f sumCountsFn) MergeAccumulators(a, b Counts) Counts { return f.AddInput(a, b) }
func (sumCountsFn) ExtractOutput(a Counts) Counts          { return a }

type writeManifestFn struct {
	Manifest Manifest
	TempDir  string
}

// ProcessElement runs once per job; a retry repeats it harmlessly (removing removed files is
// not an error, and the manifest is replaced atomically).
func (fn *writeManifestFn) ProcessElement(ctx context.Context, c Counts, thresholds func(*float64) bool, searches func(*SearchStats) bool) error {
	threshold := thresholdOf(thresholds)
	m := fn.Manifest
	var st SearchStats
	searches(&st)
	m.Search.SearchFigures = SearchFigures(st)
	m.Counts = ManifestCounts(c)
	if c.RowsIn != c.Kept+c.Rejected+c.Errors {
		return fmt.Errorf("internal error: counts do not add up: rows_in %d != kept %d + rejected %d + errors %d", c.RowsIn, c.Kept, c.Rejected, c.Errors)
	}
	if !math.IsInf(threshold, 1) {
		m.Threshold = &threshold
	}
	for _, sub := range runTempDirs {
		if err := storage.RemoveAll(ctx, storage.Join(fn.TempDir, sub)); err != nil {
			return fmt.Errorf("removing the run's temporary files: %w", err)
		}
	}
	storage.Remove(ctx, fn.TempDir) // where directories exist, and only if nothing else is in it
	m.FinishedAt = time.Now().UTC()
	m.Timings = map[string]float64{"wall_seconds": m.FinishedAt.Sub(m.StartedAt).Seconds()}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return storage.WriteFile(ctx, storage.Join(m.Outputs["dir"], ManifestName), append(b, '\n'))
}
