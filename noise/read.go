package noise

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/metadata"
)

// scanned is what the first pass reads: every row's id, caption and read fault, and the
// values of the columns the noise needs (split, category, label), in global row order.
type scanned struct {
	ids, captions, faults []string
	aux                   map[string][]string
	splitCol              string
	meta                  []shardMeta
}

// metaFile is the file that holds a shard's metadata columns.
func metaFile(sh dataset.Shard) string {
	if p := sh.Files["metadata"]; p != "" {
		return p
	}
	return sh.Files["data"]
}

func scan(ctx context.Context, f dataset.Format, shards []dataset.Shard, o Options) (*scanned, error) {
	sc := &scanned{aux: map[string][]string{}}
	for k, sh := range shards {
		path := metaFile(sh)
		if path == "" {
			return nil, fmt.Errorf("%s: shard %s has no metadata file, so no captions to add noise to (want metadata/metadata_N.parquet, .csv or .jsonl)", o.Input, sh.Name)
		}
		cols, err := columnsOf(ctx, path)
		if err != nil {
			return nil, err
		}
		capCol, err := dataset.PickColumn(path, cols, o.Columns.CaptionColumn, dataset.CaptionColumns, "caption")
		if err != nil {
			return nil, err
		}
		sc.meta = append(sc.meta, shardMeta{path: path, captionCol: capCol})
		if k == 0 {
			switch {
			case o.SplitColumn != "":
				sc.splitCol = o.SplitColumn
			case slices.Contains(cols, ColSplit):
				// The dataset has its own split: the protocol uses it.
				sc.splitCol = ColSplit
			}
		}
		var need []string
		for _, c := range []struct{ name, flag string }{{sc.splitCol, "split"}, {o.CategoryColumn, "category"}, {o.LabelColumn, "label"}} {
			if c.name == "" || slices.Contains(need, c.name) {
				continue
			}
			if !slices.Contains(cols, c.name) {
				return nil, fmt.Errorf("%s: no %s column %q (--%s-column; columns: %s)", path, c.flag, c.name, c.flag, strings.Join(cols, ", "))
			}
			need = append(need, c.name)
		}
		before := len(sc.captions)
		err = f.Read(ctx, sh, o.Columns, func(r dataset.Record) error {
			sc.ids = append(sc.ids, r.ID)
			sc.captions = append(sc.captions, r.Caption)
			sc.faults = append(sc.faults, r.Err)
			return nil
		})
		if err != nil {
			return nil, err
		}
		if got := int64(len(sc.captions) - before); got != sh.Rows {
			return nil, fmt.Errorf("%s: read %d rows, planned %d", path, got, sh.Rows)
		}
		if len(need) > 0 {
			vals, err := readColumns(ctx, path, need)
			if err != nil {
				return nil, err
			}
			for c, name := range need {
				if int64(len(vals[c])) != sh.Rows {
					return nil, fmt.Errorf("%s: column %q has %d rows, the shard %d", path, name, len(vals[c]), sh.Rows)
				}
				sc.aux[name] = append(sc.aux[name], vals[c]...)
			}
		}
	}
	return sc, nil
}

// columnsOf lists a metadata file's columns.
func columnsOf(ctx context.Context, path string) ([]string, error) {
	if strings.HasSuffix(strings.ToLower(path), ".parquet") {
		pf, err := metadata.OpenParquet(ctx, path)
		if err != nil {
			return nil, err
		}
		defer pf.Close()
		return pf.Columns()
	}
	rr, err := metadata.Open(ctx, path)
	if err != nil {
		return nil, err
	}
	defer rr.Release()
	var cols []string
	for _, f := range rr.Schema().Fields() {
		cols = append(cols, f.Name)
	}
	return cols, nil
}

// readColumns reads the named columns of a metadata file as strings (null as ""). Parquet reads
// only those columns, not the embeddings beside them.
func readColumns(ctx context.Context, path string, names []string) ([][]string, error) {
	var rr array.RecordReader
	if strings.HasSuffix(strings.ToLower(path), ".parquet") {
		pf, err := metadata.OpenParquet(ctx, path)
		if err != nil {
			return nil, err
		}
		if rr, err = pf.Records(ctx, names); err != nil {
			pf.Close()
			return nil, err
		}
	} else {
		var err error
		if rr, err = metadata.Open(ctx, path); err != nil {
			return nil, err
		}
	}
	defer rr.Release()
	out := make([][]string, len(names))
	for rr.Next() {
		rec := rr.RecordBatch()
		for c, name := range names {
			vals, _, err := metadata.StringColumn(path, rec, name)
			if err != nil {
				return nil, err
			}
			out[c] = append(out[c], vals...)
		}
	}
	if err := rr.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// donorVectors reads the text embeddings of the rows that give their caption away.
func donorVectors(ctx context.Context, f dataset.Format, shards []dataset.Shard, o dataset.Options, donor []int) (map[int][]float32, error) {
	need := map[int]bool{}
	for _, j := range donor {
		if j >= 0 {
			need[j] = true
		}
	}
	vecs := make(map[int][]float32, len(need))
	for _, sh := range shards {
		has := false
		for g := sh.Offset; g < sh.Offset+sh.Rows && !has; g++ {
			has = need[int(g)]
		}
		if !has {
			continue
		}
		err := f.Read(ctx, sh, o, func(r dataset.Record) error {
			g := int(sh.Offset + r.Index)
			if need[g] {
				if len(r.Text) != sh.Dim {
					return fmt.Errorf("%s row %d: text embedding has %d values, want %d", sh.Name, r.Index, len(r.Text), sh.Dim)
				}
				vecs[g] = slices.Clone(r.Text) // the reader reuses r.Text after emit returns
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return vecs, nil
}
