package transforms

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"runtime"
	"strconv"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"golang.org/x/sync/errgroup"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/knn"
	"github.com/lemon-curation/lemon/storage"
)

// OutputConfig says where and how results are written.
type OutputConfig struct {
	Dir            string
	ScoresFormat   string // "parquet" or "csv"
	EmitNeighbours bool
	SaveLists      bool // write neighbours/ with every neighbour's distances
}

// ShardFile is the name of shard i's file in each output directory.
func ShardFile(i int, ext string) string { return fmt.Sprintf("part-%05d.%s", i, ext) }

// WriteShards writes, per input shard, its scores, kept, rejected and errors files, and returns
// each shard's counts. Every input row must arrive exactly once, scored or as a fault; the
// writer checks that, so the manifest's counts are proof that nothing was dropped.
func WriteShards(s beam.Scope, in Input, out OutputConfig, scored, faults, threshold beam.PCollection) beam.PCollection {
	s = s.Scope("WriteShards")
	a := beam.ParDo(s, scoredOutcome, scored)
	b := beam.ParDo(s, faultOutcome, faults)
	// A marker per shard, so shards whose rows all vanished upstream (or that have none) still
	// reach the writer: it then fails loudly or writes empty files, never skips the shard.
	idx := make([]int32, len(in.Shards))
	for i := range idx {
		idx[i] = int32(i)
	}
	markers := beam.ParDo(s, shardMarker, beam.CreateList(s, idx))
	all := beam.Flatten(s, a, b, markers)
	grouped := beam.GroupByKey(s, all)
	return beam.ParDo(s, &writeShardFn{Input: in, Out: out}, grouped, beam.SideInput{Input: threshold})
}

func scoredOutcome(b ScoredBatch) (int32, Outcome) { return b.Shard, Outcome{Scored: b.Rows} }
func faultOutcome(f Fault) (int32, Outcome)        { return f.Shard, Outcome{Fault: &f} }
func shardMarker(i int32) (int32, Outcome)         { return i, Outcome{} }

// rowOutcome is one row's fate in the writer: scored, or a fault.
type rowOutcome struct {
	Scored *Scored
	Fault  *Fault
}

// writeShardFn writes each shard's outputs. A shard's outcomes are gathered and checked in
// ProcessElement (the grouped iterator is only valid there); its files are then written in the
// background, several shards at once, and the bundle's counts are emitted in FinishBundle once
// every file is committed. A runner that hands one bundle all the shards (prism does) so still
// writes them in parallel.
type writeShardFn struct {
	Input Input
	Out   OutputConfig

	ctx    context.Context
	writes *errgroup.Group
	mu     sync.Mutex
	counts []Counts
}

// StartBundle and FinishBundle take ProcessElement's side input and emitter too: Beam Go
// requires bundle methods to declare them.
func (fn *writeShardFn) StartBundle(ctx context.Context, _ func(*float64) bool, _ func(Counts)) {
	fn.ctx = ctx
	fn.writes = new(errgroup.Group)
	fn.writes.SetLimit(runtime.GOMAXPROCS(0)) // bounds the shards held in memory too
	fn.counts = nil
}

func (fn *writeShardFn) ProcessElement(shard int32, outcomes func(*Outcome) bool, thresholds func(*float64) bool, _ func(Counts)) error {
	threshold := thresholdOf(thresholds)
	rows, c, err := fn.gather(shard, outcomes, threshold)
	if err != nil {
		return err
	}
	fn.writes.Go(func() error {
		if err := fn.writeShard(fn.ctx, shard, rows, threshold); err != nil {
			return err
		}
		fn.mu.Lock()
		fn.counts = append(fn.counts, c)
		fn.mu.Unlock()
		return nil
	})
	return nil
}

func (fn *writeShardFn) FinishBundle(_ func(*float64) bool, emit func(Counts)) error {
	if err := fn.writes.Wait(); err != nil {
		return err
	}
	for _, c := range fn.counts {
		emit(c)
	}
	return nil
}

