package pathcsv

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"slices"

	"github.com/lemon-curation/lemon/dataset/rawtest/samples"
	"github.com/lemon-curation/lemon/storage"
)

// Write lays shards out as CSVs of image paths, for tests and generated datasets:
// dir/NNNNN.csv with columns key, image, caption and the Extra fields (sorted by name), the
// images in dir/images/NNNNN/{id}.png or .jpg (by the bytes) under relative paths. A nil Image
// gets a path to a file that does not exist.
func Write(ctx context.Context, dir string, shards [][]samples.Sample) error {
	for n, rows := range shards {
		var extra []string
		for _, s := range rows {
			for k := range s.Extra {
				if !slices.Contains(extra, k) {
					extra = append(extra, k)
				}
			}
		}
		slices.Sort(extra)
		var buf bytes.Buffer
		w := csv.NewWriter(&buf)
		w.Write(append([]string{"key", "image", "caption"}, extra...))
		for _, s := range rows {
			rel := fmt.Sprintf("images/%05d/%s.missing.jpg", n, s.ID)
			if s.Image != nil {
				rel = fmt.Sprintf("images/%05d/%s.%s", n, s.ID, samples.Ext(s.Image))
				if err := storage.WriteFile(ctx, storage.Join(dir, rel), s.Image); err != nil {
					return err
				}
			}
			rec := []string{s.ID, rel, s.Caption}
			for _, e := range extra {
				rec = append(rec, s.Extra[e])
			}
			w.Write(rec)
		}
		w.Flush()
		if err := w.Error(); err != nil {
			return err
		}
		if err := storage.WriteFile(ctx, storage.Join(dir, fmt.Sprintf("%05d.csv", n)), buf.Bytes()); err != nil {
			return err
		}
	}
	return nil
}
