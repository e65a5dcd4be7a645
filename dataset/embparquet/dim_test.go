package embparquet_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/embparquet"
	"github.com/lemon-curation/lemon/dataset/metadata"
)

// rows makes n rows whose embeddings have dim values (image) and tdim values (text).
func rows(prefix string, n, dim, tdim int) []dataset.Row {
	out := make([]dataset.Row, n)
	for i := range out {
		img, txt := make([]float32, dim), make([]float32, tdim)
		for j := range img {
			img[j] = float32(i + j + 1)
		}
		for j := range txt {
			txt[j] = float32(i - j - 1)
		}
		out[i] = dataset.Row{ID: fmt.Sprintf("%s%d", prefix, i), Caption: "c", Image: img, Text: txt}
	}
	return out
}

func plan(t *testing.T, dir string) ([]dataset.Shard, error) {
	t.Helper()
	return embparquet.Format{}.Plan(context.Background(), dir, dataset.Options{})
}

func faults(t *testing.T, shards []dataset.Shard) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, sh := range shards {
		err := embparquet.Format{}.Read(context.Background(), sh, dataset.Options{}, func(r dataset.Record) error {
			if r.Err != "" {
				out[r.ID] = r.Err
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// One short first row made every row an error; now the dimension is the majority's and only
// that row is an error, its reason naming the row and both lengths.
func TestDimensionFromMajorityNotRowZero(t *testing.T) {
	dir := t.TempDir()
	first := rows("a", 6, 8, 8)
	first[0].Image = first[0].Image[:3]
	first[4].Text = append(first[4].Text, 1)
	if err := embparquet.Write(context.Background(), dir, [][]dataset.Row{first, rows("b", 3, 8, 8)}); err != nil {
		t.Fatal(err)
	}
	shards, err := plan(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if shards[0].Dim != 8 {
		t.Fatalf("dim %d, want 8", shards[0].Dim)
	}
	want := map[string]string{
		"a0": "row 0 of part-00000.parquet: image embedding has 3 values, the dataset's dimension is 8",
		"a4": "row 4 of part-00000.parquet: text embedding has 9 values, the dataset's dimension is 8",
	}
	if got := faults(t, shards); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("faults %q, want %q", got, want)
	}
}

// The majority is over all rows, whichever shard they are in.
func TestDimensionMajorityAcrossShards(t *testing.T) {
	dir := t.TempDir()
	if err := embparquet.Write(context.Background(), dir, [][]dataset.Row{rows("a", 2, 4, 4), rows("b", 1, 8, 8), rows("c", 4, 8, 8)}); err != nil {
		t.Fatal(err)
	}
	shards, err := plan(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if shards[0].Dim != 8 {
		t.Fatalf("dim %d, want 8", shards[0].Dim)
	}
	if got := faults(t, shards); len(got) != 2 || got["a0"] == "" || got["a1"] == "" {
		t.Fatalf("faults %q, want rows a0 and a1", got)
	}
}

func TestDimensionRefused(t *testing.T) {
	for _, c := range []struct {
		name   string
		shards [][]dataset.Row
		want   string
	}{
		{"tie", [][]dataset.Row{rows("a", 2, 4, 4), rows("b", 2, 8, 8)}, `the lists of column "image_embedding" disagree on the dimension, and no length is more common than all others (rows by length: map[4:2 8:2])`},
		{"modalities-differ", [][]dataset.Row{rows("a", 3, 8, 6)}, "dimension mismatch: image embeddings (image_embedding) have 8 values, text embeddings (text_embedding) 6"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := embparquet.Write(context.Background(), dir, c.shards); err != nil {
				t.Fatal(err)
			}
			_, err := plan(t, dir)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("err = %v, want one naming %s and saying %q", err, dir, c.want)
			}
		})
	}
}

// writeFixed writes rows with the image column as fixed_size_list<float32>[size] (rows' image
// embeddings must have size values) and the text column as a plain list.
func writeFixed(t *testing.T, p string, rs []dataset.Row, size int) {
	t.Helper()
	ib := array.NewFixedSizeListBuilder(memory.DefaultAllocator, int32(size), arrow.PrimitiveTypes.Float32)
	tb := array.NewListBuilder(memory.DefaultAllocator, arrow.PrimitiveTypes.Float32)
	idb, cb := array.NewStringBuilder(memory.DefaultAllocator), array.NewStringBuilder(memory.DefaultAllocator)
	for _, r := range rs {
		idb.Append(r.ID)
		cb.Append(r.Caption)
		ib.Append(true)
		ib.ValueBuilder().(*array.Float32Builder).AppendValues(r.Image, nil)
		tb.Append(true)
		tb.ValueBuilder().(*array.Float32Builder).AppendValues(r.Text, nil)
	}
	cols := []arrow.Array{idb.NewArray(), cb.NewArray(), ib.NewArray(), tb.NewArray()}
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.BinaryTypes.String}, {Name: "caption", Type: arrow.BinaryTypes.String},
		{Name: embparquet.ImageColumn, Type: cols[2].DataType()}, {Name: embparquet.TextColumn, Type: cols[3].DataType()},
	}, nil)
	rec := array.NewRecordBatch(schema, cols, int64(len(rs)))
	defer rec.Release()
	if err := metadata.WriteParquet(context.Background(), p, schema, rec); err != nil {
		t.Fatal(err)
	}
}

