// Command lemon finds mislabelled image-caption pairs with LEMoN and filters them out.
//
//	lemon score --input DIR --output OUT [--config FILE] [flags]
//	lemon plan --input DIR | --rows N --dim D [flags]
//	lemon eval --run OUT --output REP [flags]
//	lemon report --run OUT [flags]
//	lemon quantize --input MODEL.onnx --output MODEL.int8.onnx
//	lemon dev make-dataset --out DIR [flags]
//	lemon version
//
// Run `lemon help` or `lemon score --help` for details.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/lemon-curation/lemon/evaluate"
	"github.com/lemon-curation/lemon/internal/cli"
	"github.com/lemon-curation/lemon/noise"
	"github.com/lemon-curation/lemon/tune"
)

const usage = `lemon finds mislabelled image-caption pairs (LEMoN, ICML 2025) and filters them out.

Usage:
  lemon score --input DIR --output OUT [--config FILE] [flags]
      Score every pair (CLIP embeddings: clip-retrieval/LAION folders, embedding Parquet,
      DataComp Parquet + npz; or images and captions, embedded first) and write scores plus
      kept/rejected shards. 'lemon score --help' lists the layouts and flags.
  lemon plan [--input DIR | --rows N --dim D] [score's flags] [--json]
      Price the neighbour search before it runs: tasks, temporary storage, shuffle, memory per
      task, FLOPs and hours for each search shape, and which one 'lemon score' would run.
  lemon embed --input RAW --output DIR --image-model IMG.onnx --text-model TXT.onnx
      Embed images and captions (webdataset, img2dataset or Hugging Face Parquet, CSV of paths)
      with your CLIP encoders into the clip-retrieval layout. 'lemon score' also takes them.
  lemon noise --input DIR --output DIR --kind random|noun|cat|symmetric|asymmetric [--level 0.4]
      Inject known label errors into a clean embedding dataset (adds is_error, original_caption).
  lemon eval --run OUT --output REP [--truth-column is_error] [--split-column split]
      Measure a scored run against known errors: AUROC, AUPRC, F1 for LEMoN, CLIP similarity,
      s_n, s_m and deep kNN side by side; writes REP/metrics.json and REP/report.html.
  lemon report --run OUT [--output FILE]
      A review page for any run, labelled or not: score, d_mm, s_n and s_m distributions, the
      threshold, and the most suspect pairs with thumbnails and their neighbours' captions.
  lemon tune --run OUT --output tuned.yaml [--split-column split]
      LEMoN_opt: choose k, distance, beta, gamma and the taus by validation F1 from one run
      made with --save-neighbour-lists --k 50; writes a config for 'lemon score --config'.
  lemon quantize --input MODEL.onnx --output MODEL.int8.onnx [--per-tensor]
      Write an int8 copy of an ONNX encoder (dynamic quantisation of its MatMul/Gemm weights)
      for faster CPU embedding; opt-in, float32 stays the default.
  lemon dev make-dataset --out DIR [flags]
      Write a synthetic CLIP-like dataset with known label errors (for trying lemon out).
  lemon dev make-encoders --size tiny|vit-b-32 --out DIR
      Write stand-in CLIP encoders (random weights, the real interface) for tests and benchmarks.
  lemon version
      Print the version.

'lemon COMMAND --help' prints a command's help.
`

func main() {
	if workerMode(os.Args[1:]) {
		// Beam's boot program (Dataflow, Flink, a job server's PROCESS environment) starts the
		// worker binary as `lemon --worker=true --id=... --control_endpoint=...`: no subcommand.
		// beam.Init then serves the runner's work and exits the process when the runner is done.
		flag.Parse()
		beam.Init()
		fmt.Fprintln(os.Stderr, "lemon: Beam's worker harness returned; exiting")
		os.Exit(1)
	}
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	stopProfile := startProfile()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "score":
		err = runScore(args)
	case "embed":
		err = runEmbed(args)
	case "plan":
		err = runPlan(args)
	case "noise":
		err = noise.Main(args)
	case "tune":
		err = tune.Main(args)
	case "eval":
		err = evaluate.Main(args)
	case "report":
		err = evaluate.ReviewMain(args, os.Stdout, os.Stderr)
	case "quantize":
		err = runQuantize(args)
	case "dev":
		err = runDev(args)
	case "version", "--version":
		fmt.Println(versionString())
	case "help", "-h", "--help", "-help":
		fmt.Print(usage)
	default:
		err = cli.Usagef("unknown command %q; see 'lemon help' for the commands", cmd)
	}
	stopProfile()
	if err != nil {
		if errors.As(err, new(cli.UsageError)) {
			fmt.Fprintf(os.Stderr, "lemon: %v\n", err)
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "lemon: %v\n", err)
		os.Exit(1)
	}
}

// startProfile writes a CPU profile of the whole command to $LEMON_CPUPROFILE, and at the end
// an allocation profile to $LEMON_MEMPROFILE, when set: with the in-process runner (prism) they
// cover the job's every stage. For finding where a run's time and memory go (go tool pprof);
// they change nothing else.
func startProfile() (stop func()) {
	stopCPU := func() {}
	if path := os.Getenv("LEMON_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "lemon: LEMON_CPUPROFILE: %v\n", err)
		} else {
			stopCPU = func() {
				pprof.StopCPUProfile()
				f.Close()
			}
		}
	}
	return func() {
		stopCPU()
		if path := os.Getenv("LEMON_MEMPROFILE"); path != "" {
			if err := writeHeapProfile(path); err != nil {
				fmt.Fprintf(os.Stderr, "lemon: LEMON_MEMPROFILE: %v\n", err)
			}
		}
	}
}

// writeHeapProfile writes the process's heap profile (what was allocated where, and what is
// still live) to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// workerMode reports whether the arguments hold --worker=true (in any position, with one or two
// dashes), the flag by which Beam starts a worker binary.
func workerMode(args []string) bool {
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name != "worker" {
			continue
		}
		if !hasVal {
			return true
		}
		b, err := strconv.ParseBool(val)
		return err == nil && b
	}
	return false
}
