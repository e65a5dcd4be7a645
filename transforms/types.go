// Package transforms holds lemon's Beam composites and DoFns: reading shards, validating and
// de-duplicating rows, cutting the reference into blocks, the blockwise neighbour search and
// its merge, scoring, the reject threshold, and the writers of scores, kept, rejected and
// errors shards and the manifest. Every DoFn is registered in init (register.go); state that
// stages share travels in PCollections, side inputs or the run's temporary storage, never in
// process memory, so the same graph runs on prism, Flink or Dataflow.
package transforms

import (
	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/lemon-curation/lemon/knn"
)

// Fault is a row that cannot be scored, with the reason.
type Fault struct {
	Pos    int64
	Shard  int32
	Index  int64
	ID     string
	Reason string
}

// Scored is a scored row.
type Scored struct {
	Pos             int64
	Shard           int32
	Index           int64
	ID              string
	Caption         string
	Dmm, Sn, Sm     float64
	Score           float64
	ImageNeighbours []string
	TextNeighbours  []string
	// The full lists, for --save-neighbour-lists (what `lemon tune` re-scores from).
	ImageList, TextList []knn.Neighbour
}

// ScoredBatch is scored rows of one shard that a search task emits together (as one outcome
// and one batch of score keys): one element per batch rather than per row keeps the runner's
// per-element costs off the scoring path.
type ScoredBatch struct {
	Shard int32
	Rows  []Scored
}

// Outcome is what reaches a shard's writer, keyed by shard: a batch of its scored rows, one of
// its faults, or (neither) its marker.
type Outcome struct {
	Scored []Scored
	Fault  *Fault
}

// BlockRef names a block file in the run's temporary storage: up to BlockRows valid rows of
// one shard (or of a sample), in position order.
type BlockRef struct {
	Side     string // "input", "reference", or SideCandidates, SideSample, SideSplit
	Shard    int32
	Chunk    int64
	Path     string
	Rows     int64
	FirstPos int64 // positions of the first and last rows: the block's rows lie in between
	LastPos  int64
	Bytes    int64 // the file's size
}

// SearchStats is what the search did, summed over the job for the manifest: every stage that
// reads or writes temporary storage or hands rows to the shuffle counts its bytes.
type SearchStats struct {
	Tasks               int64
	TempReadBytes       int64
	TempWriteBytes      int64
	ShuffleBytes        int64
	PeakTaskMemoryBytes int64 // the most any one task held (a maximum, not a sum)
	Flops               float64
	// Tiles the knn sketch checked, and of those skipped (see knn.Options.Sketched).
	SketchTilesChecked, SketchTilesSkipped int64
}

// add folds o into s.
func (s SearchStats) add(o SearchStats) SearchStats {
	return SearchStats{Tasks: s.Tasks + o.Tasks, TempReadBytes: s.TempReadBytes + o.TempReadBytes,
		TempWriteBytes: s.TempWriteBytes + o.TempWriteBytes, ShuffleBytes: s.ShuffleBytes + o.ShuffleBytes,
		PeakTaskMemoryBytes: max(s.PeakTaskMemoryBytes, o.PeakTaskMemoryBytes), Flops: s.Flops + o.Flops,
		SketchTilesChecked: s.SketchTilesChecked + o.SketchTilesChecked, SketchTilesSkipped: s.SketchTilesSkipped + o.SketchTilesSkipped}
}

// countSketch returns a knn.Options.Sketched that adds to s; searches call it synchronously.
func (s *SearchStats) countSketch() func(checked, skipped int64) {
	return func(checked, skipped int64) {
		s.SketchTilesChecked += checked
		s.SketchTilesSkipped += skipped
	}
}

// logSketch logs what the sketch skipped in a task's searches, if one ran.
func (s *SearchStats) logSketch() {
	if s.SketchTilesChecked > 0 {
		logf("lemon: sketch: skipped %d of the %d tiles it checked (%.0f%%)", s.SketchTilesSkipped, s.SketchTilesChecked,
			100*float64(s.SketchTilesSkipped)/float64(s.SketchTilesChecked))
	}
}

// Counts is a writer's tally for the manifest.
type Counts struct {
	RowsIn, Kept, Rejected, Errors int64
}

// BlocksOfSide keeps the blocks of one side (see BlockRef.Side).
func BlocksOfSide(s beam.Scope, blocks beam.PCollection, side string) beam.PCollection {
	s = s.Scope("Blocks_" + side)
	return beam.ParDo(s, &sideFilterFn{Side: side}, blocks)
}

type sideFilterFn struct{ Side string }

func (fn *sideFilterFn) ProcessElement(b BlockRef, emit func(BlockRef)) {
	if b.Side == fn.Side {
		emit(b)
	}
}
