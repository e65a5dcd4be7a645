package img2parquet

import (
	"context"
	"fmt"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/dataset/rawtest/samples"
	"github.com/lemon-curation/lemon/storage"
)

// Write lays shards out as img2dataset's Parquet output, for tests and generated datasets:
// dir/NNNNN.parquet with columns key, caption, status, error_message, the Extra fields (as
// strings, sorted by name) and jpg (the image bytes, whatever their encoding; null when Image is
// nil, with status "failed_to_download").
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
		fields := []arrow.Field{
			{Name: "key", Type: arrow.BinaryTypes.String},
			{Name: "caption", Type: arrow.BinaryTypes.String},
			{Name: "status", Type: arrow.BinaryTypes.String},
			{Name: "error_message", Type: arrow.BinaryTypes.String, Nullable: true},
		}
		for _, e := range extra {
			fields = append(fields, arrow.Field{Name: e, Type: arrow.BinaryTypes.String})
		}
		fields = append(fields, arrow.Field{Name: "jpg", Type: arrow.BinaryTypes.Binary, Nullable: true})
		schema := arrow.NewSchema(fields, nil)
		b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
		for _, s := range rows {
			b.Field(0).(*array.StringBuilder).Append(s.ID)
			b.Field(1).(*array.StringBuilder).Append(s.Caption)
			if s.Image == nil {
				b.Field(2).(*array.StringBuilder).Append("failed_to_download")
				b.Field(3).(*array.StringBuilder).Append("HTTP Error 404: Not Found")
			} else {
				b.Field(2).(*array.StringBuilder).Append("success")
				b.Field(3).(*array.StringBuilder).AppendNull()
			}
			for i, e := range extra {
				b.Field(4 + i).(*array.StringBuilder).Append(s.Extra[e])
			}
			ib := b.Field(4 + len(extra)).(*array.BinaryBuilder)
			if s.Image == nil {
				ib.AppendNull()
			} else {
				ib.Append(s.Image)
			}
		}
		rec := b.NewRecordBatch()
		b.Release()
		err := metadata.WriteParquet(ctx, storage.Join(dir, fmt.Sprintf("%05d.parquet", n)), schema, rec)
		rec.Release()
		if err != nil {
			return err
		}
	}
	return nil
}

// WriteHuggingFace writes samples as one Parquet file of a Hugging Face image dataset, for
// tests: columns image (struct<bytes: binary, path: string>, null when Image is nil), text
// (the caption) and the Extra fields (as strings, sorted by name), no id column, as `datasets`
// pushes them (data/train-00000-of-00002.parquet).
func WriteHuggingFace(ctx context.Context, p string, rows []samples.Sample) error {
	var extra []string
	for _, s := range rows {
		for k := range s.Extra {
			if !slices.Contains(extra, k) {
				extra = append(extra, k)
			}
		}
	}
	slices.Sort(extra)
	st := arrow.StructOf(arrow.Field{Name: "bytes", Type: arrow.BinaryTypes.Binary, Nullable: true}, arrow.Field{Name: "path", Type: arrow.BinaryTypes.String, Nullable: true})
	fields := []arrow.Field{{Name: "image", Type: st, Nullable: true}, {Name: "text", Type: arrow.BinaryTypes.String}}
	for _, e := range extra {
		fields = append(fields, arrow.Field{Name: e, Type: arrow.BinaryTypes.String})
	}
	schema := arrow.NewSchema(fields, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for _, s := range rows {
		for i, e := range extra {
			b.Field(2 + i).(*array.StringBuilder).Append(s.Extra[e])
		}
		sb := b.Field(0).(*array.StructBuilder)
		if s.Image == nil {
			sb.AppendNull()
		} else {
			sb.Append(true)
			sb.FieldBuilder(0).(*array.BinaryBuilder).Append(s.Image)
			sb.FieldBuilder(1).(*array.StringBuilder).Append(s.ID + "." + samples.Ext(s.Image))
		}
		b.Field(1).(*array.StringBuilder).Append(s.Caption)
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	return metadata.WriteParquet(ctx, p, schema, rec)
}
