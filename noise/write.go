package noise

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"path"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	arrowf16 "github.com/apache/arrow-go/v18/arrow/float16"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/x448/float16"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/embparquet"
	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/internal/npy"
	"github.com/lemon-curation/lemon/storage"
)

// edits says what each row of the noisy copy holds.
type edits struct {
	captions []string // original captions, global order
	donor    []int
	vecs     map[int][]float32 // donors' text embeddings
	isClass  bool
	labelCol string
	labels   []string
	newClass []int
	classes  []string
	split    []string // the split made here, or nil
}

func (e *edits) changed(g int) bool { return e.donor[g] >= 0 }

// caption is row g's new caption, if it changed.
func (e *edits) caption(g int) (string, bool) {
	if j := e.donor[g]; j >= 0 {
		return e.captions[j], true
	}
	return "", false
}

// label is row g's new class, if it changed.
func (e *edits) label(g int) (string, bool) {
	if e.donor[g] >= 0 {
		return e.classes[e.newClass[g]], true
	}
	return "", false
}

// text is row g's text embedding in the copy: the donor's, or its own.
func (e *edits) text(g int, own []float32) []float32 {
	if j := e.donor[g]; j >= 0 {
		return e.vecs[j]
	}
	return own
}

// newColumn is a string column the copy gains (or whose values it replaces).
type newColumn struct {
	name  string
	value func(g int) string
}

func (e *edits) newColumns() []newColumn {
	cols := []newColumn{
		{ColIsError, func(g int) string { return fmt.Sprint(e.changed(g)) }},
		{ColOriginalCaption, func(g int) string { return e.captions[g] }},
	}
	if e.isClass {
		cols = append(cols, newColumn{ColOriginalLabel, func(g int) string { return e.labels[g] }})
	}
	if e.split != nil {
		cols = append(cols, newColumn{ColSplit, func(g int) string { return e.split[g] }})
	}
	return cols
}

// writeShard writes one shard of the copy under the same file names. For embdir the image
// embeddings go last, so a shard whose image file exists is complete.
func writeShard(ctx context.Context, f dataset.Format, sh dataset.Shard, m shardMeta, o Options, ed *edits) error {
	if f.Name() == (embparquet.Format{}).Name() {
		vecCol := o.Columns.TextEmbeddingColumn
		if vecCol == "" {
			vecCol = embparquet.TextColumn
		}
		return rewriteArrow(ctx, m.path, storage.Join(o.Output, storage.Base(m.path)), sh, m.captionCol, vecCol, ed)
	}
	out := storage.Join(o.Output, "metadata", storage.Base(m.path))
	var err error
	switch strings.ToLower(path.Ext(m.path)) {
	case ".parquet":
		err = rewriteArrow(ctx, m.path, out, sh, m.captionCol, "", ed)
	case ".csv":
		err = rewriteCSV(ctx, m.path, out, sh, m.captionCol, ed)
	default:
		err = rewriteJSONL(ctx, m.path, out, sh, m.captionCol, ed)
	}
	if err != nil {
		return err
	}
	if err := writeTextNpy(ctx, f, sh, o, storage.Join(o.Output, "text_emb", storage.Base(sh.Files["text"])), ed); err != nil {
		return err
	}
	return copyFile(ctx, sh.Files["image"], storage.Join(o.Output, "img_emb", storage.Base(sh.Files["image"])))
}

// half converts to float16 rounding to nearest even, subnormals included (arrow's float16.New
// truncates), so a float16 value read as float32 converts back to itself.
func half(v float32) uint16 { return float16.Fromfloat32(v).Bits() }

func copyFile(ctx context.Context, from, to string) error {
	r, err := storage.Open(ctx, from)
	if err != nil {
		return err
	}
	defer r.Close()
	w, err := storage.Create(ctx, to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Abort()
		return fmt.Errorf("copying %s to %s: %w", from, to, err)
	}
	return w.Commit()
}

