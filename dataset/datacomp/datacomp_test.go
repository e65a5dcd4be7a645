package datacomp_test

import (
	"archive/zip"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/datacomp"
	"github.com/lemon-curation/lemon/dataset/datasettest"
	"github.com/lemon-curation/lemon/internal/npy"
	"github.com/lemon-curation/lemon/storage"
)

func fixture(o datacomp.WriteOptions) datasettest.Fixture {
	return datasettest.Fixture{
		Format: datacomp.Format{},
		Write: func(ctx context.Context, dir string, shards [][]dataset.Row) error {
			return datacomp.Write(ctx, dir, shards, o)
		},
		IDColumn: "uid",
	}
}

// float32 arrays, so the suite's exact comparison holds; stored and deflated members.
func TestConformance(t *testing.T) {
	datasettest.Run(t, fixture(datacomp.WriteOptions{Dtype: "<f4"}), t.TempDir())
}

func TestConformanceDeflated(t *testing.T) {
	datasettest.Run(t, fixture(datacomp.WriteOptions{Dtype: "<f4", Compressed: true}), t.TempDir())
}

// memfs reads through ranged requests, as gs:// does.
func TestConformanceMemfs(t *testing.T) {
	datasettest.Run(t, fixture(datacomp.WriteOptions{Dtype: "<f4"}), "memfs://datacomp-conformance")
}

func plan(t *testing.T, p string, o dataset.Options) []dataset.Shard {
	t.Helper()
	shards, err := datacomp.Format{}.Plan(context.Background(), p, o)
	if err != nil {
		t.Fatal(err)
	}
	return shards
}

