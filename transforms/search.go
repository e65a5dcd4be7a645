package transforms

import (
	"context"
	"fmt"
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
)

// SearchConfig is what the neighbour search and the scorer need to know.
type SearchConfig struct {
	Params    score.Params
	Metric    knn.Metric
	Backend   string
	BlockRows int64
	TempDir   string
	EmitIDs   bool // keep neighbour ids (for --emit-neighbours)
	SaveLists bool // keep the whole lists (for --save-neighbour-lists)
	// SelfJoin: the reference is the input itself, so one product per block pair feeds both.
	SelfJoin bool
	// ExternalReference: the reference is another dataset; a reference row with the query's id
	// is the query itself.
	ExternalReference bool
	// InMemory: every task holds the whole reference (and, in a self-join, the one task holds
	// everything), so no partial lists are shuffled. Otherwise tasks are block pairs whose
	// partial lists a combiner merges.
	InMemory bool
	// QueryRowsPerTask bounds the query rows of one in-memory task.
	QueryRowsPerTask int64
}

// Neighbours finds every input row's k nearest references in both spaces and scores it. It
// returns Scored rows. inputBlocks and refBlocks are block references (the same collection in a
// self-join); droppedInput and droppedRef are positions to leave out (duplicate ids).
func Neighbours(s beam.Scope, in Input, cfg SearchConfig, inputBlocks, refBlocks, droppedInput, droppedRef beam.PCollection) beam.PCollection {
	s = s.Scope("Neighbours")
	tasks := beam.ParDo(s, &makeTasksFn{Config: cfg}, beam.Impulse(s),
		beam.SideInput{Input: inputBlocks}, beam.SideInput{Input: refBlocks},
		beam.SideInput{Input: droppedInput}, beam.SideInput{Input: droppedRef})
	tasks = beam.Reshuffle(s, tasks)
	// The search stages take no side inputs: while a stage with side inputs has a long bundle
	// in progress, prism's scheduler re-evaluates it in a busy loop, taking a core from the
	// search. Tasks carry the dropped positions of their blocks instead.
	if cfg.InMemory {
		return beam.ParDo(s, &memoryTaskFn{Config: cfg, Input: in}, tasks)
	}
	partials := beam.ParDo(s, &pairTaskFn{Config: cfg}, tasks)
	merged := beam.CombinePerKey(s, &mergePartialsFn{K: cfg.Params.K}, partials)
	return beam.ParDo(s, &scoreBlockFn{Config: cfg, Input: in}, merged,
		beam.SideInput{Input: droppedInput}, beam.SideInput{Input: droppedRef})
}

// Task is a unit of search work: query blocks against reference blocks.
type Task struct {
	Queries       []BlockRef
	Refs          []BlockRef
	RowPairs      int64 // (query row, reference row) pairs this task searches, both directions of a self-join counted
	TotalRowPairs int64 // the same for the whole job, for progress
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
		for ; i < len(sorted) && sorted[i] < b.FirstPos+b.Rows; i++ {
			out = append(out, sorted[i])
		}
	}
	return out
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

type makeTasksFn struct{ Config SearchConfig }

func collectRefs(iter func(*BlockRef) bool) []BlockRef {
	var out []BlockRef
	var b BlockRef
	for iter(&b) {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].FirstPos < out[j].FirstPos })
	return out
}

