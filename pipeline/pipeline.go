// Package pipeline builds lemon's Beam graph from a Config: read and validate the input, find
// each row's neighbours blockwise, score, pick the reject threshold, and write scores, kept,
// rejected and errors shards and the manifest. It checks the job before building it (Plan), so
// mistakes in the input are reported before any runner starts. It does no I/O of its own
// beyond planning: the transforms do.
package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/datacomp"      // DataComp Parquet + npz; its uids
	_ "github.com/lemon-curation/lemon/dataset/embdir"      // clip-retrieval layout
	_ "github.com/lemon-curation/lemon/dataset/embparquet"  // Parquet with embedding columns
	_ "github.com/lemon-curation/lemon/dataset/img2parquet" // img2dataset Parquet (image bytes)
	_ "github.com/lemon-curation/lemon/dataset/pathcsv"     // CSV of image paths and captions
	_ "github.com/lemon-curation/lemon/dataset/webdataset"  // img2dataset webdataset tars
	"github.com/lemon-curation/lemon/embed"
	"github.com/lemon-curation/lemon/knn"
	"github.com/lemon-curation/lemon/rundir"
	"github.com/lemon-curation/lemon/score"
	"github.com/lemon-curation/lemon/storage"
	"github.com/lemon-curation/lemon/tiling"
	"github.com/lemon-curation/lemon/transforms"
)

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
	// WriteUIDs writes OUT/kept_uids.npy and OUT/rejected_uids.npy, DataComp subset files; the
	// ids must be DataComp uids (32 lowercase hex digits), and rows whose id is not go to errors.
	WriteUIDs bool `yaml:"write_uids" json:"write_uids,omitempty"`

	// ReferenceSplit: the reference is the input rows whose split column (Columns.SplitColumn)
	// holds this value (the paper's train split); --reference-sample samples from them.
	ReferenceSplit string `yaml:"reference_split" json:"reference_split,omitempty"`

	// Search: rows per block file, kernel backend, and the temporary storage for blocks
	// (default OUTPUT/.lemon-tmp; must be reachable by all workers).
	BlockRows  int64  `yaml:"block_rows" json:"block_rows"`
	KNNBackend string `yaml:"knn_backend" json:"knn_backend"`
	// SearchShape is auto or one of package tiling's shapes (memory, stream, pairs); auto
	// prices each for WorkerMemoryMiB per task and Workers at once and picks the cheapest.
	SearchShape     string `yaml:"search_shape" json:"search_shape"`
	WorkerMemoryMiB int    `yaml:"worker_memory_mib" json:"worker_memory_mib"`
	// Workers is how many worker processes the runner keeps busy at once (0: 1 on prism; on
	// other runners Beam's --max_num_workers or --num_workers if given, else 16).
	Workers int `yaml:"workers" json:"workers"`
	// WorkerCores and WorkerGPU describe a worker, for the time estimates that choose the
	// shape: cores of a CPU worker (0: this machine's), or a GPU kind (tiling.GPUs).
	WorkerCores int    `yaml:"worker_cores" json:"worker_cores,omitempty"`
	WorkerGPU   string `yaml:"worker_gpu" json:"worker_gpu,omitempty"`
	TempDir     string `yaml:"temp_dir" json:"temp_dir,omitempty"`

	// WorkersElsewhere says the job runs on other machines (a cluster): checks of this
	// machine's hardware (the kNN backend, the encoders' device) are left to the workers.
	WorkersElsewhere bool `yaml:"-" json:"-"`
}

// Defaults returns LEMoN_fix with lemon's default filtering and search settings.
func Defaults() Config {
	return Config{Params: score.Fixed(), RejectFraction: 0.1, ScoresFormat: "parquet", BlockRows: 8192, KNNBackend: "auto", SearchShape: "auto", WorkerMemoryMiB: 4096, Seed: 1, InputFormat: "auto"}
}

