package evaluate

import (
	"context"
	"encoding/csv"
	"fmt"
	"sort"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/storage"
)

// Column names `lemon score` adds to the kept and rejected files.
const (
	colDmm   = "lemon_d_mm"
	colSn    = "lemon_s_n"
	colSm    = "lemon_s_m"
	colScore = "lemon_score"
)

// Names tried, in order, when no column is named (the same lists `lemon score` uses).
var (
	idColumns      = []string{"key", "uid", "id"}
	captionColumns = []string{"caption", "text"}
)

// table is every scored row of the run (kept/ then rejected/, file by file, in file order),
// column by column.
type table struct {
	files     []string
	file, row []int // file index and 0-based row within that file
	truth     []bool
	split     []string // nil without a split column
	id        []string // nil when there is no id column
	caption   []string // nil when there is no caption column
	// scoreCaptions maps id to caption from scores/, read when kept/ has no caption column.
	scoreCaptions map[string]string
	cleanLabel    []string // Options.CleanLabelColumn, read for the downstream experiment
	idColumn      string
	capColumn     string
	schema        *arrow.Schema // the first file's, for finding an image column
	dmm, sn       []float64
	sm, score     []float64
	isRejected    []bool

	kept, rejected, unscored int
	evalIdx, thrIdx          []int // rows evaluated, rows choosing the F1 threshold
	otherIdx                 []int // rows of other splits (train), with a split column
}

func (t *table) n() int { return len(t.truth) }

func listFiles(ctx context.Context, dir, sub, ext string) ([]string, error) {
	files, err := dataset.ShardFilesUnder(ctx, storage.Join(dir, sub), "."+ext) // at any depth, as Parquet inputs' outputs mirror them
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", storage.Join(dir, sub), err)
	}
	sort.Strings(files)
	return files, nil
}

func readTable(ctx context.Context, o Options) (*table, error) {
	kept, err := listFiles(ctx, o.RunDir, "kept", "parquet")
	if err != nil {
		return nil, err
	}
	rejected, err := listFiles(ctx, o.RunDir, "rejected", "parquet")
	if err != nil {
		return nil, err
	}
	if len(kept)+len(rejected) == 0 {
		return nil, fmt.Errorf("%s: no kept/*.parquet or rejected/*.parquet files: is this a `lemon score --output` directory?", o.RunDir)
	}
	t := &table{}
	for _, f := range kept {
		if err := t.readFile(ctx, o, f, false); err != nil {
			return nil, err
		}
	}
	for _, f := range rejected {
		if err := t.readFile(ctx, o, f, true); err != nil {
			return nil, err
		}
	}
	if t.n() == 0 {
		return nil, fmt.Errorf("%s: kept/ and rejected/ hold no rows", o.RunDir)
	}
	// Rows in errors/ had bad input and no score; they are only counted.
	errFiles, err := listFiles(ctx, o.RunDir, "errors", "parquet")
	if err != nil {
		return nil, err
	}
	for _, p := range errFiles {
		f, err := metadata.OpenParquet(ctx, p)
		if err != nil {
			return nil, err
		}
		t.unscored += int(f.Rows())
		f.Close()
	}
	return t, nil
}

func pickColumn(file string, have map[string]bool, configured string, candidates []string, flag string) (string, error) {
	if configured != "" {
		if !have[configured] {
			return "", fmt.Errorf("%s: no column %q (--%s)", file, configured, flag)
		}
		return configured, nil
	}
	for _, c := range candidates {
		if have[c] {
			return c, nil
		}
	}
	return "", nil
}

