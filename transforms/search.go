package transforms

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

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
		beam.SideInput{Input: inputBlocks}, beam.SideInput{Input: refBlocks})
	tasks = beam.Reshuffle(s, tasks)
	side := []beam.Option{beam.SideInput{Input: droppedInput}, beam.SideInput{Input: droppedRef}}
	if cfg.InMemory {
		return beam.ParDo(s, &memoryTaskFn{Config: cfg, Input: in}, tasks, side...)
	}
	partials := beam.ParDo(s, &pairTaskFn{Config: cfg}, tasks, side...)
	merged := beam.CombinePerKey(s, &mergePartialsFn{K: cfg.Params.K}, partials)
	return beam.ParDo(s, &scoreBlockFn{Config: cfg, Input: in}, merged, side...)
}

// Task is a unit of search work: query blocks against reference blocks, as block pairs.
type Task struct {
	Queries []BlockRef
	Refs    []BlockRef
	Pairs   int64 // block pairs in this task
	Total   int64 // block pairs in the whole job, for progress
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

func (fn *makeTasksFn) ProcessElement(_ []byte, qIter, rIter func(*BlockRef) bool, emit func(Task)) error {
	qs, rs := collectRefs(qIter), collectRefs(rIter)
	var refRows int64
	for _, r := range rs {
		refRows += r.Rows
	}
	// Duplicates are removed later, so this is an upper bound; the scorer checks exactly.
	k := int64(fn.Config.Params.K)
	if refRows < k+1 {
		return fmt.Errorf("the reference set has %d usable rows, but k=%d needs at least %d (k neighbours besides the row itself); lower --k or add rows", refRows, k, k+1)
	}
	var tasks []Task
	switch {
	case fn.Config.InMemory && fn.Config.SelfJoin:
		n := int64(len(qs))
		tasks = append(tasks, Task{Queries: qs, Refs: rs, Pairs: n * (n + 1) / 2})
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
			tasks[i].Pairs = int64(len(tasks[i].Queries) * len(rs))
		}
	default:
		for i, q := range qs {
			for j, r := range rs {
				if fn.Config.SelfJoin && j < i {
					continue
				}
				tasks = append(tasks, Task{Queries: []BlockRef{q}, Refs: []BlockRef{r}, Pairs: 1})
			}
		}
	}
	var total int64
	for _, t := range tasks {
		total += t.Pairs
	}
	for _, t := range tasks {
		t.Total = total
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

// memoryTaskFn runs a whole in-memory task: every pair of its query and reference blocks,
// merging lists as it goes, then scores its query rows.
type memoryTaskFn struct {
	Config          SearchConfig
	Input           Input
	dropIn, dropRef positionSet
	refs            loader
}

func (fn *memoryTaskFn) ProcessElement(ctx context.Context, t Task, droppedIn, droppedRef func(*int64) bool, emit func(Scored)) error {
	dropIn, dropRef := fn.dropIn.load(droppedIn), fn.dropRef.load(droppedRef)
	var rs []*knn.Block
	for _, r := range t.Refs {
		b, err := fn.refs.load(ctx, r.Path, dropRef)
		if err != nil {
			return err
		}
		rs = append(rs, b)
	}
	byID := map[string]int64{}
	if fn.Config.ExternalReference {
		byID = posByID(rs...)
	}
	var qs []*knn.Block
	for _, q := range t.Queries {
		var b *knn.Block
		var err error
		if fn.Config.SelfJoin {
			b, err = fn.refs.load(ctx, q.Path, dropIn)
		} else {
			var raw *knn.Block
			if raw, err = readBlock(ctx, q.Path); err == nil {
				b = filterBlock(raw, dropIn)
			}
		}
		if err != nil {
			return err
		}
		qs = append(qs, asQueries(b, fn.Config, byID))
	}
	lists := make([]knn.Lists, len(qs))
	add := func(i int, l knn.Lists) {
		if lists[i].Image == nil {
			lists[i] = l
		} else {
			lists[i] = knn.MergeLists(lists[i], l, fn.Config.Params.K)
		}
	}
	opt := fn.Config.options()
	for i, q := range qs {
		for j, r := range rs {
			if fn.Config.SelfJoin && j < i {
				continue
			}
			start := time.Now()
			if q.Len() == 0 || r.Len() == 0 {
				progress.pairDone(t.Total, 0, 0, q.Dim, time.Since(start))
				continue
			}
			if fn.Config.SelfJoin {
				a, b := q, qs[j]
				if i == j {
					b = a
				}
				forA, forB, err := knn.SearchPair(a, b, opt)
				if err != nil {
					return err
				}
				add(i, forA)
				if i != j {
					add(j, forB)
				}
			} else {
				l, err := knn.Search(q, r, opt)
				if err != nil {
					return err
				}
				add(i, l)
			}
			progress.pairDone(t.Total, q.Len(), r.Len(), q.Dim, time.Since(start))
		}
	}
	for i, q := range qs {
		if err := scoreBlock(fn.Config, fn.Input, q, lists[i], emit); err != nil {
			return err
		}
	}
	return nil
}

// scoreBlock scores every row of query block q from its merged lists.
func scoreBlock(cfg SearchConfig, in Input, q *knn.Block, l knn.Lists, emit func(Scored)) error {
	k := cfg.Params.K
	for i := range q.Pos {
		img, txt := l.Image[i], l.Text[i]
		if len(img) != k || len(txt) != k {
			return fmt.Errorf("row %q has %d image and %d text neighbours, want k=%d: the reference set has too few usable rows", q.ID[i], len(img), len(txt), k)
		}
		r := score.Score(cfg.Params, q.Dmm[i], toScore(img), toScore(txt))
		shard, index := in.Locate(q.Pos[i])
		out := Scored{Pos: q.Pos[i], Shard: shard, Index: index, ID: q.ID[i], Caption: q.Caption[i], Dmm: r.Dmm, Sn: r.Sn, Sm: r.Sm, Score: r.Score}
		if cfg.EmitIDs {
			out.ImageNeighbours, out.TextNeighbours = ids(img), ids(txt)
		}
		if cfg.SaveLists {
			out.ImageList, out.TextList = img, txt
		}
		emit(out)
	}
	return nil
}

func toScore(ns []knn.Neighbour) []score.Neighbour {
	out := make([]score.Neighbour, len(ns))
	for i, n := range ns {
		out[i] = score.Neighbour{Dist: n.Dist, Cross: n.Cross, Dmm: n.Dmm, SameCaption: n.SameCaption}
	}
	return out
}

func ids(ns []knn.Neighbour) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.ID
	}
	return out
}

