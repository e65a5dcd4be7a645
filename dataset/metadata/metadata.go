// Package metadata reads the per-row metadata files that sit beside embedding shards (Parquet,
// CSV or JSON Lines) as Arrow record batches, so every format hands rows on the same way.
package metadata

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/lemon-curation/lemon/storage"
)

// Extensions are the metadata file types, in the order they are looked for.
var Extensions = []string{".parquet", ".csv", ".jsonl"}

// BatchRows is how many rows each record batch holds.
const BatchRows = 8192

// Open returns the rows of a metadata file as Arrow record batches. CSV and JSON Lines columns
// are strings (JSON values that are not strings keep their JSON text), so ids such as "0007"
// survive unchanged.
func Open(ctx context.Context, p string) (array.RecordReader, error) {
	switch strings.ToLower(path.Ext(p)) {
	case ".parquet":
		return openParquet(ctx, p, nil)
	case ".csv":
		return openCSV(ctx, p)
	case ".jsonl", ".json":
		return openJSONL(ctx, p)
	}
	return nil, fmt.Errorf("%s: unknown metadata file type (want .parquet, .csv or .jsonl)", p)
}

// ParquetFile is an open Parquet file.
type ParquetFile struct {
	ra     storage.ReaderAtCloser
	reader *file.Reader
	Arrow  *pqarrow.FileReader
	Path   string
}

// OpenParquet opens a Parquet file for Arrow reads.
func OpenParquet(ctx context.Context, p string) (*ParquetFile, error) {
	ra, size, err := storage.OpenReaderAt(ctx, p)
	if err != nil {
		return nil, err
	}
	rd, err := file.NewParquetReader(io.NewSectionReader(ra, 0, size))
	if err != nil {
		ra.Close()
		return nil, fmt.Errorf("%s: not a readable Parquet file: %w", p, err)
	}
	fr, err := pqarrow.NewFileReader(rd, pqarrow.ArrowReadProperties{BatchSize: BatchRows, Parallel: false}, memory.DefaultAllocator)
	if err != nil {
		rd.Close()
		ra.Close()
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return &ParquetFile{ra: ra, reader: rd, Arrow: fr, Path: p}, nil
}

// Rows is the row count from the file footer.
func (f *ParquetFile) Rows() int64 { return f.reader.NumRows() }

// Columns lists the top-level column names.
func (f *ParquetFile) Columns() ([]string, error) {
	s, err := f.Arrow.Schema()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Path, err)
	}
	var names []string
	for _, fl := range s.Fields() {
		names = append(names, fl.Name)
	}
	return names, nil
}

// Records reads the named columns (all if nil) as record batches.
func (f *ParquetFile) Records(ctx context.Context, columns []string) (array.RecordReader, error) {
	var idx []int
	if columns != nil {
		s, err := f.Arrow.Schema()
		if err != nil {
			return nil, err
		}
		for _, c := range columns {
			i := s.FieldIndices(c)
			if len(i) == 0 {
				return nil, fmt.Errorf("%s: no column %q", f.Path, c)
			}
			// Leaf indices: a list column has one leaf.
			leaf, err := leafIndices(f, c)
			if err != nil {
				return nil, err
			}
			_ = i
			idx = append(idx, leaf...)
		}
	}
	rr, err := f.Arrow.GetRecordReader(ctx, idx, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Path, err)
	}
	return &closingReader{RecordReader: rr, close: f.Close}, nil
}

func leafIndices(f *ParquetFile, col string) ([]int, error) {
	sc := f.reader.MetaData().Schema
	var out []int
	for i := 0; i < sc.NumColumns(); i++ {
		p := sc.Column(i).ColumnPath()
		if len(p) > 0 && p[0] == col {
			out = append(out, i)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no column %q", f.Path, col)
	}
	return out, nil
}

// Close releases the file.
func (f *ParquetFile) Close() error {
	f.reader.Close()
	return f.ra.Close()
}

// closingReader closes the underlying file when the reader is released for the last time.
type closingReader struct {
	pqarrow.RecordReader
	close  func() error
	closed bool
}

func (c *closingReader) Release() {
	c.RecordReader.Release()
	if !c.closed {
		c.closed = true
		c.close()
	}
}

func openParquet(ctx context.Context, p string, cols []string) (array.RecordReader, error) {
	f, err := OpenParquet(ctx, p)
	if err != nil {
		return nil, err
	}
	rr, err := f.Records(ctx, cols)
	if err != nil {
		f.Close()
		return nil, err
	}
	return rr, nil
}

// stringBatches turns rows of strings into record batches of string columns.
type stringBatches struct {
	schema *arrow.Schema
	next   func() ([]string, error) // nil slice at the end
	rec    arrow.RecordBatch
	err    error
	close  func()
	refs   int64
}

func (s *stringBatches) Retain()                        { s.refs++ }
func (s *stringBatches) Schema() *arrow.Schema          { return s.schema }
func (s *stringBatches) RecordBatch() arrow.RecordBatch { return s.rec }
func (s *stringBatches) Record() arrow.RecordBatch      { return s.rec }
func (s *stringBatches) Err() error                     { return s.err }
func (s *stringBatches) Release() {
	s.refs--
	if s.refs <= 0 {
		if s.rec != nil {
			s.rec.Release()
			s.rec = nil
		}
		if s.close != nil {
			s.close()
			s.close = nil
		}
	}
}

func (s *stringBatches) Next() bool {
	if s.rec != nil {
		s.rec.Release()
		s.rec = nil
	}
	if s.err != nil {
		return false
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, s.schema)
	defer b.Release()
	n := 0
	for n < BatchRows {
		row, err := s.next()
		if err != nil {
			s.err = err
			return false
		}
		if row == nil {
			break
		}
		for i := range s.schema.Fields() {
			b.Field(i).(*array.StringBuilder).Append(row[i])
		}
		n++
	}
	if n == 0 {
		return false
	}
	s.rec = b.NewRecordBatch()
	return true
}

func stringSchema(names []string) *arrow.Schema {
	fs := make([]arrow.Field, len(names))
	for i, n := range names {
		fs[i] = arrow.Field{Name: n, Type: arrow.BinaryTypes.String}
	}
	return arrow.NewSchema(fs, nil)
}

func openCSV(ctx context.Context, p string) (array.RecordReader, error) {
	r, err := storage.Open(ctx, p)
	if err != nil {
		return nil, err
	}
	cr := csv.NewReader(bufio.NewReaderSize(r, 1<<20))
	cr.ReuseRecord = false
	header, err := cr.Read()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("%s: reading CSV header: %w", p, err)
	}
	header[0] = strings.TrimPrefix(header[0], "\ufeff")
	line := 1
	return &stringBatches{schema: stringSchema(header), refs: 1, close: func() { r.Close() }, next: func() ([]string, error) {
		rec, err := cr.Read()
		line++
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		return rec, nil
	}}, nil
}

