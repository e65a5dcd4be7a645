package datacomp

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/internal/npy"
	"github.com/lemon-curation/lemon/score"
	"github.com/lemon-curation/lemon/storage"
)

// WriteOptions choose how Write lays shards out.
type WriteOptions struct {
	Dtype      string // of the arrays: "<f2" (DataComp's) or "<f4" (exact, for tests)
	Compressed bool   // deflate the .npz members, as np.savez_compressed does
}

// Write writes each shard as dir/NNNNNNNN.parquet with DataComp's columns (uid = the row's ID,
// text = its caption, url, original_width, original_height, the two similarity scores,
// face_bboxes and sha256 made up from the row) plus the rows' extra columns, and
// dir/NNNNNNNN.npz with b32_img and b32_txt holding the rows' vectors, and l14_img and l14_txt
// each vector followed by its first half again (so the two models' arrays differ). It writes
// DataComp-like test data, not a DataComp reproduction.
func Write(ctx context.Context, dir string, shards [][]dataset.Row, o WriteOptions) error {
	if o.Dtype == "" {
		o.Dtype = "<f2"
	}
	for n, rows := range shards {
		base := storage.Join(dir, fmt.Sprintf("%08d", n))
		if err := writeParquet(ctx, base+".parquet", rows); err != nil {
			return err
		}
		b, err := npzBytes(rows, o)
		if err != nil {
			return err
		}
		if err := storage.WriteFile(ctx, base+".npz", b); err != nil {
			return err
		}
	}
	return nil
}

// L14 is the l14 vector Write stores for a row's b32 vector v.
func L14(v []float32) []float32 { return append(append([]float32{}, v...), v[:len(v)/2]...) }

func npzBytes(rows []dataset.Row, o WriteOptions) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	method := zip.Store
	if o.Compressed {
		method = zip.Deflate
	}
	for _, a := range []struct {
		name string
		get  func(r dataset.Row) []float32
	}{
		{"b32_img", func(r dataset.Row) []float32 { return r.Image }},
		{"b32_txt", func(r dataset.Row) []float32 { return r.Text }},
		{"l14_img", func(r dataset.Row) []float32 { return L14(r.Image) }},
		{"l14_txt", func(r dataset.Row) []float32 { return L14(r.Text) }},
	} {
		dim := 0
		var data []float32
		for _, r := range rows {
			v := a.get(r)
			dim = len(v)
			data = append(data, v...)
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: a.name + ".npy", Method: method})
		if err != nil {
			return nil, err
		}
		if err := npy.Write(w, len(rows), dim, data, o.Dtype); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeParquet(ctx context.Context, p string, rows []dataset.Row) error {
	extra := dataset.ExtraColumns(rows)
	bbox := arrow.ListOf(arrow.ListOf(arrow.PrimitiveTypes.Float64))
	fields := []arrow.Field{
		{Name: "uid", Type: arrow.BinaryTypes.String},
		{Name: "url", Type: arrow.BinaryTypes.String},
		{Name: "text", Type: arrow.BinaryTypes.String},
		{Name: "original_width", Type: arrow.PrimitiveTypes.Int64},
		{Name: "original_height", Type: arrow.PrimitiveTypes.Int64},
		{Name: "clip_b32_similarity_score", Type: arrow.PrimitiveTypes.Float32},
		{Name: "clip_l14_similarity_score", Type: arrow.PrimitiveTypes.Float32},
		{Name: "face_bboxes", Type: bbox},
		{Name: "sha256", Type: arrow.BinaryTypes.String},
	}
	for _, c := range extra {
		fields = append(fields, arrow.Field{Name: c, Type: arrow.BinaryTypes.String})
	}
	schema := arrow.NewSchema(fields, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for i, r := range rows {
		url := fmt.Sprintf("https://images.example.com/%d/%s.jpg", i, r.ID)
		sum := sha256.Sum256([]byte(url))
		b.Field(0).(*array.StringBuilder).Append(r.ID)
		b.Field(1).(*array.StringBuilder).Append(url)
		b.Field(2).(*array.StringBuilder).Append(r.Caption)
		b.Field(3).(*array.Int64Builder).Append(int64(256 + 64*(i%5)))
		b.Field(4).(*array.Int64Builder).Append(int64(192 + 32*(i%3)))
		b.Field(5).(*array.Float32Builder).Append(float32(score.CosineSimilarity(r.Image, r.Text)))
		b.Field(6).(*array.Float32Builder).Append(float32(score.CosineSimilarity(L14(r.Image), L14(r.Text))))
		lb := b.Field(7).(*array.ListBuilder)
		lb.Append(true)
		if i%3 == 0 { // a face on every third image
			inner := lb.ValueBuilder().(*array.ListBuilder)
			inner.Append(true)
			inner.ValueBuilder().(*array.Float64Builder).AppendValues([]float64{0.1, 0.2, 0.35, 0.5}, nil)
		}
		b.Field(8).(*array.StringBuilder).Append(hex.EncodeToString(sum[:]))
		for j, c := range extra {
			b.Field(9 + j).(*array.StringBuilder).Append(r.Extra[c])
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	return metadata.WriteParquet(ctx, p, schema, rec)
}
