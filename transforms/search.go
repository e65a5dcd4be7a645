package transforms

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/lemon-curation/lemon/knn"
	"github.com/lemon-curation/lemon/storage"
)

// SearchConfig is what the neighbour search needs to know.
type SearchConfig struct {
	K         int
	Metric    knn.Metric
	Backend   string
	BlockRows int64
	TempDir   string // where block files go; must be reachable by every worker
	// EmitIDs keeps neighbour ids in the partial lists (for --emit-neighbours).
	EmitIDs bool
}

// KeyByBlock keys rows by their block: position / BlockRows.
func KeyByBlock(s beam.Scope, rows beam.PCollection, blockRows int64) beam.PCollection {
	s = s.Scope("KeyByBlock")
	return beam.ParDo(s, &keyByBlockFn{BlockRows: blockRows}, rows)
}

type keyByBlockFn struct{ BlockRows int64 }

func (fn *keyByBlockFn) ProcessElement(r Row) (int64, Row) { return r.Pos / fn.BlockRows, r }

// WriteBlocks groups keyed rows into blocks, writes each to the run's temporary storage and
// returns references to them. side names the files ("query" or "reference").
func WriteBlocks(s beam.Scope, keyed beam.PCollection, side, tempDir string) beam.PCollection {
	s = s.Scope("WriteBlocks_" + side)
	return beam.ParDo(s, &writeBlockFn{Side: side, TempDir: tempDir}, beam.GroupByKey(s, keyed))
}

type writeBlockFn struct {
	Side    string
	TempDir string
}

func (fn *writeBlockFn) ProcessElement(ctx context.Context, index int64, rows func(*Row) bool) (BlockRef, error) {
	var all []Row
	var r Row
	for rows(&r) {
		all = append(all, r)
	}
	// Rows in position order, so a block's content does not depend on the runner.
	sort.Slice(all, func(i, j int) bool { return all[i].Pos < all[j].Pos })
	b := &knn.Block{}
	if len(all) > 0 {
		b.Dim = len(all[0].Image)
	}
	for _, r := range all {
		b.Image = append(b.Image, r.Image...)
		b.Text = append(b.Text, r.Text...)
		b.Pos = append(b.Pos, r.Pos)
		b.Self = append(b.Self, r.Self)
		b.Dmm = append(b.Dmm, r.Dmm)
		b.ID = append(b.ID, r.ID)
		b.Caption = append(b.Caption, r.Caption)
	}
	p := storage.Join(fn.TempDir, "blocks", fmt.Sprintf("%s-%06d.blk", fn.Side, index))
	if err := writeBlock(ctx, p, b); err != nil {
		return BlockRef{}, err
	}
	return BlockRef{Side: fn.Side, Index: index, Path: p, Rows: int64(len(all))}, nil
}

// MakeTasks pairs query and reference blocks. With symmetric set (a self-join, where queries
// and references are the same blocks) it makes one task per unordered pair. It fails clearly
// when the reference set is too small for k.
func MakeTasks(s beam.Scope, queryRefs, refRefs beam.PCollection, k int, symmetric bool) beam.PCollection {
	s = s.Scope("MakeTasks")
	tasks := beam.ParDo(s, &makeTasksFn{K: k, Symmetric: symmetric}, beam.Impulse(s),
		beam.SideInput{Input: queryRefs}, beam.SideInput{Input: refRefs})
	// Spread tasks over workers.
	return beam.Reshuffle(s, tasks)
}

type makeTasksFn struct {
	K         int
	Symmetric bool
}