func readAll(t *testing.T, shards []dataset.Shard, o dataset.Options) []dataset.Record {
	t.Helper()
	var out []dataset.Record
	for _, sh := range shards {
		err := datacomp.Format{}.Read(context.Background(), sh, o, func(r dataset.Record) error {
			r.Image, r.Text = slices.Clone(r.Image), slices.Clone(r.Text)
			out = append(out, r)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// --embedding-model picks the arrays: b32 by default, l14 on request; others are refused.
func TestEmbeddingModel(t *testing.T) {
	dir := t.TempDir()
	rows := datasettest.Rows("m", 6, 8, 4)
	if err := datacomp.Write(context.Background(), dir, [][]dataset.Row{rows}, datacomp.WriteOptions{Dtype: "<f4"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		model string
		dim   int
		want  func(v []float32) []float32
	}{{"", 8, slices.Clone[[]float32]}, {"b32", 8, slices.Clone[[]float32]}, {"l14", 12, datacomp.L14}} {
		o := dataset.Options{EmbeddingModel: c.model}
		shards := plan(t, dir, o)
		if shards[0].Dim != c.dim {
			t.Fatalf("model %q: dim %d, want %d", c.model, shards[0].Dim, c.dim)
		}
		for i, r := range readAll(t, shards, o) {
			if !slices.Equal(r.Image, c.want(rows[i].Image)) || !slices.Equal(r.Text, c.want(rows[i].Text)) || r.ID != rows[i].ID {
				t.Fatalf("model %q row %d: read %v / %v, want %v / %v", c.model, i, r.Image, r.Text, c.want(rows[i].Image), c.want(rows[i].Text))
			}
		}
	}
	if _, err := (datacomp.Format{}).Plan(context.Background(), dir, dataset.Options{EmbeddingModel: "h14"}); err == nil || !strings.Contains(err.Error(), `"h14"`) || !strings.Contains(err.Error(), "b32, l14") {
		t.Errorf("--embedding-model h14: err = %v", err)
	}
}

// Shards at any depth under the root are found, in path order, and named by their paths below
// it; files no part of the layout are noted; a single .parquet path is one shard.
func TestNestedShardsAndNotes(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	for i, sub := range []string{"metadata/b", "metadata/a", "metadata/a"} {
		if err := datacomp.Write(ctx, filepath.Join(root, sub), [][]dataset.Row{datasettest.Rows(sub, 3+i, 4, uint64(i)), datasettest.Rows(sub+"x", 2, 4, uint64(i+9))}, datacomp.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(root, "metadata", "a", "00000000_stats.json"), []byte("{}"), 0o644)
	var notes []string
	nctx := dataset.WithNotes(ctx, func(m string) { notes = append(notes, m) })
	shards, err := datacomp.Format{}.Plan(nctx, root, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, sh := range shards {
		names = append(names, sh.Name)
	}
	if want := []string{"metadata/a/00000000", "metadata/a/00000001", "metadata/b/00000000", "metadata/b/00000001"}; !slices.Equal(names, want) {
		t.Fatalf("shards %v, want %v", names, want)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "metadata/a/00000000_stats.json") {
		t.Errorf("notes = %q, want one naming metadata/a/00000000_stats.json", notes)
	}
	one := plan(t, filepath.Join(root, "metadata", "b", "00000001.parquet"), dataset.Options{})
	if len(one) != 1 || one[0].Rows != 2 || one[0].Name != "00000001" {
		t.Errorf("a single .parquet: %+v", one)
	}
}

// File-level faults stop the plan with a message naming the file.
func TestPlanFaults(t *testing.T) {
	ctx := context.Background()
	write := func(t *testing.T, rows ...int) string {
		dir := t.TempDir()
		var shards [][]dataset.Row
		for i, n := range rows {
			shards = append(shards, datasettest.Rows("f", n, 4, uint64(i)))
		}
		if err := datacomp.Write(ctx, dir, shards, datacomp.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	for _, c := range []struct {
		name   string
		damage func(t *testing.T, dir string)
		o      dataset.Options
		want   []string
	}{
		{"no npz", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "00000001.npz")) }, dataset.Options{}, []string{"00000001.parquet has no 00000001.npz beside it"}},
		{"no parquet", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "00000001.parquet")) }, dataset.Options{}, []string{"00000001.npz has no .parquet beside it"}},
		{"rows", func(t *testing.T, dir string) {
			copyFile(t, filepath.Join(dir, "00000000.npz"), filepath.Join(dir, "00000001.npz"))
		}, dataset.Options{}, []string{"row-count mismatch", "00000001.parquet has 5 rows", "b32_img"}},
		{"truncated npz", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "00000000.npz")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-100], 0o644)
		}, dataset.Options{}, []string{"00000000.npz", "zip"}},
		{"no such array", func(t *testing.T, dir string) {
			writeNPZ(t, filepath.Join(dir, "00000000.npz"), 3, map[string][]float32{"b32_img": make([]float32, 3*4), "b32_txt": make([]float32, 3*4)})
		}, dataset.Options{EmbeddingModel: "l14"}, []string{"00000000.npz", `no array "l14_img"`, "b32_img, b32_txt"}},
		{"dims", func(t *testing.T, dir string) {
			writeNPZ(t, filepath.Join(dir, "00000000.npz"), 3, map[string][]float32{"b32_img": make([]float32, 3*4), "b32_txt": make([]float32, 3*6)})
		}, dataset.Options{}, []string{"dimension mismatch", "b32_img", "00000000.npz", "dimension 4", "b32_txt has 6"}},
		{"no uid", func(t *testing.T, dir string) {}, dataset.Options{IDColumn: "key"}, []string{"00000000.parquet", `"key"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := write(t, 3, 5)
			c.damage(t, dir)
			_, err := datacomp.Format{}.Plan(ctx, dir, c.o)
			for _, w := range c.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Fatalf("err = %v, want it to say %q", err, w)
				}
			}
		})
	}
}

// writeNPZ writes a stored .npz of float32 arrays of rows rows each.
func writeNPZ(t *testing.T, p string, rows int, arrays map[string][]float32) {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, data := range arrays {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name + ".npy", Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		if err := npy.Write(w, rows, len(data)/rows, data, "<f4"); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// unzipTo writes every member of a zip archive into dir.
func unzipTo(t *testing.T, archive []byte, dir string) {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(archive), int64(len(archive)))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.Name), b, 0o644); err != nil {
			t.Fatal(err)
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

// Archives written by numpy itself (np.savez stores, np.savez_compressed deflates), of DataComp's
// real shapes: float16 arrays of dimension 512 (b32) and 768 (l14). The arrays are the .npy
// files the Go writer makes (internal/npy checks those against numpy byte for byte); numpy
// packs them. Needs /usr/bin/python3 with numpy (Debian: python3-numpy): without it the test
// skips, except under CI=true, where it fails.
func TestNumpyArchives(t *testing.T) {
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import numpy").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %s cannot import numpy (%v): install python3-numpy", py, err)
		}
		t.Skipf("%s with numpy not available (%v); install python3-numpy to run", py, err)
	}
	ctx := context.Background()
	rows := datasettest.Rows("n", 40, 512, 11)
	for _, compressed := range []bool{false, true} {
		dir := t.TempDir()
		if err := datacomp.Write(ctx, dir, [][]dataset.Row{rows}, datacomp.WriteOptions{Dtype: "<f2"}); err != nil {
			t.Fatal(err)
		}
		// Unpack the Go writer's arrays and let numpy pack them again.
		tmp := t.TempDir()
		arch, err := os.ReadFile(filepath.Join(dir, "00000000.npz"))
		if err != nil {
			t.Fatal(err)
		}
		unzipTo(t, arch, tmp)
		fn := "savez"
		if compressed {
			fn = "savez_compressed"
		}
		script := `import numpy as np, sys
d = sys.argv[1]
arrays = {n: np.load(d + "/" + n + ".npy") for n in ("b32_img", "b32_txt", "l14_img", "l14_txt")}
assert arrays["b32_img"].dtype == np.float16 and arrays["l14_img"].shape == (40, 768)
np.` + fn + `(sys.argv[2], **arrays)`
		if out, err := exec.Command(py, "-c", script, tmp, filepath.Join(dir, "00000000.npz")).CombinedOutput(); err != nil {
			t.Fatalf("numpy: %v\n%s", err, out)
		}
		for _, model := range []string{"b32", "l14"} {
			o := dataset.Options{EmbeddingModel: model}
			shards := plan(t, dir, o)
			if want := map[string]int{"b32": 512, "l14": 768}[model]; shards[0].Dim != want || shards[0].Rows != 40 {
				t.Fatalf("%s (%s): planned %d rows of dim %d", fn, model, shards[0].Rows, shards[0].Dim)
			}
			got := readAll(t, shards, o)
			for i, r := range got {
				want := rows[i].Image
				if model == "l14" {
					want = datacomp.L14(want)
				}
				for j := range want {
					if d := r.Image[j] - want[j]; d > 2e-3*max(1, abs(want[j])) || -d > 2e-3*max(1, abs(want[j])) {
						t.Fatalf("%s (%s) row %d value %d = %v, want %v (to float16 precision)", fn, model, i, j, r.Image[j], want[j])
					}
				}
				if r.ID != rows[i].ID || r.Caption != rows[i].Caption {
					t.Fatalf("%s row %d = %q %q", fn, i, r.ID, r.Caption)
				}
			}
		}
		if !storage.Exists(ctx, filepath.Join(dir, "00000000.npz")) {
			t.Fatal("numpy wrote no archive")
		}
	}
}

func abs(x float32) float32 {
	if x < 0 {
		return -x
	}
	return x
}
