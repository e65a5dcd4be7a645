// Package pipeline builds lemon's Beam graph from a Config: read and validate the input, find
// each row's neighbours blockwise, score, pick the reject threshold, and write scores, kept,
// rejected and errors shards and the manifest. It checks the job before building it (Plan), so
// mistakes in the input are reported before any runner starts. It does no I/O of its own
// beyond planning: the transforms do.
package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/lemon-curation/lemon/dataset"
	_ "github.com/lemon-curation/lemon/dataset/embdir"      // clip-retrieval layout
	_ "github.com/lemon-curation/lemon/dataset/embparquet"  // Parquet with embedding columns
	_ "github.com/lemon-curation/lemon/dataset/img2parquet" // img2dataset Parquet (image bytes)
	_ "github.com/lemon-curation/lemon/dataset/pathcsv"     // CSV of image paths and captions
	_ "github.com/lemon-curation/lemon/dataset/webdataset"  // img2dataset webdataset tars
	"github.com/lemon-curation/lemon/embed"
	"github.com/lemon-curation/lemon/knn"
	"github.com/lemon-curation/lemon/score"
	"github.com/lemon-curation/lemon/storage"
	"github.com/lemon-curation/lemon/transforms"
)

// Version is lemon's version, recorded in every manifest.
const Version = "0.1.0"

// Config is one scoring job. Its YAML form is what `lemon score --config` reads and what
// configs/*.yaml hold; flags override it.
type Config struct {
	Input       string          `yaml:"input" json:"input"`
	InputFormat string          `yaml:"input_format" json:"input_format"`
	Columns     dataset.Options `yaml:",inline" json:"columns"`
	Output      string          `yaml:"output" json:"output"`

	score.Params `yaml:",inline"`

	// Embed configures the encoders for inputs of raw images and captions.
	Embed embed.Config `yaml:",inline" json:"embed"`

	// Reference set: the input itself (default), a separate dataset, or a seeded sample.
	Reference       string `yaml:"reference" json:"reference,omitempty"`
	ReferenceFormat string `yaml:"reference_format" json:"reference_format,omitempty"`
	ReferenceSample int    `yaml:"reference_sample" json:"reference_sample,omitempty"`
	Seed            int64  `yaml:"seed" json:"seed"`

	// Filtering: reject the top RejectFraction by score, or rows scoring at least Threshold.
	RejectFraction float64  `yaml:"reject_fraction" json:"reject_fraction"`
	Threshold      *float64 `yaml:"threshold" json:"threshold,omitempty"`

	ScoresFormat   string `yaml:"scores_format" json:"scores_format"`
	EmitNeighbours bool   `yaml:"emit_neighbours" json:"emit_neighbours"`
	// SaveNeighbourLists writes OUT/neighbours/ with every neighbour's distances (for tuning).
	SaveNeighbourLists bool `yaml:"save_neighbour_lists" json:"save_neighbour_lists"`

	// Search: rows per block (bounds memory: a task holds two blocks), kernel backend, and the
	// temporary storage for blocks (default OUTPUT/.lemon-tmp; must be reachable by all workers).
	BlockRows  int64  `yaml:"block_rows" json:"block_rows"`
	KNNBackend string `yaml:"knn_backend" json:"knn_backend"`
	// SearchShape is auto, memory (every task holds the whole reference) or blockwise (block
	// pairs, partial lists merged by a combiner); auto picks memory when the reference's
	// embeddings fit in SearchMemoryMiB.
	SearchShape     string `yaml:"search_shape" json:"search_shape"`
	SearchMemoryMiB int    `yaml:"search_memory_mib" json:"search_memory_mib"`
	TempDir         string `yaml:"temp_dir" json:"temp_dir,omitempty"`
}

// Defaults returns LEMoN_fix with lemon's default filtering and search settings.
func Defaults() Config {
	return Config{Params: score.Fixed(), RejectFraction: 0.1, ScoresFormat: "parquet", BlockRows: 8192, KNNBackend: "auto", SearchShape: "auto", SearchMemoryMiB: 2048, Seed: 1, InputFormat: "auto"}
}

// Plan is a checked job: the input's shards (and the reference's), ready to build.
type Plan struct {
	Config    Config
	Input     transforms.Input
	Reference *transforms.Input // nil unless Config.Reference is set
	Rows      int64             // input rows
	RefRows   int64             // reference rows (input rows for a self-join)
}

