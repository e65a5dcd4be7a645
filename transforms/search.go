package transforms

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"golang.org/x/sync/errgroup"

	"github.com/lemon-curation/lemon/internal/hugepage"
	"github.com/lemon-curation/lemon/knn"
	"github.com/lemon-curation/lemon/score"
	"github.com/lemon-curation/lemon/storage"
	"github.com/lemon-curation/lemon/tiling"
)

// SearchConfig is what the neighbour search and the scorer need to know.
type SearchConfig struct {
	Params    score.Params
	Metric    knn.Metric
	Backend   string
	TempDir   string
	EmitIDs   bool // keep neighbour ids (for --emit-neighbours)
	SaveLists bool // keep the whole lists (for --save-neighbour-lists)
	// SelfJoin: the reference is the query rows themselves (the same blocks), so a product can
	// feed both sides.
	SelfJoin bool
	// ExternalReference: the reference is another dataset; a reference row with the query's id
	// is the query itself. Otherwise a reference row is the query when it has its position.
	ExternalReference bool
	// The tiling chosen by package tiling: the shape, query rows per task (Q) and reference
	// rows per tile (T).
	Shape            tiling.Shape
	QueryRowsPerTask int64
	TileRows         int64
	// HeldRowBytes and QueryRowBytes are what a task holds per reference and per query row
	// (tiling.Job's figures): tasks account their memory with them.
	HeldRowBytes, QueryRowBytes float64
	// TaskBytes is the memory budget of a task (Go's soft memory limit is set to it).
	TaskBytes int64
}

// ScoredRows is what Neighbours produces: the scored rows, on their way to the writers, and
// their scores, on their way to the reject threshold.
type ScoredRows struct {
	// Outcomes: KV<int32, []byte>, batches of one shard's scored rows keyed by shard, encoded
	// as the writer's outcomes. The search tasks encode them once; they cross the runner only
	// in the writers' GroupByKey.
	Outcomes beam.PCollection
	// Keys: []uint64, each batch's scores as order-preserving keys (score.OrderedKey).
	Keys beam.PCollection
	// Stats: SearchStats.
	Stats beam.PCollection
}

// Neighbours finds every input row's k nearest references in both spaces and scores it.
// queryBlocks and refBlocks are block references (the same collection in a self-join);
// droppedQuery and droppedRef are positions to leave out (duplicate ids).
func Neighbours(s beam.Scope, in Input, cfg SearchConfig, queryBlocks, refBlocks, droppedQuery, droppedRef beam.PCollection) ScoredRows {
	s = s.Scope("Neighbours")
	tasks := beam.ParDo(s, &makeTasksFn{Config: cfg}, beam.Impulse(s),
		beam.SideInput{Input: queryBlocks}, beam.SideInput{Input: refBlocks},
		beam.SideInput{Input: droppedQuery}, beam.SideInput{Input: droppedRef})
	// The search stages take no side inputs: while a stage with side inputs has a long bundle
	// in progress, prism's scheduler re-evaluates it in a busy loop, taking a core from the
	// search. Tasks carry their blocks and dropped positions instead.
	switch cfg.Shape {
	case tiling.Memory, tiling.Stream:
		outs := beam.ParDoN(s, &searchTaskFn{Config: cfg, Input: in}, beam.Reshuffle(s, tasks))
		return ScoredRows{Outcomes: outs[0], Keys: outs[1], Stats: outs[2]}
	}
	pairs := beam.ParDo(s, &expandPairsFn{SelfJoin: cfg.SelfJoin}, tasks)
	partials, searchStats := beam.ParDo2(s, &pairTaskFn{Config: cfg}, beam.Reshuffle(s, pairs))
	outs := beam.ParDoN(s, &mergeTileFn{Config: cfg, Input: in}, beam.GroupByKey(s, partials))
	return ScoredRows{Outcomes: outs[0], Keys: outs[1], Stats: beam.Flatten(s, searchStats, outs[2])}
}