// gather places every outcome of shard at its row, checking that each row has exactly one, and
// counts the rows kept, rejected and in error.
func (fn *writeShardFn) gather(shard int32, outcomes func(*Outcome) bool, threshold float64) ([]rowOutcome, Counts, error) {
	sh := fn.Input.Shards[shard]
	file := fn.Input.File(shard)
	rows := make([]rowOutcome, sh.Rows)
	seen := make([]bool, sh.Rows)
	place := func(index int64, r rowOutcome) error {
		if index < 0 || index >= sh.Rows {
			return fmt.Errorf("internal error: %s: outcome for row %d outside 0..%d", file, index, sh.Rows-1)
		}
		if seen[index] {
			return fmt.Errorf("internal error: %s: row %d has two outcomes", file, index)
		}
		seen[index] = true
		rows[index] = r
		return nil
	}
	var o Outcome
	for outcomes(&o) {
		if o.Fault != nil {
			if err := place(o.Fault.Index, rowOutcome{Fault: o.Fault}); err != nil {
				return nil, Counts{}, err
			}
		}
		for i := range o.Scored {
			if err := place(o.Scored[i].Index, rowOutcome{Scored: &o.Scored[i]}); err != nil {
				return nil, Counts{}, err
			}
		}
		o = Outcome{} // the iterator decodes into o: start each element afresh
	}
	for i, ok := range seen {
		if !ok {
			return nil, Counts{}, fmt.Errorf("internal error: %s: row %d has no outcome", file, i)
		}
	}
	c := Counts{RowsIn: sh.Rows}
	for _, r := range rows {
		switch {
		case r.Fault != nil:
			c.Errors++
		case r.Scored.Score >= threshold:
			c.Rejected++
		default:
			c.Kept++
		}
	}
	return rows, c, nil
}

// writeShard writes a shard's scores, splits and (if asked) lists, concurrently: they are
// independent files.
func (fn *writeShardFn) writeShard(ctx context.Context, shard int32, rows []rowOutcome, threshold float64) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return fn.writeScores(gctx, int(shard), rows, threshold) })
	g.Go(func() error { return fn.writeSplits(gctx, fn.Input.Shards[shard], rows, threshold) })
	if fn.Out.SaveLists {
		g.Go(func() error { return fn.writeLists(gctx, int(shard), rows) })
	}
	return g.Wait()
}

