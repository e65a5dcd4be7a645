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
}

// File names a shard's main file for messages.
func (in Input) File(shard int32) string {
	sh := in.Shards[shard]
	for _, role := range []string{"metadata", "data", "image"} {
		if f := sh.Files[role]; f != "" {
			return f
		}
	}
	return sh.Name
}

// ReadRows reads every shard of in and validates each row: valid rows come out normalised with
// their d_mm, faulty ones as Faults. Distance is the score's distance (for d_mm).
func ReadRows(s beam.Scope, in Input, distance score.Distance) (rows, faults beam.PCollection) {
	s = s.Scope("ReadRows")
	idx := make([]int32, len(in.Shards))
	for i := range idx {
		idx[i] = int32(i)
	}
	shards := beam.Reshuffle(s, beam.CreateList(s, idx))
	return beam.ParDo2(s, &readShardFn{Input: in, Distance: string(distance)}, shards)
}

type readShardFn struct {
	Input    Input
	Distance string
}

func (fn *readShardFn) ProcessElement(ctx context.Context, shard int32, emitRow func(Row), emitFault func(Fault)) error {
	in := fn.Input
	sh := in.Shards[shard]
	f, err := dataset.Get(in.Format)
	if err != nil {
		return err
	}
	var n, bad int64
	err = f.Read(ctx, sh, in.Options, func(r dataset.Record) error {
		n++
		pos := sh.Offset + r.Index
		fault := func(reason string) {
			bad++
			emitFault(Fault{Pos: pos, Shard: shard, Index: r.Index, ID: r.ID, Caption: r.Caption, Reason: reason})
		}
		if r.Err != "" {
			fault(r.Err)
			return nil
		}
		if err := score.Normalize(r.Image); err != nil {
			fault("image embedding: " + err.Error())
			return nil
		}
		if err := score.Normalize(r.Text); err != nil {
			fault("text embedding: " + err.Error())
			return nil
		}
		emitRow(Row{Pos: pos, Shard: shard, Index: r.Index, ID: r.ID, Caption: r.Caption, Image: r.Image, Text: r.Text,
			Dmm: score.Dist(score.Distance(fn.Distance), r.Image, r.Text), Self: -1})
		return nil
	})
	if err != nil {
		return err
	}
	if n != sh.Rows {
		return fmt.Errorf("%s: read %d rows, expected %d", in.File(shard), n, sh.Rows)
	}
	logf("lemon: read shard %d/%d (%s): %d rows, %d not scorable", shard+1, len(in.Shards), in.File(shard), n, bad)
	return nil
}

// DropDuplicateIDs keeps the first row (by position) of each id and turns the others into
// Faults that name where the id was first seen.
func DropDuplicateIDs(s beam.Scope, in Input, rows beam.PCollection) (unique, faults beam.PCollection) {
	s = s.Scope("DropDuplicateIDs")
	seen := beam.ParDo(s, idSeen, rows)
	firsts := beam.CombinePerKey(s, firstSeenFn, seen)
	dups := beam.ParDo(s, keepDuplicated, firsts)
	return beam.ParDo2(s, &splitDuplicatesFn{Input: in}, rows, beam.SideInput{Input: dups})
}

func idSeen(r Row) (string, IDSeen) {
	return r.ID, IDSeen{Pos: r.Pos, Shard: r.Shard, Index: r.Index, Count: 1}
}

func keepDuplicated(id string, f IDSeen, emit func(string, IDSeen)) {
	if f.Count > 1 {
		emit(id, f)
	}
}

func firstSeenFn(a, b IDSeen) IDSeen {
	n := a.Count + b.Count
	if b.Pos < a.Pos {
		a = b
	}
	a.Count = n
	return a
}

type splitDuplicatesFn struct {
	Input Input
	dups  map[string]IDSeen
}

func (fn *splitDuplicatesFn) ProcessElement(r Row, dups func(*string, *IDSeen) bool, emitRow func(Row), emitFault func(Fault)) {
	if fn.dups == nil {
		fn.dups = map[string]IDSeen{}
		var id string
		var f IDSeen
		for dups(&id, &f) {
			fn.dups[id] = f
		}
	}
	if f, ok := fn.dups[r.ID]; ok && f.Pos != r.Pos {
		emitFault(Fault{Pos: r.Pos, Shard: r.Shard, Index: r.Index, ID: r.ID, Caption: r.Caption,
			Reason: fmt.Sprintf("duplicate id %q (first at row %d of %s)", r.ID, f.Index, fn.Input.File(f.Shard))})
		return
	}
	emitRow(r)
}
