package rundir

import (
	"encoding/json"
	"time"
)

// Header is what every lemon run's manifest starts with, a scoring run's (Manifest) and an
// embedding run's (transforms.EmbedManifest) alike: which run, where it stands, on what. A run's
// life (Begin, Finish, End) reads and writes only these fields.
type Header struct {
	Tool    string   `json:"tool"` // "lemon" (lemon score) or "lemon embed"
	Version string   `json:"version"`
	Status  Status   `json:"status"`
	RunID   string   `json:"run_id"`
	Error   string   `json:"error,omitempty"` // why a run failed or was interrupted
	Command []string `json:"command,omitempty"`
	Input   string   `json:"input"`
	Format  string   `json:"format"`
	// Columns are the input's resolved column options (dataset.Options), so that readers of
	// the run (lemon report's thumbnails) open the input as the run did.
	Columns json.RawMessage `json:"columns,omitempty"`
	Shards  int             `json:"shards"`
	Dim     int             `json:"dim"`
	// TempDir is the run's own temporary folder (removed when the run ends; a later run into
	// the same output removes it if the run was killed). Empty for a run that has none.
	TempDir    string             `json:"temp_dir,omitempty"`
	StartedAt  time.Time          `json:"started_at"`
	FinishedAt *time.Time         `json:"finished_at"` // null until the run ends
	Timings    map[string]float64 `json:"timings,omitempty"`
}

// RunHeader returns the header, so that every manifest type that embeds a Header is a Record.
func (h *Header) RunHeader() *Header { return h }

// Record is a run's manifest: anything that embeds a Header.
type Record interface{ RunHeader() *Header }

// Manifest is manifest.json of a scoring run: what ran, on what, where it stands, and what came
// out. The launcher writes it when a run starts (Running), the job's last stage when every
// shard is written (Complete, with the counts, threshold and search figures), and the launcher
// again if the job fails or is interrupted.
type Manifest struct {
	Header
	Reference json.RawMessage   `json:"reference"`
	Params    json.RawMessage   `json:"params"`
	Filter    json.RawMessage   `json:"filter"`
	Search    Search            `json:"search"`
	Threshold *float64          `json:"threshold"` // null when nothing is rejected
	Counts    Counts            `json:"counts"`
	Outputs   map[string]string `json:"outputs"`
	Versions  map[string]string `json:"versions"`
}

// Search is the manifest's "search": how the search was cut into tasks, what it did (Figures,
// measured by the job) and what the plan predicted it would do.
type Search struct {
	Shape            string `json:"shape"`
	BlockRows        int64  `json:"block_rows"`
	KNNBackend       string `json:"knn_backend"`
	Exact            bool   `json:"exact"`
	WorkerMemoryMiB  int    `json:"worker_memory_mib"`
	Workers          int    `json:"workers"`
	QueryRowsPerTask int64  `json:"query_rows_per_task"`
	TileRows         int64  `json:"tile_rows"`
	Figures
	Sketch    Sketch  `json:"sketch"`
	Predicted Figures `json:"predicted"`
}

// Sketch is what the search's sketch did (see knn/sketch.go): tiles it checked and tiles it
// showed could hold no neighbour and so were not computed. Both are 0 where no search used one
// (small blocks or dimensions, or data it would not help, which a sample decides).
type Sketch struct {
	TilesChecked int64 `json:"tiles_checked"`
	TilesSkipped int64 `json:"tiles_skipped"`
}

// Figures are the search's costs: tasks run, bytes read from and written to the run's
// temporary storage, bytes of scored rows handed to the runner's shuffle, the most memory one
// task held (its embeddings, packed copies, candidate sets and lists, as accounted by the
// task), and the floating-point operations of the products (2 per multiply-add).
type Figures struct {
	Tasks               int64   `json:"tasks"`
	TempReadBytes       int64   `json:"temp_read_bytes"`
	TempWriteBytes      int64   `json:"temp_write_bytes"`
	ShuffleBytes        int64   `json:"shuffle_bytes"`
	PeakTaskMemoryBytes int64   `json:"peak_task_memory_bytes"`
	Flops               float64 `json:"flops"`
}

// Counts proves that every row went somewhere: RowsIn = Kept + Rejected + Errors.
type Counts struct {
	RowsIn   int64 `json:"rows_in"`
	Kept     int64 `json:"kept"`
	Rejected int64 `json:"rejected"`
	Errors   int64 `json:"errors"`
}
