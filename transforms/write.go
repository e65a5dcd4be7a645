package transforms

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"golang.org/x/sync/errgroup"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/datacomp"
	"github.com/lemon-curation/lemon/dataset/img2parquet/pqsplit"
	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/knn"
	"github.com/lemon-curation/lemon/rundir"
	"github.com/lemon-curation/lemon/storage"
)

// OutputConfig says where and how results are written.
type OutputConfig struct {
	Dir            string
	ScoresFormat   string // "parquet" or "csv"
	EmitNeighbours bool
	SaveLists      bool // write neighbours/ with every neighbour's distances
	// UIDRuns, when set (--write-uids), is the temporary folder where each shard's kept and
	// rejected uids are written as sorted runs, which the job's last stage merges into
	// rundir.KeptUIDsFile and rundir.RejectedUIDsFile (WriteManifest).
	UIDRuns string
}

// uidRun is where shard's sorted run of the uids of split (kept or rejected) is written.
func uidRun(dir string, split dataset.Split, shard int) string {
	return storage.Join(dir, split.String(), rundir.PartFile(shard, "uids"))
}

// WriteShards writes, per input shard, its scores, kept, rejected and errors files, and returns
// each shard's counts. Every input row must arrive exactly once, scored or as a fault; the
// writer checks that, so the manifest's counts are proof that nothing was dropped.
//
// outcomes are the scored rows (ScoredRows.Outcomes), faults the rows that could not be scored.
func WriteShards(s beam.Scope, in Input, out OutputConfig, outcomes, faults, threshold beam.PCollection) beam.PCollection {
	s = s.Scope("WriteShards")
	b := beam.ParDo(s, faultOutcome, faults)
	// A marker per shard, so shards whose rows all vanished upstream (or that have none) still
	// reach the writer: it then fails loudly or writes empty files, never skips the shard.
	idx := make([]int32, len(in.Shards))
	for i := range idx {
		idx[i] = int32(i)
	}
	markers := beam.ParDo(s, shardMarker, beam.CreateList(s, idx))
	all := beam.Flatten(s, outcomes, b, markers)
	grouped := beam.GroupByKey(s, all)
	return beam.ParDo(s, &writeShardFn{Input: in, Out: out}, grouped, beam.SideInput{Input: threshold})
}

// Outcomes travel to the writer encoded (the search tasks encode their scored rows, see
// emitScored), and the writer decodes each shard's in the goroutine that writes it: decoding in
// the iterator would decode the shards one after another.
func faultOutcome(f Fault) (int32, []byte) { return f.Shard, encodeOutcome(Outcome{Fault: &f}) }
func shardMarker(i int32) (int32, []byte)  { return i, encodeOutcome(Outcome{}) }

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

