package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/x/beamx"
	"github.com/goccy/go-yaml"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/embed"
	"github.com/lemon-curation/lemon/pipeline"
	"github.com/lemon-curation/lemon/rundir"
	"github.com/lemon-curation/lemon/score"
	"github.com/lemon-curation/lemon/storage"
	"github.com/lemon-curation/lemon/tiling"

	"github.com/lemon-curation/lemon/internal/cli"
)

// logf prints progress lines on stderr.
var logf = log.New(os.Stderr, "", log.Ltime).Printf

func versionString() string {
	return fmt.Sprintf("lemon %s (%s %s/%s)", rundir.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// LoadConfig reads a YAML config over the defaults. Unknown keys are errors, so a typo does not
// silently leave a default in place.
func LoadConfig(path string, c *pipeline.Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := yaml.UnmarshalWithOptions(b, c, yaml.Strict()); err != nil {
		return fmt.Errorf("%s: %s", path, yaml.FormatError(err, false, true))
	}
	return nil
}

// configFlag finds --config in args before the flags are defined, so the config's values can be
// the flags' defaults and explicit flags still win.
func configFlag(args []string) string {
	for i, a := range args {
		for _, p := range []string{"--config=", "-config="} {
			if strings.HasPrefix(a, p) {
				return a[len(p):]
			}
		}
		if (a == "--config" || a == "-config") && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

type thresholdFlag struct{ v **float64 }

func (t thresholdFlag) String() string {
	if t.v == nil || *t.v == nil {
		return ""
	}
	return strconv.FormatFloat(**t.v, 'g', -1, 64)
}
func (t thresholdFlag) Set(s string) error {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("not a number: %q", s)
	}
	*t.v = &f
	return nil
}

type distanceFlag struct{ d *score.Distance }

func (f distanceFlag) String() string {
	if f.d == nil {
		return ""
	}
	return string(*f.d)
}
func (f distanceFlag) Set(s string) error {
	*f.d = score.Distance(s)
	return nil
}

// ourFlags are lemon's own flags, for the help text; the rest of flag.CommandLine is Beam's.
var ourFlags = map[string]bool{}

// inputFormats are the names --input-format takes besides auto.
const inputFormats = "embdir, parquet, datacomp (embeddings), webdataset, img2parquet, pathcsv (images and captions)"

// defineColumnFlags adds the flags that say where a format finds ids, captions and images, one
// flag per meaning, and the deprecated --image-column and --text-column, which meant a
// different one for each format (dataset.Options.Resolve maps them once the format is known).
// Without embeddings, only the flags of inputs of images and captions are defined.
func defineColumnFlags(fs *flag.FlagSet, o *dataset.Options, embeddings bool) {
	str := func(p *string, name, usage string) { fs.StringVar(p, name, *p, usage); ourFlags[name] = true }
	str(&o.IDColumn, "id-column", "column (webdataset: .json field) holding row ids (default: first of key, uid, id; DataComp: uid); Parquet of images without one gets ids FILE:ROW")
	str(&o.CaptionColumn, "caption-column", "column holding captions (default: first of caption, text; DataComp: text; webdataset: the .txt member)")
	if embeddings {
		str(&o.ImageEmbeddingColumn, "image-embedding-column", "Parquet with embeddings: list<float> image embedding column (default image_embedding)")
		str(&o.TextEmbeddingColumn, "text-embedding-column", "Parquet with embeddings: list<float> text embedding column (default text_embedding)")
		str(&o.EmbeddingModel, "embedding-model", "DataComp input: which .npz arrays to read, b32 (b32_img, b32_txt) or l14 (l14_img, l14_txt) (default b32)")
	}
	str(&o.ImageBytesColumn, "image-bytes-column", "Parquet with images: the encoded-image column, binary or Hugging Face's struct{bytes, path} (default: first of jpg, jpeg, png, webp, image, img, image_bytes, bytes)")
	str(&o.ImagePathColumn, "image-path-column", "CSV of image paths: the image path column (default: first of image, image_path, path, filepath, file_name)")
	str(&o.ImageExtension, "image-extension", "webdataset: the image member's extension (default: first of jpg, jpeg, png, webp, gif)")
	if embeddings {
		str(&o.ImageColumn, "image-column", "deprecated, by input format: --image-embedding-column (parquet), --image-bytes-column (img2parquet), --image-path-column (pathcsv) or --image-extension (webdataset)")
		str(&o.TextColumn, "text-column", "deprecated: --text-embedding-column (parquet)")
	} else {
		str(&o.ImageColumn, "image-column", "deprecated, by input format: --image-bytes-column (img2parquet), --image-path-column (pathcsv) or --image-extension (webdataset)")
	}
}

func defineScoreFlags(fs *flag.FlagSet, c *pipeline.Config) {
	str := func(p *string, name, usage string) { fs.StringVar(p, name, *p, usage); ourFlags[name] = true }
	num := func(p *float64, name, usage string) { fs.Float64Var(p, name, *p, usage); ourFlags[name] = true }
	fs.String("config", "", "YAML config (e.g. configs/lemon-fix.yaml); flags given explicitly override it")
	ourFlags["config"] = true
	str(&c.Input, "input", "input dataset: embeddings (a clip-retrieval directory img_emb/ text_emb/ metadata/, Parquet with embedding columns, or DataComp Parquet + .npz shards) or images and captions (webdataset tars, Parquet with an image column as img2dataset and Hugging Face write it, a CSV of image paths; these need --image-model and --text-model); Parquet is found at any depth under the folder")
	str(&c.InputFormat, "input-format", "input format: auto, "+inputFormats)
	str(&c.Output, "output", "output directory (local path or gs://...)")
	defineColumnFlags(fs, &c.Columns, true)
	fs.BoolVar(&c.Columns.AllowOutsidePaths, "allow-outside-paths", c.Columns.AllowOutsidePaths, "path CSV input: also read images outside the CSV's folder (absolute paths, .., links out); by default such rows go to errors")
	ourFlags["allow-outside-paths"] = true
	fs.IntVar(&c.K, "k", c.K, "neighbours per modality")
	ourFlags["k"] = true
	fs.Var(distanceFlag{&c.Distance}, "distance", "cosine or euclidean")
	ourFlags["distance"] = true
	fs.BoolVar(&c.DiscreteText, "discrete-text", c.DiscreteText, "classification data: in s_n, caption distance is 1 if captions differ, else 0")
	ourFlags["discrete-text"] = true
	num(&c.Beta, "beta", "weight of s_n (image neighbours' caption disagreement)")
	num(&c.Gamma, "gamma", "weight of s_m (caption neighbours' image disagreement)")
	num(&c.Tau1n, "tau1n", "s_n: discount of far image neighbours")
	num(&c.Tau2n, "tau2n", "s_n: discount of neighbours that look mislabelled themselves")
	num(&c.Tau1m, "tau1m", "s_m: discount of far caption neighbours")
	num(&c.Tau2m, "tau2m", "s_m: discount of neighbours that look mislabelled themselves")
	str(&c.Reference, "reference", "reference dataset to find neighbours in (default: the input itself); a reference row with the query's id is the query and is excluded")
	str(&c.ReferenceFormat, "reference-format", "reference format: auto, "+inputFormats)
	fs.IntVar(&c.ReferenceSample, "reference-sample", c.ReferenceSample, "use a seeded random sample of N input rows as the reference set (the paper caps it at 50000)")
	ourFlags["reference-sample"] = true
	fs.Int64Var(&c.Seed, "seed", c.Seed, "seed for --reference-sample")
	ourFlags["seed"] = true
	num(&c.RejectFraction, "reject-fraction", "reject this fraction of rows, highest scores first")
	fs.Var(thresholdFlag{&c.Threshold}, "threshold", "reject rows whose score is at least this (overrides --reject-fraction)")
	ourFlags["threshold"] = true
	str(&c.ScoresFormat, "scores-format", "parquet or csv")
	fs.BoolVar(&c.EmitNeighbours, "emit-neighbours", c.EmitNeighbours, "add each row's k image and text neighbour ids to the scores")
	ourFlags["emit-neighbours"] = true
	fs.BoolVar(&c.SaveNeighbourLists, "save-neighbour-lists", c.SaveNeighbourLists, "also write OUT/neighbours/ with each neighbour's distances and d_mm, from which scores can be recomputed for other hyperparameters (lemon tune uses this)")
	ourFlags["save-neighbour-lists"] = true
	fs.BoolVar(&c.WriteUIDs, "write-uids", c.WriteUIDs, "also write OUT/kept_uids.npy and OUT/rejected_uids.npy, the kept and rejected rows' uids in DataComp's subset format (numpy dtype u8,u8, sorted); ids must be 32 lowercase hex digits (DataComp's uid column), rows whose id is not go to errors")
	ourFlags["write-uids"] = true
	fs.Int64Var(&c.BlockRows, "block-rows", c.BlockRows, "rows per search block: memory per task is about 2 blocks x rows x dim x 8 bytes")
	ourFlags["block-rows"] = true
	str(&c.SearchShape, "search-shape", "how the search is cut into tasks: auto (the cheapest that fits, see 'lemon plan'), memory (tasks hold the whole reference), stream (query groups stream reference tiles) or pairs (tile pairs, partial lists merged per tile)")
	fs.IntVar(&c.WorkerMemoryMiB, "worker-memory-mib", c.WorkerMemoryMiB, "memory one search task may hold, in MiB: it sizes query groups and reference tiles")
	ourFlags["worker-memory-mib"] = true
	fs.IntVar(&c.Workers, "workers", c.Workers, "worker processes the runner runs at once, for sizing tasks (default: 1 on prism; else --max_num_workers or --num_workers if given, else 16)")
	ourFlags["workers"] = true
	fs.IntVar(&c.WorkerCores, "cores", c.WorkerCores, "CPU cores of a worker, for the time estimates that choose the search shape (default: this machine's)")
	str(&c.WorkerGPU, "gpu", "a worker's GPU (h100, h200, a100, l4), for the time estimates; see 'lemon plan'")
	ourFlags["cores"] = true
	str(&c.ReferenceSplit, "reference-split", "use only the input rows whose split column holds this value (e.g. train) as the reference set; with --reference-sample, sample from them")
	str(&c.Columns.SplitColumn, "split-column", "the column --reference-split reads (default split)")
	str(&c.KNNBackend, "knn-backend", "neighbour-search kernel: auto (fastest on this CPU), avx512bf16, avx512, go, or cuda (NVIDIA GPU: loads libcuda and NVRTC at run time, $LEMON_NVRTC_LIB)")
	defineEmbedFlags(fs, &c.Embed)
	str(&c.TempDir, "temp-dir", "where search blocks are kept during the run (default OUTPUT/.lemon-tmp); on a cluster it must be shared storage such as gs://")
}

const scoreText = `Usage: lemon score --input DIR --output OUT [--config FILE] [flags]

Scores every image-caption pair with LEMoN: score = d_mm + beta*s_n + gamma*s_m, higher meaning
more likely mislabelled (defaults: LEMoN_fix, k=30, cosine, beta=gamma=5, tau1=0.1, tau2=5).
Writes OUT/scores/, OUT/kept/, OUT/rejected/, OUT/errors/ (one file per input shard; in the
input's own layout for images and captions, clip-retrieval folders and DataComp shards,
embeddings included) and OUT/manifest.json; with --write-uids also
OUT/kept_uids.npy and OUT/rejected_uids.npy, DataComp subset files.

Input layouts (detected; --input-format names one):
  embdir       clip-retrieval / LAION: img_emb/img_emb_N.npy, text_emb/text_emb_N.npy, metadata/
  parquet      Parquet with list<float> embedding columns
  datacomp     DataComp: NNNNNNNN.parquet (uid, text, ...) beside NNNNNNNN.npz (b32_img, ...)
  webdataset   img2dataset tars (NNNNN.tar, .tar.gz) with NNNNN.parquet beside them
  img2parquet  Parquet with an image column: img2dataset's, or a Hugging Face dataset
               (image struct{bytes, path}, text), files at any depth (data/train-*.parquet)
  pathcsv      a CSV of image paths and captions
The last three are images and captions: give --image-model and --text-model to embed them.
`

// scoreGroups are score's flags under headings; plan's help shows them too.
var scoreGroups = []cli.Group{
	{Heading: "Input flags", Flags: []string{"input", "input-format", "id-column", "caption-column", "image-embedding-column", "text-embedding-column", "embedding-model", "image-bytes-column", "image-path-column", "image-extension", "allow-outside-paths", "split-column", "image-column", "text-column"}},
	{Heading: "Encoder flags (inputs of images and captions)", Flags: []string{"image-model", "text-model", "vocab", "device", "batch-size", "threads"}},
	{Heading: "LEMoN flags", Flags: []string{"config", "k", "distance", "discrete-text", "beta", "gamma", "tau1n", "tau2n", "tau1m", "tau2m"}},
	{Heading: "Reference flags", Flags: []string{"reference", "reference-format", "reference-sample", "reference-split", "seed"}},
	{Heading: "Output flags", Flags: []string{"output", "overwrite", "reject-fraction", "threshold", "scores-format", "emit-neighbours", "save-neighbour-lists", "write-uids", "verbose"}},
	{Heading: "Search flags", Flags: []string{"search-shape", "block-rows", "worker-memory-mib", "workers", "cores", "gpu", "knn-backend", "temp-dir"}},
}

const runnerText = `
Runner flags (Apache Beam's own, passed through):
  --runner prism (default, in-process) | universal | flink | spark | dataflow
  --endpoint HOST:PORT       job server for universal, flink and spark
  --project, --region, --staging_location, --temp_location, --worker_binary
                             Dataflow; see the README's "Running on a cluster"
  --dry_run                  Dataflow: print the job instead of submitting it
`

func scoreUsage(fs *flag.FlagSet) func() {
	return func() {
		cli.PrintHelp(fs, scoreText, func(name string) bool { return ourFlags[name] }, scoreGroups...)
		fmt.Fprint(fs.Output(), runnerText)
	}
}

func runScore(args []string) error {
	c := pipeline.Defaults()
	if p := configFlag(args); p != "" {
		if err := LoadConfig(p, &c); err != nil {
			return cli.UsageError{Err: err}
		}
	}
	fs := flag.CommandLine // Beam's runner flags are defined there
	fs.Init("lemon score", flag.ContinueOnError)
	fs.Usage = scoreUsage(fs)
	verbose := fs.Bool("verbose", false, "also print Beam's and the runner's own log lines")
	overwrite := fs.Bool("overwrite", false, "replace the run --output already holds (finished or not): its folders, manifest and temporary files are removed first")
	ourFlags["verbose"], ourFlags["overwrite"] = true, true
	defineScoreFlags(fs, &c)
	if help, err := cli.Parse(fs, args); help || err != nil {
		return err
	}
	if f := fs.Lookup("runner"); f != nil && f.Value.String() == "" {
		f.Value.Set("prism")
	}
	runner := fs.Lookup("runner").Value.String()
	if err := preparePaths(jobPath{"input", &c.Input}, jobPath{"output", &c.Output}, jobPath{"reference", &c.Reference}, jobPath{"temp-dir", &c.TempDir}); err != nil {
		return cli.UsageError{Err: err}
	}
	defaultWorkerBinary()
	c.WorkersElsewhere = !workersShareDisk()
	beam.Init()
	ctx := context.Background()
	resolveWorkers(fs, &c, runner)

	plan, err := pipeline.Check(ctx, c)
	if err != nil {
		return cli.UsageError{Err: err}
	}
	logf("lemon: scoring %d rows in %d shard(s) of %s (%s, dim %d); reference %d rows; k=%d, %s; runner %s",
		plan.Rows, len(plan.Input.Shards), c.Input, plan.Input.Format, plan.Input.Shards[0].Dim, plan.RefRows, c.K, c.Distance, runner)
	logf("lemon: search shape %s: %d tasks, at most %s per task (budget %d MiB); predicted temporary storage %s read, %s written",
		plan.Search.Shape, plan.Search.Tasks, tiling.Bytes(float64(plan.Search.PeakTaskMemoryBytes)), c.WorkerMemoryMiB,
		tiling.Bytes(float64(plan.Search.TempReadBytes)), tiling.Bytes(float64(plan.Search.TempWriteBytes)))

	command := append([]string{"lemon", "score"}, args...)
	p, s := beam.NewPipelineWithRoot()
	pipeline.Build(s, plan, command)
	dryRun := isDryRun()
	if dryRun {
		printDryRun(*verbose)
	} else if !*verbose {
		// Beam and prism log every job-state change at INFO; lemon prints its own progress.
		slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	}
	if !dryRun {
		m := plan.Manifest(command)
		start := rundir.Start{Out: c.Output, Dirs: rundir.ScoreDirs, Files: rundir.ScoreFiles, Overwrite: *overwrite, Async: isAsync()}
		if err := rundir.Begin(ctx, start, &m); err != nil {
			return err
		}
	}
	return runJob(ctx, p, c.Output, plan.RunID, dryRun, &rundir.Manifest{}, scoreDone(ctx, c.Output))
}

// runJob runs the built job and sees the run to its end: on failure, or when a signal (Ctrl-C,
// SIGTERM) stops it, the run is marked so (rundir.End, reading the manifest into blank, an
// empty manifest of the run's kind), its temporary files removed and its lock released; on
// success the job has marked it complete itself, and done reports it.
func runJob(ctx context.Context, p *beam.Pipeline, out, runID string, dryRun bool, blank rundir.Record, done func(time.Duration) error) error {
	start := time.Now()
	runCtx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := beamx.Run(runCtx, p)
	interrupted := runCtx.Err() != nil && ctx.Err() == nil // before stop, which cancels runCtx too
	stop()
	switch {
	case dryRun:
		if err != nil {
			return fmt.Errorf("the job failed: %w", err)
		}
		logf("lemon: dry run: the job above was built, not submitted")
		return nil
	case interrupted:
		logf("lemon: stopped by a signal; marking the run interrupted and removing its temporary files")
		if endErr := rundir.End(ctx, out, runID, rundir.Interrupted, errors.New("stopped by a signal before it finished"), blank); endErr != nil {
			logf("lemon: %v", endErr)
		}
		return fmt.Errorf("interrupted: %s holds an incomplete run (rerun with --overwrite)", out)
	case err != nil:
		if endErr := rundir.End(ctx, out, runID, rundir.Failed, err, blank); endErr != nil {
			logf("lemon: %v", endErr)
		}
		return fmt.Errorf("the job failed: %w", err)
	case isAsync():
		logf("lemon: job submitted; it writes %s, removes its temporary files and releases %s itself", storage.Join(out, rundir.ManifestFile), out)
		return nil
	}
	return done(time.Since(start))
}

// scoreDone reports a finished scoring run from its manifest.
func scoreDone(ctx context.Context, out string) func(time.Duration) error {
	return func(took time.Duration) error {
		m, err := rundir.RequireComplete(ctx, out)
		if err != nil {
			return fmt.Errorf("the job returned, but %w", err)
		}
		thr := "none (nothing rejected)"
		if m.Threshold != nil {
			thr = strconv.FormatFloat(*m.Threshold, 'g', 6, 64)
		}
		logf("lemon: done in %s: %d rows in, %d kept, %d rejected (score >= %s), %d errors; see %s",
			took.Round(time.Millisecond), m.Counts.RowsIn, m.Counts.Kept, m.Counts.Rejected, thr, m.Counts.Errors, storage.Join(out, rundir.ManifestFile))
		return nil
	}
}

// resolveWorkers fills in --workers when it was not given: one process on prism, else what
// Beam's own worker-count flags say, else 16.
func resolveWorkers(fs *flag.FlagSet, c *pipeline.Config, runner string) {
	if c.Workers > 0 {
		return
	}
	c.Workers = 1
	if runner == "prism" || runner == "direct" {
		return
	}
	c.Workers = 16
	for _, name := range []string{"max_num_workers", "num_workers"} {
		if f := fs.Lookup(name); f != nil {
			if n, err := strconv.Atoi(f.Value.String()); err == nil && n > 0 {
				c.Workers = n
				return
			}
		}
	}
}

// defineEmbedFlags adds the encoder flags, used when the input is raw images and captions.
func defineEmbedFlags(fs *flag.FlagSet, e *embed.Config) {
	if e.BatchSize == 0 {
		e.BatchSize = 64
	}
	if e.Device == "" {
		e.Device = "cpu"
	}
	fs.StringVar(&e.ImageModel, "image-model", e.ImageModel, "raw inputs: CLIP image encoder (.onnx: float32 [batch,3,S,S] -> [batch,D]); see deploy/export")
	fs.StringVar(&e.TextModel, "text-model", e.TextModel, "raw inputs: CLIP text encoder (.onnx: int64 [batch,77] -> [batch,D])")
	fs.StringVar(&e.Vocab, "vocab", e.Vocab, "CLIP BPE vocabulary (default: $LEMON_CLIP_VOCAB or third_party/clip-vocab, fetched by scripts/setup.sh)")
	fs.StringVar(&e.Device, "device", e.Device, "raw inputs: cpu or cuda (needs a GPU build of ONNX Runtime)")
	fs.IntVar(&e.BatchSize, "batch-size", e.BatchSize, "raw inputs: rows per encoder call")
	fs.IntVar(&e.Threads, "threads", e.Threads, "raw inputs: ONNX Runtime intra-op threads (0: all cores)")
	for _, n := range []string{"image-model", "text-model", "vocab", "device", "batch-size", "threads"} {
		ourFlags[n] = true
	}
}
