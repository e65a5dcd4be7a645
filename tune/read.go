package tune

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/rundir"
	"github.com/lemon-curation/lemon/score"
	"github.com/lemon-curation/lemon/storage"
)

// The list groups tuning reads: validation and test rows (train and other rows are not read).
const (
	groupVal  = 1
	groupTest = 2
)

// ListRow says what ReadLists does with one scored row's lists: Group 0 skips them, groups 1..n
// put them in the n-th Lists, with Truth as the row's ground truth.
type ListRow struct {
	Truth bool
	Group uint8
}

// runData is what tuning needs of a run: its parameters and the validation and test rows'
// neighbour lists.
type runData struct {
	params    score.Params // the run's, from manifest.json
	kmax      int
	val, test *Lists
	scored    int // rows in kept/ and rejected/
	splits    map[string]int
	valNames  []string
	idColumn  string
}

func listFiles(ctx context.Context, dir, sub string) ([]string, error) {
	files, err := dataset.ShardFilesUnder(ctx, storage.Join(dir, sub), ".parquet") // at any depth, as Parquet inputs' outputs mirror them
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", storage.Join(dir, sub), err)
	}
	sort.Strings(files)
	return files, nil
}

// readManifest returns the run's scoring parameters, from the manifest of a complete run.
func readManifest(ctx context.Context, run string) (score.Params, error) {
	m, err := rundir.RequireComplete(ctx, run)
	if err != nil {
		return score.Params{}, err
	}
	p := storage.Join(run, rundir.ManifestFile)
	if len(m.Params) == 0 || string(m.Params) == "null" {
		return score.Params{}, fmt.Errorf("%s: no params", p)
	}
	var params score.Params
	if err := json.Unmarshal(m.Params, &params); err != nil {
		return score.Params{}, fmt.Errorf("%s: params: %w", p, err)
	}
	if params.Distance != score.Cosine && params.Distance != score.Euclidean {
		return score.Params{}, fmt.Errorf("%s: unknown distance %q", p, params.Distance)
	}
	return params, nil
}

func load(ctx context.Context, o Options, workers int) (*runData, error) {
	params, err := readManifest(ctx, o.RunDir)
	if err != nil {
		return nil, err
	}
	r := &runData{params: params, splits: map[string]int{}, valNames: o.valSplits()}
	rows, err := r.readTruth(ctx, o)
	if err != nil {
		return nil, err
	}
	if err := r.readLists(ctx, o, rows, workers); err != nil {
		return nil, err
	}
	return r, nil
}

