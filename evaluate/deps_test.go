package evaluate_test

import (
	"os/exec"
	"strings"
	"testing"
)

// eval and tune know a run only through its files and package rundir: they must not pull in the
// Beam pipeline (so they stay small, and a change to the job cannot change how runs are read).
func TestNoPipelineDependency(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/lemon-curation/lemon/evaluate", "github.com/lemon-curation/lemon/tune").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "github.com/lemon-curation/lemon/pipeline" || dep == "github.com/lemon-curation/lemon/transforms" || strings.HasPrefix(dep, "github.com/apache/beam/") {
			t.Errorf("eval or tune depends on %s", dep)
		}
	}
}