func openJSONL(ctx context.Context, p string) (array.RecordReader, error) {
	// Columns are the keys of the first object, in order; later objects may omit keys (empty
	// string) but may not add new ones, which would have no column to go in.
	r, err := storage.Open(ctx, p)
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(bufio.NewReaderSize(r, 1<<20))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	line := 0
	readObj := func() (map[string]json.RawMessage, []string, error) {
		for sc.Scan() {
			line++
			b := sc.Bytes()
			if len(strings.TrimSpace(string(b))) == 0 {
				continue
			}
			keys, obj, err := DecodeOrdered(b)
			if err != nil {
				return nil, nil, fmt.Errorf("%s line %d: not a JSON object: %w", p, line, err)
			}
			return obj, keys, nil
		}
		if err := sc.Err(); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", p, err)
		}
		return nil, nil, nil
	}
	first, keys, err := readObj()
	if err != nil {
		r.Close()
		return nil, err
	}
	toRow := func(obj map[string]json.RawMessage) ([]string, error) {
		row := make([]string, len(keys))
		for k := range obj {
			found := false
			for _, kk := range keys {
				if kk == k {
					found = true
				}
			}
			if !found {
				return nil, fmt.Errorf("%s line %d: key %q is not in the first line's keys %v", p, line, k, keys)
			}
		}
		for i, k := range keys {
			raw, ok := obj[k]
			if !ok || string(raw) == "null" {
				continue
			}
			var s string
			if json.Unmarshal(raw, &s) == nil {
				row[i] = s
			} else {
				row[i] = string(raw)
			}
		}
		return row, nil
	}
	pending := first
	return &stringBatches{schema: stringSchema(keys), refs: 1, close: func() { r.Close() }, next: func() ([]string, error) {
		if pending != nil {
			o := pending
			pending = nil
			return toRow(o)
		}
		obj, _, err := readObj()
		if err != nil || obj == nil {
			return nil, err
		}
		return toRow(obj)
	}}, nil
}

// DecodeOrdered decodes a JSON object, also returning its keys in document order (JSON Lines
// metadata keeps its columns in the order the first line gives them).
func DecodeOrdered(b []byte) ([]string, map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	t, err := dec.Token()
	if err != nil {
		return nil, nil, err
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return nil, nil, fmt.Errorf("want an object")
	}
	obj := map[string]json.RawMessage{}
	var keys []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		k, ok := t.(string)
		if !ok {
			return nil, nil, fmt.Errorf("want a key")
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, err
		}
		if _, dup := obj[k]; !dup {
			keys = append(keys, k)
		}
		obj[k] = v
	}
	return keys, obj, nil
}

// StringColumn returns column name of rec as strings (numbers printed plainly), or an error if
// it is not a string-like or integer column.
func StringColumn(file string, rec arrow.RecordBatch, name string) ([]string, []bool, error) {
	idx := rec.Schema().FieldIndices(name)
	if len(idx) == 0 {
		return nil, nil, fmt.Errorf("%s: no column %q", file, name)
	}
	col := rec.Column(idx[0])
	out := make([]string, col.Len())
	valid := make([]bool, col.Len())
	for i := 0; i < col.Len(); i++ {
		if col.IsNull(i) {
			continue
		}
		valid[i] = true
		switch c := col.(type) {
		case *array.String:
			out[i] = c.Value(i)
		case *array.LargeString:
			out[i] = c.Value(i)
		case *array.Binary:
			out[i] = string(c.Value(i))
		default:
			out[i] = col.ValueStr(i)
		}
	}
	return out, valid, nil
}
