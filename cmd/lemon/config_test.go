package main_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/datasettest"
	"github.com/lemon-curation/lemon/dataset/embdir"
)

func manifestParams(t *testing.T, out string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Params map[string]any `json:"params"`
		Filter map[string]any `json:"filter"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m.Params["filter"] = m.Filter
	return m.Params
}

// TestConfigFileAndFlagPrecedence: a YAML config sets parameters, explicit flags override it,
// and a misspelt key is an error rather than a silently ignored setting.
func TestConfigFileAndFlagPrecedence(t *testing.T) {
	in := writeDir(t, [][]dataset.Row{datasettest.Rows("a", 60, 8, 1)}, embdir.WriteOptions{})
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(cfg, []byte("k: 7\nbeta: 2.5\ndistance: euclidean\nreject_fraction: 0.2\n"), 0o644)
	out := filepath.Join(t.TempDir(), "out")
	run(t, false, "score", "--config", cfg, "--input", in, "--output", out, "--k", "9")
	p := manifestParams(t, out)
	if p["k"] != 9.0 || p["beta"] != 2.5 || p["distance"] != "euclidean" || p["gamma"] != 5.0 {
		t.Errorf("params %v: want k 9 (flag), beta 2.5 and euclidean (config), gamma 5 (default)", p)
	}
	if f := p["filter"].(map[string]any); f["reject_fraction"] != 0.2 {
		t.Errorf("filter %v, want reject_fraction 0.2 from the config", f)
	}
	// The shipped preset parses and matches the built-in defaults.
	out2 := filepath.Join(t.TempDir(), "out")
	run(t, false, "score", "--config", "../../configs/lemon-fix.yaml", "--input", in, "--output", out2)
	if p := manifestParams(t, out2); p["k"] != 30.0 || p["tau1n"] != 0.1 || p["tau2m"] != 5.0 {
		t.Errorf("lemon-fix.yaml params %v", p)
	}
	os.WriteFile(cfg, []byte("k: 7\nbetta: 3\n"), 0o644)
	msg := run(t, true, "score", "--config", cfg, "--input", in, "--output", out)
	if !strings.Contains(msg, "betta") {
		t.Errorf("unknown key: error does not name it:\n%s", msg)
	}
}

// TestHelpListsFlags: --help documents lemon's flags and the runner flags, and exits cleanly.
func TestHelpListsFlags(t *testing.T) {
	msg := run(t, false, "score", "--help")
	for _, w := range []string{"--input", "--reject-fraction", "--reference-sample", "--runner", "LEMoN_fix"} {
		if !strings.Contains(msg, w) {
			t.Errorf("help does not mention %s", w)
		}
	}
}