// writeTextNpy writes the shard's text embeddings with the donors' in place of the swapped
// rows, keeping the input file's header (dtype, byte order, layout) byte for byte.
func writeTextNpy(ctx context.Context, f dataset.Format, sh dataset.Shard, o Options, out string, ed *edits) error {
	in := sh.Files["text"]
	ra, size, err := storage.OpenReaderAt(ctx, in)
	if err != nil {
		return err
	}
	nr, err := npy.NewReader(ra, size)
	if err != nil {
		ra.Close()
		return fmt.Errorf("%s: %w", in, err)
	}
	h := nr.Header()
	hdr := make([]byte, h.DataOffset)
	_, err = ra.ReadAt(hdr, 0)
	ra.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	var order binary.ByteOrder = binary.LittleEndian
	if h.Dtype[0] == '>' {
		order = binary.BigEndian
	}
	item := h.ItemSize()
	enc := func(dst []byte, v float32) {
		if item == 2 {
			order.PutUint16(dst, half(v))
		} else {
			order.PutUint32(dst, math.Float32bits(v))
		}
	}
	w, err := storage.Create(ctx, out)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	bw.Write(hdr)
	row := make([]byte, h.Cols*item)
	var all []float32 // Fortran order only: the matrix is written column by column at the end
	err = f.Read(ctx, sh, o.Columns, func(r dataset.Record) error {
		v := ed.text(int(sh.Offset+r.Index), r.Text)
		if len(v) != h.Cols {
			return fmt.Errorf("%s row %d: text embedding has %d values, want %d", in, r.Index, len(v), h.Cols)
		}
		if h.Fortran {
			all = append(all, v...)
			return nil
		}
		for c, x := range v {
			enc(row[c*item:], x)
		}
		_, err := bw.Write(row)
		return err
	})
	if err == nil && h.Fortran {
		b := make([]byte, item)
		for c := 0; c < h.Cols && err == nil; c++ {
			for r := 0; r < h.Rows && err == nil; r++ {
				enc(b, all[r*h.Cols+c])
				_, err = bw.Write(b)
			}
		}
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		w.Abort()
		return fmt.Errorf("writing %s: %w", out, err)
	}
	return w.Commit()
}

// stringOut is the type a replaced string-valued column is written as: its own when that
// can hold the new values, else string.
func stringOut(t arrow.DataType, allowInts bool) arrow.DataType {
	switch t.ID() {
	case arrow.STRING, arrow.LARGE_STRING:
		return t
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64, arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		if allowInts {
			return t // class labels such as CIFAR's 0..9: new values are other values of the column
		}
	}
	return arrow.BinaryTypes.String
}

// buildStrings makes a column of type t from the original values (null where !valid) with
// row r replaced by repl(r) where that says so.
func buildStrings(t arrow.DataType, vals []string, valid []bool, repl func(r int) (string, bool)) (arrow.Array, error) {
	b := array.NewBuilder(memory.DefaultAllocator, t)
	defer b.Release()
	for r := range vals {
		v, ok := repl(r)
		if !ok {
			if !valid[r] {
				b.AppendNull()
				continue
			}
			v = vals[r]
		}
		switch sb := b.(type) {
		case *array.StringBuilder:
			sb.Append(v)
		case *array.LargeStringBuilder:
			sb.Append(v)
		default:
			if err := b.AppendValueFromString(v); err != nil {
				return nil, fmt.Errorf("value %q: %w", v, err)
			}
		}
	}
	return b.NewArray(), nil
}

// vectorCell builds a one-row array of list type t holding v.
func vectorCell(t arrow.DataType, v []float32) (arrow.Array, error) {
	b := array.NewBuilder(memory.DefaultAllocator, t)
	defer b.Release()
	var vb array.Builder
	switch lb := b.(type) {
	case *array.ListBuilder:
		lb.Append(true)
		vb = lb.ValueBuilder()
	case *array.LargeListBuilder:
		lb.Append(true)
		vb = lb.ValueBuilder()
	case *array.FixedSizeListBuilder:
		if n := t.(*arrow.FixedSizeListType).Len(); int(n) != len(v) {
			return nil, fmt.Errorf("embedding has %d values, the column's fixed size is %d", len(v), n)
		}
		lb.Append(true)
		vb = lb.ValueBuilder()
	default:
		return nil, fmt.Errorf("column type %s is not a list", t)
	}
	switch fb := vb.(type) {
	case *array.Float32Builder:
		fb.AppendValues(v, nil)
	case *array.Float64Builder:
		for _, x := range v {
			fb.Append(float64(x))
		}
	case *array.Float16Builder:
		for _, x := range v {
			fb.Append(arrowf16.FromBits(half(x)))
		}
	default:
		return nil, fmt.Errorf("column type %s does not hold floats", t)
	}
	return b.NewArray(), nil
}

// replaceVectors gives the rows of col that took a donor's caption the donor's embedding.
// Unchanged runs are slices of the original, so their values are kept exactly.
func replaceVectors(col arrow.Array, g0 int, ed *edits) (arrow.Array, error) {
	var pieces []arrow.Array
	defer func() {
		for _, p := range pieces {
			p.Release()
		}
	}()
	lo := 0
	for r := 0; r < col.Len(); r++ {
		if !ed.changed(g0 + r) {
			continue
		}
		if lo < r {
			pieces = append(pieces, array.NewSlice(col, int64(lo), int64(r)))
		}
		cell, err := vectorCell(col.DataType(), ed.text(g0+r, nil))
		if err != nil {
			return nil, err
		}
		pieces = append(pieces, cell)
		lo = r + 1
	}
	if pieces == nil {
		col.Retain()
		return col, nil
	}
	if lo < col.Len() {
		pieces = append(pieces, array.NewSlice(col, int64(lo), int64(col.Len())))
	}
	return array.Concatenate(pieces, memory.DefaultAllocator)
}