// readTruth reads every scored row's id, truth and split from kept/ and rejected/.
func (r *runData) readTruth(ctx context.Context, o Options) (map[string]ListRow, error) {
	var files []string
	for _, sub := range []string{"kept", "rejected"} {
		f, err := listFiles(ctx, o.RunDir, sub)
		if err != nil {
			return nil, err
		}
		files = append(files, f...)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no kept/*.parquet or rejected/*.parquet files: is this a `lemon score --output` directory?", o.RunDir)
	}
	isVal := map[string]bool{}
	for _, n := range r.valNames {
		isVal[n] = true
	}
	rows := map[string]ListRow{}
	for _, p := range files {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		f, err := metadata.OpenParquet(ctx, p)
		if err != nil {
			return nil, err
		}
		have, err := f.Columns()
		if err != nil {
			f.Close()
			return nil, err
		}
		if r.idColumn == "" {
			// The same rule `lemon score` used to pick the id column.
			if r.idColumn, err = dataset.PickColumn(p, have, o.IDColumn, dataset.IDColumns, "id"); err != nil {
				f.Close()
				return nil, err
			}
		}
		set := map[string]bool{}
		for _, h := range have {
			set[h] = true
		}
		for _, c := range []struct{ name, flag string }{{r.idColumn, "id-column"}, {o.TruthColumn, "truth-column"}, {o.SplitColumn, "split-column"}} {
			if !set[c.name] {
				f.Close()
				return nil, fmt.Errorf("%s: no column %q (--%s; columns: %s)", p, c.name, c.flag, strings.Join(have, ", "))
			}
		}
		rr, err := f.Records(ctx, dedupe([]string{r.idColumn, o.TruthColumn, o.SplitColumn}))
		if err != nil {
			f.Close()
			return nil, err
		}
		offset := 0
		for rr.Next() {
			rec := rr.RecordBatch()
			ids, idOK, err := metadata.StringColumn(p, rec, r.idColumn)
			if err == nil {
				var truth []bool
				if truth, err = metadata.TruthColumn(p, rec, o.TruthColumn, offset); err == nil {
					var split []string
					var splitOK []bool
					if split, splitOK, err = metadata.StringColumn(p, rec, o.SplitColumn); err == nil {
						for i, id := range ids {
							if !idOK[i] {
								err = fmt.Errorf("%s row %d (0-based): id is null", p, offset+i)
								break
							}
							if _, dup := rows[id]; dup {
								err = fmt.Errorf("%s: id %q appears twice in kept/ and rejected/ (is --id-column right?)", p, id)
								break
							}
							s := ""
							if splitOK[i] {
								s = split[i]
							}
							r.splits[s]++
							info := ListRow{Truth: truth[i]}
							switch {
							case isVal[s]:
								info.Group = groupVal
							case s == o.TestSplit:
								info.Group = groupTest
							}
							rows[id] = info
						}
					}
				}
			}
			if err != nil {
				rr.Release()
				return nil, err
			}
			offset += int(rec.NumRows())
		}
		err = rr.Err()
		rr.Release()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	r.scored = len(rows)
	return rows, nil
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

// listColumns are the neighbours/ columns tuning reads, per modality prefix (the ids are not
// needed: a neighbour's d_mm and distances are in the lists themselves).
var listColumns = []string{"dist", "cross", "dmm", "same_caption"}

// readLists reads the validation and test rows' lists.
func (r *runData) readLists(ctx context.Context, o Options, rows map[string]ListRow, workers int) error {
	lists, err := ReadLists(ctx, o.RunDir, r.params.Distance, rows, 2, workers)
	if err != nil {
		return err
	}
	r.val, r.test, r.kmax = lists[groupVal-1], lists[groupTest-1], lists[0].K
	return nil
}

// ReadLists reads a run's neighbours/*.parquet (what `lemon score --save-neighbour-lists`
// writes; files in parallel) and returns one Lists per group, 1..groups, each holding its rows
// in file order. rows maps every scored row's id to its group (0: not read) and truth; a row of
// neighbours/ that rows lacks, or a grouped row without lists, is an error. d is the distance
// the run searched with (its manifest's).
func ReadLists(ctx context.Context, runDir string, d score.Distance, rows map[string]ListRow, groups, workers int) ([]*Lists, error) {
	files, err := listFiles(ctx, runDir, "neighbours")
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s has no neighbours/*.parquet: the saved neighbour lists are needed; rerun `lemon score` with --save-neighbour-lists --k 50", runDir)
	}
	type part struct {
		lists []*Lists
		k     int // -1: the file has no rows
		seen  int // grouped rows found
	}
	parts := make([]part, len(files))
	err = parallel(ctx, len(files), workers, func(i int) error {
		p := &parts[i]
		var err error
		p.lists, p.k, p.seen, err = readListFile(ctx, files[i], d, rows, groups)
		return err
	})
	if err != nil {
		return nil, err
	}
	k := -1
	for i, p := range parts {
		if p.k < 0 {
			continue
		}
		if k >= 0 && p.k != k {
			return nil, fmt.Errorf("%s holds lists of %d neighbours, but %s holds %d: the files come from different runs", files[i], p.k, files[0], k)
		}
		k = p.k
	}
	if k < 1 {
		return nil, fmt.Errorf("%s: the neighbour lists are empty", storage.Join(runDir, "neighbours"))
	}
	out := make([]*Lists, groups)
	for g := range out {
		out[g] = NewLists(d, k)
	}
	seen := 0
	for _, p := range parts {
		if p.k < 0 {
			continue
		}
		for g, l := range p.lists {
			out[g].appendLists(l)
		}
		seen += p.seen
	}
	want := 0
	for _, info := range rows {
		if info.Group != 0 {
			want++
		}
	}
	if seen != want {
		return nil, fmt.Errorf("%s: %d of the %d rows asked for have no neighbour lists (files missing?)", storage.Join(runDir, "neighbours"), want-seen, want)
	}
	return out, nil
}

// readListFile reads one neighbours/ file into one Lists per group. k is the lists' length (-1
// if the file has no rows); every list of every row must have it.
func readListFile(ctx context.Context, p string, d score.Distance, rows map[string]ListRow, groups int) (out []*Lists, k, seen int, err error) {
	f, err := metadata.OpenParquet(ctx, p)
	if err != nil {
		return nil, 0, 0, err
	}
	cols := []string{"id", "d_mm"}
	for _, m := range []string{"image_", "text_"} {
		for _, c := range listColumns {
			cols = append(cols, m+c)
		}
	}
	rr, err := f.Records(ctx, cols)
	if err != nil {
		f.Close()
		return nil, 0, 0, fmt.Errorf("%w (not a neighbours/ file written by `lemon score --save-neighbour-lists`?)", err)
	}
	defer rr.Release()
	k = -1
	for rr.Next() {
		if err := ctx.Err(); err != nil {
			return nil, 0, 0, err
		}
		rec := rr.RecordBatch()
		n := int(rec.NumRows())
		if n == 0 {
			continue
		}
		ids, idOK, err := metadata.StringColumn(p, rec, "id")
		if err != nil {
			return nil, 0, 0, err
		}
		// Columns by name: the reader's column order need not be the order asked for.
		column := func(name string) arrow.Array { return rec.Column(rec.Schema().FieldIndices(name)[0]) }
		dmm, ok := column("d_mm").(*array.Float64)
		if !ok {
			return nil, 0, 0, fmt.Errorf("%s: d_mm is %s, want double", p, column("d_mm").DataType())
		}
		var lists [2][4]*array.List
		var f64 [2][3]*array.Float64
		var same [2]*array.Boolean
		for m := 0; m < 2; m++ {
			for c := range listColumns {
				col := column(cols[2+m*len(listColumns)+c])
				l, ok := col.(*array.List)
				if !ok {
					return nil, 0, 0, fmt.Errorf("%s: %s is %s, want a list", p, cols[2+m*len(listColumns)+c], col.DataType())
				}
				lists[m][c] = l
				if c < 3 {
					if f64[m][c], ok = l.ListValues().(*array.Float64); !ok {
						return nil, 0, 0, fmt.Errorf("%s: %s is %s, want list<double>", p, cols[2+m*len(listColumns)+c], col.DataType())
					}
				} else if same[m], ok = l.ListValues().(*array.Boolean); !ok {
					return nil, 0, 0, fmt.Errorf("%s: %s is %s, want list<bool>", p, cols[2+m*len(listColumns)+c], col.DataType())
				}
			}
		}
		for i := 0; i < n; i++ {
			if !idOK[i] || dmm.IsNull(i) {
				return nil, 0, 0, fmt.Errorf("%s row %d: null id or d_mm", p, i)
			}
			// Every list of every row has the same length: check it, so a damaged file is caught
			// before it is scored from.
			for m := 0; m < 2; m++ {
				for c := range listColumns {
					l := lists[m][c]
					if l.IsNull(i) {
						return nil, 0, 0, fmt.Errorf("%s: row %q has a null %s list", p, ids[i], cols[2+m*len(listColumns)+c])
					}
					s, e := l.ValueOffsets(i)
					if k < 0 {
						k = int(e - s)
						out = make([]*Lists, groups)
						for g := range out {
							out[g] = NewLists(d, k)
						}
					}
					if int(e-s) != k {
						return nil, 0, 0, fmt.Errorf("%s: row %q has %d entries in %s, other rows %d", p, ids[i], e-s, cols[2+m*len(listColumns)+c], k)
					}
				}
			}
			info, ok := rows[ids[i]]
			if !ok {
				return nil, 0, 0, fmt.Errorf("%s: row id %q is in neighbours/ but not in kept/ or rejected/ (is --id-column right?)", p, ids[i])
			}
			if info.Group == 0 {
				continue
			}
			if int(info.Group) > groups {
				return nil, 0, 0, fmt.Errorf("row %q: group %d of %d", ids[i], info.Group, groups)
			}
			dst := out[info.Group-1]
			seen++
			dst.IDs = append(dst.IDs, ids[i])
			dst.Dmm = append(dst.Dmm, dmm.Value(i))
			dst.Truth = append(dst.Truth, info.Truth)
			for m, side := range []*Side{&dst.Image, &dst.Text} {
				s, e := lists[m][0].ValueOffsets(i)
				for c, dst := range []*[]float64{&side.Dist, &side.Cross, &side.Dmm} {
					vals := f64[m][c]
					if vals.NullN() > 0 {
						for j := s; j < e; j++ {
							if vals.IsNull(int(j)) {
								return nil, 0, 0, fmt.Errorf("%s: row %q has a null in %s", p, ids[i], cols[2+m*len(listColumns)+c])
							}
						}
					}
					// Each list column has its own offsets (equal lengths checked above).
					cs, ce := lists[m][c].ValueOffsets(i)
					*dst = append(*dst, vals.Float64Values()[cs:ce]...)
				}
				cs, ce := lists[m][3].ValueOffsets(i)
				for j := cs; j < ce; j++ {
					side.Same = append(side.Same, same[m].Value(int(j)))
				}
			}
		}
	}
	if err := rr.Err(); err != nil {
		return nil, 0, 0, fmt.Errorf("%s: %w", p, err)
	}
	return out, k, seen, nil
}

// parallel runs fn(0..n-1) on up to workers goroutines and returns the first error.
func parallel(ctx context.Context, n, workers int, fn func(i int) error) error {
	if workers < 1 {
		workers = 1
	}
	if workers > n {
		workers = n
	}
	var (
		mu   sync.Mutex
		next int
		errs error
		wg   sync.WaitGroup
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := errs != nil
				mu.Unlock()
				if i >= n || stop {
					return
				}
				err := ctx.Err()
				if err == nil {
					err = fn(i)
				}
				if err != nil {
					mu.Lock()
					if errs == nil {
						errs = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return errs
}
