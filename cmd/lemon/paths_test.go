package main_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/datasettest"
	"github.com/lemon-curation/lemon/dataset/embdir"
)

// TestJobPaths: relative paths become absolute in the job; --input and --output are compared
// cleaned; a cluster runner refuses local paths before submitting anything; the job removes
// its blocks from --temp-dir but nothing else there.
func TestJobPaths(t *testing.T) {
	in := writeDir(t, [][]dataset.Row{datasettest.Rows("p", 40, 8, 1)}, embdir.WriteOptions{})
	dir := filepath.Dir(in)

	out := run(t, true, "score", "--input", filepath.Join(dir, ".", "in"), "--output", in+"/", "--k", "3")
	if !strings.Contains(out, "--output must differ from --input") {
		t.Fatalf("same directory spelled two ways was not caught:\n%s", out)
	}

	for _, runner := range [][]string{{"--runner", "flink", "--endpoint", "localhost:1"}, {"--runner", "dataflow", "--dry_run", "--project", "p", "--region", "r", "--staging_location", "gs://b/s"}} {
		out = run(t, true, append([]string{"score", "--input", in, "--output", "gs://b/out", "--k", "3"}, runner...)...)
		if !strings.Contains(out, "--input "+in+" is a path on this machine") || !strings.Contains(out, "gs://") {
			t.Fatalf("%v with a local --input: want a refusal naming it\n%s", runner, out)
		}
	}

	tmp := filepath.Join(dir, "shared-tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(tmp, "someone-else.txt"), []byte("keep"), 0o644)
	cmd := exec.Command(lemonBin, "score", "--input", "in", "--output", "out", "--temp-dir", "shared-tmp", "--k", "3")
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("relative paths: %v\n%s", err, b)
	}
	b, err := os.ReadFile(filepath.Join(dir, "out", "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Input   string            `json:"input"`
		Outputs map[string]string `json:"outputs"`
	}
	json.Unmarshal(b, &m)
	if m.Input != in || m.Outputs["dir"] != filepath.Join(dir, "out") {
		t.Fatalf("manifest input %q, output %q; want the absolute %s and %s", m.Input, m.Outputs["dir"], in, filepath.Join(dir, "out"))
	}
	if _, err := os.Stat(filepath.Join(tmp, "blocks")); !os.IsNotExist(err) {
		t.Fatalf("the job left its blocks in %s (%v)", tmp, err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "someone-else.txt")); err != nil {
		t.Fatalf("the job removed a file it did not write from the temp dir: %v", err)
	}
}
