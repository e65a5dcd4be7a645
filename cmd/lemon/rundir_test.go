package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runManifest is what these tests read of a run's manifest.
type runManifest struct {
	Status  string           `json:"status"`
	RunID   string           `json:"run_id"`
	Error   string           `json:"error"`
	TempDir string           `json:"temp_dir"`
	Counts  map[string]int64 `json:"counts"`
}

func readRunManifest(t *testing.T, out string) runManifest {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m runManifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// filesIn lists the files under dir (recursively), relative to it.
func filesIn(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

// TestRerunRefusesOrReplaces: a second run into an output that holds a run is refused, naming
// --overwrite; with --overwrite the output holds only the new run's files, so a 2-shard run
// over a 4-shard one leaves 2 shards' rows (it left 12,000 rows under a manifest of 2,000).
func TestRerunRefusesOrReplaces(t *testing.T) {
	dir := t.TempDir()
	in4, in2, out := filepath.Join(dir, "in4"), filepath.Join(dir, "in2"), filepath.Join(dir, "out")
	run(t, false, "dev", "make-dataset", "--out", in4, "--rows", "800", "--dim", "16", "--shards", "4")
	run(t, false, "dev", "make-dataset", "--out", in2, "--rows", "300", "--dim", "16", "--shards", "2", "--seed", "9")
	run(t, false, "score", "--input", in4, "--output", out, "--k", "5", "--scores-format", "csv")
	msg := run(t, true, "score", "--input", in2, "--output", out, "--k", "5", "--scores-format", "csv")
	if !strings.Contains(msg, "already holds a run") || !strings.Contains(msg, "--overwrite") {
		t.Fatalf("a rerun into a used output said %q; want a refusal naming --overwrite", msg)
	}
	if m := readRunManifest(t, out); m.Status != "complete" || m.Counts["rows_in"] != 800 {
		t.Fatalf("the refused rerun changed the first run's manifest: %+v", m)
	}
	run(t, false, "score", "--input", in2, "--output", out, "--k", "5", "--scores-format", "csv", "--overwrite")
	m := readRunManifest(t, out)
	if m.Status != "complete" || m.Counts["rows_in"] != 300 {
		t.Fatalf("after --overwrite the manifest is %+v, want a complete run of 300 rows", m)
	}
	var parts []string
	for _, f := range filesIn(t, out) {
		if strings.Contains(f, "part-") {
			parts = append(parts, f)
		}
	}
	if got := strings.Join(parts, " "); strings.Contains(got, "part-00002") || strings.Contains(got, "part-00003") || !strings.Contains(got, "scores/part-00001.csv") {
		t.Fatalf("after --overwrite the output holds %v: the earlier run's shards 2 and 3 are still there", parts)
	}
	if rows := readScores(t, out); len(rows) != 300 {
		t.Fatalf("scores hold %d rows, the manifest 300", len(rows))
	}
}

// startScore starts `lemon score` and returns it running.
func startScore(t *testing.T, args ...string) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(lemonBin, append([]string{"score"}, args...)...)
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, &log
}

// waitForSearch waits until a run's log says the neighbour search has begun (its temporary
// blocks are written).
func waitForSearch(t *testing.T, log *strings.Builder) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(log.String(), "lemon: neighbour search: ") {
			return
		}
	}
	t.Fatalf("the search never began:\n%s", log.String())
}