// Task is a unit of search work: query blocks against the reference, held whole (one tile),
// streamed in tiles, or, in the pairs shape, one tile pair.
type Task struct {
	Queries []BlockRef
	Tiles   [][]BlockRef
	// Diag: a self-join task whose query rows are its only tile, so each product feeds both.
	Diag bool
	// Shared: the one tile is the whole reference, which each worker process loads once.
	Shared bool
	// QueryTile and RefTiles index the tiles of the pairs shape; Tiles[i] is tile RefTiles[i].
	QueryTile int64
	RefTiles  []int64
	// RowPairs is how many (query row, reference row) pairs this task searches, both directions
	// of a self-join counted; TotalRowPairs the same for the whole job, for progress.
	RowPairs, TotalRowPairs int64
	// DropQueries and DropRefs are the positions in this task's query and reference blocks to
	// leave out (rows whose id repeats an earlier row's), ascending.
	DropQueries, DropRefs []int64
}

// dropSet is the set of a task's dropped positions.
func dropSet(ps []int64) map[int64]bool {
	m := make(map[int64]bool, len(ps))
	for _, p := range ps {
		m[p] = true
	}
	return m
}

// positionsIn returns the positions of sorted that fall in the blocks' ranges.
func positionsIn(sorted []int64, blocks []BlockRef) []int64 {
	var out []int64
	for _, b := range blocks {
		i, _ := slices.BinarySearch(sorted, b.FirstPos)
		for ; i < len(sorted) && sorted[i] <= b.LastPos; i++ {
			out = append(out, sorted[i])
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func collectPositions(iter func(*int64) bool) []int64 {
	var out []int64
	var p int64
	for iter(&p) {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

func collectRefs(iter func(*BlockRef) bool) []BlockRef {
	var out []BlockRef
	var b BlockRef
	for iter(&b) {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].FirstPos < out[j].FirstPos })
	return out
}

// cut splits blocks into consecutive runs of at most limit rows (tiling.Groups).
func cut(blocks []BlockRef, limit int64) [][]BlockRef {
	rows := make([]int64, len(blocks))
	for i, b := range blocks {
		rows[i] = b.Rows
	}
	var out [][]BlockRef
	for _, g := range tiling.Groups(rows, limit) {
		out = append(out, blocks[g[0]:g[1]:g[1]])
	}
	return out
}

// makeTasksFn cuts the search into tasks once every block is written: one element builds the
// query groups and tiles (a few per worker), which is cheap; the pairs shape's tile pairs are
// expanded from them in parallel (expandPairsFn).
type makeTasksFn struct{ Config SearchConfig }

func (fn *makeTasksFn) ProcessElement(_ []byte, qIter, rIter func(*BlockRef) bool, dropInIter, dropRefIter func(*int64) bool, emit func(Task)) error {
	cfg := fn.Config
	qs, rs := collectRefs(qIter), collectRefs(rIter)
	dropIn, dropRef := collectPositions(dropInIter), collectPositions(dropRefIter)
	refRows := rowsIn(rs)
	// Duplicates are removed later, so this is an upper bound; the scorer checks exactly.
	k := int64(cfg.Params.K)
	if refRows < k+1 {
		return fmt.Errorf("the reference set has %d usable rows, but k=%d needs at least %d (k neighbours besides the row itself); lower --k or add rows", refRows, k, k+1)
	}
	var tasks []Task
	switch cfg.Shape {
	case tiling.Memory:
		groups := cut(qs, cfg.QueryRowsPerTask)
		if cfg.SelfJoin && len(groups) == 1 {
			tasks = append(tasks, Task{Queries: qs, Tiles: [][]BlockRef{qs}, Diag: true, RowPairs: refRows * refRows})
			break
		}
		for _, g := range groups {
			tasks = append(tasks, Task{Queries: g, Tiles: [][]BlockRef{rs}, Shared: true, RowPairs: rowsIn(g) * refRows})
		}
	case tiling.Stream:
		tiles := cut(rs, cfg.TileRows)
		for _, g := range cut(qs, cfg.QueryRowsPerTask) {
			tasks = append(tasks, Task{Queries: g, Tiles: tiles, RowPairs: rowsIn(g) * refRows})
		}
	case tiling.Pairs:
		// One element per query tile, listing the reference tiles it pairs with (in a
		// self-join, itself and those after it); expandPairsFn makes the pair tasks.
		qt := cut(qs, cfg.TileRows)
		rt := qt
		if !cfg.SelfJoin {
			rt = cut(rs, cfg.TileRows)
		}
		for i, q := range qt {
			t := Task{Queries: q, QueryTile: int64(i)}
			for j, r := range rt {
				if cfg.SelfJoin && j < i {
					continue
				}
				t.Tiles = append(t.Tiles, r)
				t.RefTiles = append(t.RefTiles, int64(j))
				pairs := rowsIn(q) * rowsIn(r)
				if cfg.SelfJoin && i != j {
					pairs *= 2 // one product, both directions
				}
				t.RowPairs += pairs
			}
			tasks = append(tasks, t)
		}
	default:
		return fmt.Errorf("internal error: unknown search shape %q", cfg.Shape)
	}
	var total int64
	for _, t := range tasks {
		total += t.RowPairs
	}
	for _, t := range tasks {
		t.TotalRowPairs = total
		t.DropQueries = positionsIn(dropIn, t.Queries)
		var refs []BlockRef
		for _, tile := range t.Tiles {
			refs = append(refs, tile...)
		}
		t.DropRefs = positionsIn(dropRef, refs)
		emit(t)
	}
	return nil
}

// expandPairsFn turns a query tile's element into one task per tile pair.
type expandPairsFn struct{ SelfJoin bool }

func (fn *expandPairsFn) ProcessElement(t Task, emit func(Task)) {
	for i, tile := range t.Tiles {
		p := Task{Queries: t.Queries, Tiles: [][]BlockRef{tile}, QueryTile: t.QueryTile, RefTiles: []int64{t.RefTiles[i]},
			Diag: fn.SelfJoin && t.RefTiles[i] == t.QueryTile, TotalRowPairs: t.TotalRowPairs,
			DropQueries: t.DropQueries, DropRefs: positionsIn(t.DropRefs, tile)}
		p.RowPairs = rowsIn(t.Queries) * rowsIn(tile)
		if fn.SelfJoin && !p.Diag {
			p.RowPairs *= 2 // one product, both directions
		}
		emit(p)
	}
}

// loader reads the blocks a task needs and counts the bytes it read.
type loader struct {
	stats *SearchStats
}

// load reads blocks into one, leaving out dropped rows; see readConcat.
func (l loader) load(ctx context.Context, refs []BlockRef, drop map[int64]bool) (*knn.Block, error) {
	b, n, err := readConcat(ctx, refs, drop)
	l.stats.TempReadBytes += n
	return b, err
}

// asQueries returns a copy of q whose Self marks each row's own reference position: its
// position, or, against a separate reference dataset, the position of the reference row with
// the same id (byID, built from the reference rows being searched).
func asQueries(q *knn.Block, external bool, byID map[string]int64) *knn.Block {
	out := *q
	out.Self = make([]int64, q.Len())
	for i := range out.Self {
		if !external {
			out.Self[i] = q.Pos[i]
			continue
		}
		p, ok := byID[q.ID[i]]
		if !ok {
			p = -1
		}
		out.Self[i] = p
	}
	return &out
}

func posByID(b *knn.Block) map[string]int64 {
	m := make(map[string]int64, b.Len())
	for i, id := range b.ID {
		m[id] = b.Pos[i]
	}
	return m
}

func (cfg SearchConfig) options() knn.Options {
	return knn.Options{K: cfg.Params.K, Metric: cfg.Metric, Backend: cfg.Backend}
}

// searchFlops is the multiply-adds (x2) of searching q rows against r rows in both modalities.
func searchFlops(q, r, dim int) float64 { return 4 * float64(dim) * float64(q) * float64(r) }

// searchTaskFn runs a task of the memory or stream shape: its query rows against every tile of
// the reference, merging the lists as tiles go by, then scores the rows in place. A memory
// task's one tile is the whole reference, shared by the tasks of the worker process (see
// sharedReference); a diagonal task searches its rows against themselves, each product
// feeding both rows.
type searchTaskFn struct {
	Config SearchConfig
	Input  Input
}

func (fn *searchTaskFn) ProcessElement(ctx context.Context, t Task, emitOutcome func(int32, []byte), emitKeys func([]uint64), emitStats func(SearchStats)) error {
	cfg := fn.Config
	stats := SearchStats{Tasks: 1}
	ld := loader{stats: &stats}
	dropIn, dropRef := dropSet(t.DropQueries), dropSet(t.DropRefs)
	progress.begin(t.TotalRowPairs, time.Now())
	limitMemory(cfg.TaskBytes)
	read, err := ld.load(ctx, t.Queries, dropIn)
	if err != nil {
		return err
	}
	defer releaseEmbeddings(read)
	q := read
	opt := cfg.options()
	opt.Sketched = stats.countSketch()
	var finish func()
	opt.Progress, finish = progressFor(t, q.Dim, len(t.Tiles))
	var lists knn.Lists
	switch {
	case t.Diag:
		logf("lemon: neighbour search: %d rows against each other, dim %d, one task", q.Len(), q.Dim)
		q = asQueries(q, false, nil)
		stats.PeakTaskMemoryBytes = int64(float64(q.Len()) * cfg.QueryRowBytes)
		if q.Len() > 0 {
			if lists, _, err = knn.SearchPair(q, q, opt); err != nil {
				return err
			}
			stats.Flops = 2 * float64(q.Dim) * float64(q.Len()) * float64(q.Len()+1)
		}
	case t.Shared:
		ref, byID, release, err := references.acquire(ctx, t.Tiles[0], t.DropRefs, cfg.ExternalReference, ld)
		if err != nil {
			return err
		}
		defer release()
		logf("lemon: neighbour search: %d query rows against %d reference rows held in memory, dim %d", q.Len(), ref.Len(), q.Dim)
		stats.PeakTaskMemoryBytes = int64(float64(q.Len())*cfg.QueryRowBytes + float64(ref.Len())*cfg.HeldRowBytes)
		q = asQueries(q, cfg.ExternalReference, byID)
		if q.Len() > 0 && ref.Len() > 0 {
			if lists, err = knn.Search(q, ref, opt); err != nil {
				return err
			}
			stats.Flops = searchFlops(q.Len(), ref.Len(), q.Dim)
		}
	default:
		logf("lemon: neighbour search: %d query rows against %d reference rows in %d tiles, dim %d", q.Len(), rowsIn(t.Tiles[0])*int64(len(t.Tiles)), len(t.Tiles), q.Dim)
		for i, tile := range t.Tiles {
			r, err := ld.load(ctx, tile, dropRef)
			if err != nil {
				return err
			}
			mem := int64(float64(q.Len())*cfg.QueryRowBytes + float64(r.Len())*cfg.HeldRowBytes)
			stats.PeakTaskMemoryBytes = max(stats.PeakTaskMemoryBytes, mem)
			var byID map[string]int64
			if cfg.ExternalReference {
				byID = posByID(r)
			}
			qt := asQueries(q, cfg.ExternalReference, byID)
			if q.Len() > 0 && r.Len() > 0 {
				o := opt
				if lists.Image != nil {
					// Only what beats the lists so far can change them.
					o.Within = knn.Bounds(lists, cfg.Params.K)
				}
				l, err := knn.Search(qt, r, o)
				if err != nil {
					releaseEmbeddings(r)
					return err
				}
				stats.Flops += searchFlops(q.Len(), r.Len(), q.Dim)
				if i == 0 || lists.Image == nil {
					lists = l
				} else {
					lists = knn.MergeLists(lists, l, cfg.Params.K)
				}
			}
			releaseEmbeddings(r)
		}
	}
	finish()
	stats.logSketch()
	if q.Len() == 0 {
		emitStats(stats) // nothing to score: every row was dropped
		return nil
	}
	if lists.Image == nil {
		lists = knn.Lists{Image: make([][]knn.Neighbour, q.Len()), Text: make([][]knn.Neighbour, q.Len())}
	}
	releaseEmbeddings(read) // the embeddings are not needed any more: let them go before scoring
	q.Image, q.Text = nil, nil
	if err := scoreBlock(cfg, fn.Input, q, &lists, emitScored(&stats, emitOutcome, emitKeys)); err != nil {
		return err
	}
	emitStats(stats)
	return nil
}

// emitScored returns what scoreBlock emits each batch with: the batch encoded as a writer's
// outcome (its bytes counted: they travel through the runner's shuffle) and its score keys.
func emitScored(stats *SearchStats, emitOutcome func(int32, []byte), emitKeys func([]uint64)) func(ScoredBatch) {
	return func(b ScoredBatch) {
		enc := encodeOutcome(Outcome{Scored: b.Rows})
		stats.ShuffleBytes += int64(len(enc))
		emitOutcome(b.Shard, enc)
		emitKeys(scoreKeys(b.Rows))
	}
}

// references is this worker process's shared reference: the memory shape's tasks all search
// the whole reference, which is read once per process and shared by the tasks running at once,
// rather than once per task or per DoFn instance.
var references = &sharedReference{}

type sharedReference struct {
	mu    sync.Mutex
	key   string
	ref   *knn.Block
	byID  map[string]int64
	users int
}

// acquire returns the reference made of blocks (less the dropped positions), reading it if it
// is not the one held; release must be called when the task is done with it. A reference
// held by no task is given back when another is needed.
func (c *sharedReference) acquire(ctx context.Context, blocks []BlockRef, drop []int64, external bool, ld loader) (*knn.Block, map[string]int64, func(), error) {
	key := referenceKey(blocks, drop)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.key != key || c.ref == nil {
		if c.users > 0 {
			// Another reference is in use (two jobs in one process): read this one privately.
			ref, err := ld.load(ctx, blocks, dropSet(drop))
			if err != nil {
				return nil, nil, nil, err
			}
			var byID map[string]int64
			if external {
				byID = posByID(ref)
			}
			return ref, byID, func() { releaseEmbeddings(ref) }, nil
		}
		if c.ref != nil {
			releaseEmbeddings(c.ref)
			c.ref, c.byID, c.key = nil, nil, ""
		}
		ref, err := ld.load(ctx, blocks, dropSet(drop))
		if err != nil {
			return nil, nil, nil, err
		}
		c.ref, c.key, c.byID = ref, key, nil
		if external {
			c.byID = posByID(ref)
		}
	}
	c.users++
	return c.ref, c.byID, func() {
		c.mu.Lock()
		c.users--
		c.mu.Unlock()
	}, nil
}

// referenceKey identifies a reference by its block files and dropped rows.
func referenceKey(blocks []BlockRef, drop []int64) string {
	h := fnv.New128a()
	var b [8]byte
	for _, r := range blocks {
		h.Write([]byte(r.Path))
		binary.LittleEndian.PutUint64(b[:], uint64(r.Rows))
		h.Write(b[:])
	}
	for _, p := range drop {
		binary.LittleEndian.PutUint64(b[:], uint64(p))
		h.Write(b[:])
	}
	return string(h.Sum(nil))
}

// limitMemory sets Go's soft memory limit to a task's budget plus 1 GiB for the rest of the
// process (unless GOMEMLIMIT is set, or a lower limit is): without a limit the collector lets
// garbage from reading and scoring grow the heap to twice the live data. The limit covers Go's
// heap only; the embeddings and the search's big buffers are mapped outside it (package
// hugepage). It is soft: a larger working set only makes collection busier.
func limitMemory(budget int64) {
	if os.Getenv("GOMEMLIMIT") != "" || budget <= 0 {
		return
	}
	if limit := budget + 1<<30; limit < debug.SetMemoryLimit(-1) {
		debug.SetMemoryLimit(limit)
	}
}

// rowsIn is how many rows the blocks hold (before duplicates are dropped).
func rowsIn(bs []BlockRef) int64 {
	var n int64
	for _, b := range bs {
		n += b.Rows
	}
	return n
}

// progressFor turns knn's progress (work done of a total, reported from several goroutines,
// per search call) into row pairs of task t, whose work is calls searches of about equal size.
// finish counts whatever the calls did not report (searches skipped for want of rows).
func progressFor(t Task, dim, calls int) (report func(done, total int64), finish func()) {
	var mu sync.Mutex
	var reported, base int64
	var last float64
	share := t.RowPairs / int64(max(1, calls))
	add := func(s int64) {
		if s = min(t.RowPairs, s); s > reported {
			progress.add(t.TotalRowPairs, s-reported, dim)
			reported = s
		}
	}
	report = func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		f := float64(done) / float64(total)
		if f < last { // a new call began
			base += share
		}
		last = f
		add(base + int64(float64(share)*f))
	}
	return report, func() {
		mu.Lock()
		defer mu.Unlock()
		add(t.RowPairs)
	}
}

// readConcat reads blocks into one, in the order given, leaving out dropped rows, and returns
// the bytes read. Blocks are read in parallel, each straight into its place. The embeddings
// are mapped on huge pages (see package hugepage): the caller gives them back with
// releaseEmbeddings.
func readConcat(ctx context.Context, refs []BlockRef, drop map[int64]bool) (*knn.Block, int64, error) {
	if len(refs) == 0 {
		return &knn.Block{}, 0, nil
	}
	dim, err := blockDim(ctx, refs[0].Path)
	if err != nil {
		return nil, 0, err
	}
	at := make([]int, len(refs)+1)
	for i, r := range refs {
		at[i+1] = at[i] + int(r.Rows)
	}
	n := at[len(refs)]
	out := &knn.Block{Dim: dim, Pos: make([]int64, n), Self: make([]int64, n), Dmm: make([]float64, n),
		Image: hugepage.Alloc[float32](n * dim), Text: hugepage.Alloc[float32](n * dim), ID: make([]string, n), Caption: make([]string, n)}
	read := make([]int64, len(refs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, r := range refs {
		g.Go(func() (err error) {
			read[i], err = readBlockInto(gctx, r.Path, out, at[i], int(r.Rows))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		releaseEmbeddings(out)
		return nil, 0, err
	}
	var bytes int64
	for _, n := range read {
		bytes += n
	}
	return dropRows(out, drop), bytes, nil
}

// dropRows returns b without the rows at the dropped positions, its embeddings on huge pages
// (b's are given back when a copy is made).
func dropRows(b *knn.Block, drop map[int64]bool) *knn.Block {
	if len(drop) == 0 {
		return b
	}
	keep := make([]int, 0, b.Len())
	for i, p := range b.Pos {
		if !drop[p] {
			keep = append(keep, i)
		}
	}
	if len(keep) == b.Len() {
		return b
	}
	d, n := b.Dim, len(keep)
	out := &knn.Block{Dim: d, Image: hugepage.Alloc[float32](n * d), Text: hugepage.Alloc[float32](n * d),
		Pos: make([]int64, n), Self: make([]int64, n), Dmm: make([]float64, n), ID: make([]string, n), Caption: make([]string, n)}
	for k, i := range keep {
		copy(out.Image[k*d:(k+1)*d], b.Image[i*d:(i+1)*d])
		copy(out.Text[k*d:(k+1)*d], b.Text[i*d:(i+1)*d])
		out.Pos[k], out.Self[k], out.Dmm[k], out.ID[k], out.Caption[k] = b.Pos[i], b.Self[i], b.Dmm[i], b.ID[i], b.Caption[i]
	}
	releaseEmbeddings(b)
	return out
}

// releaseEmbeddings gives back the embeddings of a block from readConcat; b's embeddings (and
// any copy of their slices) must not be used afterwards.
func releaseEmbeddings(b *knn.Block) {
	hugepage.Free(b.Image)
	hugepage.Free(b.Text)
	b.Image, b.Text = nil, nil
}

// scoredBatchRows bounds the rows of one ScoredBatch.
const scoredBatchRows = 4096

// scoreBlock scores every row of query block q from its merged lists, emitting them in batches
// of one shard each. Rows are scored in parallel chunks and emitted in order.
//
// It clears *l once the rows are scored, so the lists can be freed while batches are emitted.
func scoreBlock(cfg SearchConfig, in Input, q *knn.Block, l *knn.Lists, emit func(ScoredBatch)) error {
	k := cfg.Params.K
	n := q.Len()
	rows := make([]Scored, n)
	hugepage.Advise(rows)
	var idBack []string // every row's neighbour ids, 2k per row, in one allocation
	if cfg.EmitIDs {
		idBack = make([]string, 2*k*n)
		hugepage.Advise(idBack)
	}
	g := new(errgroup.Group)
	const chunk = 1024
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i0 := 0; i0 < n; i0 += chunk {
		g.Go(func() error {
			var img, txt []score.Neighbour
			for i := i0; i < min(i0+chunk, n); i++ {
				il, tl := l.Image[i], l.Text[i]
				if len(il) != k || len(tl) != k {
					return fmt.Errorf("row %q has %d image and %d text neighbours, want k=%d: the reference set has too few usable rows", q.ID[i], len(il), len(tl), k)
				}
				img, txt = toScore(img[:0], il), toScore(txt[:0], tl)
				r := score.Score(cfg.Params, q.Dmm[i], img, txt)
				shard, index := in.Locate(q.Pos[i])
				out := Scored{Pos: q.Pos[i], Shard: shard, Index: index, ID: q.ID[i], Caption: q.Caption[i], Dmm: r.Dmm, Sn: r.Sn, Sm: r.Sm, Score: r.Score}
				if cfg.EmitIDs {
					at := idBack[2*k*i : 2*k*(i+1) : 2*k*(i+1)]
					out.ImageNeighbours, out.TextNeighbours = ids(at[:0:k], il), ids(at[k:k:2*k], tl)
				}
				if cfg.SaveLists {
					out.ImageList, out.TextList = il, tl
				}
				rows[i] = out
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	*l = knn.Lists{}
	// Batches: runs of one shard, at most scoredBatchRows long.
	for i0 := 0; i0 < n; {
		i1 := i0 + 1
		for i1 < n && i1-i0 < scoredBatchRows && rows[i1].Shard == rows[i0].Shard {
			i1++
		}
		emit(ScoredBatch{Shard: rows[i0].Shard, Rows: rows[i0:i1:i1]})
		i0 = i1
	}
	return nil
}

// toScore appends what the score needs of each neighbour to dst.
func toScore(dst []score.Neighbour, ns []knn.Neighbour) []score.Neighbour {
	for _, n := range ns {
		dst = append(dst, score.Neighbour{Dist: n.Dist, Cross: n.Cross, Dmm: n.Dmm, SameCaption: n.SameCaption})
	}
	return dst
}

// ids appends the neighbours' ids to dst.
func ids(dst []string, ns []knn.Neighbour) []string {
	for _, n := range ns {
		dst = append(dst, n.ID)
	}
	return dst
}

// PartialRef names a partial-lists file of the pairs shape: what one tile pair found for the
// rows of one query tile, in the tile's row order (dropped rows left out). It carries the
// tile's blocks and dropped positions, which its merge needs.
type PartialRef struct {
	Path        string
	Queries     []BlockRef
	DropQueries []int64
}

// pairTaskFn runs one tile pair of the pairs shape and writes each side's partial lists to
// temporary storage: a merge holds only one tile's lists, however many tiles there are, and
// nothing large passes through the runner.
type pairTaskFn struct {
	Config SearchConfig
}

func (fn *pairTaskFn) ProcessElement(ctx context.Context, t Task, emit func(int64, PartialRef), emitStats func(SearchStats)) error {
	cfg := fn.Config
	stats := SearchStats{Tasks: 1}
	ld := loader{stats: &stats}
	progress.begin(t.TotalRowPairs, time.Now())
	limitMemory(cfg.TaskBytes)
	tile := t.Tiles[0]
	dropRef := dropSet(t.DropRefs)
	a, err := ld.load(ctx, t.Queries, dropSet(t.DropQueries))
	if err != nil {
		return err
	}
	defer releaseEmbeddings(a)
	b := a
	if !t.Diag {
		if b, err = ld.load(ctx, tile, dropRef); err != nil {
			return err
		}
		defer releaseEmbeddings(b)
	}
	opt := cfg.options()
	opt.Sketched = stats.countSketch()
	var finish func()
	opt.Progress, finish = progressFor(t, a.Dim, 1)
	defer finish()
	var forA, forB knn.Lists
	switch {
	case a.Len() == 0 || b.Len() == 0:
		// Every row of a tile was dropped: empty lists for the other side.
		forA = emptyLists(a.Len())
		forB = emptyLists(b.Len())
	case cfg.SelfJoin:
		qa := asQueries(a, false, nil)
		qb := qa
		if !t.Diag {
			qb = asQueries(b, false, nil)
		}
		if forA, forB, err = knn.SearchPair(qa, qb, opt); err != nil {
			return err
		}
		stats.PeakTaskMemoryBytes = int64(float64(a.Len()+b.Len()) * cfg.QueryRowBytes)
		if t.Diag {
			stats.Flops = 2 * float64(a.Dim) * float64(a.Len()) * float64(a.Len()+1)
			stats.PeakTaskMemoryBytes = int64(float64(a.Len()) * cfg.QueryRowBytes)
		} else {
			stats.Flops = searchFlops(a.Len(), b.Len(), a.Dim)
		}
	default:
		var byID map[string]int64
		if cfg.ExternalReference {
			byID = posByID(b)
		}
		if forA, err = knn.Search(asQueries(a, cfg.ExternalReference, byID), b, opt); err != nil {
			return err
		}
		stats.Flops = searchFlops(a.Len(), b.Len(), a.Dim)
		stats.PeakTaskMemoryBytes = int64(float64(a.Len())*cfg.QueryRowBytes + float64(b.Len())*cfg.HeldRowBytes)
	}
	stats.logSketch()
	write := func(tileIndex int64, queries []BlockRef, drop []int64, l knn.Lists) error {
		p := storage.Join(cfg.TempDir, partialsDir, fmt.Sprintf("tile-%06d-from-%06d-%06d.lst", tileIndex, t.QueryTile, t.RefTiles[0]))
		n, err := writePartial(ctx, p, fn.partial(l))
		if err != nil {
			return err
		}
		stats.TempWriteBytes += n
		emit(tileIndex, PartialRef{Path: p, Queries: queries, DropQueries: drop})
		return nil
	}
	if err := write(t.QueryTile, t.Queries, t.DropQueries, forA); err != nil {
		return err
	}
	if cfg.SelfJoin && !t.Diag {
		if err := write(t.RefTiles[0], tile, t.DropRefs, forB); err != nil {
			return err
		}
	}
	emitStats(stats)
	return nil
}

func emptyLists(n int) knn.Lists {
	return knn.Lists{Image: make([][]knn.Neighbour, n), Text: make([][]knn.Neighbour, n)}
}

// partial drops the neighbours' ids unless they are wanted, so partial files stay small.
func (fn *pairTaskFn) partial(l knn.Lists) PartialBlock {
	if !fn.Config.EmitIDs {
		for _, lists := range [][][]knn.Neighbour{l.Image, l.Text} {
			for _, ns := range lists {
				for i := range ns {
					ns[i].ID = ""
				}
			}
		}
	}
	return PartialBlock{Lists: l}
}

// PartialBlock is what one tile pair found for one query tile's rows.
type PartialBlock struct{ Lists knn.Lists }

// writePartial writes partial lists to p atomically and returns the file's size.
func writePartial(ctx context.Context, p string, pb PartialBlock) (int64, error) {
	b, err := encodePartialBlock(pb)
	if err != nil {
		return 0, err
	}
	return int64(len(b)), storage.WriteFile(ctx, p, b)
}

func readPartial(ctx context.Context, p string) (PartialBlock, int64, error) {
	b, err := storage.ReadFile(ctx, p)
	if err != nil {
		return PartialBlock{}, 0, err
	}
	pb, err := decodePartialBlock(b)
	if err != nil {
		return PartialBlock{}, 0, fmt.Errorf("%s: %w", p, err)
	}
	return pb, int64(len(b)), nil
}

// mergeTileFn merges one query tile's partial lists (knn.MergeLists is associative and breaks
// ties by position, so the order the files come in does not matter) and scores its rows.
type mergeTileFn struct {
	Config SearchConfig
	Input  Input
}

func (fn *mergeTileFn) ProcessElement(ctx context.Context, tile int64, refs func(*PartialRef) bool, emitOutcome func(int32, []byte), emitKeys func([]uint64), emitStats func(SearchStats)) error {
	cfg := fn.Config
	stats := SearchStats{Tasks: 1}
	var first PartialRef
	var merged knn.Lists
	var ref PartialRef
	n := 0
	for refs(&ref) {
		p, bytes, err := readPartial(ctx, ref.Path)
		if err != nil {
			return err
		}
		stats.TempReadBytes += bytes
		if n == 0 {
			first, merged = ref, p.Lists
		} else {
			if len(p.Lists.Image) != len(merged.Image) {
				return fmt.Errorf("internal error: partial lists of tile %d disagree on its rows (%d vs %d)", tile, len(p.Lists.Image), len(merged.Image))
			}
			merged = knn.MergeLists(merged, p.Lists, cfg.Params.K)
		}
		n++
	}
	ld := loader{stats: &stats}
	q, err := ld.load(ctx, first.Queries, dropSet(first.DropQueries))
	if err != nil {
		return err
	}
	defer releaseEmbeddings(q)
	if q.Len() != len(merged.Image) {
		return fmt.Errorf("internal error: tile %d has %d rows but %d neighbour lists", tile, q.Len(), len(merged.Image))
	}
	stats.PeakTaskMemoryBytes = int64(float64(q.Len()) * cfg.QueryRowBytes)
	releaseEmbeddings(q)
	if err := scoreBlock(cfg, fn.Input, q, &merged, emitScored(&stats, emitOutcome, emitKeys)); err != nil {
		return err
	}
	emitStats(stats)
	return nil
}