func (fn *makeTasksFn) ProcessElement(_ []byte, qIter, rIter func(*BlockRef) bool, dropInIter, dropRefIter func(*int64) bool, emit func(Task)) error {
	qs, rs := collectRefs(qIter), collectRefs(rIter)
	dropIn, dropRef := collectPositions(dropInIter), collectPositions(dropRefIter)
	refRows := rowsIn(rs)
	// Duplicates are removed later, so this is an upper bound; the scorer checks exactly.
	k := int64(fn.Config.Params.K)
	if refRows < k+1 {
		return fmt.Errorf("the reference set has %d usable rows, but k=%d needs at least %d (k neighbours besides the row itself); lower --k or add rows", refRows, k, k+1)
	}
	var tasks []Task
	switch {
	case fn.Config.InMemory && fn.Config.SelfJoin:
		tasks = append(tasks, Task{Queries: qs, Refs: rs, RowPairs: refRows * refRows})
	case fn.Config.InMemory:
		var cur Task
		var rows int64
		for _, q := range qs {
			if len(cur.Queries) > 0 && rows+q.Rows > fn.Config.QueryRowsPerTask {
				tasks = append(tasks, cur)
				cur, rows = Task{}, 0
			}
			cur.Queries = append(cur.Queries, q)
			rows += q.Rows
		}
		if len(cur.Queries) > 0 {
			tasks = append(tasks, cur)
		}
		for i := range tasks {
			tasks[i].Refs = rs
			tasks[i].RowPairs = rowsIn(tasks[i].Queries) * refRows
		}
	default:
		for i, q := range qs {
			for j, r := range rs {
				if fn.Config.SelfJoin && j < i {
					continue
				}
				pairs := q.Rows * r.Rows
				if fn.Config.SelfJoin && i != j {
					pairs *= 2 // one product, both directions
				}
				tasks = append(tasks, Task{Queries: []BlockRef{q}, Refs: []BlockRef{r}, RowPairs: pairs})
			}
		}
	}
	var total int64
	for _, t := range tasks {
		total += t.RowPairs
	}
	for _, t := range tasks {
		t.TotalRowPairs = total
		t.DropQueries, t.DropRefs = positionsIn(dropIn, t.Queries), positionsIn(dropRef, t.Refs)
		emit(t)
	}
	return nil
}

// positionSet reads a side input of positions into a set, once per DoFn instance.
type positionSet struct {
	once sync.Once
	set  map[int64]bool
}

func (p *positionSet) load(iter func(*int64) bool) map[int64]bool {
	p.once.Do(func() {
		p.set = map[int64]bool{}
		var v int64
		for iter(&v) {
			p.set[v] = true
		}
	})
	return p.set
}

// loader reads blocks, leaves out dropped rows, and caches what it read.
type loader struct {
	mu    sync.Mutex
	cache map[string]*knn.Block
	order []string
	max   int
}

func (l *loader) load(ctx context.Context, p string, drop map[int64]bool) (*knn.Block, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.cache[p]; ok {
		return b, nil
	}
	b, err := readBlock(ctx, p)
	if err != nil {
		return nil, err
	}
	b = filterBlock(b, drop)
	if l.cache == nil {
		l.cache = map[string]*knn.Block{}
	}
	if l.max > 0 && len(l.order) >= l.max {
		delete(l.cache, l.order[0])
		l.order = l.order[1:]
	}
	l.cache[p] = b
	l.order = append(l.order, p)
	return b, nil
}

// filterBlock returns b without the rows at the dropped positions.
func filterBlock(b *knn.Block, drop map[int64]bool) *knn.Block {
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
	return selectRows(b, keep)
}

func selectRows(b *knn.Block, rows []int) *knn.Block {
	d := b.Dim
	out := &knn.Block{Dim: d}
	for _, i := range rows {
		out.Image = append(out.Image, b.Image[i*d:(i+1)*d]...)
		out.Text = append(out.Text, b.Text[i*d:(i+1)*d]...)
		out.Pos = append(out.Pos, b.Pos[i])
		out.Self = append(out.Self, b.Self[i])
		out.Dmm = append(out.Dmm, b.Dmm[i])
		out.ID = append(out.ID, b.ID[i])
		out.Caption = append(out.Caption, b.Caption[i])
	}
	return out
}

// asQueries returns a copy of q whose Self marks each row's own reference position: its
// position in a self-join or sample, or the reference row with the same id.
func asQueries(q *knn.Block, cfg SearchConfig, refPosByID map[string]int64) *knn.Block {
	out := *q
	out.Self = make([]int64, q.Len())
	for i := range out.Self {
		if cfg.ExternalReference {
			p, ok := refPosByID[q.ID[i]]
			if !ok {
				p = -1
			}
			out.Self[i] = p
		} else {
			out.Self[i] = q.Pos[i]
		}
	}
	return &out
}

func posByID(blocks ...*knn.Block) map[string]int64 {
	m := map[string]int64{}
	for _, b := range blocks {
		for i, id := range b.ID {
			m[id] = b.Pos[i]
		}
	}
	return m
}

func (cfg SearchConfig) options() knn.Options {
	return knn.Options{K: cfg.Params.K, Metric: cfg.Metric, Backend: cfg.Backend}
}

