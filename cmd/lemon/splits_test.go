package main_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/embdir"
	"github.com/lemon-curation/lemon/internal/npy"
	"github.com/lemon-curation/lemon/synth"
)

// npyRows returns the rows of an .npy file as their bytes, and the file's dtype.
func npyRows(t *testing.T, p string) ([][]byte, string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	h, err := npy.ReadHeader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	if h.Fortran {
		t.Fatalf("%s is in Fortran order", p)
	}
	size := h.Cols * h.ItemSize()
	rows := make([][]byte, h.Rows)
	for i := range rows {
		rows[i] = b[int(h.DataOffset)+i*size : int(h.DataOffset)+(i+1)*size]
	}
	if int(h.DataOffset)+h.Rows*size != len(b) {
		t.Fatalf("%s: %d bytes, header promises %d", p, len(b), int(h.DataOffset)+h.Rows*size)
	}
	return rows, h.Dtype
}

// TestLAIONSplitsAreLAIONFolders: kept/, rejected/ and errors/ of a clip-retrieval folder
// (float16, as LAION ships it) are clip-retrieval folders of their rows: per input shard N,
// img_emb_N.npy and text_emb_N.npy holding the input's rows byte for byte, in input order,
// beside metadata_N.parquet with the scores; `lemon score` reads kept/ back as it is.
func TestLAIONSplitsAreLAIONFolders(t *testing.T) {
	ctx := context.Background()
	o := synth.Defaults()
	o.Rows, o.Dim, o.Noise = 200, 16, 0.2
	rows, err := synth.Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	rows[33].Text = make([]float32, o.Dim) // a zero vector: errors/
	in := filepath.Join(t.TempDir(), "laion")
	shards := [][]dataset.Row{rows[:90], rows[90:]}
	if err := embdir.Write(ctx, in, shards, embdir.WriteOptions{Dtype: "<f2"}); err != nil {
		t.Fatal(err)
	}
	// Each input row's embedding bytes, by id.
	type source struct{ img, txt []byte }
	src := map[string]source{}
	for n, sh := range shards {
		img, _ := npyRows(t, filepath.Join(in, "img_emb", fmt.Sprintf("img_emb_%d.npy", n)))
		txt, _ := npyRows(t, filepath.Join(in, "text_emb", fmt.Sprintf("text_emb_%d.npy", n)))
		for i, r := range sh {
			src[r.ID] = source{img[i], txt[i]}
		}
	}

	out := filepath.Join(t.TempDir(), "out")
	run(t, false, "score", "--input", in, "--output", out, "--k", "10", "--reject-fraction", "0.2")
	c := readCounts(t, out)
	if c["errors"] != 1 {
		t.Fatalf("counts %v, want the zero-vector row in errors", c)
	}
	total := int64(0)
	for _, split := range []string{"kept", "rejected", "errors"} {
		var n int64
		for shard, sh := range shards {
			dir := filepath.Join(out, split)
			ids := readColumn(t, filepath.Join(dir, "metadata", fmt.Sprintf("metadata_%d.parquet", shard)), "key")
			img, dtype := npyRows(t, filepath.Join(dir, "img_emb", fmt.Sprintf("img_emb_%d.npy", shard)))
			txt, _ := npyRows(t, filepath.Join(dir, "text_emb", fmt.Sprintf("text_emb_%d.npy", shard)))
			if dtype != "<f2" || len(img) != len(ids) || len(txt) != len(ids) {
				t.Fatalf("%s shard %d: %d ids, %d image and %d text rows of %s; want as many rows, float16", split, shard, len(ids), len(img), len(txt), dtype)
			}
			order := map[string]int{}
			for i, r := range sh {
				order[r.ID] = i
			}
			for i, id := range ids {
				if !bytes.Equal(img[i], src[id].img) || !bytes.Equal(txt[i], src[id].txt) {
					t.Fatalf("%s shard %d row %d (%s): embeddings differ from the input's", split, shard, i, id)
				}
				if i > 0 && order[ids[i-1]] >= order[id] {
					t.Fatalf("%s shard %d: %s before %s, against the input's order", split, shard, ids[i-1], id)
				}
			}
			n += int64(len(ids))
		}
		if n != c[split] {
			t.Errorf("%s/ holds %d rows, the manifest counts %d", split, n, c[split])
		}
		total += n
	}
	if total != int64(len(rows)) {
		t.Errorf("the splits hold %d rows, the input %d", total, len(rows))
	}

	// kept/ is a clip-retrieval folder: scoring it reads every kept row, by its id.
	again := filepath.Join(t.TempDir(), "again")
	run(t, false, "score", "--input", filepath.Join(out, "kept"), "--output", again, "--k", "10", "--scores-format", "csv")
	if c2 := readCounts(t, again); c2["rows_in"] != c["kept"] || c2["errors"] != 0 {
		t.Errorf("scoring kept/: counts %v, want %d rows in, none in errors", c2, c["kept"])
	}
	keptIDs := readColumn(t, filepath.Join(out, "kept"), "key")
	var scored []string
	for id := range readScores(t, again) {
		scored = append(scored, id)
	}
	slices.Sort(keptIDs)
	slices.Sort(scored)
	if !slices.Equal(keptIDs, scored) {
		t.Errorf("scoring kept/ scored %d ids, kept/ holds %d: they differ", len(scored), len(keptIDs))
	}
}
