package main_test

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/datasettest"
	"github.com/lemon-curation/lemon/dataset/embdir"
	"github.com/lemon-curation/lemon/dataset/metadata"
)

// readColumn reads one column of every part file under dir.
func readColumn(t *testing.T, dir, col string) []string {
	t.Helper()
	// At any depth: a clip-retrieval input's splits keep their metadata in metadata/.
	files, err := dataset.ShardFilesUnder(context.Background(), dir, ".parquet")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		rr, err := metadata.Open(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		for rr.Next() {
			v, _, err := metadata.StringColumn(f, rr.RecordBatch(), col)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, v...)
		}
		rr.Release()
	}
	return out
}

func writeDir(t *testing.T, shards [][]dataset.Row, o embdir.WriteOptions) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "in")
	if err := embdir.Write(context.Background(), dir, shards, o); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestPerRowFaultsGoToErrors: bad vectors, empty captions and duplicate ids each send their row
// to errors/ with a reason, the rest of the job goes on, and the manifest counts every row.
func TestPerRowFaultsGoToErrors(t *testing.T) {
	rows := datasettest.Rows("r", 40, 8, 3)
	nan := float32(math.NaN())
	rows[3].Image = make([]float32, 8)      // zero vector
	rows[5].Text[2] = nan                   // NaN
	rows[7].Image[0] = float32(math.Inf(1)) // Inf
	rows[9].Caption = ""                    // empty caption
	rows[30].ID = rows[2].ID                // duplicate of an earlier id (other shard)
	in := writeDir(t, [][]dataset.Row{rows[:20], rows[20:]}, embdir.WriteOptions{})
	out := filepath.Join(t.TempDir(), "out")
	run(t, false, "score", "--input", in, "--output", out, "--k", "5", "--reject-fraction", "0.25")

	counts := readCounts(t, out)
	if counts["rows_in"] != 40 || counts["errors"] != 5 || counts["rejected"] != 9 || counts["kept"] != 26 {
		t.Fatalf("counts %v, want rows_in 40, errors 5, rejected round(0.25*35)=9, kept 26", counts)
	}
	ids := readColumn(t, filepath.Join(out, "errors"), "key")
	reasons := readColumn(t, filepath.Join(out, "errors"), "reason")
	want := map[string]string{
		rows[3].ID: "image embedding: vector is all zeros",
		rows[5].ID: "text embedding: vector contains NaN",
		rows[7].ID: "image embedding: vector contains Inf",
		rows[9].ID: "empty caption",
	}
	got := map[string]string{}
	for i, id := range ids {
		if id == rows[2].ID {
			if !strings.Contains(reasons[i], "duplicate id") || !strings.Contains(reasons[i], "metadata_0.parquet") {
				t.Errorf("duplicate's reason %q should say duplicate and name the first file", reasons[i])
			}
			continue
		}
		got[id] = reasons[i]
	}
	for id, r := range want {
		if got[id] != r {
			t.Errorf("row %s: reason %q, want %q", id, got[id], r)
		}
	}
	// Kept and rejected keep the input's metadata columns and add the score.
	kept := readColumn(t, filepath.Join(out, "kept"), "is_error")
	if len(kept) != 26 {
		t.Errorf("kept/ has %d rows, want 26", len(kept))
	}
	if s := readColumn(t, filepath.Join(out, "rejected"), "lemon_score"); len(s) != 9 {
		t.Errorf("rejected/ has %d lemon_score values, want 9", len(s))
	}
}

// TestFileFaultsAreClearErrors: faults that make a whole file unusable stop the job before it
// starts, with a message naming the file and the problem.
func TestFileFaultsAreClearErrors(t *testing.T) {
	base := func() [][]dataset.Row {
		return [][]dataset.Row{datasettest.Rows("a", 20, 8, 1), datasettest.Rows("b", 20, 8, 2)}
	}
	cases := []struct {
		name  string
		setup func(t *testing.T) string
		want  []string
	}{
		{"dimension mismatch between shards", func(t *testing.T) string {
			s := base()
			s[1] = datasettest.Rows("b", 20, 6, 2)
			return writeDir(t, s, embdir.WriteOptions{})
		}, []string{"dimension mismatch", "img_emb_1.npy"}},
		{"npy and metadata row counts differ (parquet)", func(t *testing.T) string {
			dir := writeDir(t, base(), embdir.WriteOptions{})
			other := writeDir(t, [][]dataset.Row{datasettest.Rows("x", 19, 8, 1)}, embdir.WriteOptions{})
			copyFile(t, filepath.Join(other, "metadata", "metadata_0.parquet"), filepath.Join(dir, "metadata", "metadata_0.parquet"))
			return dir
		}, []string{"row-count mismatch", "metadata_0.parquet", "19", "20"}},
		{"truncated npy", func(t *testing.T) string {
			dir := writeDir(t, base(), embdir.WriteOptions{})
			p := filepath.Join(dir, "text_emb", "text_emb_1.npy")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-10], 0o644)
			return dir
		}, []string{"text_emb_1.npy", "truncated"}},
		{"not an npy file", func(t *testing.T) string {
			dir := writeDir(t, base(), embdir.WriteOptions{})
			os.WriteFile(filepath.Join(dir, "img_emb", "img_emb_0.npy"), []byte("hello, not numpy"), 0o644)
			return dir
		}, []string{"img_emb_0.npy", "not a .npy file"}},
		{"unknown dtype", func(t *testing.T) string {
			dir := writeDir(t, base(), embdir.WriteOptions{})
			p := filepath.Join(dir, "img_emb", "img_emb_0.npy")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, []byte(strings.Replace(string(b), "<f4", "<i4", 1)), 0o644)
			return dir
		}, []string{"img_emb_0.npy", "<i4"}},
		{"too few rows for k", func(t *testing.T) string {
			return writeDir(t, [][]dataset.Row{datasettest.Rows("a", 30, 8, 1)}, embdir.WriteOptions{})
		}, []string{"30 rows", "k=30 needs at least 31"}},
		{"missing text shard", func(t *testing.T) string {
			dir := writeDir(t, base(), embdir.WriteOptions{})
			os.Remove(filepath.Join(dir, "text_emb", "text_emb_1.npy"))
			return dir
		}, []string{"img_emb_1.npy", "no matching text_emb"}},
		{"missing input", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nothing-here") }, []string{"nothing-here"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := c.setup(t)
			msg := run(t, true, "score", "--input", in, "--output", filepath.Join(t.TempDir(), "out"))
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error output does not mention %q:\n%s", w, msg)
				}
			}
		})
	}
}

// TestCSVRowCountMismatchFailsTheJob: a CSV metadata file's length is only known once read;
// the job fails naming both files.
func TestCSVRowCountMismatchFailsTheJob(t *testing.T) {
	dir := writeDir(t, [][]dataset.Row{datasettest.Rows("a", 40, 8, 1)}, embdir.WriteOptions{MetadataExt: ".csv"})
	p := filepath.Join(dir, "metadata", "metadata_0.csv")
	b, _ := os.ReadFile(p)
	lines := strings.SplitAfter(string(b), "\n")
	os.WriteFile(p, []byte(strings.Join(lines[:len(lines)-3], "")), 0o644)
	msg := run(t, true, "score", "--input", dir, "--output", filepath.Join(t.TempDir(), "out"), "--k", "5")
	for _, w := range []string{"row-count mismatch", "metadata_0.csv", "img_emb_0.npy"} {
		if !strings.Contains(msg, w) {
			t.Errorf("error output does not mention %q:\n%s", w, msg)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