// rewriteArrow rewrites a Parquet file (embdir metadata, or an embedding Parquet shard with
// its text embedding column vecCol) with the noisy captions and the new columns.
func rewriteArrow(ctx context.Context, in, out string, sh dataset.Shard, captionCol, vecCol string, ed *edits) error {
	rr, err := metadata.Open(ctx, in)
	if err != nil {
		return err
	}
	defer rr.Release()
	type plan struct {
		field arrow.Field
		src   int // input column, -1 for a new one
		build func(rec arrow.RecordBatch, g0 int) (arrow.Array, error)
	}
	strCol := func(name string, t arrow.DataType, repl func(g int) (string, bool)) func(arrow.RecordBatch, int) (arrow.Array, error) {
		return func(rec arrow.RecordBatch, g0 int) (arrow.Array, error) {
			var vals []string
			var valid []bool
			if len(rec.Schema().FieldIndices(name)) > 0 {
				var err error
				if vals, valid, err = metadata.StringColumn(in, rec, name); err != nil {
					return nil, err
				}
			} else {
				vals, valid = make([]string, rec.NumRows()), make([]bool, rec.NumRows())
			}
			a, err := buildStrings(t, vals, valid, func(r int) (string, bool) { return repl(g0 + r) })
			if err != nil {
				return nil, fmt.Errorf("%s column %q: %w", in, name, err)
			}
			return a, nil
		}
	}
	newCols := ed.newColumns()
	placed := map[string]bool{}
	var plans []plan
	for i, fl := range rr.Schema().Fields() {
		p := plan{field: fl, src: i}
		switch {
		case fl.Name == captionCol:
			p.field = arrow.Field{Name: fl.Name, Type: stringOut(fl.Type, false), Nullable: true}
			p.build = strCol(fl.Name, p.field.Type, ed.caption)
		case ed.isClass && ed.labelCol != "" && fl.Name == ed.labelCol:
			p.field = arrow.Field{Name: fl.Name, Type: stringOut(fl.Type, true), Nullable: true}
			p.build = strCol(fl.Name, p.field.Type, ed.label)
		case vecCol != "" && fl.Name == vecCol:
			p.build = func(rec arrow.RecordBatch, g0 int) (arrow.Array, error) {
				a, err := replaceVectors(rec.Column(i), g0, ed)
				if err != nil {
					return nil, fmt.Errorf("%s column %q: %w", in, fl.Name, err)
				}
				return a, nil
			}
		}
		for _, nc := range newCols {
			if fl.Name == nc.name && p.build == nil {
				// An old is_error (or split) column: its values are replaced, in place.
				placed[nc.name] = true
				p.field = arrow.Field{Name: nc.name, Type: arrow.BinaryTypes.String, Nullable: true}
				p.build = strCol(nc.name, p.field.Type, func(g int) (string, bool) { return nc.value(g), true })
			}
		}
		plans = append(plans, p)
	}
	for _, nc := range newCols {
		if !placed[nc.name] {
			plans = append(plans, plan{field: arrow.Field{Name: nc.name, Type: arrow.BinaryTypes.String, Nullable: true}, src: -1,
				build: strCol(nc.name, arrow.BinaryTypes.String, func(g int) (string, bool) { return nc.value(g), true })})
		}
	}
	fields := make([]arrow.Field, len(plans))
	for k, p := range plans {
		fields[k] = p.field
	}
	schema := arrow.NewSchema(fields, nil)
	w, err := metadata.CreateParquet(ctx, out, schema)
	if err != nil {
		return err
	}
	g := int(sh.Offset)
	for rr.Next() {
		rec := rr.RecordBatch()
		n := int(rec.NumRows())
		if int64(g)+int64(n) > sh.Offset+sh.Rows {
			w.Abort()
			return fmt.Errorf("%s has more rows than planned (%d)", in, sh.Rows)
		}
		cols := make([]arrow.Array, len(plans))
		var err error
		for k, p := range plans {
			if p.build == nil {
				cols[k] = rec.Column(p.src)
				cols[k].Retain()
				continue
			}
			if cols[k], err = p.build(rec, g); err != nil {
				break
			}
		}
		if err == nil {
			out := array.NewRecordBatch(schema, cols, int64(n))
			err = w.Write(out)
			out.Release()
		}
		for _, c := range cols {
			if c != nil {
				c.Release()
			}
		}
		if err != nil {
			w.Abort()
			return err
		}
		g += n
	}
	if err := rr.Err(); err != nil {
		w.Abort()
		return fmt.Errorf("%s: %w", in, err)
	}
	if int64(g) != sh.Offset+sh.Rows {
		w.Abort()
		return fmt.Errorf("%s has %d rows, planned %d", in, int64(g)-sh.Offset, sh.Rows)
	}
	return w.Commit()
}

