package main_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/runners/prism"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/datasettest"
	"github.com/lemon-curation/lemon/dataset/embdir"
	"github.com/lemon-curation/lemon/dataset/embparquet"
	"github.com/lemon-curation/lemon/internal/golden"
	"github.com/lemon-curation/lemon/synth"
)

// lemonBin is the CLI under test, built once by TestMain: these tests run the real binary,
// as a user would.
var lemonBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lemon-cli-test")
	if err != nil {
		panic(err)
	}
	lemonBin = filepath.Join(dir, "lemon")
	out, err := exec.Command("go", "build", "-o", lemonBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building lemon: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run runs lemon and returns its combined output; it fails the test on a non-zero exit unless
// wantFail.
func run(t *testing.T, wantFail bool, args ...string) string {
	t.Helper()
	cmd := exec.Command(lemonBin, args...)
	out, err := cmd.CombinedOutput()
	if wantFail && err == nil {
		t.Fatalf("lemon %s: succeeded, want failure\n%s", strings.Join(args, " "), out)
	}
	if !wantFail && err != nil {
		t.Fatalf("lemon %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// tinyEncoders writes tiny stand-in encoders (random weights) to dir/enc with `lemon dev
// make-encoders` and returns that folder, which holds image.onnx and text.onnx.
func tinyEncoders(t *testing.T, dir string) string {
	t.Helper()
	enc := filepath.Join(dir, "enc")
	run(t, false, "dev", "make-encoders", "--size", "tiny", "--out", enc)
	return enc
}

type scoreRow struct {
	ID, Caption         string
	Dmm, Sn, Sm, Score  float64
	Flagged             bool
	ImageNbrs, TextNbrs []string
}

// readScores reads every scores/part-*.csv of a run.
func readScores(t *testing.T, out string) map[string]scoreRow {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(out, "scores", "part-*.csv"))
	if len(files) == 0 {
		t.Fatalf("no scores in %s", out)
	}
	rows := map[string]scoreRow{}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		recs, err := csv.NewReader(fh).ReadAll()
		fh.Close()
		if err != nil {
			t.Fatal(err)
		}
		want := "id,caption,d_mm,s_n,s_m,score,flagged"
		if got := strings.Join(recs[0][:7], ","); got != want {
			t.Fatalf("%s header %q, want %q", f, got, want)
		}
		for _, r := range recs[1:] {
			num := func(s string) float64 {
				v, err := strconv.ParseFloat(s, 64)
				if err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				return v
			}
			sr := scoreRow{ID: r[0], Caption: r[1], Dmm: num(r[2]), Sn: num(r[3]), Sm: num(r[4]), Score: num(r[5]), Flagged: r[6] == "true"}
			if len(r) > 7 {
				sr.ImageNbrs, sr.TextNbrs = strings.Fields(r[7]), strings.Fields(r[8])
			}
			if _, dup := rows[sr.ID]; dup {
				t.Fatalf("id %s scored twice", sr.ID)
			}
			rows[sr.ID] = sr
		}
	}
	return rows
}

func readCounts(t *testing.T, out string) map[string]int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Counts map[string]int64 `json:"counts"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	c := m.Counts
	if c["rows_in"] != c["kept"]+c["rejected"]+c["errors"] {
		t.Fatalf("manifest counts do not add up: %v", c)
	}
	return c
}

func paramFlags(c *golden.Case) []string {
	p := c.Params
	f := func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
	args := []string{"--k", strconv.Itoa(p.K), "--distance", string(p.Distance), "--beta", f(p.Beta), "--gamma", f(p.Gamma),
		"--tau1n", f(p.Tau1n), "--tau2n", f(p.Tau2n), "--tau1m", f(p.Tau1m), "--tau2m", f(p.Tau2m)}
	if p.DiscreteText {
		args = append(args, "--discrete-text")
	}
	return args
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	x, y := append([]string(nil), a...), append([]string(nil), b...)
	sort.Strings(x)
	sort.Strings(y)
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}

// TestGoldenThroughCLI runs every golden case through `lemon score` and compares every score
// (within 1e-4) and neighbour set (exactly), with the input written in both formats and with
// block sizes that do and do not divide the data.
func TestGoldenThroughCLI(t *testing.T) {
	cases, err := golden.All()
	if err != nil || len(cases) == 0 {
		t.Fatalf("loading golden cases: %v (%d)", err, len(cases))
	}
	ctx := context.Background()
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			dir := t.TempDir()
			in := filepath.Join(dir, "in")
			rows := c.Rows()
			// Uneven shards, written as a clip-retrieval directory with CSV metadata.
			shards := [][]dataset.Row{rows[:7], rows[7 : len(rows)/2], rows[len(rows)/2:]}
			if err := embdir.Write(ctx, in, shards, embdir.WriteOptions{MetadataExt: ".csv", IDColumn: "id"}); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"score", "--input", in, "--scores-format", "csv", "--emit-neighbours", "--block-rows", "37"}, paramFlags(c)...)
			if ref := c.ReferenceRows(); ref != nil {
				refDir := filepath.Join(dir, "ref")
				if err := embparquet.Write(ctx, refDir, [][]dataset.Row{ref[:50], ref[50:]}); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--reference", refDir)
			}
			for _, v := range []struct{ shape, budget string }{{"memory", "4096"}, {"stream", "1"}, {"pairs", "1"}} {
				out := filepath.Join(dir, "out-"+v.shape)
				run(t, false, append(args, "--output", out, "--search-shape", v.shape, "--worker-memory-mib", v.budget)...)
				checkGolden(t, c, out)
			}
		})
	}
}

func checkGolden(t *testing.T, c *golden.Case, out string) {
	t.Helper()
	rows := c.Rows()
	got := readScores(t, out)
	if len(got) != len(rows) {
		t.Fatalf("%d rows scored, want %d", len(got), len(rows))
	}
	for i, id := range c.IDs {
		g := got[id]
		want := []float64{c.Expected.Dmm[i], c.Expected.Sn[i], c.Expected.Sm[i], c.Expected.Score[i]}
		for k, v := range []float64{g.Dmm, g.Sn, g.Sm, g.Score} {
			if math.Abs(v-want[k]) > 1e-4 {
				t.Errorf("%s: %s = %v, want %v", id, []string{"d_mm", "s_n", "s_m", "score"}[k], v, want[k])
			}
		}
		if !sameSet(g.ImageNbrs, c.ExpectedNeighbours.Image[i]) {
			t.Errorf("%s: image neighbours %v, want %v", id, g.ImageNbrs, c.ExpectedNeighbours.Image[i])
		}
		if !sameSet(g.TextNbrs, c.ExpectedNeighbours.Text[i]) {
			t.Errorf("%s: text neighbours %v, want %v", id, g.TextNbrs, c.ExpectedNeighbours.Text[i])
		}
	}
	counts := readCounts(t, out)
	if counts["rows_in"] != int64(len(rows)) || counts["errors"] != 0 {
		t.Errorf("manifest counts %v, want rows_in %d and no errors", counts, len(rows))
	}
}

// TestResultsIndependentOfBlocksAndShards scores one dataset with different shardings, formats,
// block sizes (including blocks of one row and one block for everything), search shapes and
// memory budgets (forcing many query groups and tiles) and requires identical scores and
// neighbours.
func TestResultsIndependentOfBlocksAndShards(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the sweep over block sizes and shard counts in -short mode")
	}
	ctx := context.Background()
	o := synth.Defaults()
	o.Rows, o.Dim = 3000, 8
	rows, err := synth.Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var first map[string]scoreRow
	for i, v := range []struct {
		shards int
		format string
		block  string
		shape  string
		flags  []string
	}{
		{1, "embdir", "8192", "memory", nil},
		{5, "embdir", "64", "memory", []string{"--workers", "3"}},
		{3, "parquet", "1", "memory", nil},
		{7, "parquet", "299", "stream", []string{"--worker-memory-mib", "1", "--workers", "4"}},
		{2, "embdir", "100", "pairs", []string{"--worker-memory-mib", "4"}},
		{4, "parquet", "1000", "pairs", []string{"--worker-memory-mib", "2"}},
		{4, "embdir", "100", "auto", []string{"--worker-memory-mib", "1"}},
	} {
		in := filepath.Join(dir, fmt.Sprintf("in%d", i))
		if v.format == "embdir" {
			err = embdir.Write(ctx, in, synth.Split(rows, v.shards), embdir.WriteOptions{})
		} else {
			err = embparquet.Write(ctx, in, synth.Split(rows, v.shards))
		}
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, fmt.Sprintf("out%d", i))
		args := append([]string{"score", "--input", in, "--output", out, "--scores-format", "csv", "--emit-neighbours", "--k", "10", "--block-rows", v.block, "--search-shape", v.shape}, v.flags...)
		run(t, false, args...)
		tasks := searchTasks(t, out)
		t.Logf("variant %d (%s, %v): %d tasks", i, v.shape, v.flags, tasks)
		if v.flags != nil && tasks < 3 {
			t.Errorf("variant %d: %d tasks; its budget or workers should have cut the search into several", i, tasks)
		}
		got := readScores(t, out)
		if first == nil {
			first = got
			continue
		}
		sameScores(t, fmt.Sprintf("variant %+v", v), got, first)
	}
}

// TestResultsIndependentOfShapesWithSketch scores data on which the knn sketch skips tiles
// (blocks of 4,096 rows or more, 128 dimensions, rows in tight concepts) as one block, as pairs
// of blocks and as streamed reference tiles, and requires identical scores and neighbours, with
// the manifest showing the sketch skipped tiles in every run.
func TestResultsIndependentOfShapesWithSketch(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the sketch sweep over search shapes in -short mode")
	}
	ctx := context.Background()
	o := synth.Defaults()
	o.Rows, o.Dim, o.Concepts, o.Spread = 9000, 128, 20, 0.3
	rows, err := synth.Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	if err := embdir.Write(ctx, in, synth.Split(rows, 2), embdir.WriteOptions{}); err != nil { // blocks of 4,500 rows
		t.Fatal(err)
	}
	var first map[string]scoreRow
	for i, v := range []struct {
		block, shape string
		flags        []string
	}{
		{"9000", "memory", nil},
		{"4500", "pairs", []string{"--worker-memory-mib", "80"}},  // diagonal blocks and pairs of blocks
		{"4500", "stream", []string{"--worker-memory-mib", "64"}}, // queries against reference tiles
	} {
		out := filepath.Join(dir, fmt.Sprintf("out%d", i))
		run(t, false, append([]string{"score", "--input", in, "--output", out, "--scores-format", "csv", "--emit-neighbours", "--k", "10",
			"--block-rows", v.block, "--search-shape", v.shape}, v.flags...)...)
		m := manifestSearch(t, out)
		t.Logf("%s, block rows %s %v: %d tasks, sketch skipped %d of %d tiles checked", v.shape, v.block, v.flags, m.Tasks, m.Sketch.Skipped, m.Sketch.Checked)
		if v.flags != nil && m.Tasks < 2 {
			t.Errorf("%s: %d search tasks; the memory budget should have cut the search", v.shape, m.Tasks)
		}
		if m.Sketch.Skipped == 0 || m.Sketch.Skipped > m.Sketch.Checked {
			t.Errorf("%s: manifest sketch figures %+v: want tiles skipped, no more than checked", v.shape, m.Sketch)
		}
		got := readScores(t, out)
		if first == nil {
			first = got
			continue
		}
		sameScores(t, v.shape, got, first)
	}
}

// sameScores fails unless every row of got has the score, flag and neighbours it has in want.
func sameScores(t *testing.T, what string, got, want map[string]scoreRow) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d scored rows, the first run had %d", what, len(got), len(want))
	}
	for id, g := range got {
		f := want[id]
		if g.Score != f.Score || g.Flagged != f.Flagged || strings.Join(g.ImageNbrs, " ") != strings.Join(f.ImageNbrs, " ") || strings.Join(g.TextNbrs, " ") != strings.Join(f.TextNbrs, " ") {
			t.Fatalf("%s: row %s = %+v, the first run had %+v", what, id, g, f)
		}
	}
}

// searchTasks is how many search tasks a run's manifest says it ran.
func searchTasks(t *testing.T, out string) int64 { return manifestSearch(t, out).Tasks }

// TestUniversalRunner submits the job to a standalone job server (prism's, started here) with
// --runner universal, as a cluster user would, and checks it matches the default runner.
func TestUniversalRunner(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the standalone job server in -short mode")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := prism.CreateJobServer(ctx, prism.Options{Port: port}); err != nil {
		t.Fatal(err)
	}
	in := writeDir(t, [][]dataset.Row{datasettest.Rows("a", 50, 8, 1), datasettest.Rows("b", 30, 8, 2)}, embdir.WriteOptions{})
	outs := []string{filepath.Join(t.TempDir(), "universal"), filepath.Join(t.TempDir(), "prism")}
	run(t, false, "score", "--input", in, "--output", outs[0], "--k", "5", "--scores-format", "csv",
		"--runner", "universal", "--endpoint", fmt.Sprintf("localhost:%d", port), "--environment_type", "LOOPBACK")
	run(t, false, "score", "--input", in, "--output", outs[1], "--k", "5", "--scores-format", "csv")
	a, b := readScores(t, outs[0]), readScores(t, outs[1])
	if len(a) != 80 || len(a) != len(b) {
		t.Fatalf("universal scored %d rows, prism %d, want 80", len(a), len(b))
	}
	for id, r := range a {
		if fmt.Sprint(r) != fmt.Sprint(b[id]) {
			t.Fatalf("row %s: universal %+v, prism %+v", id, r, b[id])
		}
	}
}
