package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"

	beamlog "github.com/apache/beam/sdks/v2/go/pkg/beam/log"

	"github.com/lemon-curation/lemon/storage"
)

// runnerFlag returns the value of one of Beam's flags ("" if it is not defined).
func runnerFlag(name string) string {
	if f := flag.Lookup(name); f != nil {
		return f.Value.String()
	}
	return ""
}

// workersShareDisk reports whether the job's workers run in or beside this process and so see
// its files: prism (in-process) or a LOOPBACK environment. Any other runner's workers are
// other processes, usually on other machines.
func workersShareDisk() bool {
	switch runnerFlag("runner") {
	case "", "prism", "direct":
		return true
	}
	return strings.EqualFold(runnerFlag("environment_type"), "loopback")
}

// jobPath is one path flag of a job, by its flag name.
type jobPath struct {
	flag string
	p    *string
}

// preparePaths makes the job's local paths absolute (workers and job servers do not share the
// launcher's working directory) and, when workers run elsewhere, refuses local ones, which
// they cannot read or write.
func preparePaths(paths ...jobPath) error {
	for _, jp := range paths {
		abs, err := storage.Abs(*jp.p)
		if err != nil {
			return fmt.Errorf("--%s %s: %w", jp.flag, *jp.p, err)
		}
		*jp.p = abs
	}
	if workersShareDisk() {
		return nil
	}
	for _, jp := range paths {
		if *jp.p != "" && storage.IsLocal(*jp.p) {
			return fmt.Errorf("--%s %s is a path on this machine, but --runner %s runs workers elsewhere, which cannot see this machine's disk: use storage every worker can reach (gs://bucket/...)", jp.flag, *jp.p, runnerFlag("runner"))
		}
	}
	return nil
}

// defaultWorkerBinary makes this binary the worker binary for runners whose workers are
// started by Beam's boot program, unless --worker_binary is given: lemon is a valid worker
// binary as it is (it enters Beam's worker harness when started with --worker=true), and
// without it Beam would try to compile lemon's source, which users of the binary do not have.
func defaultWorkerBinary() {
	f := flag.Lookup("worker_binary")
	if f == nil || f.Value.String() != "" || workersShareDisk() || runtime.GOOS != "linux" {
		return
	}
	if self, err := os.Executable(); err == nil {
		f.Value.Set(self)
	}
}

// isDryRun reports whether Beam's Dataflow runner will only build and print the job.
func isDryRun() bool {
	r := runnerFlag("runner")
	return (r == "dataflow" || r == "DataflowRunner") && runnerFlag("dry_run") == "true"
}

// isAsync reports whether the launcher returns once the job is submitted to a cluster; the
// job then finishes its run directory itself.
func isAsync() bool {
	return !workersShareDisk() && (runnerFlag("async") == "true" || runnerFlag("execute_async") == "true")
}

// printDryRun sends what Beam's Dataflow runner prints for --dry_run to stdout: it logs the
// job (JSON) at INFO, which lemon otherwise silences. Other log lines go to stderr, the INFO
// ones (the pipeline proto among them) only with --verbose.
func printDryRun(verbose bool) {
	beamlog.SetLogger(dryRunLogger{verbose})
}

type dryRunLogger struct{ verbose bool }

func (l dryRunLogger) Log(ctx context.Context, sev beamlog.Severity, _ int, msg string) {
	switch {
	case sev == beamlog.SevInfo && json.Valid([]byte(msg)):
		fmt.Println(msg)
	case sev > beamlog.SevInfo || l.verbose:
		fmt.Fprintln(os.Stderr, msg)
	}
}