// rewriteCSV rewrites a CSV metadata file: every column is text there.
func rewriteCSV(ctx context.Context, in, out string, sh dataset.Shard, captionCol string, ed *edits) error {
	rr, err := metadata.Open(ctx, in)
	if err != nil {
		return err
	}
	defer rr.Release()
	var header []string
	for _, f := range rr.Schema().Fields() {
		header = append(header, f.Name)
	}
	newCols := ed.newColumns()
	pos := map[string]int{}
	for i, h := range header {
		pos[h] = i
	}
	for _, nc := range newCols {
		if _, ok := pos[nc.name]; !ok {
			pos[nc.name] = len(header)
			header = append(header, nc.name)
		}
	}
	w, err := storage.Create(ctx, out)
	if err != nil {
		return err
	}
	defer w.Abort() // no-op after Commit
	bw := bufio.NewWriterSize(w, 1<<20)
	cw := csv.NewWriter(bw)
	cw.Write(header)
	g := int(sh.Offset)
	nIn := len(rr.Schema().Fields())
	for rr.Next() {
		rec := rr.RecordBatch()
		cols := make([][]string, nIn)
		for i, f := range rr.Schema().Fields() {
			if cols[i], _, err = metadata.StringColumn(in, rec, f.Name); err != nil {
				return err
			}
		}
		for r := 0; r < int(rec.NumRows()); r++ {
			row := make([]string, len(header))
			for i := range cols {
				row[i] = cols[i][r]
			}
			if v, ok := ed.caption(g); ok {
				row[pos[captionCol]] = v
			}
			if ed.isClass && ed.labelCol != "" {
				if v, ok := ed.label(g); ok {
					row[pos[ed.labelCol]] = v
				}
			}
			for _, nc := range newCols {
				row[pos[nc.name]] = nc.value(g)
			}
			cw.Write(row)
			g++
		}
	}
	if err := rr.Err(); err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return err
	}
	if int64(g) != sh.Offset+sh.Rows {
		return fmt.Errorf("%s has %d rows, planned %d", in, int64(g)-sh.Offset, sh.Rows)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", out, err)
	}
	return w.Commit()
}

// rewriteJSONL rewrites a JSON Lines metadata file line by line, keeping every other value's
// JSON text as it was (numbers stay numbers) and the keys in their order.
func rewriteJSONL(ctx context.Context, in, out string, sh dataset.Shard, captionCol string, ed *edits) error {
	r, err := storage.Open(ctx, in)
	if err != nil {
		return err
	}
	defer r.Close()
	sc := bufio.NewScanner(bufio.NewReaderSize(r, 1<<20))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	js := func(s string) json.RawMessage { b, _ := json.Marshal(s); return b }
	w, err := storage.Create(ctx, out)
	if err != nil {
		return err
	}
	defer w.Abort() // no-op after Commit
	buf := bufio.NewWriterSize(w, 1<<20)
	g, line := int(sh.Offset), 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(bytes.TrimSpace(b)) == 0 {
			continue // as the metadata reader does
		}
		keys, obj, err := metadata.DecodeOrdered(b)
		if err != nil {
			return fmt.Errorf("%s line %d: not a JSON object: %w", in, line, err)
		}
		set := func(k string, v json.RawMessage) {
			if _, ok := obj[k]; !ok {
				keys = append(keys, k)
			}
			obj[k] = v
		}
		if v, ok := ed.caption(g); ok {
			set(captionCol, js(v))
		}
		if ed.isClass && ed.labelCol != "" {
			if v, ok := ed.label(g); ok {
				// A numeric label stays a number.
				old := bytes.TrimSpace(obj[ed.labelCol])
				if len(old) > 0 && old[0] != '"' && json.Valid([]byte(v)) {
					set(ed.labelCol, json.RawMessage(v))
				} else {
					set(ed.labelCol, js(v))
				}
			}
		}
		for _, nc := range ed.newColumns() {
			set(nc.name, js(nc.value(g)))
		}
		buf.WriteByte('{')
		for k, key := range keys {
			if k > 0 {
				buf.WriteByte(',')
			}
			buf.Write(js(key))
			buf.WriteByte(':')
			buf.Write(obj[key])
		}
		buf.WriteString("}\n")
		g++
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	if int64(g) != sh.Offset+sh.Rows {
		return fmt.Errorf("%s has %d rows, planned %d", in, int64(g)-sh.Offset, sh.Rows)
	}
	if err := buf.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", out, err)
	}
	return w.Commit()
}