// TestKilledAndInterruptedRuns: a run killed mid-search leaves a manifest that says it did not
// finish (not an old or complete-looking one) and its lock; the next run says so and, with
// --overwrite, removes what the killed run left, its temporary blocks included. A run stopped
// with SIGTERM marks itself interrupted, removes its temporary files and releases its lock.
func TestKilledAndInterruptedRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("scores a 20,000-row dataset three times")
	}
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	run(t, false, "dev", "make-dataset", "--out", in, "--rows", "20000", "--dim", "256", "--shards", "4")
	args := []string{"--input", in, "--output", out, "--k", "10", "--scores-format", "csv"}
	score := func(wantFail bool, extra ...string) string {
		return run(t, wantFail, append(append([]string{"score"}, args...), extra...)...)
	}

	cmd, log := startScore(t, args...)
	waitForSearch(t, log)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	killed := readRunManifest(t, out)
	if killed.Status != "running" || len(filesIn(t, killed.TempDir)) == 0 {
		t.Fatalf("after a kill: manifest %+v, temporary files %v; want status running and the blocks left", killed, filesIn(t, killed.TempDir))
	}
	msg := score(true)
	if !strings.Contains(msg, "did not finish") || !strings.Contains(msg, "--overwrite") {
		t.Fatalf("a rerun over a killed run said %q", msg)
	}

	cmd, log = startScore(t, append(args, "--overwrite")...)
	waitForSearch(t, log)
	if _, err := os.Stat(killed.TempDir); !os.IsNotExist(err) {
		t.Errorf("--overwrite left the killed run's temporary folder %s", killed.TempDir)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	m := readRunManifest(t, out)
	if err == nil || m.Status != "interrupted" || !strings.Contains(log.String(), "stopped by a signal") {
		t.Fatalf("after SIGTERM: exit %v, manifest %+v, log:\n%s", err, m, log.String())
	}
	if files := filesIn(t, filepath.Join(out, ".lemon-tmp")); len(files) > 0 {
		t.Errorf("an interrupted run left temporary files %v", files)
	}
	if _, err := os.Stat(filepath.Join(out, ".lemon-run.lock")); !os.IsNotExist(err) {
		t.Error("an interrupted run left its lock")
	}
	score(false, "--overwrite")
	if m := readRunManifest(t, out); m.Status != "complete" || m.Counts["rows_in"] != 20000 {
		t.Fatalf("the run after them: %+v", m)
	}
}

// TestConcurrentRuns: two runs into one output cannot both write it (the second is refused while
// the first holds it); two runs on different data sharing one --temp-dir, at once, both give
// the scores they give alone (block files carried no run id, and the first run to finish
// deleted all of them).
func TestConcurrentRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("runs several jobs at once")
	}
	dir := t.TempDir()
	temp := filepath.Join(dir, "shared-temp")
	var ins []string
	for i := range 2 {
		in := filepath.Join(dir, fmt.Sprint("in", i))
		run(t, false, "dev", "make-dataset", "--out", in, "--rows", "12000", "--dim", "128", "--shards", "3", "--seed", fmt.Sprint(i+1))
		ins = append(ins, in)
	}
	common := []string{"--k", "10", "--scores-format", "csv", "--emit-neighbours"}

	busy := filepath.Join(dir, "busy")
	cmd, log := startScore(t, append([]string{"--input", ins[0], "--output", busy}, common...)...)
	waitForSearch(t, log)
	msg := run(t, true, append([]string{"score", "--input", ins[1], "--output", busy, "--overwrite"}, common...)...)
	if !strings.Contains(msg, "in use by run") {
		t.Fatalf("a second run into a busy output said %q; want it refused", msg)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the first run failed after a second one tried its output: %v\n%s", err, log.String())
	}

	var cmds []*exec.Cmd
	var logs []*strings.Builder
	for i, in := range ins {
		c, l := startScore(t, append([]string{"--input", in, "--output", filepath.Join(dir, fmt.Sprint("shared", i)), "--temp-dir", temp}, common...)...)
		cmds, logs = append(cmds, c), append(logs, l)
	}
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("run %d sharing a temporary directory failed: %v\n%s", i, err, logs[i].String())
		}
	}
	for i, in := range ins {
		alone := filepath.Join(dir, fmt.Sprint("alone", i))
		run(t, false, append([]string{"score", "--input", in, "--output", alone}, common...)...)
		a, b := readScores(t, alone), readScores(t, filepath.Join(dir, fmt.Sprint("shared", i)))
		if len(a) != 12000 || len(b) != len(a) {
			t.Fatalf("run %d: %d rows alone, %d sharing the temporary directory", i, len(a), len(b))
		}
		for id, r := range a {
			if fmt.Sprint(r) != fmt.Sprint(b[id]) {
				t.Fatalf("run %d, row %s: %+v alone, %+v sharing the temporary directory", i, id, r, b[id])
			}
		}
	}
	if files := filesIn(t, temp); len(files) > 0 {
		t.Errorf("the shared temporary directory still holds %v", files)
	}
}
