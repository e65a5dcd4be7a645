package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/lemon-curation/lemon/internal/cli"
	"github.com/lemon-curation/lemon/pipeline"
	"github.com/lemon-curation/lemon/tiling"
)

const planUsage = `Usage: lemon plan [--input DIR | --rows N --dim D [--dtype float16]] [lemon score's flags] [--json]

Prices the neighbour search of a 'lemon score' job before anything runs: for each search shape
(memory, stream, pairs), the tasks, the bytes read from and written to temporary storage, the
bytes of scored rows through the runner's shuffle, the memory of one task, the FLOPs, and the
estimated hours on --workers workers of the stated kind (--cores N or --gpu NAME), and which
shape 'lemon score' would run with the same flags. With --input it reads only file headers
and a few rows; with --rows and --dim it plans a dataset that need not exist.

The memory, shuffle and byte counts are what the job itself records in its manifest's
"search" (measured), beside these predictions ("search.predicted"). lemon score's flags have
the same meaning here; --output is not needed.
`

func runPlan(args []string) error {
	c := pipeline.Defaults()
	if p := configFlag(args); p != "" {
		if err := LoadConfig(p, &c); err != nil {
			return cli.UsageError{Err: err}
		}
	}
	fs := flag.NewFlagSet("lemon plan", flag.ContinueOnError)
	var h pipeline.Hypothetical
	var dtype string
	asJSON := fs.Bool("json", false, "print one JSON object: the chosen shape's figures (tasks, temp_read_bytes, temp_write_bytes, shuffle_bytes, peak_task_memory_bytes, flops), hours, and every shape's under \"shapes\"")
	fs.Int64Var(&h.Rows, "rows", 0, "plan a hypothetical input of this many rows (instead of --input)")
	fs.IntVar(&h.Dim, "dim", 0, "hypothetical input: embedding dimension")
	fs.StringVar(&dtype, "dtype", "float32", "hypothetical input: float16 or float32 embeddings")
	fs.Int64Var(&h.ShardRows, "shard-rows", 10000, "hypothetical input: rows per shard (img2dataset's default is 10000)")
	fs.Int64Var(&h.RefRows, "reference-rows", 0, "hypothetical input: rows of the --reference dataset, or of the --reference-split (default: --rows)")
	fs.Float64Var(&h.IDBytes, "id-bytes", 12, "hypothetical input: mean length of a row id")
	fs.Float64Var(&h.CaptionBytes, "caption-bytes", 60, "hypothetical input: mean length of a caption")
	planFlags := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { planFlags[f.Name] = true })
	defineScoreFlags(fs, &c)
	// Beam's runner flags are not defined here: plan submits nothing. --workers stands for
	// what a runner would give (default 1).
	fs.Usage = func() {
		var plan []string
		for n := range planFlags {
			plan = append(plan, n)
		}
		sort.Strings(plan)
		groups := []cli.Group{{Heading: "Plan flags", Flags: plan}}
		for _, g := range scoreGroups {
			g.Heading = "lemon score: " + g.Heading
			groups = append(groups, g)
		}
		cli.PrintHelp(fs, planUsage, nil, groups...)
	}
	if help, err := cli.Parse(fs, args); help || err != nil {
		return err
	}
	switch dtype {
	case "float16":
		h.Half = true
	case "float32":
	default:
		return cli.UsageError{Err: fmt.Errorf("--dtype must be float16 or float32, got %q", dtype)}
	}
	var p *pipeline.Plan
	var err error
	switch {
	case h.Rows > 0 && c.Input != "":
		return cli.UsageError{Err: fmt.Errorf("give --input or --rows, not both")}
	case h.Rows > 0:
		p, err = pipeline.PlanHypothetical(c, h)
	case c.Input != "":
		if c.Output == "" {
			c.Output = "plan-only" // never written: Check wants an output distinct from the input
		}
		p, err = pipeline.Check(context.Background(), c)
	default:
		return cli.UsageError{Err: fmt.Errorf("give --input DIR, or --rows N and --dim D")}
	}
	if err != nil {
		return cli.UsageError{Err: err}
	}
	if *asJSON {
		return printPlanJSON(os.Stdout, p)
	}
	printPlan(os.Stdout, p)
	return nil
}

// planFigures is one shape's figures as `lemon plan --json` prints them.
type planFigures struct {
	Shape            string  `json:"shape"`
	Fits             bool    `json:"fits"`
	Why              string  `json:"why,omitempty"`
	QueryRowsPerTask int64   `json:"query_rows_per_task"`
	TileRows         int64   `json:"tile_rows"`
	BlockRows        int64   `json:"block_rows"`
	Tasks            int64   `json:"tasks"`
	TempReadBytes    int64   `json:"temp_read_bytes"`
	TempWriteBytes   int64   `json:"temp_write_bytes"`
	ShuffleBytes     int64   `json:"shuffle_bytes"`
	PeakTaskMemory   int64   `json:"peak_task_memory_bytes"`
	Flops            float64 `json:"flops"`
	Hours            float64 `json:"hours"`
	WorkerHours      float64 `json:"worker_hours"`
}