// A fixed_size_list column fixes the dimension, whatever most rows of the other column say.
func TestDimensionFromSchema(t *testing.T) {
	dir := t.TempDir()
	rs := rows("a", 5, 4, 6)
	rs[0].Text = rs[0].Text[:4]
	writeFixed(t, filepath.Join(dir, "a.parquet"), rs, 4)
	_, err := plan(t, dir)
	if err == nil || !strings.Contains(err.Error(), "image embeddings (image_embedding) have 4 values, text embeddings (text_embedding) 6") {
		t.Fatalf("err = %v, want a mismatch of the fixed 4 and the common 6", err)
	}

	dir = t.TempDir()
	rs = rows("a", 5, 4, 4)
	rs[0].Text, rs[1].Text = rs[0].Text[:2], rs[1].Text[:2]
	writeFixed(t, filepath.Join(dir, "a.parquet"), rs[:3], 4)
	writeFixed(t, filepath.Join(dir, "b.parquet"), rs[3:], 4)
	shards, err := plan(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if shards[0].Dim != 4 {
		t.Fatalf("dim %d, want 4", shards[0].Dim)
	}
	if got := faults(t, shards); len(got) != 2 || !strings.Contains(got["a0"], "text embedding has 2 values, the dataset's dimension is 4") {
		t.Fatalf("faults %q", got)
	}

	writeFixed(t, filepath.Join(dir, "c.parquet"), rows("c", 2, 5, 5), 5)
	_, err = plan(t, dir)
	if err == nil || !strings.Contains(err.Error(), `dimension mismatch: column "image_embedding" of `+filepath.Join(dir, "c.parquet")+" holds lists of 5 values") {
		t.Fatalf("err = %v", err)
	}
}

// Every .parquet file is read, whatever the case of its extension; other files are noted.
func TestFilesReadOrNoted(t *testing.T) {
	dir := t.TempDir()
	if err := embparquet.Write(context.Background(), dir, [][]dataset.Row{rows("a", 2, 4, 4)}); err != nil {
		t.Fatal(err)
	}
	writeFixed(t, filepath.Join(dir, "upper.PARQUET"), rows("u", 3, 4, 4), 4)
	if err := os.WriteFile(filepath.Join(dir, "README.md"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	var notes []string
	ctx := dataset.WithNotes(context.Background(), func(m string) { notes = append(notes, m) })
	shards, err := embparquet.Format{}.Plan(ctx, dir, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(shards) != 2 || shards[1].Rows != 3 || shards[1].Name != "upper" {
		t.Fatalf("shards %+v, want part-00000 and upper (3 rows)", shards)
	}
	if want := dir + ": 1 file(s) are not read (no part of the parquet layout): README.md"; strings.Join(notes, "\n") != want {
		t.Fatalf("notes %q, want %q", notes, want)
	}
}
