package transforms

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

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
// that cannot be scored, and the valid rows' (id, position) in per-shard batches keyed by id
// bucket, for FindDuplicateIDs. side names the block files ("input" or "reference").
func ReadToBlocks(s beam.Scope, in Input, side string, distance score.Distance, blockRows int64, tempDir string) (blocks, faults, ids beam.PCollection) {
	s = s.Scope("ReadToBlocks_" + side)
	shards := beam.Reshuffle(s, beam.CreateList(s, shardIndexes(in)))
	return beam.ParDo3(s, &readShardFn{Input: in, Side: side, Distance: string(distance), BlockRows: blockRows, TempDir: tempDir, IDBuckets: idBuckets(in)}, shards)
}

type readShardFn struct {
	Input     Input
	Side      string
	Distance  string
	BlockRows int64
	TempDir   string
	IDBuckets int32
}

func (fn *readShardFn) ProcessElement(ctx context.Context, shard int32, emitBlock func(BlockRef), emitFault func(Fault), emitIDs func(int32, IDBatch)) error {
	in := fn.Input
	sh := in.Shards[shard]
	f, err := dataset.Get(in.Format)
	if err != nil {
		return err
	}
	var n, bad int64
	bw := &blockWriter{ctx: ctx, dir: fn.TempDir, side: fn.Side, shard: shard, dim: sh.Dim, rows: fn.BlockRows, emit: emitBlock}
	defer bw.release()
	ids := newIDBatcher(fn.IDBuckets)
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
		ids.add(r.ID, pos)
		return bw.add(pos, r.ID, r.Caption, r.Image, r.Text, score.Dist(score.Distance(fn.Distance), r.Image, r.Text))
	})
	if err != nil {
		return err
	}
	if err := bw.flush(); err != nil {
		return err
	}
	ids.emit(emitIDs)
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
// ids holds batches of (id, position) keyed by a hash bucket of the id (see idBatcher), so the
// runner shuffles a few batches per shard rather than one element per row, which on a small
// dataset would cost more than its search. firsts is only filled with wantFirsts (a sampled
// reference needs it; it has one element per id).
func FindDuplicateIDs(s beam.Scope, in Input, ids beam.PCollection, wantFirsts bool) (faults, dropped, firsts beam.PCollection) {
	s = s.Scope("FindDuplicateIDs")
	return beam.ParDo3(s, &duplicateFaultsFn{Input: in, EmitFirsts: wantFirsts}, beam.GroupByKey(s, ids))
}

// IDBatch is (id, position) pairs of one shard whose ids fall in one hash bucket.
type IDBatch struct {
	IDs []string
	Pos []int64
}

// idRowsPerBucket sizes the buckets: a bucket's ids are held in memory together.
const idRowsPerBucket = 1 << 18

// idBuckets is how many hash buckets the ids of in are spread over.
func idBuckets(in Input) int32 {
	var rows int64
	for _, sh := range in.Shards {
		rows += sh.Rows
	}
	return int32(min(max(1, (rows+idRowsPerBucket-1)/idRowsPerBucket), 1<<16))
}

// idBatcher collects a shard's ids into one batch per hash bucket. The hash (FNV-1a) is fixed,
// so every worker puts an id in the same bucket.
type idBatcher struct {
	batches []IDBatch
}

func newIDBatcher(buckets int32) *idBatcher { return &idBatcher{batches: make([]IDBatch, buckets)} }

func (b *idBatcher) add(id string, pos int64) {
	h := uint64(14695981039346656037) // FNV-1a, 64-bit
	for i := 0; i < len(id); i++ {
		h = (h ^ uint64(id[i])) * 1099511628211
	}
	k := h % uint64(len(b.batches))
	b.batches[k].IDs = append(b.batches[k].IDs, id)
	b.batches[k].Pos = append(b.batches[k].Pos, pos)
}

// emit sends every non-empty batch under its bucket.
func (b *idBatcher) emit(emit func(int32, IDBatch)) {
	for k, batch := range b.batches {
		if len(batch.IDs) > 0 {
			emit(int32(k), batch)
		}
	}
}

type duplicateFaultsFn struct {
	Input      Input
	EmitFirsts bool
}

type idAt struct {
	id  string
	pos int64
}

func (fn *duplicateFaultsFn) ProcessElement(_ int32, batches func(*IDBatch) bool, emitFault func(Fault), emitDropped func(int64), emitFirst func(string, int64)) {
	var rows []idAt
	var b IDBatch
	for batches(&b) {
		for i, id := range b.IDs {
			rows = append(rows, idAt{id, b.Pos[i]})
		}
	}
	slices.SortFunc(rows, func(x, y idAt) int {
		if c := strings.Compare(x.id, y.id); c != 0 {
			return c
		}
		return cmp.Compare(x.pos, y.pos)
	})
	for i := 0; i < len(rows); {
		first := rows[i]
		j := i + 1
		for j < len(rows) && rows[j].id == first.id {
			j++
		}
		if fn.EmitFirsts {
			emitFirst(first.id, first.pos)
		}
		if j > i+1 {
			firstShard, firstIndex := fn.Input.Locate(first.pos)
			for _, r := range rows[i+1 : j] {
				shard, index := fn.Input.Locate(r.pos)
				emitFault(Fault{Pos: r.pos, Shard: shard, Index: index, ID: r.id,
					Reason: fmt.Sprintf("duplicate id %q (first at row %d of %s)", r.id, firstIndex, fn.Input.File(firstShard))})
				emitDropped(r.pos)
			}
		}
		i = j
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