// Check validates a Config and plans its input: shard files, row counts and dimensions are
// checked here, with errors that name the file.
func Check(ctx context.Context, c Config) (*Plan, error) {
	if err := c.Params.Validate(); err != nil {
		return nil, err
	}
	if c.Input == "" {
		return nil, fmt.Errorf("no input: give --input DIR")
	}
	if c.Output == "" {
		return nil, fmt.Errorf("no output: give --output DIR")
	}
	if strings.TrimRight(c.Input, "/") == strings.TrimRight(c.Output, "/") {
		return nil, fmt.Errorf("--output must differ from --input")
	}
	if c.Threshold == nil && (c.RejectFraction < 0 || c.RejectFraction > 1) {
		return nil, fmt.Errorf("--reject-fraction must be between 0 and 1, got %v", c.RejectFraction)
	}
	if c.ScoresFormat != "parquet" && c.ScoresFormat != "csv" {
		return nil, fmt.Errorf("--scores-format must be parquet or csv, got %q", c.ScoresFormat)
	}
	if c.BlockRows < 1 {
		return nil, fmt.Errorf("--block-rows must be at least 1, got %d", c.BlockRows)
	}
	if c.SearchShape != "auto" && c.SearchShape != "memory" && c.SearchShape != "blockwise" {
		return nil, fmt.Errorf("--search-shape must be auto, memory or blockwise, got %q", c.SearchShape)
	}
	if c.Reference != "" && c.ReferenceSample > 0 {
		return nil, fmt.Errorf("give --reference or --reference-sample, not both")
	}
	if c.ReferenceSample < 0 {
		return nil, fmt.Errorf("--reference-sample must be positive, got %d", c.ReferenceSample)
	}
	if err := checkBackend(c.KNNBackend); err != nil {
		return nil, err
	}
	in, rows, err := planInput(ctx, c.Input, c.InputFormat, c.Columns, c.Embed)
	if err != nil {
		return nil, err
	}
	p := &Plan{Config: c, Input: in, Rows: rows, RefRows: rows}
	if c.DiscreteText {
		for _, sh := range in.Shards {
			if sh.Format == "embdir" && sh.Files["metadata"] == "" {
				return nil, fmt.Errorf("--discrete-text compares captions, but %s has no metadata files with captions", c.Input)
			}
		}
	}
	if c.Reference != "" {
		ref, refRows, err := planInput(ctx, c.Reference, c.ReferenceFormat, c.Columns, c.Embed)
		if err != nil {
			return nil, fmt.Errorf("reference: %w", err)
		}
		if ref.Shards[0].Dim != in.Shards[0].Dim {
			return nil, fmt.Errorf("dimension mismatch: the input has dimension %d, the reference %s has %d", in.Shards[0].Dim, c.Reference, ref.Shards[0].Dim)
		}
		p.Reference, p.RefRows = &ref, refRows
	}
	if c.ReferenceSample > 0 && int64(c.ReferenceSample) < p.RefRows {
		p.RefRows = int64(c.ReferenceSample)
	}
	if p.RefRows < int64(c.K)+1 {
		return nil, fmt.Errorf("the reference set has %d rows, but k=%d needs at least %d (k neighbours besides the row itself); lower --k or add rows", p.RefRows, c.K, c.K+1)
	}
	return p, nil
}

func planInput(ctx context.Context, path, format string, cols dataset.Options, ec embed.Config) (transforms.Input, int64, error) {
	var in transforms.Input
	if f, err := dataset.Open(ctx, path, format); err == nil {
		shards, err := f.Plan(ctx, path, cols)
		if err != nil {
			return in, 0, err
		}
		in = transforms.Input{Format: f.Name(), Options: cols, Shards: shards}
	} else {
		rf, rerr := dataset.DetectRaw(ctx, path, format)
		if rerr != nil || rf == nil {
			return in, 0, err
		}
		shards, err := rf.Plan(ctx, path, cols)
		if err != nil {
			return in, 0, err
		}
		if !ec.Enabled() {
			return in, 0, fmt.Errorf("%s holds images and captions (%s format): give --image-model and --text-model to embed them", path, rf.Name())
		}
		// Open the encoders once here, so a missing or mismatched model fails before any work.
		e, err := embed.Open(ec)
		if err != nil {
			return in, 0, err
		}
		dim := e.Dim()
		e.Close()
		for i := range shards {
			shards[i].Dim = dim
		}
		in = transforms.Input{Format: rf.Name(), Options: cols, Shards: shards, Raw: true}
	}
	if len(in.Shards) == 0 {
		return in, 0, fmt.Errorf("%s: no shards", path)
	}
	var rows int64
	for _, sh := range in.Shards {
		rows += sh.Rows
	}
	return in, rows, nil
}

// readBlocks reads (or, for raw inputs, embeds) a dataset into blocks.
func readBlocks(s beam.Scope, in transforms.Input, side string, c Config, tempDir string) (blocks, faults, ids beam.PCollection) {
	if in.Raw {
		return transforms.EmbedToBlocks(s, in, side, c.Embed, c.Distance, c.BlockRows, tempDir)
	}
	return transforms.ReadToBlocks(s, in, side, c.Distance, c.BlockRows, tempDir)
}

// TempDir is where the job keeps its blocks.
func (p *Plan) TempDir() string {
	if p.Config.TempDir != "" {
		return p.Config.TempDir
	}
	return storage.Join(p.Config.Output, ".lemon-tmp")
}

