package embdir_test

import (
	"context"
	"testing"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/datasettest"
	"github.com/lemon-curation/lemon/dataset/embdir"
	"github.com/x448/float16"
)

func TestConformance(t *testing.T) {
	for _, c := range []struct {
		name string
		o    embdir.WriteOptions
	}{
		{"parquet-f32", embdir.WriteOptions{}},
		{"csv-f16", embdir.WriteOptions{MetadataExt: ".csv", Dtype: "<f2"}},
		{"jsonl", embdir.WriteOptions{MetadataExt: ".jsonl", IDColumn: "uid"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := c.o
			idCol := o.IDColumn
			if idCol == "" {
				idCol = "key"
			}
			datasettest.Run(t, datasettest.Fixture{
				Format:   embdir.Format{},
				IDColumn: idCol,
				Write: func(ctx context.Context, dir string, shards [][]dataset.Row) error {
					if o.Dtype == "<f2" {
						// float16 loses precision; round the fixture so it compares exactly.
						for _, s := range shards {
							for _, r := range s {
								roundF16(r.Image)
								roundF16(r.Text)
							}
						}
					}
					return embdir.Write(ctx, dir, shards, o)
				},
			}, t.TempDir())
		})
	}
}

func roundF16(v []float32) {
	for i, x := range v {
		v[i] = float16.Fromfloat32(x).Float32()
	}
}