// Plan is a checked job: the input's shards (and the reference's), and the search's shape
// with its predicted cost, ready to build.
type Plan struct {
	Config    Config
	Input     transforms.Input
	Reference *transforms.Input // nil unless Config.Reference is set
	Rows      int64             // input rows
	RefRows   int64             // reference rows (an upper bound under --reference-split)
	// Search is the shape the job runs and its predicted cost; Shapes every shape's.
	Job     tiling.Job
	Search  tiling.Cost
	Shapes  []tiling.Cost
	Profile tiling.Profile
	// RunID names the run (its temporary folder, its lock); StartedAt is when it was planned.
	RunID     string
	StartedAt time.Time
}

// Check validates a Config and plans its input: shard files, row counts and dimensions are
// checked here, with errors that name the file. It also prices the search (package tiling)
// and picks its shape.
func Check(ctx context.Context, c Config) (*Plan, error) {
	if c.Input == "" {
		return nil, fmt.Errorf("no input: give --input DIR")
	}
	if c.Output == "" {
		return nil, fmt.Errorf("no output: give --output DIR")
	}
	if storage.Clean(c.Input) == storage.Clean(c.Output) {
		return nil, fmt.Errorf("--output must differ from --input")
	}
	if strings.HasPrefix(storage.Clean(c.Output), strings.TrimSuffix(storage.Clean(c.Input), "/")+"/") {
		// Formats that find their files at any depth would read the outputs as input next time.
		return nil, fmt.Errorf("--output %s is inside --input %s: put it elsewhere", c.Output, c.Input)
	}
	shape, err := checkConfig(&c)
	if err != nil {
		return nil, err
	}
	encoders := c.Embed
	if c.WorkersElsewhere {
		encoders.Device = "cpu" // planning only reads the embedding dimension
	}
	in, rows, err := planInput(ctx, c.Input, c.InputFormat, c.Columns, encoders)
	if err != nil {
		return nil, err
	}
	p := &Plan{Config: c, Input: in, Rows: rows, RefRows: rows, RunID: rundir.NewRunID(), StartedAt: time.Now().UTC()}
	for _, sh := range in.Shards {
		if sh.Format == "embdir" && sh.Files["metadata"] == "" {
			if c.DiscreteText {
				return nil, fmt.Errorf("--discrete-text compares captions, but %s has no metadata files with captions", c.Input)
			}
			if c.ReferenceSplit != "" {
				return nil, fmt.Errorf("--reference-split reads the %q column, but %s has no metadata files", c.Columns.SplitColumn, c.Input)
			}
		}
	}
	if in.Raw && c.ReferenceSplit != "" {
		return nil, fmt.Errorf("--reference-split reads a split column from embedding inputs (a clip-retrieval folder's metadata or Parquet); %s holds images: embed it first with 'lemon embed'", c.Input)
	}
	if c.Reference != "" {
		ref, refRows, err := planInput(ctx, c.Reference, c.ReferenceFormat, c.Columns, encoders)
		if err != nil {
			return nil, fmt.Errorf("reference: %w", err)
		}
		if ref.Shards[0].Dim != in.Shards[0].Dim {
			return nil, fmt.Errorf("dimension mismatch: the input has dimension %d, the reference %s has %d", in.Shards[0].Dim, c.Reference, ref.Shards[0].Dim)
		}
		p.Reference, p.RefRows = &ref, refRows
	}
	text, err := measureRows(ctx, in)
	if err != nil {
		return nil, err
	}
	if c.WriteUIDs {
		if err := checkUIDs(in, text); err != nil {
			return nil, err
		}
	}
	return p, p.choose(text, shape)
}

// Hypothetical is a dataset that need not exist, for `lemon plan --rows`: its size, and what
// the rows are like.
type Hypothetical struct {
	Rows      int64
	Dim       int
	Half      bool  // float16 embeddings (as LAION ships them)
	ShardRows int64 // rows per input shard
	// RefRows is the size of a separate reference dataset (with Config.Reference) or of the
	// split the reference is drawn from (with Config.ReferenceSplit); 0 means Rows.
	RefRows               int64
	IDBytes, CaptionBytes float64
}

