package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/x/beamx"

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
it without embedding again.
`

func runEmbed(args []string) error {
	var c pipeline.EmbedConfig
	fs := flag.CommandLine // Beam's runner flags are defined there
	fs.Init("lemon embed", flag.ContinueOnError)
	fs.Usage = func() {
		cli.PrintHelp(fs, embedUsage, func(name string) bool { return ourFlags[name] },
			cli.Group{Heading: "Input and output flags", Flags: []string{"input", "input-format", "output", "dtype", "id-column", "caption-column", "image-bytes-column", "image-path-column", "image-extension", "allow-outside-paths", "image-column", "verbose"}},
			cli.Group{Heading: "Encoder flags", Flags: []string{"image-model", "text-model", "vocab", "device", "batch-size", "threads"}})
		fmt.Fprint(fs.Output(), "\nRunner flags are Beam's, as for 'lemon score' (default --runner prism).\n")
	}
	fs.StringVar(&c.Input, "input", "", "images and captions: webdataset tars, Parquet with an image column (img2dataset's, or a Hugging Face dataset), or a CSV of image paths and captions")
	fs.StringVar(&c.InputFormat, "input-format", "auto", "auto, webdataset, img2parquet or pathcsv")
	fs.StringVar(&c.Output, "output", "", "output directory (clip-retrieval layout)")
	dtype := fs.String("dtype", "float32", "float32 or float16")
	defineColumnFlags(fs, &c.Columns, false)
	fs.BoolVar(&c.Columns.AllowOutsidePaths, "allow-outside-paths", false, "path CSV input: also read images outside the CSV's folder (absolute paths, .., links out); by default such rows go to errors")
	for _, n := range []string{"input", "input-format", "output", "dtype", "allow-outside-paths", "verbose"} {
		ourFlags[n] = true
	}
	defineEmbedFlags(fs, &c.Embed)
	verbose := fs.Bool("verbose", false, "also print Beam's and the runner's own log lines")
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
	p, s := beam.NewPipelineWithRoot()
	pipeline.BuildEmbed(s, plan, append([]string{"lemon", "embed"}, args...))
	if isDryRun() {
		printDryRun(*verbose)
	} else if !*verbose {
		slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	}
	start := time.Now()
	if err := beamx.Run(ctx, p); err != nil {
		return fmt.Errorf("the job failed: %w", err)
	}
	if isDryRun() || isAsync() {
		logf("lemon: job built (dry run) or submitted; it writes %s itself", storage.Join(c.Output, rundir.ManifestFile))
		return nil
	}
	b, err := storage.ReadFile(ctx, storage.Join(c.Output, rundir.ManifestFile))
	if err != nil {
		return fmt.Errorf("the job finished but wrote no manifest: %w", err)
	}
	var m transforms.EmbedManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	logf("lemon: done in %s: %d rows in, %d embedded, %d errors; wrote %s", time.Since(start).Round(time.Millisecond), m.Counts["rows_in"], m.Counts["embedded"], m.Counts["errors"], c.Output)
	return nil
}