// pairTaskFn runs one block pair of the blockwise shape and emits partial lists per query block.
type pairTaskFn struct {
	Config          SearchConfig
	dropIn, dropRef positionSet
	blocks          loader
}

func (fn *pairTaskFn) Setup() { fn.blocks.max = 4 }

func (fn *pairTaskFn) ProcessElement(ctx context.Context, t Task, droppedIn, droppedRef func(*int64) bool, emit func(string, PartialBlock)) error {
	dropIn, dropRef := fn.dropIn.load(droppedIn), fn.dropRef.load(droppedRef)
	qRef, rRef := t.Queries[0], t.Refs[0]
	start := time.Now()
	q, err := fn.blocks.load(ctx, qRef.Path, dropIn)
	if err != nil {
		return err
	}
	r, err := fn.blocks.load(ctx, rRef.Path, dropRef)
	if err != nil {
		return err
	}
	if q.Len() == 0 || r.Len() == 0 {
		progress.pairDone(t.Total, 0, 0, q.Dim, time.Since(start))
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
	progress.pairDone(t.Total, q.Len(), r.Len(), q.Dim, time.Since(start))
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

func (fn *scoreBlockFn) ProcessElement(ctx context.Context, path string, p PartialBlock, droppedIn, droppedRef func(*int64) bool, emit func(Scored)) error {
	raw, err := readBlock(ctx, path)
	if err != nil {
		return err
	}
	q := filterBlock(raw, fn.dropIn.load(droppedIn))
	if q.Len() != len(p.Lists.Image) {
		return fmt.Errorf("internal error: %s has %d rows but %d neighbour lists", path, q.Len(), len(p.Lists.Image))
	}
	return scoreBlock(fn.Config, fn.Input, q, p.Lists, emit)
}