// PlanHypothetical prices the search of a job over a dataset described by h rather than read
// from disk.
func PlanHypothetical(c Config, h Hypothetical) (*Plan, error) {
	if h.Rows < 1 || h.Dim < 1 || h.ShardRows < 1 {
		return nil, fmt.Errorf("--rows, --dim and --shard-rows must be at least 1")
	}
	shape, err := checkConfig(&c)
	if err != nil {
		return nil, err
	}
	shards := func(rows int64) []dataset.Shard {
		var out []dataset.Shard
		for off := int64(0); off < rows; off += h.ShardRows {
			out = append(out, dataset.Shard{Index: len(out), Offset: off, Rows: min(h.ShardRows, rows-off), Dim: h.Dim})
		}
		return out
	}
	p := &Plan{Config: c, Input: transforms.Input{Format: "hypothetical", Shards: shards(h.Rows)}, Rows: h.Rows, RefRows: h.Rows}
	if h.RefRows > 0 {
		p.RefRows = h.RefRows
	}
	if c.Reference != "" {
		ref := transforms.Input{Format: "hypothetical", Shards: shards(p.RefRows)}
		p.Reference = &ref
	}
	return p, p.choose(rowSample{idBytes: h.IDBytes, captionBytes: h.CaptionBytes, half: h.Half}, shape)
}

// checkConfig validates what does not depend on the input, and returns the forced search
// shape ("" for auto).
func checkConfig(c *Config) (tiling.Shape, error) {
	if err := c.Params.Validate(); err != nil {
		return "", err
	}
	if c.Threshold == nil && (c.RejectFraction < 0 || c.RejectFraction > 1) {
		return "", fmt.Errorf("--reject-fraction must be between 0 and 1, got %v", c.RejectFraction)
	}
	if c.ScoresFormat != "parquet" && c.ScoresFormat != "csv" {
		return "", fmt.Errorf("--scores-format must be parquet or csv, got %q", c.ScoresFormat)
	}
	if c.BlockRows < 1 {
		return "", fmt.Errorf("--block-rows must be at least 1, got %d", c.BlockRows)
	}
	shape, err := tiling.ParseShape(c.SearchShape)
	if err != nil {
		return "", err
	}
	if c.WorkerMemoryMiB < 1 {
		return "", fmt.Errorf("--worker-memory-mib must be at least 1, got %d", c.WorkerMemoryMiB)
	}
	if c.Workers < 0 {
		return "", fmt.Errorf("--workers must be at least 1, got %d", c.Workers)
	}
	c.Workers = max(1, c.Workers)
	if c.Reference != "" && c.ReferenceSample > 0 {
		return "", fmt.Errorf("give --reference or --reference-sample, not both")
	}
	if c.Reference != "" && c.ReferenceSplit != "" {
		return "", fmt.Errorf("give --reference or --reference-split, not both")
	}
	if c.ReferenceSample < 0 {
		return "", fmt.Errorf("--reference-sample must be positive, got %d", c.ReferenceSample)
	}
	if c.ReferenceSplit != "" && c.Columns.SplitColumn == "" {
		c.Columns.SplitColumn = "split"
	}
	if err := checkBackend(c.KNNBackend); err != nil {
		// On a cluster the workers' hardware is what counts, and they check it; a name that
		// is no backend at all is still an error here.
		if !c.WorkersElsewhere || !knn.KnownBackend(c.KNNBackend) {
			return "", err
		}
	}
	return shape, nil
}

// profile is the worker the time estimates assume.
func (c Config) profile() (tiling.Profile, error) {
	switch {
	case c.WorkerGPU != "" && c.WorkerCores > 0:
		return tiling.Profile{}, fmt.Errorf("give --cores or --gpu, not both")
	case c.WorkerGPU != "":
		return tiling.GPU(c.WorkerGPU)
	case c.WorkerCores > 0:
		return tiling.CPU(c.WorkerCores), nil
	}
	return tiling.CPU(runtime.NumCPU()), nil
}