// InMemory says whether search tasks hold the whole reference set: when its embeddings fit in
// SearchMemoryMiB (or the shape is forced). Otherwise the search runs as block pairs whose
// partial lists are merged by a combiner.
func (p *Plan) InMemory() bool {
	switch p.Config.SearchShape {
	case "memory":
		return true
	case "blockwise":
		return false
	}
	bytes := p.RefRows * int64(p.Input.Shards[0].Dim) * 8 // two float32 modalities
	return bytes <= int64(p.Config.SearchMemoryMiB)<<20
}

// Build adds the scoring job to the pipeline's root scope.
func Build(s beam.Scope, p *Plan, command []string) {
	c := p.Config
	metric := knn.Cosine
	if c.Distance == score.Euclidean {
		metric = knn.Euclidean
	}
	sc := transforms.SearchConfig{Params: c.Params, Metric: metric, Backend: c.KNNBackend, BlockRows: c.BlockRows,
		TempDir: p.TempDir(), EmitIDs: c.EmitNeighbours || c.SaveNeighbourLists, SaveLists: c.SaveNeighbourLists, SelfJoin: p.Reference == nil && c.ReferenceSample == 0,
		ExternalReference: p.Reference != nil, InMemory: p.InMemory(), QueryRowsPerTask: 4 * c.BlockRows}

	blocks, faults, ids := readBlocks(s, p.Input, "input", c, sc.TempDir)
	dupFaults, dropped, firsts := transforms.FindDuplicateIDs(s, p.Input, ids, c.ReferenceSample > 0)
	faults = beam.Flatten(s, faults, dupFaults)

	refBlocks, droppedRef := blocks, dropped
	switch {
	case p.Reference != nil:
		rs := s.Scope("Reference")
		var refIDs beam.PCollection
		refBlocks, _, refIDs = readBlocks(rs, *p.Reference, "reference", c, sc.TempDir)
		_, droppedRef, _ = transforms.FindDuplicateIDs(rs, *p.Reference, refIDs, false)
	case c.ReferenceSample > 0:
		refBlocks = transforms.SampleReference(s, firsts, blocks, c.ReferenceSample, c.Seed, c.BlockRows, sc.TempDir)
		droppedRef = beam.CreateList(s, []int64{})
	}
	scored := transforms.Neighbours(s, p.Input, sc, blocks, refBlocks, dropped, droppedRef)

	f := transforms.Filter{Fraction: c.RejectFraction}
	if c.Threshold != nil {
		f = transforms.Filter{UseThreshold: true, Threshold: *c.Threshold}
	}
	threshold := transforms.RejectThreshold(s, scored, f)
	out := transforms.OutputConfig{Dir: c.Output, ScoresFormat: c.ScoresFormat, EmitNeighbours: c.EmitNeighbours, SaveLists: c.SaveNeighbourLists}
	counts := transforms.WriteShards(s, p.Input, out, scored, faults, threshold)
	transforms.WriteManifest(s, p.manifest(command), counts, threshold)
}

func (p *Plan) manifest(command []string) transforms.Manifest {
	c := p.Config
	js := func(v any) json.RawMessage { b, _ := json.Marshal(v); return b }
	ref := map[string]any{"kind": "self", "rows": p.RefRows}
	switch {
	case p.Reference != nil:
		ref = map[string]any{"kind": "dataset", "path": c.Reference, "format": p.Reference.Format, "rows": p.RefRows}
	case c.ReferenceSample > 0:
		ref = map[string]any{"kind": "sample", "size": c.ReferenceSample, "seed": c.Seed, "rows": p.RefRows}
	}
	filter := map[string]any{"reject_fraction": c.RejectFraction, "rule": "reject rows whose score is at least the threshold"}
	if c.Threshold != nil {
		filter = map[string]any{"threshold": *c.Threshold, "rule": "reject rows whose score is at least the threshold"}
	}
	versions := map[string]string{"lemon": Version, "go": runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			switch d.Path {
			case "github.com/apache/beam/sdks/v2", "github.com/apache/arrow-go/v18":
				versions[d.Path] = d.Version
			}
		}
	}
	outputs := map[string]string{"dir": c.Output, "scores": "scores/", "kept": "kept/", "rejected": "rejected/", "errors": "errors/"}
	return transforms.Manifest{
		Tool: "lemon", Version: Version, Command: command, Input: c.Input, Format: p.Input.Format,
		Shards: len(p.Input.Shards), Dim: p.Input.Shards[0].Dim, Reference: js(ref), Params: js(c.Params),
		Filter: js(filter), Search: js(map[string]any{"block_rows": c.BlockRows, "knn_backend": c.KNNBackend, "exact": true, "in_memory": p.InMemory()}),
		Outputs: outputs, Versions: versions, StartedAt: time.Now().UTC(),
	}
}

// checkBackend rejects a --knn-backend this machine cannot run. Workers check again, since on a
// distributed runner they may be other machines.
func checkBackend(name string) error {
	if err := knn.CheckBackend(name); err != nil {
		return fmt.Errorf("--knn-backend %q is not available here (available: auto, %s): %w", name, strings.Join(knn.Backends(), ", "), err)
	}
	return nil
}
