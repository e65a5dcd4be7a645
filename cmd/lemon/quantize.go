package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/lemon-curation/lemon/embed/quantize"
	"github.com/lemon-curation/lemon/internal/cli"
)

const quantizeUsage = `Usage: lemon quantize --input MODEL.onnx --output MODEL.int8.onnx [--per-tensor]

Writes an int8 copy of an exported ONNX encoder (image or text) for faster CPU embedding, as
ONNX Runtime's quantize_dynamic does: every MatMul and Gemm with a constant float32 weight matrix
becomes a DynamicQuantizeMatMul (ONNX Runtime's contrib op) with int8 weights, symmetric, one
scale per output column by default; activations are quantised at run time. Everything else is
copied unchanged. Pass the result to 'lemon embed' or 'lemon score' as --image-model or
--text-model; embeddings change slightly (make bench-embed measures the speed-up and the cosine
to the float32 encoder). The float32 encoder stays the default: quantise only on purpose.
`

func runQuantize(args []string) error {
	fs := flag.NewFlagSet("lemon quantize", flag.ContinueOnError)
	fs.Usage = func() { cli.PrintHelp(fs, quantizeUsage, nil) }
	in := fs.String("input", "", "float32 ONNX encoder to quantise (required)")
	out := fs.String("output", "", "path of the int8 model to write (required; written atomically)")
	perTensor := fs.Bool("per-tensor", false, "one scale per weight matrix instead of one per output column (less accurate)")
	if help, err := cli.Parse(fs, args); help || err != nil {
		return err
	}
	if *in == "" || *out == "" {
		return cli.Usagef("--input and --output are required; see 'lemon quantize --help'")
	}
	if *in == *out {
		return cli.Usagef("--output must differ from --input (%s)", *in)
	}
	r, err := quantize.File(context.Background(), *in, *out, quantize.Options{PerTensor: *perTensor})
	if err != nil {
		return err
	}
	fmt.Printf("wrote %s: %d MatMul/Gemm weights int8 (%d biases folded in), %.2f MB of float32 weights now %.2f MB\n",
		*out, r.Quantized, r.FusedBias, float64(r.FloatBytes)/1e6, float64(r.Int8Bytes)/1e6)
	for _, s := range r.Skipped {
		fmt.Printf("left in float32: %s\n", s)
	}
	return nil
}