// choose sizes the reference, describes the search for package tiling and picks its shape.
func (p *Plan) choose(text rowSample, shape tiling.Shape) error {
	c := p.Config
	if c.ReferenceSample > 0 && int64(c.ReferenceSample) < p.RefRows {
		p.RefRows = int64(c.ReferenceSample)
	}
	if p.RefRows < int64(c.K)+1 {
		return fmt.Errorf("the reference set has %d rows, but k=%d needs at least %d (k neighbours besides the row itself); lower --k or add rows", p.RefRows, c.K, c.K+1)
	}
	p.Job = p.searchJob(text)
	var err error
	if p.Profile, err = c.profile(); err != nil {
		return err
	}
	p.Search, p.Shapes, err = tiling.Choose(p.Job, p.budget(), p.Profile, shape)
	return err
}

// referenceRule is the reference rule of the input's read stage.
func (p *Plan) referenceRule() transforms.ReferenceRule {
	c := p.Config
	r := transforms.ReferenceRule{Split: c.ReferenceSplit}
	if c.ReferenceSample > 0 {
		r.Sample, r.Seed = true, c.Seed
		r.Threshold = transforms.SampleThreshold(int64(c.ReferenceSample), p.Rows)
		if c.ReferenceSplit != "" {
			// How many rows the split holds is not known before reading: every one of them
			// is a candidate.
			r.Threshold = math.MaxUint64
		}
	}
	return r
}

func (p *Plan) selfJoin() bool {
	c := p.Config
	return p.Reference == nil && c.ReferenceSample == 0 && c.ReferenceSplit == ""
}

func (p *Plan) budget() tiling.Budget {
	return tiling.Budget{TaskBytes: int64(p.Config.WorkerMemoryMiB) << 20, Workers: p.Config.Workers}
}

// searchJob describes the search for package tiling.
func (p *Plan) searchJob(text rowSample) tiling.Job {
	c := p.Config
	j := tiling.Job{QueryRows: p.Rows, RefRows: p.RefRows, Dim: p.Input.Shards[0].Dim, K: c.K, SelfJoin: p.selfJoin(),
		ValueBytes: 4, PackedBytes: 4, BlockRows: c.BlockRows, IDBytes: text.idBytes, CaptionBytes: text.captionBytes,
		EmitIDs: c.EmitNeighbours || c.SaveNeighbourLists, SaveLists: c.SaveNeighbourLists}
	if text.half {
		j.ValueBytes = 2
	}
	if knn.PacksBF16(c.KNNBackend) {
		j.PackedBytes = 2
	}
	for _, sh := range p.Input.Shards {
		j.Shards = append(j.Shards, sh.Rows)
	}
	switch {
	case p.Reference != nil:
		j.RefBlocksWritten = true
		for _, sh := range p.Reference.Shards {
			j.RefShards = append(j.RefShards, sh.Rows)
		}
	case c.ReferenceSample > 0:
		j.RefBlocksWritten = true
		j.SampleCandidates = transforms.SampleCandidates(int64(c.ReferenceSample), p.Rows)
		if c.ReferenceSplit != "" {
			j.SampleCandidates = p.Rows // an upper bound: the split's rows
		}
	case c.ReferenceSplit != "":
		j.RefBlocksWritten = true
	}
	return j
}

