package transforms

import (
	"cmp"
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"golang.org/x/sync/errgroup"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/datacomp"
	"github.com/lemon-curation/lemon/internal/hugepage"
	"github.com/lemon-curation/lemon/score"
	"github.com/lemon-curation/lemon/storage"
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

// Rows is the number of rows in all shards.
func (in Input) Rows() int64 {
	var n int64
	for _, sh := range in.Shards {
		n += sh.Rows
	}
	return n
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

// ReadConfig says how a read stage turns rows into block files.
type ReadConfig struct {
	// Side names the blocks: "input" or "reference" (a separate reference dataset).
	Side      string
	Distance  score.Distance
	BlockRows int64
	TempDir   string
	// Reference, for the input side: which of its rows also form the reference set, when the
	// reference is a part of the input rather than all of it or another dataset.
	Reference ReferenceRule
	// UIDs: ids must be DataComp uids (32 lowercase hex digits), as --write-uids writes them;
	// a row whose id is not one goes to errors.
	UIDs bool
}

// ReferenceRule picks the reference rows of the input while it is read. With neither field
// set every input row is a reference row (a self-join) and no extra blocks are written.
type ReferenceRule struct {
	// Split: only rows whose split column holds this value are reference rows; they are
	// written to blocks of side "split" (unless a sample is drawn from them).
	Split string
	// Sample: the reference is a seeded sample; rows whose SampleHash(Seed, id) is at most
	// Threshold are its candidates, written to blocks of side "candidates" with their keys
	// (SampleReference trims them to the sample).
	Sample    bool
	Seed      int64
	Threshold uint64
}

// eligible says whether a row with this split value may be a reference row.
func (r ReferenceRule) eligible(split string) bool { return r.Split == "" || split == r.Split }

// ReadOutputs are what a read stage produces.
type ReadOutputs struct {
	Blocks     beam.PCollection // BlockRef: every block written, of every side
	Faults     beam.PCollection // Fault: rows that cannot be scored
	IDs        beam.PCollection // KV<int32, IDBatch>: valid rows' ids, for FindDuplicateIDs
	SampleKeys beam.PCollection // SampleKeys: a sample's candidates, one batch per shard
	Stats      beam.PCollection // SearchStats: bytes written
}

// ReadToBlocks reads every shard of in, validates each row, and writes the valid rows straight
// into block files of at most cfg.BlockRows rows (a shard's rows in order) under the temporary
// directory, so embeddings never pass through the runner's shuffle.
func ReadToBlocks(s beam.Scope, in Input, cfg ReadConfig) ReadOutputs {
	s = s.Scope("ReadToBlocks_" + cfg.Side)
	shards := beam.Reshuffle(s, beam.CreateList(s, shardIndexes(in)))
	return readOutputs(beam.ParDoN(s, &readShardFn{Input: in, Config: cfg, IDBuckets: idBuckets(in)}, shards))
}

func readOutputs(outs []beam.PCollection) ReadOutputs {
	return ReadOutputs{Blocks: outs[0], Faults: outs[1], IDs: outs[2], SampleKeys: outs[3], Stats: outs[4]}
}

// readShardFn reads the shards of a bundle in parallel, up to one per core: a runner may hand
// one bundle every shard (prism does), which would otherwise be read one after another. Each
// shard's outputs are held until FinishBundle, which emits them in shard order once every
// shard of the bundle has been read (emitters may not be called from other goroutines).
type readShardFn struct {
	Input     Input
	Config    ReadConfig
	IDBuckets int32

	ctx   context.Context
	reads *errgroup.Group
	mu    sync.Mutex
	done  []*shardOutputs
}

// shardOutputs is what reading one shard emits.
type shardOutputs struct {
	shard  int32
	blocks []BlockRef
	faults []Fault
	ids    []bucketIDs
	keys   []SampleKeys
	stats  []SearchStats
}

// bucketIDs is one id bucket's batch.
type bucketIDs struct {
	bucket int32
	batch  IDBatch
}

// StartBundle and FinishBundle take ProcessElement's emitters too: Beam Go requires bundle
// methods to declare them.
func (fn *readShardFn) StartBundle(ctx context.Context, _ func(BlockRef), _ func(Fault), _ func(int32, IDBatch), _ func(SampleKeys), _ func(SearchStats)) {
	fn.reads, fn.ctx = errgroup.WithContext(ctx) // a failed shard stops the others
	fn.reads.SetLimit(runtime.GOMAXPROCS(0))
	fn.done = nil
}

func (fn *readShardFn) ProcessElement(shard int32, _ func(BlockRef), _ func(Fault), _ func(int32, IDBatch), _ func(SampleKeys), _ func(SearchStats)) {
	fn.reads.Go(func() error {
		out, err := fn.read(fn.ctx, shard)
		if err != nil {
			return err
		}
		fn.mu.Lock()
		fn.done = append(fn.done, out)
		fn.mu.Unlock()
		return nil
	})
}

func (fn *readShardFn) FinishBundle(emitBlock func(BlockRef), emitFault func(Fault), emitIDs func(int32, IDBatch), emitKeys func(SampleKeys), emitStats func(SearchStats)) error {
	if err := fn.reads.Wait(); err != nil {
		return err
	}
	slices.SortFunc(fn.done, func(a, b *shardOutputs) int { return cmp.Compare(a.shard, b.shard) })
	for _, out := range fn.done {
		for _, b := range out.blocks {
			emitBlock(b)
		}
		for _, f := range out.faults {
			emitFault(f)
		}
		for _, b := range out.ids {
			emitIDs(b.bucket, b.batch)
		}
		for _, k := range out.keys {
			emitKeys(k)
		}
		for _, st := range out.stats {
			emitStats(st)
		}
	}
	fn.done = nil
	return nil
}

// read reads one shard into block files and returns what it emits.
func (fn *readShardFn) read(ctx context.Context, shard int32) (*shardOutputs, error) {
	in := fn.Input
	sh := in.Shards[shard]
	f, err := dataset.Get(in.Format)
	if err != nil {
		return nil, err
	}
	out := &shardOutputs{shard: shard}
	sink := newRowSink(ctx, in, shard, sh.Dim, fn.Config, fn.IDBuckets,
		func(b BlockRef) { out.blocks = append(out.blocks, b) }, func(f Fault) { out.faults = append(out.faults, f) })
	defer sink.release()
	err = f.Read(ctx, sh, in.Options, func(r dataset.Record) error {
		return sink.add(r.Index, r.ID, r.Caption, r.Split, r.Image, r.Text, r.Err)
	})
	if err != nil {
		return nil, err
	}
	err = sink.finish(func(k int32, b IDBatch) { out.ids = append(out.ids, bucketIDs{k, b}) },
		func(k SampleKeys) { out.keys = append(out.keys, k) }, func(st SearchStats) { out.stats = append(out.stats, st) })
	if err != nil {
		return nil, err
	}
	logf("lemon: read %s shard %d/%d (%s): %d rows, %d not scorable", fn.Config.Side, shard+1, len(in.Shards), in.File(shard), sink.rows, sink.bad)
	return out, nil
}

// rowSink takes one shard's rows as they are read or embedded, in order: it validates each,
// sends faults on, writes the valid rows to the query blocks (and to the reference's own
// blocks when the reference is a split or a sample of the input), and collects their ids.
type rowSink struct {
	in        Input
	shard     int32
	cfg       ReadConfig
	query     *blockWriter
	ref       *blockWriter // split or sample-candidate blocks, or nil
	keys      SampleKeys
	ids       *idBatcher
	emitFault func(Fault)
	stats     SearchStats
	norm      [2][]float32 // scratch: the row's vectors normalised, for d_mm
	rows, bad int64
}

func newRowSink(ctx context.Context, in Input, shard int32, dim int, cfg ReadConfig, buckets int32, emitBlock func(BlockRef), emitFault func(Fault)) *rowSink {
	s := &rowSink{in: in, shard: shard, cfg: cfg, ids: newIDBatcher(buckets), emitFault: emitFault,
		norm: [2][]float32{make([]float32, dim), make([]float32, dim)}, keys: SampleKeys{Shard: shard}}
	s.query = &blockWriter{ctx: ctx, dir: cfg.TempDir, side: cfg.Side, shard: shard, dim: dim, rows: cfg.BlockRows, emit: emitBlock, stats: &s.stats}
	switch rule := cfg.Reference; {
	case rule.Sample:
		s.ref = &blockWriter{ctx: ctx, dir: cfg.TempDir, side: SideCandidates, shard: shard, dim: dim, rows: cfg.BlockRows, emit: emitBlock, stats: &s.stats}
	case rule.Split != "":
		s.ref = &blockWriter{ctx: ctx, dir: cfg.TempDir, side: SideSplit, shard: shard, dim: dim, rows: cfg.BlockRows, emit: emitBlock, stats: &s.stats}
	}
	return s
}

// add takes row index of the shard. img and txt are used only during the call.
func (s *rowSink) add(index int64, id, caption, split string, img, txt []float32, readErr string) error {
	s.rows++
	pos := s.in.Shards[s.shard].Offset + index
	if reason := s.validate(readErr, id, img, txt); reason != "" {
		s.bad++
		s.emitFault(Fault{Pos: pos, Shard: s.shard, Index: index, ID: id, Reason: reason})
		return nil
	}
	dmm := score.Dist(s.cfg.Distance, s.norm[0], s.norm[1])
	s.ids.add(id, pos)
	if err := s.query.add(pos, id, caption, img, txt, dmm); err != nil {
		return err
	}
	rule := s.cfg.Reference
	if s.ref == nil || !rule.eligible(split) {
		return nil
	}
	if rule.Sample {
		h := SampleHash(rule.Seed, id)
		if h > rule.Threshold {
			return nil
		}
		s.keys.Hash = append(s.keys.Hash, h)
		s.keys.Pos = append(s.keys.Pos, pos)
		s.keys.ID = append(s.keys.ID, id)
	}
	return s.ref.add(pos, id, caption, img, txt, dmm)
}

// validate is why a row cannot be scored ("" if it can): the reader's own complaint, an id that
// is not a uid when uids are written, else a vector that cannot be normalised. It leaves the
// normalised vectors in s.norm.
func (s *rowSink) validate(readErr, id string, img, txt []float32) string {
	if readErr != "" {
		return readErr
	}
	if s.cfg.UIDs {
		if _, err := datacomp.ParseUID(id); err != nil {
			return err.Error() + ": --write-uids needs DataComp uids"
		}
	}
	if readErr == "" && (len(img) != len(s.norm[0]) || len(txt) != len(s.norm[1])) {
		return fmt.Sprintf("embedding dimensions %d and %d, want %d", len(img), len(txt), len(s.norm[0]))
	}
	copy(s.norm[0], img)
	copy(s.norm[1], txt)
	return rowFault(readErr, s.norm[0], s.norm[1])
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

// finish writes the last blocks and emits the shard's ids, sample keys and write counts.
func (s *rowSink) finish(emitIDs func(int32, IDBatch), emitKeys func(SampleKeys), emitStats func(SearchStats)) error {
	if err := s.query.flush(); err != nil {
		return err
	}
	if s.ref != nil {
		if err := s.ref.flush(); err != nil {
			return err
		}
	}
	s.ids.emit(emitIDs)
	if len(s.keys.Pos) > 0 {
		emitKeys(s.keys)
	}
	emitStats(s.stats)
	if sh := s.in.Shards[s.shard]; s.rows != sh.Rows {
		return fmt.Errorf("%s: read %d rows, expected %d", s.in.File(s.shard), s.rows, sh.Rows)
	}
	return nil
}

func (s *rowSink) release() {
	s.query.release()
	if s.ref != nil {
		s.ref.release()
	}
}

// Block sides besides "input" and "reference".
const (
	SideCandidates = "candidates" // a sample's candidates, before trimming
	SideSample     = "sample"     // the sample itself
	SideSplit      = "split"      // the input's reference rows under --reference-split
)

// blockWriter collects a shard's valid rows of one side into block files of at most rows rows.
type blockWriter struct {
	ctx   context.Context
	dir   string
	side  string
	shard int32
	dim   int
	rows  int64
	chunk int64
	b     *rawBlock
	emit  func(BlockRef)
	stats *SearchStats

	bufs [2][]float32 // the embedding buffers allocated for b, to give back
}

func (w *blockWriter) add(pos int64, id, caption string, img, txt []float32, dmm float64) error {
	if w.b == nil {
		// Room for a whole block up front: growing by appends copies the embeddings repeatedly.
		// The embeddings go on huge pages (see package hugepage); release gives them back.
		n := int(min(w.rows, 1<<16))
		w.bufs = [2][]float32{hugepage.Alloc[float32](n * w.dim), hugepage.Alloc[float32](n * w.dim)}
		w.b = &rawBlock{dim: w.dim, image: w.bufs[0][:0], text: w.bufs[1][:0],
			pos: make([]int64, 0, n), dmm: make([]float64, 0, n), id: make([]string, 0, n), caption: make([]string, 0, n)}
	}
	w.b.add(pos, id, caption, img, txt, dmm)
	if int64(w.b.len()) >= w.rows {
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
	if w.b == nil || w.b.len() == 0 {
		return nil
	}
	p := storage.Join(w.dir, blocksDir, fmt.Sprintf("%s-%06d-%06d.blk", w.side, w.shard, w.chunk))
	n, err := writeBlock(w.ctx, p, w.b)
	if err != nil {
		return err
	}
	w.stats.TempWriteBytes += n
	w.emit(BlockRef{Side: w.side, Shard: w.shard, Chunk: w.chunk, Path: p, Rows: int64(w.b.len()),
		FirstPos: w.b.pos[0], LastPos: w.b.pos[w.b.len()-1], Bytes: n})
	w.chunk++
	// Keep the buffers for the next block: fresh ones would be zeroed and faulted in again.
	w.b.reset()
	return nil
}

// FindDuplicateIDs keeps the first row (by position) of each id. It returns the later rows as
// Faults that name where the id was first seen, and the positions of those rows (to leave out
// of the search).
//
// ids holds batches of (id, position) keyed by a hash bucket of the id (see idBatcher), so the
// runner shuffles a few batches per shard rather than one element per row, which on a small
// dataset would cost more than its search.
func FindDuplicateIDs(s beam.Scope, in Input, ids beam.PCollection) (faults, dropped beam.PCollection) {
	s = s.Scope("FindDuplicateIDs")
	return beam.ParDo2(s, &duplicateFaultsFn{Input: in}, beam.GroupByKey(s, ids))
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
	Input Input
}

type idAt struct {
	id  string
	pos int64
}

func (fn *duplicateFaultsFn) ProcessElement(_ int32, batches func(*IDBatch) bool, emitFault func(Fault), emitDropped func(int64)) {
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