func collectRefs(iter func(*BlockRef) bool) []BlockRef {
	var out []BlockRef
	var b BlockRef
	for iter(&b) {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out
}

func (fn *makeTasksFn) ProcessElement(_ []byte, qIter, rIter func(*BlockRef) bool, emit func(Task)) error {
	qs, rs := collectRefs(qIter), collectRefs(rIter)
	var refRows int64
	for _, r := range rs {
		refRows += r.Rows
	}
	if refRows < int64(fn.K)+1 {
		return fmt.Errorf("the reference set has %d usable rows, but k=%d needs at least %d (k neighbours besides the row itself); lower --k or add rows", refRows, fn.K, fn.K+1)
	}
	var tasks []Task
	for i, q := range qs {
		for j, r := range rs {
			if fn.Symmetric && j < i {
				continue
			}
			tasks = append(tasks, Task{Query: q, Reference: r, Symmetric: fn.Symmetric})
		}
	}
	for i := range tasks {
		tasks[i].Seq, tasks[i].Total = int64(i+1), int64(len(tasks))
		emit(tasks[i])
	}
	return nil
}

// SearchBlocks runs every task and merges the partial lists per query row: the result is each
// query row's k nearest references in both spaces, keyed by the row's position.
func SearchBlocks(s beam.Scope, tasks beam.PCollection, cfg SearchConfig) beam.PCollection {
	s = s.Scope("SearchBlocks")
	partials := beam.ParDo(s, &searchFn{Config: cfg}, tasks)
	merged := beam.CombinePerKey(s, &mergeFn{K: cfg.K}, partials)
	return merged
}

type searchFn struct {
	Config SearchConfig
	cache  *blockCache
}

func (fn *searchFn) Setup() { fn.cache = newBlockCache(4) }

func (fn *searchFn) ProcessElement(ctx context.Context, t Task, emit func(int64, Partial)) error {
	start := time.Now()
	q, err := fn.cache.get(ctx, t.Query.Path)
	if err != nil {
		return err
	}
	r, err := fn.cache.get(ctx, t.Reference.Path)
	if err != nil {
		return err
	}
	opt := knn.Options{K: fn.Config.K, Metric: fn.Config.Metric, Backend: fn.Config.Backend}
	if t.Symmetric {
		if t.Query.Path == t.Reference.Path {
			r = q // a diagonal block: SearchPair wants the same pointer
		}
		forQ, forR, err := knn.SearchPair(q, r, opt)
		if err != nil {
			return fmt.Errorf("task %d (%s x %s): %w", t.Seq, t.Query.Path, t.Reference.Path, err)
		}
		fn.emitLists(q, forQ, emit)
		if r != q {
			fn.emitLists(r, forR, emit)
		}
	} else {
		lists, err := knn.Search(q, r, opt)
		if err != nil {
			return fmt.Errorf("task %d (%s x %s): %w", t.Seq, t.Query.Path, t.Reference.Path, err)
		}
		fn.emitLists(q, lists, emit)
	}
	progress.taskDone(t, q.Len(), r.Len(), q.Dim, time.Since(start))
	return nil
}

func (fn *searchFn) emitLists(b *knn.Block, l knn.Lists, emit func(int64, Partial)) {
	for i := range b.Pos {
		img, txt := l.Image[i], l.Text[i]
		if !fn.Config.EmitIDs {
			img, txt = withoutIDs(img), withoutIDs(txt)
		}
		emit(b.Pos[i], Partial{ID: b.ID[i], Caption: b.Caption[i], Dmm: b.Dmm[i], Image: img, Text: txt})
	}
}

func withoutIDs(ns []knn.Neighbour) []knn.Neighbour {
	out := make([]knn.Neighbour, len(ns))
	for i, n := range ns {
		n.ID = ""
		out[i] = n
	}
	return out
}

// mergeFn merges partial neighbour lists of one query row. Merge is associative and breaks
// ties by position, so the result does not depend on how the runner groups partials.
type mergeFn struct{ K int }

func (fn *mergeFn) MergeAccumulators(a, b Partial) Partial {
	a.Image = knn.Merge(a.Image, b.Image, fn.K)
	a.Text = knn.Merge(a.Text, b.Text, fn.K)
	return a
}

// blockCache keeps the last few blocks a worker read: tasks are ordered query-major, so
// consecutive tasks share blocks.
type blockCache struct {
	mu    sync.Mutex
	max   int
	order []string
	byKey map[string]*knn.Block
}

func newBlockCache(max int) *blockCache { return &blockCache{max: max, byKey: map[string]*knn.Block{}} }

func (c *blockCache) get(ctx context.Context, p string) (*knn.Block, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b, ok := c.byKey[p]; ok {
		return b, nil
	}
	b, err := readBlock(ctx, p)
	if err != nil {
		return nil, err
	}
	if len(c.order) >= c.max {
		delete(c.byKey, c.order[0])
		c.order = c.order[1:]
	}
	c.order = append(c.order, p)
	c.byKey[p] = b
	return b, nil
}
