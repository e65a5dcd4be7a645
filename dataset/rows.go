package dataset

import (
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Row is one pair as a writer takes it: for test fixtures and generated datasets.
type Row struct {
	ID      string
	Caption string
	Image   []float32
	Text    []float32
	// Extra columns, written as strings (e.g. is_error, split).
	Extra map[string]string
}

// MetadataBatch builds an Arrow batch of id, caption and the extra columns (sorted by the
// order in extraCols), as the metadata files of generated datasets hold them.
func MetadataBatch(rows []Row, idCol, captionCol string, extraCols []string) arrow.RecordBatch {
	fields := []arrow.Field{{Name: idCol, Type: arrow.BinaryTypes.String}, {Name: captionCol, Type: arrow.BinaryTypes.String}}
	for _, c := range extraCols {
		fields = append(fields, arrow.Field{Name: c, Type: arrow.BinaryTypes.String})
	}
	schema := arrow.NewSchema(fields, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for _, r := range rows {
		b.Field(0).(*array.StringBuilder).Append(r.ID)
		b.Field(1).(*array.StringBuilder).Append(r.Caption)
		for i, c := range extraCols {
			b.Field(2 + i).(*array.StringBuilder).Append(r.Extra[c])
		}
	}
	return b.NewRecordBatch()
}

// ExtraColumns lists the extra column names used by any row, in first-seen order.
func ExtraColumns(rows []Row) []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range rows {
		for k := range r.Extra {
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	sortStrings(out)
	return out
}
