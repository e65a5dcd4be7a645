package embdir

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/internal/npy"
	"github.com/lemon-curation/lemon/storage"
)

// WriteOptions choose how Write lays a dataset out.
type WriteOptions struct {
	Dtype       string // "<f4" (default) or "<f2"
	MetadataExt string // ".parquet" (default), ".csv", ".jsonl", or "none"
	IDColumn    string // default "key"
}

// Write writes shards in the clip-retrieval layout under dir.
func Write(ctx context.Context, dir string, shards [][]dataset.Row, o WriteOptions) error {
	if o.Dtype == "" {
		o.Dtype = "<f4"
	}
	if o.MetadataExt == "" {
		o.MetadataExt = ".parquet"
	}
	if o.IDColumn == "" {
		o.IDColumn = "key"
	}
	for n, rows := range shards {
		dim := 0
		if len(rows) > 0 {
			dim = len(rows[0].Image)
		}
		for _, side := range []struct {
			dir, name string
			get       func(r dataset.Row) []float32
		}{{"img_emb", "img_emb", func(r dataset.Row) []float32 { return r.Image }}, {"text_emb", "text_emb", func(r dataset.Row) []float32 { return r.Text }}} {
			data := make([]float32, 0, len(rows)*dim)
			for _, r := range rows {
				data = append(data, side.get(r)...)
			}
			var buf bytes.Buffer
			if err := npy.Write(&buf, len(rows), dim, data, o.Dtype); err != nil {
				return err
			}
			if err := storage.WriteFile(ctx, storage.Join(dir, side.dir, fmt.Sprintf("%s_%d.npy", side.name, n)), buf.Bytes()); err != nil {
				return err
			}
		}
		if o.MetadataExt == "none" {
			continue
		}
		p := storage.Join(dir, "metadata", fmt.Sprintf("metadata_%d%s", n, o.MetadataExt))
		extra := dataset.ExtraColumns(rows)
		var buf bytes.Buffer
		switch o.MetadataExt {
		case ".parquet":
			rec := dataset.MetadataBatch(rows, o.IDColumn, "caption", extra)
			err := metadata.WriteParquet(ctx, p, rec.Schema(), rec)
			rec.Release()
			if err != nil {
				return err
			}
			continue
		case ".csv":
			w := csv.NewWriter(&buf)
			w.Write(append([]string{o.IDColumn, "caption"}, extra...))
			for _, r := range rows {
				rec := []string{r.ID, r.Caption}
				for _, c := range extra {
					rec = append(rec, r.Extra[c])
				}
				w.Write(rec)
			}
			w.Flush()
		case ".jsonl":
			for _, r := range rows {
				// Keys in a fixed order: id, caption, then extras.
				fmt.Fprintf(&buf, "{%s:%s,\"caption\":%s", js(o.IDColumn), js(r.ID), js(r.Caption))
				for _, c := range extra {
					fmt.Fprintf(&buf, ",%s:%s", js(c), js(r.Extra[c]))
				}
				buf.WriteString("}\n")
			}
		default:
			return fmt.Errorf("unknown metadata type %q", o.MetadataExt)
		}
		if err := storage.WriteFile(ctx, p, buf.Bytes()); err != nil {
			return err
		}
	}
	return nil
}

func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