// memoryTaskFn runs a whole in-memory task: its query rows against the whole reference, as
// one search (one float64 re-ranking per row, however many blocks the rows came in), then
// scores them. In a self-join the one task holds every row and searches it against itself.
type memoryTaskFn struct {
	Config SearchConfig
	Input  Input

	refOnce sync.Once
	ref     *knn.Block // the whole reference (not in a self-join), read once per DoFn instance
	refByID map[string]int64
	refErr  error
}

// Teardown gives back the reference's embeddings.
func (fn *memoryTaskFn) Teardown() {
	if fn.ref != nil {
		releaseEmbeddings(fn.ref)
	}
}

func (fn *memoryTaskFn) ProcessElement(ctx context.Context, t Task, emit func(ScoredBatch)) error {
	dropIn, dropRef := dropSet(t.DropQueries), dropSet(t.DropRefs)
	start := time.Now()
	progress.begin(t.TotalRowPairs, start)
	read, err := readConcat(ctx, t.Queries, dropIn)
	if err != nil {
		return err
	}
	defer releaseEmbeddings(read)
	q := read
	logf("lemon: neighbour search: %d query rows, %d reference rows, dim %d, in memory", q.Len(), rowsIn(t.Refs), q.Dim)
	limitMemory(t, q.Dim, fn.Config.SelfJoin)
	opt := fn.Config.options()
	opt.Progress = progressFor(t, q.Dim)
	var l knn.Lists
	if fn.Config.SelfJoin {
		q = asQueries(q, fn.Config, nil)
		if q.Len() > 0 {
			if l, _, err = knn.SearchPair(q, q, opt); err != nil {
				return err
			}
		}
	} else {
		fn.refOnce.Do(func() {
			fn.ref, fn.refErr = readConcat(ctx, t.Refs, dropRef)
			if fn.refErr == nil && fn.Config.ExternalReference {
				fn.refByID = posByID(fn.ref)
			}
		})
		if fn.refErr != nil {
			return fn.refErr
		}
		q = asQueries(q, fn.Config, fn.refByID)
		if q.Len() > 0 && fn.ref.Len() > 0 {
			if l, err = knn.Search(q, fn.ref, opt); err != nil {
				return err
			}
		}
	}
	if q.Len() == 0 || l.Image == nil {
		progress.add(t.TotalRowPairs, t.RowPairs, q.Dim) // nothing to search: all rows were dropped
		if q.Len() == 0 {
			return nil
		}
		l = knn.Lists{Image: make([][]knn.Neighbour, q.Len()), Text: make([][]knn.Neighbour, q.Len())}
	}
	releaseEmbeddings(read) // the embeddings are not needed any more: let them go before scoring
	q.Image, q.Text = nil, nil
	return scoreBlock(fn.Config, fn.Input, q, &l, emit)
}

// limitMemory sets Go's soft memory limit for an in-memory search to 3 x the embeddings it holds
// + 1 GiB (unless GOMEMLIMIT is set, or a lower limit is): without a limit the collector lets
// garbage from reading and scoring grow the heap to twice the live data. The limit covers Go's
// heap only; the embeddings and the search's big buffers are mapped outside it (package
// hugepage), and the whole process stayed within 3 x the embeddings + 1 GiB in the README's
// scaling table. The limit is soft: a larger working set only makes collection busier.
func limitMemory(t Task, dim int, selfJoin bool) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	rows := rowsIn(t.Refs)
	if !selfJoin {
		rows += rowsIn(t.Queries)
	}
	budget := 3*rows*int64(dim)*8 + 1<<30
	if budget < debug.SetMemoryLimit(-1) {
		debug.SetMemoryLimit(budget)
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

// progressFor turns knn's progress (work done of a total, reported from several goroutines)
// into row pairs of task t.
func progressFor(t Task, dim int) func(done, total int64) {
	var mu sync.Mutex
	var reported int64
	return func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		if share := int64(float64(t.RowPairs) * float64(done) / float64(total)); share > reported {
			progress.add(t.TotalRowPairs, share-reported, dim)
			reported = share
		}
	}
}

