package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/lemon-curation/lemon/dataset/embdir"
	"github.com/lemon-curation/lemon/dataset/embparquet"
	"github.com/lemon-curation/lemon/embed/standin"
	"github.com/lemon-curation/lemon/synth"

	"github.com/lemon-curation/lemon/internal/cli"
)

const devUsage = `Usage: lemon dev make-dataset --out DIR [flags]
       lemon dev make-encoders --size tiny|vit-b-32 --out DIR [flags]

Tools for trying lemon out and testing it. 'lemon dev COMMAND --help' lists a command's flags.
`

const makeDatasetUsage = `Usage: lemon dev make-dataset --out DIR [flags]

Writes a synthetic CLIP-like dataset with known label errors: clustered image and caption
vectors, a share of rows with a swapped caption (is_error=true), in the clip-retrieval layout
(embdir) or as Parquet with embedding columns. Stand-in data, not from a real encoder.
`

const makeEncodersUsage = `Usage: lemon dev make-encoders --size tiny|vit-b-32 --out DIR [flags]

Writes stand-in CLIP encoders, DIR/image.onnx and DIR/text.onnx, with the real interface and
random weights (NOT a trained CLIP): tiny for tests, vit-b-32 with ViT-B/32's shapes and FLOPs
for benchmarks.
`

func runDev(args []string) error {
	switch {
	case len(args) > 0 && args[0] == "make-encoders":
		return makeEncoders(args[1:])
	case len(args) > 0 && args[0] == "make-dataset":
		return makeDataset(args[1:])
	case len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help" || args[0] == "help"):
		fmt.Print(devUsage)
		return nil
	case len(args) == 0:
		return cli.Usagef("lemon dev needs a command, make-dataset or make-encoders; see 'lemon dev --help'")
	}
	return cli.Usagef("unknown command %q of lemon dev (want make-dataset or make-encoders); see 'lemon dev --help'", args[0])
}

func makeDataset(args []string) error {
	o := synth.Defaults()
	fs := flag.NewFlagSet("lemon dev make-dataset", flag.ContinueOnError)
	fs.Usage = func() { cli.PrintHelp(fs, makeDatasetUsage, nil) }
	out := fs.String("out", "", "directory to write (required)")
	format := fs.String("format", "embdir", "embdir (clip-retrieval layout) or parquet")
	meta := fs.String("metadata", ".parquet", "embdir metadata files: .parquet, .csv, .jsonl or none")
	dtype := fs.String("dtype", "<f4", "embdir npy dtype: <f4 or <f2")
	shards := fs.Int("shards", 4, "number of shards")
	fs.IntVar(&o.Rows, "rows", o.Rows, "rows")
	fs.IntVar(&o.Dim, "dim", o.Dim, "embedding dimension")
	fs.IntVar(&o.Concepts, "concepts", o.Concepts, "concept clusters")
	fs.Float64Var(&o.Noise, "noise", o.Noise, "fraction of rows with a swapped caption (is_error=true)")
	fs.Uint64Var(&o.Seed, "seed", o.Seed, "random seed")
	fs.Float64Var(&o.Spread, "spread", o.Spread, "within-concept spread shared by an image and its caption")
	fs.Float64Var(&o.Modality, "modality-noise", 0, "noise each modality adds on its own (0: spread/2); larger blurs the image-caption match")
	fs.IntVar(&o.Groups, "families", 0, "group concepts into this many families of nearby concepts (0: independent concepts)")
	fs.Float64Var(&o.GroupSpread, "family-spread", 0.5, "distance scale between concepts of one family")
	fs.BoolVar(&o.Hard, "hard", false, "swap captions only within a family (semantically close swaps, like the paper's cat noise)")
	fs.BoolVar(&o.Split, "split", false, "add a seeded 80/10/10 split column (train/val/test)")
	if help, err := cli.Parse(fs, args); help || err != nil {
		return err
	}
	if *out == "" {
		return cli.Usagef("--out is required; see 'lemon dev make-dataset --help'")
	}
	rows, err := synth.Generate(o)
	if err != nil {
		return err
	}
	ctx := context.Background()
	parts := synth.Split(rows, *shards)
	switch *format {
	case "embdir":
		err = embdir.Write(ctx, *out, parts, embdir.WriteOptions{Dtype: *dtype, MetadataExt: *meta})
	case "parquet":
		err = embparquet.Write(ctx, *out, parts)
	default:
		return cli.Usagef("--format must be embdir or parquet; see 'lemon dev make-dataset --help'")
	}
	if err != nil {
		return err
	}
	fmt.Printf("wrote %d synthetic rows (dim %d, %.0f%% swapped captions, stand-in data, not from a real encoder) in %d shard(s) to %s\n", o.Rows, o.Dim, 100*o.Noise, *shards, *out)
	return nil
}

func makeEncoders(args []string) error {
	fs := flag.NewFlagSet("lemon dev make-encoders", flag.ContinueOnError)
	fs.Usage = func() { cli.PrintHelp(fs, makeEncodersUsage, nil) }
	size := fs.String("size", "tiny", "tiny (fast, for tests) or vit-b-32 (ViT-B/32 shapes and FLOPs, for benchmarks)")
	out := fs.String("out", "", "directory for image.onnx and text.onnx (required)")
	seed := fs.Uint64("seed", 1, "weight seed")
	if help, err := cli.Parse(fs, args); help || err != nil {
		return err
	}
	if *out == "" {
		return cli.Usagef("--out is required; see 'lemon dev make-encoders --help'")
	}
	if err := standin.Write(*out, *size, *seed); err != nil {
		return err
	}
	fmt.Printf("wrote stand-in encoders (%s, random weights: NOT a trained CLIP) to %s/image.onnx and %s/text.onnx\n", *size, *out, *out)
	return nil
}
