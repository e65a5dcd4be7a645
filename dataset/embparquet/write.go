package embparquet

import (
	"context"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/storage"
)

// Write writes each shard as dir/part-NNNNN.parquet with columns id, caption, the extra
// columns, image_embedding and text_embedding.
func Write(ctx context.Context, dir string, shards [][]dataset.Row) error {
	for n, rows := range shards {
		extra := dataset.ExtraColumns(rows)
		meta := dataset.MetadataBatch(rows, "id", "caption", extra)
		fields := append([]arrow.Field{}, meta.Schema().Fields()...)
		cols := append([]arrow.Array{}, meta.Columns()...)
		for _, side := range []struct {
			name string
			get  func(r dataset.Row) []float32
		}{{ImageColumn, func(r dataset.Row) []float32 { return r.Image }}, {TextColumn, func(r dataset.Row) []float32 { return r.Text }}} {
			b := array.NewListBuilder(memory.DefaultAllocator, arrow.PrimitiveTypes.Float32)
			vb := b.ValueBuilder().(*array.Float32Builder)
			for _, r := range rows {
				v := side.get(r)
				if v == nil {
					b.AppendNull()
					continue
				}
				b.Append(true)
				vb.AppendValues(v, nil)
			}
			cols = append(cols, b.NewArray())
			fields = append(fields, arrow.Field{Name: side.name, Type: arrow.ListOf(arrow.PrimitiveTypes.Float32), Nullable: true})
			b.Release()
		}
		schema := arrow.NewSchema(fields, nil)
		rec := array.NewRecordBatch(schema, cols, int64(len(rows)))
		err := metadata.WriteParquet(ctx, storage.Join(dir, fmt.Sprintf("part-%05d.parquet", n)), schema, rec)
		rec.Release()
		meta.Release()
		if err != nil {
			return err
		}
	}
	return nil
}
