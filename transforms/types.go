// Package transforms holds lemon's Beam composites and DoFns: reading shards, validating and
// de-duplicating rows, cutting the reference into blocks, the blockwise neighbour search and
// its merge, scoring, the reject threshold, and the writers of scores, kept, rejected and
// errors shards and the manifest. Every DoFn is registered in init (register.go); state that
// stages share travels in PCollections, side inputs or the run's temporary storage, never in
// process memory, so the same graph runs on prism, Flink or Dataflow.
package transforms

import "github.com/lemon-curation/lemon/knn"

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

// ScoredBatch is scored rows of one shard that travel together: one element per batch rather
// than per row keeps the runner's per-element costs off the scoring path.
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
// one shard, in order.
type BlockRef struct {
	Side     string // "input" or "reference"
	Shard    int32
	Chunk    int64
	Path     string
	Rows     int64
	FirstPos int64
}

// Counts is a writer's tally for the manifest.
type Counts struct {
	RowsIn, Kept, Rejected, Errors int64
}
