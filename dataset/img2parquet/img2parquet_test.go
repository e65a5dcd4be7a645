package img2parquet_test

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/img2parquet"
	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/dataset/rawtest"
	"github.com/lemon-curation/lemon/dataset/rawtest/samples"
	"github.com/lemon-curation/lemon/storage"
)

var fixture = rawtest.Fixture{Format: img2parquet.Format{}, Write: img2parquet.Write, Dump: dump}

func TestConformance(t *testing.T) { rawtest.Run(t, fixture, t.TempDir()) }

func TestConformanceMemfs(t *testing.T) { rawtest.Run(t, fixture, "memfs://img2parquet-conformance") }

// dump reports every column of every row, by column name.
func dump(ctx context.Context, dir string) ([]rawtest.Item, error) {
	fs, err := storage.List(ctx, storage.Join(dir, "*.parquet"))
	if err != nil {
		return nil, err
	}
	sort.Strings(fs)
	var items []rawtest.Item
	for _, p := range fs {
		rr, err := metadata.Open(ctx, p)
		if err != nil {
			return nil, err
		}
		rows, err := rawtest.ArrowRows(rr)
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			items = append(items, rawtest.Item{ID: string(r["key"]), Parts: r})
		}
	}
	return items, nil
}

func read(t *testing.T, p string, o dataset.Options) []dataset.RawRecord {
	t.Helper()
	plan, err := img2parquet.Format{}.Plan(context.Background(), p, o)
	if err != nil {
		t.Fatal(err)
	}
	var out []dataset.RawRecord
	for _, sh := range plan {
		err := img2parquet.Format{}.ReadRaw(context.Background(), sh, o, func(r dataset.RawRecord) error {
			out = append(out, r)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestFailedDownloadReason(t *testing.T) {
	dir := t.TempDir()
	s := samples.Make("k", 2, 1)
	s[1].Image = nil
	if err := img2parquet.Write(context.Background(), dir, [][]samples.Sample{s}); err != nil {
		t.Fatal(err)
	}
	got := read(t, filepath.Join(dir, "00000.parquet"), dataset.Options{})
	if len(got) != 2 || got[1].Err != "download failed: missing image (status failed_to_download: HTTP Error 404: Not Found)" {
		t.Fatalf("got %+v", got)
	}
}

// Hugging Face stores images as struct<bytes, path>; a file without an id column gets ids
// FILE:ROW, which its outputs carry in an added id column (so reading them back gives the same
// ids); the image column can be named.
func TestStructImageNoID(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := arrow.StructOf(arrow.Field{Name: "bytes", Type: arrow.BinaryTypes.Binary, Nullable: true}, arrow.Field{Name: "path", Type: arrow.BinaryTypes.String, Nullable: true})
	schema := arrow.NewSchema([]arrow.Field{{Name: "text", Type: arrow.BinaryTypes.String}, {Name: "picture", Type: st, Nullable: true}}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	imgs := [][]byte{samples.PNG(3, 3, 1), nil, samples.JPEG(4, 4, 2)}
	for i, img := range imgs {
		b.Field(0).(*array.StringBuilder).Append([]string{"one", "two", "three"}[i])
		sb := b.Field(1).(*array.StructBuilder)
		if img == nil {
			sb.AppendNull()
			continue
		}
		sb.Append(true)
		sb.FieldBuilder(0).(*array.BinaryBuilder).Append(img)
		sb.FieldBuilder(1).(*array.StringBuilder).Append("x.png")
	}
	rec := b.NewRecordBatch()
	b.Release()
	p := filepath.Join(dir, "train-0.parquet")
	if err := metadata.WriteParquet(ctx, p, schema, rec); err != nil {
		t.Fatal(err)
	}
	rec.Release()
	if (img2parquet.Format{}).Detect(ctx, dir) {
		t.Fatal("Detect on a column named picture: want false (not a known image column name)")
	}
	if _, err := (img2parquet.Format{}).Plan(ctx, dir, dataset.Options{}); err == nil || !strings.Contains(err.Error(), "--image-bytes-column") {
		t.Fatalf("Plan without the image column named: err = %v", err)
	}
	got := read(t, dir, dataset.Options{ImageBytesColumn: "picture"})
	if len(got) != 3 {
		t.Fatalf("read %d rows", len(got))
	}
	for i, r := range got {
		if want := "train-0.parquet:" + string(rune('0'+i)); r.ID != want {
			t.Errorf("row %d id %q, want %q", i, r.ID, want)
		}
		if string(r.Image) != string(imgs[i]) {
			t.Errorf("row %d image differs", i)
		}
	}
	if got[1].Err != "missing image" || got[0].Err != "" || got[2].Caption != "three" {
		t.Errorf("rows = %+v", got)
	}
	// Splits keep the struct column whole; the image bytes are stored uncompressed.
	o := dataset.Options{ImageBytesColumn: "picture"}
	plan, err := img2parquet.Format{}.Plan(ctx, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if err := (img2parquet.Format{}).WriteSplits(ctx, plan[0], o, out, []dataset.Outcome{{Split: dataset.Kept}, {Split: dataset.Errors, Reason: "r"}, {Split: dataset.Kept}}); err != nil {
		t.Fatal(err)
	}
	kept := read(t, filepath.Join(out, "kept"), o)
	if len(kept) != 2 || string(kept[1].Image) != string(imgs[2]) || kept[1].Caption != "three" || kept[1].ID != "train-0.parquet:2" {
		t.Fatalf("kept = %+v", kept)
	}
	pf, err := metadata.OpenParquet(ctx, filepath.Join(out, "kept", "train-0.parquet"))
	if err != nil {
		t.Fatal(err)
	}
	cols, _ := pf.Columns()
	pf.Close()
	if strings.Join(cols, ",") != "text,picture,id,lemon_d_mm,lemon_s_n,lemon_s_m,lemon_score" {
		t.Errorf("kept columns = %v", cols)
	}
	raw, err := os.Open(filepath.Join(out, "kept", "train-0.parquet"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	rd, err := file.NewParquetReader(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	rg := rd.MetaData().RowGroup(0)
	found := false
	for i := 0; i < rg.NumColumns(); i++ {
		cc, _ := rg.ColumnChunk(i)
		if p := cc.PathInSchema().String(); p == "picture.bytes" {
			found = true
			if cc.Compression() != compress.Codecs.Uncompressed {
				t.Errorf("%s is %v-compressed, want uncompressed", p, cc.Compression())
			}
		}
	}
	if !found {
		t.Error("no picture.bytes column chunk")
	}

	if _, err := (img2parquet.Format{}).Plan(ctx, dir, dataset.Options{ImageBytesColumn: "text"}); err == nil || !strings.Contains(err.Error(), "want binary") {
		t.Errorf("a string column as the image column: err = %v", err)
	}
	if _, err := (img2parquet.Format{}).Plan(ctx, dir, dataset.Options{ImageBytesColumn: "picture", IDColumn: "uid"}); err == nil || !strings.Contains(err.Error(), `"uid"`) {
		t.Errorf("a missing id column: err = %v", err)
	}
}

// Parquet with embedding list columns is the embedding format's, even if it has image bytes.
func TestDetectSkipsEmbeddings(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	lb := array.NewListBuilder(memory.DefaultAllocator, arrow.PrimitiveTypes.Float32)
	lb.Append(true)
	lb.ValueBuilder().(*array.Float32Builder).AppendValues([]float32{1, 2}, nil)
	emb := lb.NewArray()
	bb := array.NewBinaryBuilder(memory.DefaultAllocator, arrow.BinaryTypes.Binary)
	bb.Append(samples.PNG(2, 2, 0))
	img := bb.NewArray()
	schema := arrow.NewSchema([]arrow.Field{{Name: "jpg", Type: img.DataType()}, {Name: "image_embedding", Type: emb.DataType()}}, nil)
	rec := array.NewRecordBatch(schema, []arrow.Array{img, emb}, 1)
	if err := metadata.WriteParquet(ctx, filepath.Join(dir, "a.parquet"), schema, rec); err != nil {
		t.Fatal(err)
	}
	if (img2parquet.Format{}).Detect(ctx, dir) {
		t.Fatal("Detect on Parquet with embeddings = true")
	}
}

// A Hugging Face dataset root: Parquet files at any depth (data/, nested folders), found in
// path order; files of one name in two folders stay apart (ids FILE:ROW, outputs at the
// input's path below the root); other files are noted.
func TestHuggingFaceRoot(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	files := map[string][]samples.Sample{
		"data/train-00000-of-00002.parquet": samples.Make("a", 3, 1),
		"data/train-00001-of-00002.parquet": samples.Make("b", 2, 2),
		"extra/test/0.parquet":              samples.Make("c", 2, 3),
		"extra/val/0.parquet":               samples.Make("d", 1, 4),
	}
	for rel, rows := range files {
		if err := img2parquet.WriteHuggingFace(ctx, filepath.Join(root, rel), rows); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(root, "README.md"), []byte("---\nlicense: cc\n---\n"), 0o644)
	os.MkdirAll(filepath.Join(root, ".cache", "huggingface"), 0o755)
	os.WriteFile(filepath.Join(root, ".cache", "huggingface", "x.parquet"), []byte("not parquet"), 0o644)
	if !(img2parquet.Format{}).Detect(ctx, root) {
		t.Fatal("Detect(dataset root) = false")
	}
	var notes []string
	plan, err := img2parquet.Format{}.Plan(dataset.WithNotes(ctx, func(m string) { notes = append(notes, m) }), root, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, sh := range plan {
		names = append(names, sh.Name)
	}
	if want := []string{"data/train-00000-of-00002", "data/train-00001-of-00002", "extra/test/0", "extra/val/0"}; strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("shards %v, want %v", names, want)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "README.md") || strings.Contains(notes[0], ".cache") {
		t.Errorf("notes = %q, want one naming README.md (and nothing hidden)", notes)
	}
	got := read(t, root, dataset.Options{})
	var ids []string
	for _, r := range got {
		if r.Err != "" {
			t.Errorf("row %s: %s", r.ID, r.Err)
		}
		ids = append(ids, r.ID)
	}
	want := "data/train-00000-of-00002.parquet:0 data/train-00000-of-00002.parquet:1 data/train-00000-of-00002.parquet:2 data/train-00001-of-00002.parquet:0 data/train-00001-of-00002.parquet:1 extra/test/0.parquet:0 extra/test/0.parquet:1 extra/val/0.parquet:0"
	if strings.Join(ids, " ") != want {
		t.Fatalf("ids %v\nwant %s", ids, want)
	}
	// Outputs mirror the input's paths; reading them back gives the same ids.
	out := t.TempDir()
	for _, sh := range plan {
		outcomes := make([]dataset.Outcome, sh.Rows)
		for i := range outcomes {
			outcomes[i] = dataset.Outcome{Split: dataset.Split(i % 3), Reason: "r"}
		}
		if err := (img2parquet.Format{}).WriteSplits(ctx, sh, dataset.Options{}, out, outcomes); err != nil {
			t.Fatal(err)
		}
	}
	for rel := range files {
		for _, split := range []string{"kept", "rejected", "errors"} {
			if !storage.Exists(ctx, filepath.Join(out, split, rel)) {
				t.Errorf("no %s/%s", split, rel)
			}
		}
	}
	var back []string
	for _, split := range []string{"kept", "rejected"} {
		for _, r := range read(t, filepath.Join(out, split), dataset.Options{}) {
			back = append(back, r.ID)
		}
	}
	sort.Strings(back)
	if w := "data/train-00000-of-00002.parquet:0 data/train-00000-of-00002.parquet:1 data/train-00001-of-00002.parquet:0 data/train-00001-of-00002.parquet:1 extra/test/0.parquet:0 extra/test/0.parquet:1 extra/val/0.parquet:0"; strings.Join(back, " ") != w {
		t.Errorf("kept and rejected read back with ids %v, want %s", back, w)
	}
}
