package transforms

import (
	"context"
	"fmt"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/embed"
	"github.com/lemon-curation/lemon/internal/hugepage"
	"github.com/lemon-curation/lemon/knn"
	"github.com/lemon-curation/lemon/score"
	"github.com/lemon-curation/lemon/storage"
)

// EmbedToBlocks is ReadToBlocks for raw images and captions: each shard's rows are embedded
// with the configured encoders (opened once per worker, in Setup) and written straight into
// block files. Rows that cannot be decoded or embedded become Faults.
func EmbedToBlocks(s beam.Scope, in Input, side string, ec embed.Config, distance score.Distance, blockRows int64, tempDir string) (blocks, faults, ids beam.PCollection) {
	s = s.Scope("EmbedToBlocks_" + side)
	shards := beam.Reshuffle(s, beam.CreateList(s, shardIndexes(in)))
	return beam.ParDo3(s, &embedShardFn{Input: in, Embed: ec, Side: side, Distance: string(distance), BlockRows: blockRows, TempDir: tempDir, IDBuckets: idBuckets(in)}, shards)
}

func shardIndexes(in Input) []int32 {
	idx := make([]int32, len(in.Shards))
	for i := range idx {
		idx[i] = int32(i)
	}
	return idx
}

type embedShardFn struct {
	Input     Input
	Embed     embed.Config
	Side      string
	Distance  string
	BlockRows int64
	TempDir   string
	IDBuckets int32
	emb       *embed.Embedder
}

func (fn *embedShardFn) Setup() error {
	e, err := embed.Open(fn.Embed)
	if err != nil {
		return err
	}
	fn.emb = e
	return nil
}

func (fn *embedShardFn) Teardown() {
	if fn.emb != nil {
		fn.emb.Close()
	}
}

func (fn *embedShardFn) ProcessElement(ctx context.Context, shard int32, emitBlock func(BlockRef), emitFault func(Fault), emitIDs func(int32, IDBatch)) error {
	in := fn.Input
	sh := in.Shards[shard]
	f, err := dataset.GetRaw(in.Format)
	if err != nil {
		return err
	}
	bw := &blockWriter{ctx: ctx, dir: fn.TempDir, side: fn.Side, shard: shard, dim: fn.emb.Dim(), rows: fn.BlockRows, emit: emitBlock}
	defer bw.release()
	ids := newIDBatcher(fn.IDBuckets)
	var n, bad int64
	err = fn.emb.Shard(ctx, f, sh, in.Options, func(e embed.Embedded) error {
		n++
		r := e.Record
		pos := sh.Offset + r.Index
		reason := rowFault(e.Err, e.Image, e.Text)
		if reason != "" {
			bad++
			emitFault(Fault{Pos: pos, Shard: shard, Index: r.Index, ID: r.ID, Reason: reason})
			return nil
		}
		ids.add(r.ID, pos)
		return bw.add(pos, r.ID, r.Caption, e.Image, e.Text, score.Dist(score.Distance(fn.Distance), e.Image, e.Text))
	})
	if err != nil {
		return fmt.Errorf("%s: %w", in.File(shard), err)
	}
	if err := bw.flush(); err != nil {
		return err
	}
	ids.emit(emitIDs)
	if n != sh.Rows {
		return fmt.Errorf("%s: read %d rows, expected %d", in.File(shard), n, sh.Rows)
	}
	logf("lemon: embedded %s shard %d/%d (%s): %d rows, %d not scorable", fn.Side, shard+1, len(in.Shards), in.File(shard), n, bad)
	return nil
}

// blockWriter collects a shard's valid rows into block files of at most rows rows.
type blockWriter struct {
	ctx   context.Context
	dir   string
	side  string
	shard int32
	dim   int
	rows  int64
	chunk int64
	b     *knn.Block
	emit  func(BlockRef)

	bufs [2][]float32 // the embedding buffers allocated for b, to give back
}

func (w *blockWriter) add(pos int64, id, caption string, img, txt []float32, dmm float64) error {
	if w.b == nil {
		// Room for a whole block up front: growing by appends copies the embeddings repeatedly.
		// The embeddings go on huge pages (see package hugepage); release gives them back.
		n := int(min(w.rows, 1<<16))
		w.bufs = [2][]float32{hugepage.Alloc[float32](n * w.dim), hugepage.Alloc[float32](n * w.dim)}
		w.b = &knn.Block{Dim: w.dim, Image: w.bufs[0][:0], Text: w.bufs[1][:0],
			Pos: make([]int64, 0, n), Self: make([]int64, 0, n), Dmm: make([]float64, 0, n),
			ID: make([]string, 0, n), Caption: make([]string, 0, n)}
	}
	b := w.b
	b.Image = append(b.Image, img...)
	b.Text = append(b.Text, txt...)
	b.Pos = append(b.Pos, pos)
	b.Self = append(b.Self, -1)
	b.Dmm = append(b.Dmm, dmm)
	b.ID = append(b.ID, id)
	b.Caption = append(b.Caption, caption)
	if int64(b.Len()) >= w.rows {
		return w.flush()
	}
	return nil
}

// release gives back the writer's buffers; the writer must not be used afterwards.
func (w *blockWriter) release() {
	hugepage.Free(w.bufs[0])
	hugepage.Free(w.bufs[1])
	w.b, w.bufs = nil, [2][]float32{}
}

func (w *blockWriter) flush() error {
	if w.b == nil || w.b.Len() == 0 {
		return nil
	}
	p := storage.Join(w.dir, "blocks", fmt.Sprintf("%s-%06d-%06d.blk", w.side, w.shard, w.chunk))
	if err := writeBlock(w.ctx, p, w.b); err != nil {
		return err
	}
	w.emit(BlockRef{Side: w.side, Shard: w.shard, Chunk: w.chunk, Path: p, Rows: int64(w.b.Len()), FirstPos: w.b.Pos[0]})
	w.chunk++
	// Keep the buffers for the next block: fresh ones would be zeroed and faulted in again.
	b := w.b
	*b = knn.Block{Dim: b.Dim, Image: b.Image[:0], Text: b.Text[:0], Pos: b.Pos[:0], Self: b.Self[:0],
		Dmm: b.Dmm[:0], ID: b.ID[:0], Caption: b.Caption[:0]}
	return nil
}