func (t *table) readFile(ctx context.Context, o Options, p string, rejected bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := metadata.OpenParquet(ctx, p)
	if err != nil {
		return err
	}
	schema, err := f.Arrow.Schema()
	if err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", p, err)
	}
	have := map[string]bool{}
	var names []string
	for _, fl := range schema.Fields() {
		have[fl.Name] = true
		names = append(names, fl.Name)
	}
	if t.schema == nil {
		// Columns are resolved once, on the first file; later files must have them too.
		t.schema = schema
		if t.idColumn, err = pickColumn(p, have, o.IDColumn, idColumns, "id-column"); err == nil {
			t.capColumn, err = pickColumn(p, have, o.CaptionColumn, captionColumns, "caption-column")
		}
		if err != nil {
			f.Close()
			return err
		}
	}
	need := []string{o.TruthColumn, colDmm, colSn, colSm, colScore}
	if !have[o.TruthColumn] {
		f.Close()
		return fmt.Errorf("%s: no truth column %q (columns: %s); name it with --truth-column", p, o.TruthColumn, strings.Join(names, ", "))
	}
	for _, c := range need[1:] {
		if !have[c] {
			f.Close()
			return fmt.Errorf("%s: no column %q: not a kept/rejected file written by `lemon score`", p, c)
		}
	}
	cleanCol := ""
	if o.Downstream {
		cleanCol = o.CleanLabelColumn
	}
	for _, c := range []struct{ name, flag string }{{o.SplitColumn, "split-column"}, {t.idColumn, "id-column"}, {t.capColumn, "caption-column"}, {cleanCol, "clean-label-column"}} {
		if c.name == "" {
			continue
		}
		if !have[c.name] {
			f.Close()
			return fmt.Errorf("%s: no column %q (--%s; columns: %s)", p, c.name, c.flag, strings.Join(names, ", "))
		}
		need = append(need, c.name)
	}
	rr, err := f.Records(ctx, dedupe(need))
	if err != nil {
		f.Close()
		return err
	}
	defer rr.Release()
	fileIdx := len(t.files)
	t.files = append(t.files, p)
	offset := 0
	for rr.Next() {
		rec := rr.RecordBatch()
		n := int(rec.NumRows())
		truth, err := metadata.TruthColumn(p, rec, o.TruthColumn, offset)
		if err != nil {
			return err
		}
		t.truth = append(t.truth, truth...)
		for _, c := range []struct {
			name string
			dst  *[]float64
		}{{colDmm, &t.dmm}, {colSn, &t.sn}, {colSm, &t.sm}, {colScore, &t.score}} {
			x, err := floatColumn(p, rec, c.name, offset)
			if err != nil {
				return err
			}
			*c.dst = append(*c.dst, x...)
		}
		for _, c := range []struct {
			name string
			dst  *[]string
		}{{o.SplitColumn, &t.split}, {t.idColumn, &t.id}, {t.capColumn, &t.caption}, {cleanCol, &t.cleanLabel}} {
			if c.name == "" {
				continue
			}
			s, _, err := metadata.StringColumn(p, rec, c.name)
			if err != nil {
				return err
			}
			*c.dst = append(*c.dst, s...)
		}
		for i := 0; i < n; i++ {
			t.file = append(t.file, fileIdx)
			t.row = append(t.row, offset+i)
			t.isRejected = append(t.isRejected, rejected)
		}
		offset += n
	}
	if err := rr.Err(); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if rejected {
		t.rejected += offset
	} else {
		t.kept += offset
	}
	return nil
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

func floatColumn(file string, rec arrow.RecordBatch, name string, offset int) ([]float64, error) {
	col := rec.Column(rec.Schema().FieldIndices(name)[0])
	out := make([]float64, col.Len())
	for i := range out {
		if col.IsNull(i) {
			return nil, fmt.Errorf("%s row %d (0-based): %s is null", file, offset+i, name)
		}
		switch c := col.(type) {
		case *array.Float64:
			out[i] = c.Value(i)
		case *array.Float32:
			out[i] = float64(c.Value(i))
		default:
			return nil, fmt.Errorf("%s: column %s is %s, want float64", file, name, col.DataType())
		}
	}
	return out, nil
}

// scoresRow is one row of a scores file.
type scoresRow struct {
	id, caption string
	neighbours  []string // image neighbours, when asked for
}

// readScores calls fn for every row of the run's scores files (Parquet or CSV). With
// neighbours it also reads image_neighbours; noNeighbours is then set (and fn never called)
// when the run was made without --emit-neighbours.
func readScores(ctx context.Context, files []string, neighbours bool, fn func(scoresRow) error) (noNeighbours bool, err error) {
	for _, p := range files {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		rr, err := metadata.Open(ctx, p)
		if err != nil {
			return false, err
		}
		if neighbours && len(rr.Schema().FieldIndices("image_neighbours")) == 0 {
			rr.Release()
			return true, nil
		}
		err = func() error {
			defer rr.Release()
			for rr.Next() {
				rec := rr.RecordBatch()
				ids, _, err := metadata.StringColumn(p, rec, "id")
				if err != nil {
					return err
				}
				caps, _, err := metadata.StringColumn(p, rec, "caption")
				if err != nil {
					return err
				}
				var lists [][]string
				if neighbours {
					if lists, err = neighbourColumn(p, rec); err != nil {
						return err
					}
				}
				for i := range ids {
					r := scoresRow{id: ids[i], caption: caps[i]}
					if lists != nil {
						r.neighbours = lists[i]
					}
					if err := fn(r); err != nil {
						return err
					}
				}
			}
			if err := rr.Err(); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			return nil
		}()
		if err != nil {
			return false, err
		}
	}
	return false, nil
}

// neighbourColumn reads image_neighbours: list<string> in Parquet, space-separated (CSV-quoted
// where an id has a space) in CSV.
func neighbourColumn(file string, rec arrow.RecordBatch) ([][]string, error) {
	col := rec.Column(rec.Schema().FieldIndices("image_neighbours")[0])
	out := make([][]string, col.Len())
	switch c := col.(type) {
	case *array.List:
		vals, ok := c.ListValues().(*array.String)
		if !ok {
			return nil, fmt.Errorf("%s: image_neighbours is %s, want list<string>", file, col.DataType())
		}
		for i := range out {
			if c.IsNull(i) {
				continue
			}
			start, end := c.ValueOffsets(i)
			for j := start; j < end; j++ {
				out[i] = append(out[i], vals.Value(int(j)))
			}
		}
	case *array.String:
		for i := range out {
			s := c.Value(i)
			if s == "" {
				continue
			}
			r := csv.NewReader(strings.NewReader(s))
			r.Comma = ' '
			ids, err := r.Read()
			if err != nil {
				return nil, fmt.Errorf("%s: image_neighbours %q: %w", file, s, err)
			}
			out[i] = ids
		}
	default:
		return nil, fmt.Errorf("%s: image_neighbours is %s, want list<string>", file, col.DataType())
	}
	return out, nil
}
