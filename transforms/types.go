// Package transforms holds lemon's Beam composites and DoFns: reading shards, validating and
// de-duplicating rows, cutting the reference into blocks, the blockwise neighbour search and
// its merge, scoring, the reject threshold, and the writers of scores, kept, rejected and
// errors shards and the manifest. Every DoFn is registered in init (register.go); state that
// stages share travels in PCollections, side inputs or the run's temporary storage, never in
// process memory, so the same graph runs on prism, Flink or Dataflow.
package transforms

import (
	"github.com/lemon-curation/lemon/knn"
)

// Row is a valid input row: normalised embeddings and its image-caption distance.
type Row struct {
	Pos     int64 // position in its dataset (shard offset + index)
	Shard   int32
	Index   int64 // row within the shard
	ID      string
	Caption string
	Image   []float32
	Text    []float32
	Dmm     float64
	Self    int64 // reference position of this same row (excluded from its neighbours), or -1
}

// Fault is a row that cannot be scored, with the reason.
type Fault struct {
	Pos     int64
	Shard   int32
	Index   int64
	ID      string
	Caption string
	Reason  string
}

// Partial is what one search task learned about one query row; Merge combines them.
type Partial struct {
	Shard   int32
	Index   int64
	ID      string
	Caption string
	Dmm     float64
	Image   []knn.Neighbour
	Text    []knn.Neighbour
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
}

// Outcome is one input row's fate, keyed by shard for the writers: scored, or a fault.
type Outcome struct {
	Index  int64
	Scored *Scored
	Fault  *Fault
}

// BlockRef names a block written to the run's temporary storage.
type BlockRef struct {
	Side  string // "query" or "reference"
	Index int64
	Path  string
	Rows  int64
}

// Task is one (query block, reference block) pair of the blockwise search.
type Task struct {
	Seq       int64 // 1-based, for progress
	Total     int64
	Query     BlockRef
	Reference BlockRef
	Symmetric bool // self-join: one product feeds both blocks' rows
}

// Counts is a writer's tally for the manifest.
type Counts struct {
	RowsIn, Kept, Rejected, Errors int64
}

// IDSeen is where an id was first seen, for duplicate detection.
type IDSeen struct {
	Pos   int64
	Shard int32
	Index int64
	Count int64
}
