package transforms

import (
	"context"
	"fmt"
	"math"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/datacomp"
	"github.com/lemon-curation/lemon/rundir"
	"github.com/lemon-curation/lemon/storage"
)

// The folders a run writes under its temporary directory (m.TempDir): block files (the
// readers' block writer) and partial neighbour lists (the pairs shape).
const (
	blocksDir   = "blocks"
	partialsDir = "partials"
)

// WriteManifest is the job's last stage: it sums the writers' counts and the search's figures
// (stats: SearchStats), fails the job if the counts do not add up, and finishes the run
// (rundir.Finish): removes its temporary folder (every stage that reads it is upstream of the
// counts), writes the manifest with status complete, the finish time and wall time, and
// releases the output's lock. Work that must happen once a run has succeeded belongs here; it
// runs however the job was launched (--async too).
//
// With out.UIDRuns set it first merges the shards' uid runs into the output's
// rundir.KeptUIDsFile and rundir.RejectedUIDsFile, each checked against the counts, so they
// exist only once every shard is written and are complete when the manifest says so.
func WriteManifest(s beam.Scope, m rundir.Manifest, out OutputConfig, counts, threshold, stats beam.PCollection) {
	s = s.Scope("WriteManifest")
	total := beam.Combine(s, &sumCountsFn{}, counts)
	search := beam.Combine(s, &sumStatsFn{}, stats)
	beam.ParDo0(s, &writeManifestFn{Manifest: m, UIDRuns: out.UIDRuns}, total, beam.SideInput{Input: threshold}, beam.SideInput{Input: search})
}

type sumStatsFn struct{}

func (sumStatsFn) CreateAccumulator() SearchStats                 { return SearchStats{} }
func (sumStatsFn) AddInput(a, s SearchStats) SearchStats          { return a.add(s) }
func (sumStatsFn) MergeAccumulators(a, b SearchStats) SearchStats { return a.add(b) }
func (sumStatsFn) ExtractOutput(a SearchStats) SearchStats        { return a }

type sumCountsFn struct{}

func (sumCountsFn) CreateAccumulator() Counts { return Counts{} }
func (sumCountsFn) AddInput(a, c Counts) Counts {
	return Counts{a.RowsIn + c.RowsIn, a.Kept + c.Kept, a.Rejected + c.Rejected, a.Errors + c.Errors}
}
func (f sumCountsFn) MergeAccumulators(a, b Counts) Counts { return f.AddInput(a, b) }
func (sumCountsFn) ExtractOutput(a Counts) Counts          { return a }

type writeManifestFn struct {
	Manifest rundir.Manifest
	UIDRuns  string // OutputConfig.UIDRuns
}

// ProcessElement runs once per job; a retry repeats it harmlessly (removing removed files is
// not an error, and the manifest is replaced atomically).
func (fn *writeManifestFn) ProcessElement(ctx context.Context, c Counts, thresholds func(*float64) bool, searches func(*SearchStats) bool) error {
	threshold := thresholdOf(thresholds)
	m := fn.Manifest
	var st SearchStats
	searches(&st)
	m.Search.Figures = rundir.Figures{Tasks: st.Tasks, TempReadBytes: st.TempReadBytes, TempWriteBytes: st.TempWriteBytes,
		ShuffleBytes: st.ShuffleBytes, PeakTaskMemoryBytes: st.PeakTaskMemoryBytes, Flops: st.Flops}
	m.Search.Sketch = rundir.Sketch{TilesChecked: st.SketchTilesChecked, TilesSkipped: st.SketchTilesSkipped}
	m.Counts = rundir.Counts(c)
	if c.RowsIn != c.Kept+c.Rejected+c.Errors {
		return fmt.Errorf("internal error: counts do not add up: rows_in %d != kept %d + rejected %d + errors %d", c.RowsIn, c.Kept, c.Rejected, c.Errors)
	}
	if !math.IsInf(threshold, 1) {
		m.Threshold = &threshold
	}
	if fn.UIDRuns != "" {
		if err := fn.mergeUIDs(ctx, m.Outputs["dir"], m.Shards, c); err != nil {
			return err
		}
	}
	return rundir.Finish(ctx, m.Outputs["dir"], &m)
}

// mergeUIDs writes the kept and rejected uid files from every shard's runs.
func (fn *writeManifestFn) mergeUIDs(ctx context.Context, out string, shards int, c Counts) error {
	for _, f := range []struct {
		split dataset.Split
		file  string
		want  int64
	}{{dataset.Kept, rundir.KeptUIDsFile, c.Kept}, {dataset.Rejected, rundir.RejectedUIDsFile, c.Rejected}} {
		runs := make([]string, shards)
		for i := range runs {
			runs[i] = uidRun(fn.UIDRuns, f.split, i)
		}
		n, err := datacomp.MergeUIDRuns(ctx, storage.Join(out, f.file), runs)
		if err != nil {
			return fmt.Errorf("writing %s: %w", f.file, err)
		}
		if n != f.want {
			return fmt.Errorf("internal error: %s holds %d uids, but %d rows are %s", f.file, n, f.want, f.split)
		}
	}
	return nil
}