func planInput(ctx context.Context, path, format string, cols dataset.Options, ec embed.Config) (transforms.Input, int64, error) {
	var in transforms.Input
	if err := dataset.CheckExists(ctx, path); err != nil {
		return in, 0, err
	}
	if err := rundir.CheckInput(ctx, path); err != nil {
		return in, 0, err
	}
	if f, err := dataset.Open(ctx, path, format); err == nil {
		if cols, err = resolveColumns(ctx, cols, f.Name()); err != nil {
			return in, 0, err
		}
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
		if cols, err = resolveColumns(ctx, cols, rf.Name()); err != nil {
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

// resolveColumns turns the deprecated --image-column and --text-column into the options they
// mean for the format, saying so.
func resolveColumns(ctx context.Context, cols dataset.Options, format string) (dataset.Options, error) {
	cols, note, err := cols.Resolve(format)
	if note != "" {
		dataset.Notef(ctx, "%s", note)
	}
	return cols, err
}

// rowSample is what a look at the input's first rows says: the mean id and caption lengths,
// whether the embeddings are float16 values (so blocks store them in 2 bytes), and the first
// row with an id.
type rowSample struct {
	idBytes, captionBytes float64
	half                  bool
	firstID               string
	firstIDRow            int64
}

// checkUIDs refuses --write-uids before the job runs when the input's ids are not DataComp
// uids, judged by the first row with an id: ids that are row positions (a clip-retrieval
// folder without metadata), FILE:ROW (Parquet without an id column), or another column's
// values. Later rows whose id is not a uid go to errors.
func checkUIDs(in transforms.Input, s rowSample) error {
	for _, sh := range in.Shards {
		if sh.Format == "embdir" && sh.Files["metadata"] == "" {
			return fmt.Errorf("--write-uids writes DataComp uids, but %s has no metadata files: its ids are row positions", in.File(int32(sh.Index)))
		}
	}
	if s.firstID == "" {
		return nil // no row of the first shard has an id: they go to errors
	}
	if _, err := datacomp.ParseUID(s.firstID); err != nil {
		return fmt.Errorf("--write-uids writes DataComp uids, but row %d of %s has id %q, which %v; --id-column names the uid column", s.firstIDRow, in.File(0), s.firstID, strings.TrimPrefix(err.Error(), fmt.Sprintf("uid %q ", s.firstID)))
	}
	return nil
}

// sampleRows is how many rows measureRows looks at.
const sampleRows = 256

var errEnough = errors.New("enough rows")

// measureRows reads the first rows of the input's first shard. For raw inputs it reads ids
// and captions only (the embeddings will be float32).
func measureRows(ctx context.Context, in transforms.Input) (rowSample, error) {
	var s rowSample
	var n int
	s.half = !in.Raw
	add := func(index int64, id, caption string) error {
		if s.firstID == "" && id != "" {
			s.firstID, s.firstIDRow = id, index
		}
		s.idBytes += float64(len(id))
		s.captionBytes += float64(len(caption))
		n++
		if n >= sampleRows {
			return errEnough
		}
		return nil
	}
	var err error
	sh := in.Shards[0]
	if in.Raw {
		f, ferr := dataset.GetRaw(in.Format)
		if ferr != nil {
			return s, ferr
		}
		err = f.ReadRaw(ctx, sh, in.Options, func(r dataset.RawRecord) error { return add(r.Index, r.ID, r.Caption) })
	} else {
		f, ferr := dataset.Get(in.Format)
		if ferr != nil {
			return s, ferr
		}
		err = f.Read(ctx, sh, in.Options, func(r dataset.Record) error {
			if r.Err == "" && !(transforms.IsHalf(r.Image) && transforms.IsHalf(r.Text)) {
				s.half = false
			}
			return add(r.Index, r.ID, r.Caption)
		})
	}
	if err != nil && !errors.Is(err, errEnough) {
		return s, err
	}
	if n == 0 {
		return rowSample{idBytes: 12, captionBytes: 60}, nil
	}
	s.idBytes /= float64(n)
	s.captionBytes /= float64(n)
	return s, nil
}

// readBlocks reads (or, for raw inputs, embeds) a dataset into blocks.
func readBlocks(s beam.Scope, in transforms.Input, ec embed.Config, rc transforms.ReadConfig) transforms.ReadOutputs {
	if in.Raw {
		return transforms.EmbedToBlocks(s, in, ec, rc)
	}
	return transforms.ReadToBlocks(s, in, rc)
}

// TempDir is where the job keeps its blocks.
func (p *Plan) TempDir() string {
	root := p.Config.TempDir
	if root == "" {
		root = storage.Join(p.Config.Output, rundir.TempDirName)
	}
	return rundir.TempDir(root, p.RunID)
}

// Build adds the scoring job to the pipeline's root scope.
func Build(s beam.Scope, p *Plan, command []string) {
	c := p.Config
	metric := knn.Cosine
	if c.Distance == score.Euclidean {
		metric = knn.Euclidean
	}
	sc := transforms.SearchConfig{Params: c.Params, Metric: metric, Backend: c.KNNBackend, TempDir: p.TempDir(),
		EmitIDs: c.EmitNeighbours || c.SaveNeighbourLists, SaveLists: c.SaveNeighbourLists, SelfJoin: p.selfJoin(),
		ExternalReference: p.Reference != nil, Shape: p.Search.Shape, QueryRowsPerTask: p.Search.QueryRowsPerTask,
		TileRows: p.Search.TileRows, HeldRowBytes: p.Job.HeldRowBytes(), QueryRowBytes: p.Job.QueryRowBytes(),
		TaskBytes: p.budget().TaskBytes}
	rc := transforms.ReadConfig{Side: "input", Distance: c.Distance, BlockRows: p.Search.BlockRows, TempDir: sc.TempDir, Reference: p.referenceRule(), UIDs: c.WriteUIDs}

	in := readBlocks(s, p.Input, c.Embed, rc)
	dupFaults, dropped := transforms.FindDuplicateIDs(s, p.Input, in.IDs)
	faults := beam.Flatten(s, in.Faults, dupFaults)
	queryBlocks := in.Blocks
	if rc.Reference != (transforms.ReferenceRule{}) {
		// The read stage also wrote the reference's own blocks (a split, a sample's candidates).
		queryBlocks = transforms.BlocksOfSide(s, in.Blocks, "input")
	}
	stats := []beam.PCollection{in.Stats}

	refBlocks, droppedRef := queryBlocks, dropped
	switch {
	case p.Reference != nil:
		rs := s.Scope("Reference")
		rc := rc
		rc.Side, rc.Reference, rc.UIDs = "reference", transforms.ReferenceRule{}, false
		ref := readBlocks(rs, *p.Reference, c.Embed, rc)
		_, droppedRef = transforms.FindDuplicateIDs(rs, *p.Reference, ref.IDs)
		refBlocks = ref.Blocks
		stats = append(stats, ref.Stats)
	case c.ReferenceSample > 0:
		candidates := transforms.BlocksOfSide(s, in.Blocks, transforms.SideCandidates)
		complete := rc.Reference.Threshold == math.MaxUint64
		var st beam.PCollection
		refBlocks, st = transforms.SampleReference(s, candidates, in.SampleKeys, int64(c.ReferenceSample), c.Seed, complete, p.Search.BlockRows, sc.TempDir)
		droppedRef = beam.CreateList(s, []int64{}) // the sample holds first occurrences only
		stats = append(stats, st)
	case c.ReferenceSplit != "":
		refBlocks = transforms.BlocksOfSide(s, in.Blocks, transforms.SideSplit)
	}
	scored := transforms.Neighbours(s, p.Input, sc, queryBlocks, refBlocks, dropped, droppedRef)
	stats = append(stats, scored.Stats)

	f := transforms.Filter{Fraction: c.RejectFraction}
	if c.Threshold != nil {
		f = transforms.Filter{UseThreshold: true, Threshold: *c.Threshold}
	}
	threshold := transforms.RejectThreshold(s, scored.Keys, f)
	out := transforms.OutputConfig{Dir: c.Output, ScoresFormat: c.ScoresFormat, EmitNeighbours: c.EmitNeighbours, SaveLists: c.SaveNeighbourLists}
	if c.WriteUIDs {
		out.UIDRuns = storage.Join(sc.TempDir, "uids")
	}
	counts := transforms.WriteShards(s, p.Input, out, scored.Outcomes, faults, threshold)
	transforms.WriteManifest(s, p.Manifest(command), out, counts, threshold, beam.Flatten(s, stats...))
}

// Manifest is the run's manifest as it starts (status running, no counts yet).
func (p *Plan) Manifest(command []string) rundir.Manifest {
	c := p.Config
	js := func(v any) json.RawMessage { b, _ := json.Marshal(v); return b }
	ref := map[string]any{"kind": "self", "rows": p.RefRows}
	switch {
	case p.Reference != nil:
		ref = map[string]any{"kind": "dataset", "path": c.Reference, "format": p.Reference.Format, "rows": p.RefRows}
	case c.ReferenceSample > 0:
		ref = map[string]any{"kind": "sample", "size": c.ReferenceSample, "seed": c.Seed, "rows": p.RefRows}
		if c.ReferenceSplit != "" {
			ref["split"] = c.ReferenceSplit
		}
	case c.ReferenceSplit != "":
		ref = map[string]any{"kind": "split", "split": c.ReferenceSplit, "column": c.Columns.SplitColumn}
	}
	filter := map[string]any{"reject_fraction": c.RejectFraction, "rule": "reject rows whose score is at least the threshold"}
	if c.Threshold != nil {
		filter = map[string]any{"threshold": *c.Threshold, "rule": "reject rows whose score is at least the threshold"}
	}
	versions := map[string]string{"lemon": rundir.Version, "go": runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			switch d.Path {
			case "github.com/apache/beam/sdks/v2", "github.com/apache/arrow-go/v18":
				versions[d.Path] = d.Version
			}
		}
	}
	outputs := map[string]string{"dir": c.Output}
	for _, d := range rundir.ScoreDirs {
		if d != rundir.NeighboursDir || c.SaveNeighbourLists {
			outputs[d] = d + "/"
		}
	}
	if c.WriteUIDs {
		outputs["kept_uids"], outputs["rejected_uids"] = rundir.KeptUIDsFile, rundir.RejectedUIDsFile
	}
	return rundir.Manifest{
		Header: rundir.Header{Tool: "lemon", Version: rundir.Version, Status: rundir.Running, RunID: p.RunID, Command: command,
			Input: c.Input, Format: p.Input.Format, Columns: js(p.Input.Options), Shards: len(p.Input.Shards), Dim: p.Input.Shards[0].Dim,
			TempDir: p.TempDir(), StartedAt: p.StartedAt},
		Reference: js(ref), Params: js(c.Params), Filter: js(filter),
		Search: rundir.Search{Shape: string(p.Search.Shape), BlockRows: p.Search.BlockRows,
			KNNBackend: c.KNNBackend, Exact: true, WorkerMemoryMiB: c.WorkerMemoryMiB, Workers: c.Workers,
			QueryRowsPerTask: p.Search.QueryRowsPerTask, TileRows: p.Search.TileRows, Predicted: Predicted(p.Search)},
		Outputs: outputs, Versions: versions,
	}
}

// Predicted is a cost's figures under the manifest's names.
func Predicted(c tiling.Cost) rundir.Figures {
	return rundir.Figures{Tasks: c.Tasks, TempReadBytes: c.TempReadBytes, TempWriteBytes: c.TempWriteBytes,
		ShuffleBytes: c.ShuffleBytes, PeakTaskMemoryBytes: c.PeakTaskMemoryBytes, Flops: c.Flops}
}

// checkBackend rejects a --knn-backend this machine cannot run. Workers check again, since on a
// distributed runner they may be other machines.
func checkBackend(name string) error {
	if err := knn.CheckBackend(name); err != nil {
		return fmt.Errorf("--knn-backend %q is not available here (available: auto, %s): %w", name, strings.Join(knn.Backends(), ", "), err)
	}
	return nil
}
