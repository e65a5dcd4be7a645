package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/lemon-curation/lemon/pipeline"
	"github.com/lemon-curation/lemon/rundir"
	"github.com/lemon-curation/lemon/storage"
	"github.com/lemon-curation/lemon/transforms"

	"github.com/lemon-curation/lemon/internal/cli"
)

const embedUsage = `Usage: lemon embed --input RAW --output DIR --image-model IMG.onnx --text-model TXT.onnx [flags]

Embeds images and captions (webdataset tars, Parquet with an image column as img2dataset and
Hugging Face datasets write it, or a CSV of image paths) with your CLIP encoders and writes the
clip-retrieval layout: DIR/img_emb/img_emb_N.npy, DIR/text_emb/text_emb_N.npy
(L2-normalised), DIR/metadata/metadata_N.parquet (key, caption), DIR/errors/ (rows that could
not be embedded, with the reason) and DIR/manifest.json. 'lemon score --input DIR' then scores
it without embedding again, once the manifest says the run is complete. DIR is a run directory
as lemon score's output is: locked while the run writes it, and refused if it already holds a
run unless --overwrite is given.
`

func runEmbed(args []string) error {
	var c pipeline.EmbedConfig
	fs := flag.CommandLine // Beam's runner flags are defined there
	fs.Init("lemon embed", flag.ContinueOnError)
	fs.Usage = func() {
		cli.PrintHelp(fs, embedUsage, func(name string) bool { return ourFlags[name] },
			cli.Group{Heading: "Input and output flags", Flags: []string{"input", "input-format", "output", "overwrite", "dtype", "id-column", "caption-column", "image-bytes-column", "image-path-column", "image-extension", "allow-outside-paths", "image-column", "verbose"}},
			cli.Group{Heading: "Encoder flags", Flags: []string{"image-model", "text-model", "vocab", "device", "batch-size", "threads"}})
		fmt.Fprint(fs.Output(), "\nRunner flags are Beam's, as for 'lemon score' (default --runner prism).\n")
	}
	fs.StringVar(&c.Input, "input", "", "images and captions: webdataset tars, Parquet with an image column (img2dataset's, or a Hugging Face dataset), or a CSV of image paths and captions")
	fs.StringVar(&c.InputFormat, "input-format", "auto", "auto, webdataset, img2parquet or pathcsv")
	fs.StringVar(&c.Output, "output", "", "output directory (clip-retrieval layout)")
	dtype := fs.String("dtype", "float32", "float32 or float16")
	defineColumnFlags(fs, &c.Columns, false)
	fs.BoolVar(&c.Columns.AllowOutsidePaths, "allow-outside-paths", false, "path CSV input: also read images outside the CSV's folder (absolute paths, .., links out); by default such rows go to errors")
	for _, n := range []string{"input", "input-format", "output", "overwrite", "dtype", "allow-outside-paths", "verbose"} {
		ourFlags[n] = true
	}
	defineEmbedFlags(fs, &c.Embed)
	verbose := fs.Bool("verbose", false, "also print Beam's and the runner's own log lines")
	overwrite := fs.Bool("overwrite", false, "replace the run --output already holds (finished or not): its folders and manifest are removed first")
	if help, err := cli.Parse(fs, args); help || err != nil {
		return err
	}
	c.Dtype = map[string]string{"float32": "<f4", "float16": "<f2"}[*dtype]
	if c.Dtype == "" {
		return cli.Usagef("--dtype must be float32 or float16")
	}
	if f := fs.Lookup("runner"); f != nil && f.Value.String() == "" {
		f.Value.Set("prism")
	}
	if err := preparePaths(jobPath{"input", &c.Input}, jobPath{"output", &c.Output}); err != nil {
		return cli.UsageError{Err: err}
	}
	defaultWorkerBinary()
	beam.Init()
	ctx := context.Background()
	plan, err := pipeline.CheckEmbed(ctx, c)
	if err != nil {
		return cli.UsageError{Err: err}
	}
	logf("lemon: embedding %d rows in %d shard(s) of %s (%s) with %s and %s", plan.Rows, len(plan.Input.Shards), c.Input, plan.Input.Format, c.Embed.ImageModel, c.Embed.TextModel)
	m := plan.Manifest(append([]string{"lemon", "embed"}, args...))
	p, s := beam.NewPipelineWithRoot()
	pipeline.BuildEmbed(s, plan, m)
	dryRun := isDryRun()
	if dryRun {
		printDryRun(*verbose)
	} else {
		if !*verbose {
			slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
		}
		start := rundir.Start{Out: c.Output, Dirs: rundir.EmbedDirs, Overwrite: *overwrite, Async: isAsync()}
		if err := rundir.Begin(ctx, start, &m); err != nil {
			return err
		}
	}
	return runJob(ctx, p, c.Output, plan.RunID, dryRun, &transforms.EmbedManifest{}, func(took time.Duration) error {
		var m transforms.EmbedManifest
		if err := rundir.ReadRecord(ctx, c.Output, &m); err != nil {
			return fmt.Errorf("the job returned, but its manifest is unreadable: %w", err)
		}
		if m.Status != rundir.Complete {
			return fmt.Errorf("the job returned, but %s says the run is %s", storage.Join(c.Output, rundir.ManifestFile), m.Status)
		}
		logf("lemon: done in %s: %d rows in, %d embedded, %d errors; wrote %s", took.Round(time.Millisecond), m.Counts["rows_in"], m.Counts["embedded"], m.Counts["errors"], c.Output)
		return nil
	})
}
