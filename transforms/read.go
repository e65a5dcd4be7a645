package transforms

import (
	"context"
	"fmt"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/score"
)

// Input is a planned dataset: what the readers and writers need to find its files.
type Input struct {
	Format  string
	Options dataset.Options
	Shards  []dataset.Shard
	Raw     bool // images and captions (a dataset.RawFormat), embedded by the pipeline
}

// File names a shard's main file for messages.
func (in Input) File(shard int32) string {
	sh := in.Shards[shard]
	for _, role := range []string{"metadata", "data", "image", "tar"} {
		if f := sh.Files[role]; f != "" {
			return f
		}
	}
	return sh.Name
}

// Locate turns a dataset position into its shard and row within the shard.
func (in Input) Locate(pos int64) (shard int32, index int64) {
	lo, hi := 0, len(in.Shards)-1
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if in.Shards[mid].Offset <= pos {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return int32(lo), pos - in.Shards[lo].Offset
}

// ReadToBlocks reads every shard of in, validates each row, and writes the valid rows straight
// into block files of at most blockRows rows (a shard's rows in order) under tempDir, so
// embeddings never pass through the runner's shuffle. It returns the block references, the rows
// that cannot be scored, and each valid row's (id, position) for duplicate detection. side
// names the block files ("input" or "reference").
func ReadToBlocks(s beam.Scope, in Input, side string, distance score.Distance, blockRows int64, tempDir string) (blocks, faults, ids beam.PCollection) {
	s = s.Scope("ReadToBlocks_" + side)
	shards := beam.Reshuffle(s, beam.CreateList(s, shardIndexes(in)))
	return beam.ParDo3(s, &readShardFn{Input: in, Side: side, Distance: string(distance), BlockRows: blockRows, TempDir: tempDir}, shards)
}

type readShardFn struct {
	Input     Input
	Side      string
	Distance  string
	BlockRows int64
	TempDir   string
}

func (fn *readShardFn) ProcessElement(ctx context.Context, shard int32, emitBlock func(BlockRef), emitFault func(Fault), emitID func(string, int64)) error {
	in := fn.Input
	sh := in.Shards[shard]
	f, err := dataset.Get(in.Format)
	if err != nil {
		return err
	}
	var n, bad int64
	bw := &blockWriter{ctx: ctx, dir: fn.TempDir, side: fn.Side, shard: shard, dim: sh.Dim, rows: fn.BlockRows, emit: emitBlock}
	err = f.Read(ctx, sh, in.Options, func(r dataset.Record) error {
		n++
		pos := sh.Offset + r.Index
		fault := func(reason string) {
			bad++
			emitFault(Fault{Pos: pos, Shard: shard, Index: r.Index, ID: r.ID, Reason: reason})
		}
		if reason := rowFault(r.Err, r.Image, r.Text); reason != "" {
			fault(reason)
			return nil
		}
		emitID(r.ID, pos)
		return bw.add(pos, r.ID, r.Caption, r.Image, r.Text, score.Dist(score.Distance(fn.Distance), r.Image, r.Text))
	})
	if err != nil {
		return err
	}
	if err := bw.flush(); err != nil {
		return err
	}
	if n != sh.Rows {
		return fmt.Errorf("%s: read %d rows, expected %d", in.File(shard), n, sh.Rows)
	}
	logf("lemon: read %s shard %d/%d (%s): %d rows, %d not scorable", fn.Side, shard+1, len(in.Shards), in.File(shard), n, bad)
	return nil
}

// FindDuplicateIDs keeps the first row (by position) of each id. It returns the later rows as
// Faults that name where the id was first seen, the positions of those rows (to leave out of
// the search), and every kept (id, position) for sampling.
//
// firsts is only filled with wantFirsts (a sampled reference needs it): one element per row
// costs the runner more than the search of a small dataset.
func FindDuplicateIDs(s beam.Scope, in Input, ids beam.PCollection, wantFirsts bool) (faults, dropped, firsts beam.PCollection) {
	s = s.Scope("FindDuplicateIDs")
	grouped := beam.CombinePerKey(s, &idPositionsFn{}, beam.ParDo(s, idPositions, ids))
	return beam.ParDo3(s, &duplicateFaultsFn{Input: in, EmitFirsts: wantFirsts}, grouped)
}

// IDPositions is where an id occurs: its first position and, when it occurs more than once,
// all positions.
type IDPositions struct {
	First int64
	All   []int64
}

func idPositions(id string, pos int64) (string, IDPositions) {
	return id, IDPositions{First: pos, All: []int64{pos}}
}

type idPositionsFn struct{}

func (idPositionsFn) MergeAccumulators(a, b IDPositions) IDPositions {
	if b.First < a.First {
		a.First = b.First
	}
	a.All = append(a.All, b.All...)
	return a
}

type duplicateFaultsFn struct {
	Input      Input
	EmitFirsts bool
}

func (fn *duplicateFaultsFn) ProcessElement(id string, p IDPositions, emitFault func(Fault), emitDropped func(int64), emitFirst func(string, int64)) {
	if fn.EmitFirsts {
		emitFirst(id, p.First)
	}
	if len(p.All) < 2 {
		return
	}
	firstShard, firstIndex := fn.Input.Locate(p.First)
	for _, pos := range p.All {
		if pos == p.First {
			continue
		}
		shard, index := fn.Input.Locate(pos)
		emitFault(Fault{Pos: pos, Shard: shard, Index: index, ID: id,
			Reason: fmt.Sprintf("duplicate id %q (first at row %d of %s)", id, firstIndex, fn.Input.File(firstShard))})
		emitDropped(pos)
	}
}

// rowFault is why a row cannot be scored ("" if it can): the reader's own complaint, else a
// vector that cannot be normalised. It normalises both vectors in place.
func rowFault(readErr string, img, txt []float32) string {
	if readErr != "" {
		return readErr
	}
	if err := score.Normalize(img); err != nil {
		return "image embedding: " + err.Error()
	}
	if err := score.Normalize(txt); err != nil {
		return "text embedding: " + err.Error()
	}
	return ""
}