func (fn *writeShardFn) ProcessElement(shard int32, outcomes func(*[]byte) bool, thresholds func(*float64) bool, _ func(Counts)) error {
	threshold := thresholdOf(thresholds)
	var encoded [][]byte
	var b []byte
	for outcomes(&b) {
		encoded = append(encoded, b) // each a fresh slice (Beam's bytes coder allocates one per element)
		b = nil
	}
	fn.writes.Go(func() error {
		rows, c, err := fn.gather(shard, encoded, threshold)
		if err != nil {
			return err
		}
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

// gather decodes the outcomes of shard and places each at its row, checking that each row has
// exactly one, and counts the rows kept, rejected and in error. It drops the encoded outcomes
// as it goes.
func (fn *writeShardFn) gather(shard int32, encoded [][]byte, threshold float64) ([]rowOutcome, Counts, error) {
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
	for k, b := range encoded {
		o, err := decodeOutcome(b)
		if err != nil {
			return nil, Counts{}, fmt.Errorf("internal error: %s: outcome %d: %w", file, k, err)
		}
		encoded[k] = nil
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
	if fn.Out.UIDRuns != "" {
		g.Go(func() error { return fn.writeUIDRuns(gctx, int(shard), rows, threshold) })
	}
	return g.Wait()
}

// writeUIDRuns writes the shard's kept and rejected uids as sorted runs (see OutputConfig).
// Every scored row's id is a uid: the read stage sent rows without one to errors.
func (fn *writeShardFn) writeUIDRuns(ctx context.Context, shard int, rows []rowOutcome, threshold float64) error {
	var uids [2][]datacomp.UID // kept, rejected
	for _, r := range rows {
		s := r.Scored
		if s == nil {
			continue
		}
		u, err := datacomp.ParseUID(s.ID)
		if err != nil {
			return fmt.Errorf("internal error: %s: a scored row's %v", fn.Input.File(int32(shard)), err)
		}
		split := 0
		if s.Score >= threshold {
			split = 1
		}
		uids[split] = append(uids[split], u)
	}
	for i, split := range []dataset.Split{dataset.Kept, dataset.Rejected} {
		if err := datacomp.WriteUIDRun(ctx, uidRun(fn.Out.UIDRuns, split, shard), uids[i]); err != nil {
			return err
		}
	}
	return nil
}

func (fn *writeShardFn) writeScores(ctx context.Context, shard int, rows []rowOutcome, threshold float64) error {
	dir := storage.Join(fn.Out.Dir, rundir.ScoresDir)
	if fn.Out.ScoresFormat == "csv" {
		var buf bytes.Buffer
		buf.Grow(csvSize(rows)) // growing by doubling would copy (and fault in) it repeatedly
		w := csv.NewWriter(&buf)
		header := []string{rundir.ColID, rundir.ColCaption, rundir.ColDmm, rundir.ColSn, rundir.ColSm, rundir.ColScore, rundir.ColFlagged}
		if fn.Out.EmitNeighbours {
			header = append(header, rundir.ColImageNeighbours, rundir.ColTextNeighbours)
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
		return storage.WriteFile(ctx, storage.Join(dir, rundir.PartFile(shard, "csv")), buf.Bytes())
	}
	fields := []arrow.Field{
		{Name: rundir.ColID, Type: arrow.BinaryTypes.String}, {Name: rundir.ColCaption, Type: arrow.BinaryTypes.String},
		{Name: rundir.ColDmm, Type: arrow.PrimitiveTypes.Float64}, {Name: rundir.ColSn, Type: arrow.PrimitiveTypes.Float64},
		{Name: rundir.ColSm, Type: arrow.PrimitiveTypes.Float64}, {Name: rundir.ColScore, Type: arrow.PrimitiveTypes.Float64},
		{Name: rundir.ColFlagged, Type: arrow.FixedWidthTypes.Boolean},
	}
	if fn.Out.EmitNeighbours {
		fields = append(fields, arrow.Field{Name: rundir.ColImageNeighbours, Type: arrow.ListOf(arrow.BinaryTypes.String)},
			arrow.Field{Name: rundir.ColTextNeighbours, Type: arrow.ListOf(arrow.BinaryTypes.String)})
	}
	schema := arrow.NewSchema(fields, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	if fn.Out.EmitNeighbours {
		// Reserve the ids' bytes once: StringBuilder.AppendValues grows its data buffer to
		// exactly what each call needs, so appending row by row would copy the whole buffer
		// per row (minutes for a 10,000-row shard at k = 50).
		var size [2]int
		for _, r := range rows {
			if s := r.Scored; s != nil {
				for i, list := range [][]string{s.ImageNeighbours, s.TextNeighbours} {
					for _, id := range list {
						size[i] += len(id)
					}
				}
			}
		}
		for i, n := range size {
			b.Field(7 + i).(*array.ListBuilder).ValueBuilder().(*array.StringBuilder).ReserveData(n)
		}
	}
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
	return metadata.WriteParquet(ctx, storage.Join(dir, rundir.PartFile(shard, "parquet")), schema, rec)
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

// joinIDs is ids as one space-separated CSV record (quoted where an id needs it), the way the
// scores CSV holds a neighbour list.
func joinIDs(ids []string) string {
	if plainIDs(ids) {
		return strings.Join(ids, " ") // what the CSV writer writes for such ids, without its cost
	}
	return csvIDs(ids)
}

// csvIDs is joinIDs through encoding/csv.
func csvIDs(ids []string) string {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Comma = ' '
	w.Write(ids)
	w.Flush()
	return string(bytes.TrimRight(buf.Bytes(), "\n"))
}

// plainIDs says whether every id is written as is in a space-separated CSV record: not
// empty, and free of quotes, separators, line breaks and leading white space (encoding/csv
// quotes any of those, and the field \.).
func plainIDs(ids []string) bool {
	for _, id := range ids {
		if id == "" || id == `\.` || strings.ContainsAny(id, "\"\r\n ") {
			return false
		}
		if r, _ := utf8.DecodeRuneInString(id); unicode.IsSpace(r) {
			return false
		}
	}
	return true
}

// writeSplits copies the shard's rows into kept/, rejected/ and errors/, in input order, with
// the score columns (or the reason) added: raw formats write their own layout
// (dataset.SplitWriter), embedding formats their metadata rows as Parquet, through the same
// Parquet split writer as raw Parquet inputs (which replaces score columns the input already
// has, as when a run's kept/ is scored again), and, for formats with a dataset.SplitLayout,
// their embeddings beside them.
func (fn *writeShardFn) writeSplits(ctx context.Context, sh dataset.Shard, rows []rowOutcome, threshold float64) error {
	outcomes := splitOutcomes(rows, threshold)
	if fn.Input.Raw {
		f, err := dataset.GetRaw(fn.Input.Format)
		if err != nil {
			return err
		}
		sw, ok := f.(dataset.SplitWriter)
		if !ok {
			return fmt.Errorf("input format %s cannot write kept/rejected outputs", f.Name())
		}
		return sw.WriteSplits(ctx, sh, fn.Input.Options, fn.Out.Dir, outcomes)
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
	layout, inLayout := f.(dataset.SplitLayout)
	var paths [3]string
	for s := range paths {
		paths[s] = storage.Join(fn.Out.Dir, dataset.Split(s).String(), rundir.PartFile(sh.Index, "parquet"))
		if inLayout {
			paths[s] = layout.SplitMetadataPath(sh, fn.Out.Dir, dataset.Split(s))
		}
	}
	if inLayout {
		if err := layout.WriteSplitEmbeddings(ctx, sh, fn.Input.Options, fn.Out.Dir, outcomes); err != nil {
			return err
		}
	}
	w, err := pqsplit.Create(ctx, paths, rr.Schema(), pqsplit.Options{})
	if err != nil {
		return err
	}
	var offset int64
	for rr.Next() {
		rec := rr.RecordBatch()
		n := rec.NumRows()
		if offset+n > sh.Rows {
			w.Abort()
			return fmt.Errorf("%s: metadata has more rows than the shard's %d", fn.Input.File(int32(sh.Index)), sh.Rows)
		}
		part := make([]*dataset.Outcome, n)
		for i := range part {
			part[i] = &outcomes[offset+int64(i)]
		}
		if err := w.Write(ctx, rec, part); err != nil {
			w.Abort()
			return err
		}
		offset += n
	}
	if err := rr.Err(); err != nil {
		w.Abort()
		return fmt.Errorf("%s: %w", fn.Input.File(int32(sh.Index)), err)
	}
	if offset != sh.Rows {
		w.Abort()
		return fmt.Errorf("%s: metadata has %d rows, the shard %d", fn.Input.File(int32(sh.Index)), offset, sh.Rows)
	}
	return w.Commit()
}

// splitOutcomes says where each row of a shard goes: errors for faults, rejected for scores at
// or above the threshold, kept otherwise.
func splitOutcomes(rows []rowOutcome, threshold float64) []dataset.Outcome {
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
	return outcomes
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
	return metadata.WriteParquet(ctx, storage.Join(fn.Out.Dir, rundir.NeighboursDir, rundir.PartFile(shard, "parquet")), schema, rec)
}

// writeNativeSplits hands the routing to a format that writes kept/rejected/errors in its own
// layout (a webdataset input gives webdataset outputs, every member preserved).