func (fn *writeShardFn) writeScores(ctx context.Context, shard int, rows []rowOutcome, threshold float64) error {
	dir := storage.Join(fn.Out.Dir, "scores")
	if fn.Out.ScoresFormat == "csv" {
		var buf bytes.Buffer
		buf.Grow(csvSize(rows)) // growing by doubling would copy (and fault in) it repeatedly
		w := csv.NewWriter(&buf)
		header := []string{"id", "caption", "d_mm", "s_n", "s_m", "score", "flagged"}
		if fn.Out.EmitNeighbours {
			header = append(header, "image_neighbours", "text_neighbours")
		}
		w.Write(header)
		f := func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
		for _, r := range rows {
			if s := r.Scored; s != nil {
				rec := []string{s.ID, s.Caption, f(s.Dmm), f(s.Sn), f(s.Sm), f(s.Score), strconv.FormatBool(s.Score >= threshold)}
				if fn.Out.EmitNeighbours {
					rec = append(rec, joinIDs(s.ImageNeighbours), joinIDs(s.TextNeighbours))
				}
				w.Write(rec)
			}
		}
		w.Flush()
		return storage.WriteFile(ctx, storage.Join(dir, ShardFile(shard, "csv")), buf.Bytes())
	}
	fields := []arrow.Field{
		{Name: "id", Type: arrow.BinaryTypes.String}, {Name: "caption", Type: arrow.BinaryTypes.String},
		{Name: "d_mm", Type: arrow.PrimitiveTypes.Float64}, {Name: "s_n", Type: arrow.PrimitiveTypes.Float64},
		{Name: "s_m", Type: arrow.PrimitiveTypes.Float64}, {Name: "score", Type: arrow.PrimitiveTypes.Float64},
		{Name: "flagged", Type: arrow.FixedWidthTypes.Boolean},
	}
	if fn.Out.EmitNeighbours {
		fields = append(fields, arrow.Field{Name: "image_neighbours", Type: arrow.ListOf(arrow.BinaryTypes.String)},
			arrow.Field{Name: "text_neighbours", Type: arrow.ListOf(arrow.BinaryTypes.String)})
	}
	schema := arrow.NewSchema(fields, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for _, r := range rows {
		s := r.Scored
		if s == nil {
			continue
		}
		b.Field(0).(*array.StringBuilder).Append(s.ID)
		b.Field(1).(*array.StringBuilder).Append(s.Caption)
		b.Field(2).(*array.Float64Builder).Append(s.Dmm)
		b.Field(3).(*array.Float64Builder).Append(s.Sn)
		b.Field(4).(*array.Float64Builder).Append(s.Sm)
		b.Field(5).(*array.Float64Builder).Append(s.Score)
		b.Field(6).(*array.BooleanBuilder).Append(s.Score >= threshold)
		if fn.Out.EmitNeighbours {
			for i, list := range [][]string{s.ImageNeighbours, s.TextNeighbours} {
				lb := b.Field(7 + i).(*array.ListBuilder)
				lb.Append(true)
				lb.ValueBuilder().(*array.StringBuilder).AppendValues(list, nil)
			}
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	return metadata.WriteParquet(ctx, storage.Join(dir, ShardFile(shard, "parquet")), schema, rec)
}

// csvSize estimates the bytes of rows in a scores CSV file.
func csvSize(rows []rowOutcome) int {
	n := 128
	for _, r := range rows {
		if s := r.Scored; s != nil {
			n += len(s.ID) + len(s.Caption) + 100
			for _, id := range s.ImageNeighbours {
				n += len(id) + 1
			}
			for _, id := range s.TextNeighbours {
				n += len(id) + 1
			}
		}
	}
	return n
}

func joinIDs(ids []string) string {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Comma = ' '
	w.Write(ids)
	w.Flush()
	return string(bytes.TrimRight(buf.Bytes(), "\n"))
}

// Extra columns the kept, rejected and errors files carry beside the input's own columns.
var (
	scoreColumns = []string{"lemon_d_mm", "lemon_s_n", "lemon_s_m", "lemon_score"}
	reasonColumn = "reason"
)

// writeSplits copies the shard's metadata rows into kept/, rejected/ and errors/, in input
// order, adding the score columns (or the reason).
func (fn *writeShardFn) writeSplits(ctx context.Context, sh dataset.Shard, rows []rowOutcome, threshold float64) error {
	if fn.Input.Raw {
		return fn.writeNativeSplits(ctx, sh, rows, threshold)
	}
	f, err := dataset.Get(fn.Input.Format)
	if err != nil {
		return err
	}
	rr, err := f.Metadata(ctx, sh, fn.Input.Options)
	if err != nil {
		return err
	}
	defer rr.Release()
	base := rr.Schema()
	reason := reasonColumn
	if len(base.FieldIndices(reason)) > 0 {
		reason = "lemon_reason"
	}
	scoredSchema := withColumns(base, scoreColumns, arrow.PrimitiveTypes.Float64)
	errorSchema := withColumns(base, []string{reason}, arrow.BinaryTypes.String)
	name := ShardFile(sh.Index, "parquet")
	outs := []struct {
		dir    string
		schema *arrow.Schema
		keep   func(o rowOutcome) bool
	}{
		{"kept", scoredSchema, func(o rowOutcome) bool { return o.Scored != nil && o.Scored.Score < threshold }},
		{"rejected", scoredSchema, func(o rowOutcome) bool { return o.Scored != nil && o.Scored.Score >= threshold }},
		{"errors", errorSchema, func(o rowOutcome) bool { return o.Fault != nil }},
	}
	writers := make([]*metadata.ParquetWriter, len(outs))
	abort := func() {
		for _, w := range writers {
			if w != nil {
				w.Abort()
			}
		}
	}
	for i, o := range outs {
		if writers[i], err = metadata.CreateParquet(ctx, storage.Join(fn.Out.Dir, o.dir, name), o.schema); err != nil {
			abort()
			return err
		}
	}
	var offset int64
	for rr.Next() {
		rec := rr.RecordBatch()
		n := rec.NumRows()
		if offset+n > sh.Rows {
			abort()
			return fmt.Errorf("%s: metadata has more rows than the shard's %d", fn.Input.File(int32(sh.Index)), sh.Rows)
		}
		part := rows[offset : offset+n]
		for i, o := range outs {
			if err := writeFiltered(ctx, writers[i], o.schema, rec, part, o.keep, o.dir == "errors"); err != nil {
				abort()
				return err
			}
		}
		offset += n
	}
	if err := rr.Err(); err != nil {
		abort()
		return fmt.Errorf("%s: %w", fn.Input.File(int32(sh.Index)), err)
	}
	if offset != sh.Rows {
		abort()
		return fmt.Errorf("%s: metadata has %d rows, the shard %d", fn.Input.File(int32(sh.Index)), offset, sh.Rows)
	}
	for i, w := range writers {
		if err := w.Commit(); err != nil {
			writers[i] = nil
			abort()
			return err
		}
		writers[i] = nil
	}
	return nil
}

func withColumns(base *arrow.Schema, names []string, t arrow.DataType) *arrow.Schema {
	fields := append([]arrow.Field{}, base.Fields()...)
	for _, n := range names {
		fields = append(fields, arrow.Field{Name: n, Type: t})
	}
	return arrow.NewSchema(fields, nil)
}

// writeFiltered writes the rows of rec that keep selects, with the extra columns appended.
func writeFiltered(ctx context.Context, w *metadata.ParquetWriter, schema *arrow.Schema, rec arrow.RecordBatch, part []rowOutcome, keep func(rowOutcome) bool, isErrors bool) error {
	mask := array.NewBooleanBuilder(memory.DefaultAllocator)
	defer mask.Release()
	var picked []rowOutcome
	for _, o := range part {
		k := keep(o)
		mask.Append(k)
		if k {
			picked = append(picked, o)
		}
	}
	if len(picked) == 0 {
		return nil
	}
	m := mask.NewArray()
	defer m.Release()
	filtered, err := compute.FilterRecordBatch(ctx, rec, m, compute.DefaultFilterOptions())
	if err != nil {
		return err
	}
	defer filtered.Release()
	cols := append([]arrow.Array{}, filtered.Columns()...)
	var extra []arrow.Array
	if isErrors {
		b := array.NewStringBuilder(memory.DefaultAllocator)
		for _, o := range picked {
			b.Append(o.Fault.Reason)
		}
		extra = append(extra, b.NewArray())
		b.Release()
	} else {
		for c := range scoreColumns {
			b := array.NewFloat64Builder(memory.DefaultAllocator)
			for _, o := range picked {
				s := o.Scored
				b.Append([]float64{s.Dmm, s.Sn, s.Sm, s.Score}[c])
			}
			extra = append(extra, b.NewArray())
			b.Release()
		}
	}
	cols = append(cols, extra...)
	out := array.NewRecordBatch(schema, cols, int64(len(picked)))
	defer out.Release()
	for _, a := range extra {
		a.Release()
	}
	return w.Write(out)
}

// NeighbourListColumns are the list columns of neighbours/ files, per modality prefix
// ("image_" or "text_"): the neighbour's id, distance in the searched modality, distance in
// the other modality, its d_mm, and whether its caption equals the row's.
var NeighbourListColumns = []string{"ids", "dist", "cross", "dmm", "same_caption"}

// writeLists writes neighbours/part-N.parquet: per scored row its id, d_mm and both neighbour
// lists in full, so scores can be recomputed for other hyperparameters without a new search.
func (fn *writeShardFn) writeLists(ctx context.Context, shard int, rows []rowOutcome) error {
	fields := []arrow.Field{{Name: "id", Type: arrow.BinaryTypes.String}, {Name: "d_mm", Type: arrow.PrimitiveTypes.Float64}}
	types := []arrow.DataType{arrow.BinaryTypes.String, arrow.PrimitiveTypes.Float64, arrow.PrimitiveTypes.Float64, arrow.PrimitiveTypes.Float64, arrow.FixedWidthTypes.Boolean}
	for _, m := range []string{"image_", "text_"} {
		for i, c := range NeighbourListColumns {
			fields = append(fields, arrow.Field{Name: m + c, Type: arrow.ListOf(types[i])})
		}
	}
	schema := arrow.NewSchema(fields, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for _, r := range rows {
		s := r.Scored
		if s == nil {
			continue
		}
		b.Field(0).(*array.StringBuilder).Append(s.ID)
		b.Field(1).(*array.Float64Builder).Append(s.Dmm)
		for m, list := range [][]knn.Neighbour{s.ImageList, s.TextList} {
			base := 2 + m*len(NeighbourListColumns)
			lbs := make([]*array.ListBuilder, len(NeighbourListColumns))
			for i := range lbs {
				lbs[i] = b.Field(base + i).(*array.ListBuilder)
				lbs[i].Append(true)
			}
			for _, n := range list {
				lbs[0].ValueBuilder().(*array.StringBuilder).Append(n.ID)
				lbs[1].ValueBuilder().(*array.Float64Builder).Append(n.Dist)
				lbs[2].ValueBuilder().(*array.Float64Builder).Append(n.Cross)
				lbs[3].ValueBuilder().(*array.Float64Builder).Append(n.Dmm)
				lbs[4].ValueBuilder().(*array.BooleanBuilder).Append(n.SameCaption)
			}
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	return metadata.WriteParquet(ctx, storage.Join(fn.Out.Dir, "neighbours", ShardFile(shard, "parquet")), schema, rec)
}

// writeNativeSplits hands the routing to a format that writes kept/rejected/errors in its own
// layout (a webdataset input gives webdataset outputs, every member preserved).
func (fn *writeShardFn) writeNativeSplits(ctx context.Context, sh dataset.Shard, rows []rowOutcome, threshold float64) error {
	f, err := dataset.GetRaw(fn.Input.Format)
	if err != nil {
		return err
	}
	sw, ok := f.(dataset.SplitWriter)
	if !ok {
		return fmt.Errorf("input format %s cannot write kept/rejected outputs", f.Name())
	}
	outcomes := make([]dataset.Outcome, len(rows))
	for i, r := range rows {
		switch {
		case r.Fault != nil:
			outcomes[i] = dataset.Outcome{Split: dataset.Errors, Reason: r.Fault.Reason}
		default:
			s := r.Scored
			split := dataset.Kept
			if s.Score >= threshold {
				split = dataset.Rejected
			}
			outcomes[i] = dataset.Outcome{Split: split, Dmm: s.Dmm, Sn: s.Sn, Sm: s.Sm, Score: s.Score}
		}
	}
	return sw.WriteSplits(ctx, sh, fn.Input.Options, fn.Out.Dir, outcomes)
}