func figures(c tiling.Cost) planFigures {
	return planFigures{Shape: string(c.Shape), Fits: c.Fits, Why: c.Why, QueryRowsPerTask: c.QueryRowsPerTask, TileRows: c.TileRows,
		BlockRows: c.BlockRows, Tasks: c.Tasks, TempReadBytes: c.TempReadBytes, TempWriteBytes: c.TempWriteBytes,
		ShuffleBytes: c.ShuffleBytes, PeakTaskMemory: c.PeakTaskMemoryBytes, Flops: c.Flops, Hours: c.Hours, WorkerHours: c.WorkerHours}
}

func printPlanJSON(w io.Writer, p *pipeline.Plan) error {
	out := struct {
		planFigures
		QueryRows    int64          `json:"query_rows"`
		RefRows      int64          `json:"reference_rows"`
		Dim          int            `json:"dim"`
		ValueBytes   int            `json:"value_bytes"`
		WorkerMemory int64          `json:"worker_memory_bytes"`
		Workers      int            `json:"workers"`
		Profile      tiling.Profile `json:"profile"`
		Shapes       []planFigures  `json:"shapes"`
	}{planFigures: figures(p.Search), QueryRows: p.Rows, RefRows: p.RefRows, Dim: p.Job.Dim, ValueBytes: p.Job.ValueBytes,
		WorkerMemory: int64(p.Config.WorkerMemoryMiB) << 20, Workers: p.Config.Workers, Profile: p.Profile}
	for _, c := range p.Shapes {
		out.Shapes = append(out.Shapes, figures(c))
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func printPlan(w io.Writer, p *pipeline.Plan) {
	j := p.Job
	ref := "the input itself (self-join)"
	switch c := p.Config; {
	case c.Reference != "":
		ref = fmt.Sprintf("%s (%d rows)", c.Reference, p.RefRows)
	case c.ReferenceSample > 0:
		ref = fmt.Sprintf("a sample of %d rows", p.RefRows)
	case c.ReferenceSplit != "":
		ref = fmt.Sprintf("the rows of split %q (at most %d)", c.ReferenceSplit, p.RefRows)
	}
	dtype := "float32"
	if j.ValueBytes == 2 {
		dtype = "float16"
	}
	fmt.Fprintf(w, "lemon plan: %d query rows, dim %d, %s blocks; reference: %s; k=%d\n", p.Rows, j.Dim, dtype, ref, j.K)
	fmt.Fprintf(w, "budget: %d MiB per task (%.0f%% for the search's buffers), %d worker(s) at once\n", p.Config.WorkerMemoryMiB, 100*tiling.Headroom, p.Config.Workers)
	fmt.Fprintf(w, "worker: %s: %s\n\n", p.Profile.Name, p.Profile.Note)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "shape\tfits\ttasks\tquery rows/task\ttile rows\tblock rows\ttemp read\ttemp write\tshuffle\ttask memory\tFLOPs\thours\tworker-hours\t")
	for _, c := range p.Shapes {
		name := string(c.Shape)
		if c.Shape == p.Search.Shape {
			name = "*" + name
		}
		if !c.Fits {
			// What it would cost means little: say only what a task would need.
			fmt.Fprintf(tw, "%s\tno\t-\t-\t-\t-\t-\t-\t-\t%s\t-\t-\t-\t\n", name, tiling.Bytes(float64(c.PeakTaskMemoryBytes)))
			continue
		}
		fits := "yes"
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%.3g\t%.3g\t%.3g\t\n", name, fits, c.Tasks, c.QueryRowsPerTask, c.TileRows,
			c.BlockRows, tiling.Bytes(float64(c.TempReadBytes)), tiling.Bytes(float64(c.TempWriteBytes)), tiling.Bytes(float64(c.ShuffleBytes)),
			tiling.Bytes(float64(c.PeakTaskMemoryBytes)), c.Flops, c.Hours, c.WorkerHours)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n* lemon score would run %s", p.Search.Shape)
	if p.Config.SearchShape != "" && p.Config.SearchShape != "auto" {
		fmt.Fprintf(w, " (forced by --search-shape)\n")
	} else {
		fmt.Fprintf(w, ": the least estimated time among the shapes that fit\n")
	}
	var notes []string
	for _, c := range p.Shapes {
		if !c.Fits {
			notes = append(notes, fmt.Sprintf("%s does not fit: %s", c.Shape, c.Why))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "%s\n", strings.Join(notes, "\n"))
	}
}