// readConcat reads blocks into one, in the order given, leaving out dropped rows. Blocks are
// read in parallel, each straight into its place. The embeddings are mapped on huge pages (see
// package hugepage): the caller gives them back with releaseEmbeddings.
func readConcat(ctx context.Context, refs []BlockRef, drop map[int64]bool) (*knn.Block, error) {
	if len(refs) == 0 {
		return &knn.Block{}, nil
	}
	dim, err := blockDim(ctx, refs[0].Path)
	if err != nil {
		return nil, err
	}
	at := make([]int, len(refs)+1)
	for i, r := range refs {
		at[i+1] = at[i] + int(r.Rows)
	}
	n := at[len(refs)]
	out := &knn.Block{Dim: dim, Pos: make([]int64, n), Self: make([]int64, n), Dmm: make([]float64, n),
		Image: hugepage.Alloc[float32](n * dim), Text: hugepage.Alloc[float32](n * dim), ID: make([]string, n), Caption: make([]string, n)}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, r := range refs {
		g.Go(func() error { return readBlockInto(gctx, r.Path, out, at[i], int(r.Rows)) })
	}
	if err := g.Wait(); err != nil {
		releaseEmbeddings(out)
		return nil, err
	}
	kept := filterBlock(out, drop)
	if kept != out {
		kept.Image, kept.Text = copyOnHugePages(kept.Image), copyOnHugePages(kept.Text)
		releaseEmbeddings(out)
	}
	return kept, nil
}

func copyOnHugePages(src []float32) []float32 {
	dst := hugepage.Alloc[float32](len(src))
	copy(dst, src)
	return dst
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

// pairTaskFn runs one block pair of the blockwise shape and emits partial lists per query block.
type pairTaskFn struct {
	Config SearchConfig
	blocks loader
}

func (fn *pairTaskFn) Setup() { fn.blocks.max = 4 }

func (fn *pairTaskFn) ProcessElement(ctx context.Context, t Task, emit func(string, PartialBlock)) error {
	dropIn, dropRef := dropSet(t.DropQueries), dropSet(t.DropRefs)
	qRef, rRef := t.Queries[0], t.Refs[0]
	progress.begin(t.TotalRowPairs, time.Now())
	q, err := fn.blocks.load(ctx, qRef.Path, dropIn)
	if err != nil {
		return err
	}
	r, err := fn.blocks.load(ctx, rRef.Path, dropRef)
	if err != nil {
		return err
	}
	if q.Len() == 0 || r.Len() == 0 {
		progress.add(t.TotalRowPairs, t.RowPairs, q.Dim)
		return nil // a block whose rows were all dropped as duplicates
	}
	var byID map[string]int64
	if fn.Config.ExternalReference {
		byID = posByID(r)
	}
	opt := fn.Config.options()
	if fn.Config.SelfJoin {
		a := asQueries(q, fn.Config, nil)
		b := a
		if qRef.Path != rRef.Path {
			b = asQueries(r, fn.Config, nil)
		}
		forA, forB, err := knn.SearchPair(a, b, opt)
		if err != nil {
			return err
		}
		emit(qRef.Path, fn.partial(forA))
		if qRef.Path != rRef.Path {
			emit(rRef.Path, fn.partial(forB))
		}
	} else {
		l, err := knn.Search(asQueries(q, fn.Config, byID), r, opt)
		if err != nil {
			return err
		}
		emit(qRef.Path, fn.partial(l))
	}
	progress.add(t.TotalRowPairs, t.RowPairs, q.Dim)
	return nil
}

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

// PartialBlock is what one block pair found for one query block's rows.
type PartialBlock struct{ Lists knn.Lists }

// mergePartialsFn merges a query block's partial lists. knn.Merge is associative and breaks
// ties by position, so the result does not depend on how the runner groups partials.
type mergePartialsFn struct{ K int }

func (fn *mergePartialsFn) MergeAccumulators(a, b PartialBlock) PartialBlock {
	return PartialBlock{Lists: knn.MergeLists(a.Lists, b.Lists, fn.K)}
}

// scoreBlockFn scores one query block from its merged lists.
type scoreBlockFn struct {
	Config          SearchConfig
	Input           Input
	dropIn, dropRef positionSet
}

func (fn *scoreBlockFn) ProcessElement(ctx context.Context, path string, p PartialBlock, droppedIn, droppedRef func(*int64) bool, emit func(ScoredBatch)) error {
	raw, err := readBlock(ctx, path)
	if err != nil {
		return err
	}
	q := filterBlock(raw, fn.dropIn.load(droppedIn))
	if q.Len() != len(p.Lists.Image) {
		return fmt.Errorf("internal error: %s has %d rows but %d neighbour lists", path, q.Len(), len(p.Lists.Image))
	}
	return scoreBlock(fn.Config, fn.Input, q, &p.Lists, emit)
}
