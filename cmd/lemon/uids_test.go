package main_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/datacomp"
	"github.com/lemon-curation/lemon/synth"
)

// loadUIDs loads a uid file with numpy, as DataComp's tooling does, and returns its uids as
// 32 hex digits, in file order; it fails the test unless numpy reads it as a 1-D array of
// dtype [('f0','<u8'),('f1','<u8')] sorted ascending.
func loadUIDs(t *testing.T, path string) []string {
	t.Helper()
	const py = "/usr/bin/python3"
	script := `
import sys, numpy as np
a = np.load(sys.argv[1])
assert a.dtype == np.dtype([('f0', '<u8'), ('f1', '<u8')]), a.dtype
assert a.ndim == 1, a.shape
assert (np.sort(a) == a).all(), "not sorted"
for hi, lo in a.tolist():
    print("%016x%016x" % (hi, lo))
`
	if err := exec.Command(py, "-c", "import numpy").Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI=true but %s cannot import numpy (%v): install python3-numpy", py, err)
		}
		t.Skipf("%s with numpy not available (%v)", py, err)
	}
	out, err := exec.Command(py, "-c", script, path).CombinedOutput()
	if err != nil {
		t.Fatalf("numpy on %s: %v\n%s", path, err, out)
	}
	return strings.Fields(string(out))
}

// TestWriteUIDs: --write-uids on DataComp shards writes kept_uids.npy and rejected_uids.npy
// that numpy loads as DataComp's subset format (u8,u8, sorted) holding exactly the uids of
// kept/ and rejected/; rows whose uid is not 32 lowercase hex digits go to errors saying so.
// Input whose ids are not uids is refused before the job runs, and a rerun without
// --write-uids leaves no uid files from the earlier run.
func TestWriteUIDs(t *testing.T) {
	ctx := context.Background()
	o := synth.Defaults()
	o.Rows, o.Dim, o.Noise = 150, 32, 0.2
	rows, err := synth.Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	for i := range rows {
		// High halves repeat, so the file's order depends on the low halves too.
		rows[i].ID = fmt.Sprintf("%016x%016x", uint64(i%3)<<60, uint64(i+1)*0xbf58476d1ce4e5b9)
	}
	bad := map[int]string{7: strings.ToUpper(rows[7].ID), 60: rows[60].ID[:31], 120: "not-a-uid"}
	for i, id := range bad {
		rows[i].ID = id
	}
	root := filepath.Join(t.TempDir(), "datacomp")
	if err := datacomp.Write(ctx, root, [][]dataset.Row{rows[:80], rows[80:]}, datacomp.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	run(t, false, "score", "--input", root, "--output", out, "--k", "10", "--write-uids")
	c := readCounts(t, out)
	if c["errors"] != int64(len(bad)) {
		t.Fatalf("counts %v, want the %d rows with bad uids in errors", c, len(bad))
	}
	reasons := readColumn(t, filepath.Join(out, "errors"), "reason")
	for _, r := range reasons {
		if !strings.Contains(r, "not 32 lowercase hex digits") {
			t.Errorf("errors/ reason %q does not say the uid is not 32 lowercase hex digits", r)
		}
	}
	for _, split := range []string{"kept", "rejected"} {
		got := loadUIDs(t, filepath.Join(out, split+"_uids.npy"))
		want := readColumn(t, filepath.Join(out, split), "uid")
		slices.Sort(want) // hex digits of equal length sort as the numbers do
		if !slices.Equal(got, want) {
			t.Errorf("%s_uids.npy holds %d uids, %s/ %d: they differ\n got %v\nwant %v", split, len(got), split, len(want), got, want)
		}
		if int64(len(got)) != c[split] {
			t.Errorf("%s_uids.npy holds %d uids, the manifest counts %d %s rows", split, len(got), c[split], split)
		}
	}
	manifest, _ := os.ReadFile(filepath.Join(out, "manifest.json"))
	if !strings.Contains(string(manifest), `"kept_uids": "kept_uids.npy"`) {
		t.Errorf("the manifest's outputs do not list kept_uids.npy:\n%s", manifest)
	}

	// A rerun into the same output without --write-uids leaves none of the earlier uid files.
	run(t, false, "score", "--input", root, "--output", out, "--k", "10", "--overwrite")
	for _, f := range []string{"kept_uids.npy", "rejected_uids.npy"} {
		if _, err := os.Stat(filepath.Join(out, f)); !os.IsNotExist(err) {
			t.Errorf("a rerun without --write-uids left the earlier run's %s", f)
		}
	}

	// Ids that are not uids: a clear error before the job runs (no manifest written).
	for i := range rows {
		rows[i].ID = fmt.Sprintf("k%d", i)
	}
	keys := filepath.Join(t.TempDir(), "keys")
	if err := datacomp.Write(ctx, keys, [][]dataset.Row{rows}, datacomp.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	out2 := filepath.Join(t.TempDir(), "out")
	msg := run(t, true, "score", "--input", keys, "--output", out2, "--k", "10", "--write-uids")
	if !strings.Contains(msg, `--write-uids writes DataComp uids, but row 0 of`) || !strings.Contains(msg, `has id "k0", which is not 32 lowercase hex digits`) || strings.Count(strings.TrimSpace(msg), "\n") > 0 {
		t.Errorf("ids that are not uids: want one line naming the file, row and id:\n%s", msg)
	}
	if _, err := os.Stat(filepath.Join(out2, "manifest.json")); !os.IsNotExist(err) {
		t.Error("a refused --write-uids run wrote a manifest")
	}
}
