package transforms

import (
	"context"
	"fmt"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/embed"
)

// EmbedToBlocks is ReadToBlocks for raw images and captions: each shard's rows are embedded
// with the configured encoders (opened once per worker, in Setup) and written straight into
// block files. Rows that cannot be decoded or embedded become Faults.
func EmbedToBlocks(s beam.Scope, in Input, ec embed.Config, cfg ReadConfig) ReadOutputs {
	s = s.Scope("EmbedToBlocks_" + cfg.Side)
	shards := beam.Reshuffle(s, beam.CreateList(s, shardIndexes(in)))
	return readOutputs(beam.ParDoN(s, &embedShardFn{Input: in, Embed: ec, Config: cfg, IDBuckets: idBuckets(in)}, shards))
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
	Config    ReadConfig
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

func (fn *embedShardFn) ProcessElement(ctx context.Context, shard int32, emitBlock func(BlockRef), emitFault func(Fault), emitIDs func(int32, IDBatch), emitKeys func(SampleKeys), emitStats func(SearchStats)) error {
	in := fn.Input
	sh := in.Shards[shard]
	f, err := dataset.GetRaw(in.Format)
	if err != nil {
		return err
	}
	sink := newRowSink(ctx, in, shard, fn.emb.Dim(), fn.Config, fn.IDBuckets, emitBlock, emitFault)
	defer sink.release()
	meter := embedMeter(fn.Config.Side, in.Rows())
	meter.Begin()
	defer meter.End()
	err = fn.emb.Shard(ctx, f, sh, in.Options, func(e embed.Embedded) error {
		r := e.Record
		meter.Add(1)
		return sink.add(r.Index, r.ID, r.Caption, r.Split, e.Image, e.Text, e.Err)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", in.File(shard), err)
	}
	if err := sink.finish(emitIDs, emitKeys, emitStats); err != nil {
		return err
	}
	logf("lemon: embedded %s shard %d/%d (%s): %d rows, %d not scorable", fn.Config.Side, shard+1, len(in.Shards), in.File(shard), sink.rows, sink.bad)
	return nil
}
