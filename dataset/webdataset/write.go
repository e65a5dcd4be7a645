package webdataset

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/dataset/rawtest/samples"
	"github.com/lemon-curation/lemon/storage"
)

// Write lays shards out as img2dataset's webdataset output, for tests and generated datasets:
// dir/NNNNN.tar holding, per sample, {id}.png or {id}.jpg (by the bytes; none when Image is
// nil), {id}.txt and {id}.json (key, caption, status and the Extra fields), and dir/NNNNN.parquet
// with columns key, caption, status and the Extra fields. Members are PAX headers with
// sub-second modification times, so copies can be checked header for header.
func Write(ctx context.Context, dir string, shards [][]samples.Sample) error {
	mtime := time.Date(2024, 5, 17, 10, 30, 0, 123456789, time.UTC)
	for n, rows := range shards {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		add := func(name string, data []byte) error {
			h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(data)), Mode: 0o644, ModTime: mtime, Uname: "lemon", Format: tar.FormatPAX}
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			_, err := tw.Write(data)
			return err
		}
		var meta []dataset.Row
		for _, s := range rows {
			status := "success"
			if s.Image == nil {
				status = "failed_to_download"
			} else if err := add(s.ID+"."+samples.Ext(s.Image), s.Image); err != nil {
				return err
			}
			if err := add(s.ID+".txt", []byte(s.Caption)); err != nil {
				return err
			}
			extra := maps.Clone(s.Extra)
			if extra == nil {
				extra = map[string]string{}
			}
			extra["status"] = status
			j := map[string]string{"key": s.ID, "caption": s.Caption}
			maps.Copy(j, extra)
			js, err := json.Marshal(j)
			if err != nil {
				return err
			}
			if err := add(s.ID+".json", js); err != nil {
				return err
			}
			meta = append(meta, dataset.Row{ID: s.ID, Caption: s.Caption, Extra: extra})
		}
		if err := tw.Close(); err != nil {
			return err
		}
		base := storage.Join(dir, fmt.Sprintf("%05d", n))
		if err := storage.WriteFile(ctx, base+".tar", buf.Bytes()); err != nil {
			return err
		}
		cols := dataset.ExtraColumns(meta)
		if len(meta) == 0 {
			cols = []string{"status"}
		}
		slices.Sort(cols)
		rec := dataset.MetadataBatch(meta, KeyColumn, "caption", cols)
		err := metadata.WriteParquet(ctx, base+".parquet", rec.Schema(), rec)
		rec.Release()
		if err != nil {
			return err
		}
	}
	return nil
}
