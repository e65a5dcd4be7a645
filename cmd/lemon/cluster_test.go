package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lemon-curation/lemon/dataset/embdir"
	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/rundir"
	"github.com/lemon-curation/lemon/storage"
	"github.com/lemon-curation/lemon/synth"
	"github.com/lemon-curation/lemon/tiling"
)

// searchShapes are the neighbour-search shapes the multi-process test runs on separate worker
// processes: every shape package tiling knows, so a new or renamed shape is covered here too.
var searchShapes = tiling.Shapes

// TestWorkerMode: Beam's boot program starts the worker binary as `lemon --worker=true --id=...`
// with no subcommand; lemon must enter Beam's worker harness, which connects to the runner's
// endpoints (here a listener of the test's), rather than reject an unknown command.
func TestWorkerMode(t *testing.T) {
	for _, order := range []string{"worker first", "worker last"} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ep := l.Addr().String()
		args := []string{"--worker=true", "--id=w1", "--logging_endpoint=" + ep, "--control_endpoint=" + ep}
		if order == "worker last" {
			args = []string{"--id=w1", "--control_endpoint=" + ep, "--logging_endpoint=" + ep, "-worker"}
		}
		var out bytes.Buffer
		cmd := exec.Command(lemonBin, args...)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		connected := make(chan error, 1)
		go func() {
			c, err := l.Accept()
			if err == nil {
				c.Close()
			}
			connected <- err
		}()
		select {
		case err := <-connected:
			if err != nil {
				t.Fatal(err)
			}
			cmd.Process.Kill()
			<-exited
		case err := <-exited:
			t.Fatalf("%s: lemon %v exited (%v) without connecting to the runner:\n%s", order, args, err, out.String())
		case <-time.After(time.Minute):
			cmd.Process.Kill()
			t.Fatalf("%s: lemon %v did not connect to the runner within a minute:\n%s", order, args, out.String())
		}
		l.Close()
	}
}

// clusterTools builds, once, the programs a cluster would run, from the module cache: prism as
// a standalone job server, Beam's Go boot program (the workers' entrypoint on Dataflow and
// Flink) and fake-gcs-server. They build in a copy of go.mod and go.sum, so the project's own
// files stay untouched.
var clusterTools = sync.OnceValues(func() (string, error) {
	dir := filepath.Join(filepath.Dir(lemonBin), "tools")
	mod := filepath.Join(dir, "mod")
	if err := os.MkdirAll(mod, 0o755); err != nil {
		return "", err
	}
	root, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(strings.TrimSpace(string(root))), f))
		if err != nil {
			return "", err
		}
		if f == "go.mod" {
			b = bytes.Replace(b, []byte("module github.com/lemon-curation/lemon"), []byte("module lemontools"), 1)
		}
		if err := os.WriteFile(filepath.Join(mod, f), b, 0o644); err != nil {
			return "", err
		}
	}
	cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/apache/beam/sdks/v2/go/cmd/prism",
		"github.com/apache/beam/sdks/v2/go/container", "github.com/fsouza/fake-gcs-server")
	cmd.Dir, cmd.Env = mod, append(os.Environ(), "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building prism, boot and fake-gcs-server: %v\n%s", err, out)
	}
	// prism 2.77 starts a PROCESS environment as `COMMAND --id='ID' --provision_endpoint=...`,
	// with literal quotes around the id, which boot would pass on as part of the worker id and
	// the job server would then not recognise. This wrapper strips them: a workaround for the
	// test harness only (Dataflow and Flink start boot themselves).
	// Its work directory goes under $LEMON_TEST_WORKDIR, which names the test's processes
	// for watchWorkers.
	wrapper := `#!/bin/sh
for a in "$@"; do
  case "$a" in
    --id=*) set -- "$@" "$(printf %s "$a" | tr -d "'")" ;;
    *) set -- "$@" "$a" ;;
  esac
  shift
done
dir=$(mktemp -d "${LEMON_TEST_WORKDIR:?}/boot.XXXXXX")
cd "$dir" # boot writes pipeline_options.json into its working directory
exec "` + filepath.Join(dir, "container") + `" --semi_persist_dir="$dir" "$@"
`
	return dir, os.WriteFile(filepath.Join(dir, "boot"), []byte(wrapper), 0o755)
})

// freePort returns a TCP port free at the time of the call.
func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startProcess starts a server process for the test's duration, logging to a file, and waits
// until it accepts connections on port.
func startProcess(t *testing.T, port int, name string, args ...string) {
	log, err := os.Create(filepath.Join(t.TempDir(), filepath.Base(name)+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		log.Close()
	})
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return
		}
	}
	b, _ := os.ReadFile(log.Name())
	t.Fatalf("%s did not start listening on %d:\n%s", name, port, b)
}

// gcsEmulator starts fake-gcs-server as its own process, creates bucket, and points this
// process and the lemon processes it starts at it. It returns the emulator's host:port.
func gcsEmulator(t *testing.T, tools, bucket string) string {
	port := freePort(t)
	host := fmt.Sprintf("127.0.0.1:%d", port)
	startProcess(t, port, filepath.Join(tools, "fake-gcs-server"), "-scheme", "http", "-host", "127.0.0.1",
		"-port", fmt.Sprint(port), "-backend", "memory", "-public-host", host, "-external-url", "http://"+host, "-log-level", "warn")
	resp, err := http.Post("http://"+host+"/storage/v1/b?project=test", "application/json", strings.NewReader(`{"name":"`+bucket+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("creating bucket %s: %s", bucket, resp.Status)
	}
	t.Setenv("STORAGE_EMULATOR_HOST", host)
	return host
}

// TestSeparateProcessesOnGCS runs `lemon score` the way a cluster does, every piece its own
// process: fake-gcs-server over HTTP for gs:// storage, prism as a standalone job server, and
// workers started through Beam's boot program in PROCESS mode (lemon staged as the worker
// binary), submitted by deploy/flink/submit.sh (Beam's flink runner is the portable runner,
// so prism's job server takes its job). Input, output and temporary blocks are on gs://. For
// every search shape and a sampled reference, every output file must be byte-identical to an
// in-process run on local paths, and the job itself must remove its blocks and finish the
// manifest.
func TestSeparateProcessesOnGCS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds prism, boot and fake-gcs-server and runs separate processes")
	}
	tools, err := clusterTools()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	gcsHost := gcsEmulator(t, tools, "lemon")
	workdir := t.TempDir()
	watchWorkers(t, workdir) // at the end it also kills what prism (stopped first) leaves running
	jobPort := freePort(t)
	startProcess(t, jobPort, filepath.Join(tools, "prism"), "--job_port", fmt.Sprint(jobPort), "--serve_http=false", "--log_level", "warn")

	o := synth.Defaults()
	o.Rows, o.Dim = 400, 16
	rows, err := synth.Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	rows[17].Image = make([]float32, o.Dim) // a zero vector: the row goes to errors/
	rows[250].ID = rows[3].ID               // a duplicate id in another shard: errors/ too
	localIn := filepath.Join(t.TempDir(), "in")
	for _, dir := range []string{localIn, "gs://lemon/in"} {
		if err := embdir.Write(ctx, dir, synth.Split(rows, 3), embdir.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	fixCfg, _ := filepath.Abs("../../configs/lemon-fix.yaml")
	envCfg, _ := json.Marshal(map[string]any{"command": filepath.Join(tools, "boot"), "env": map[string]string{"STORAGE_EMULATOR_HOST": gcsHost, "LEMON_TEST_WORKDIR": workdir}})

	// remote holds flags for the cluster run only: with --async the launcher returns once the
	// job is submitted, and the job must still remove its blocks and finish its manifest.
	type job struct{ name, flags, remote string }
	var jobs []job
	for _, shape := range searchShapes {
		jobs = append(jobs, job{string(shape), "--search-shape " + string(shape), ""})
	}
	jobs = append(jobs, job{"sample", "--reference-sample 150 --seed 3", ""}, job{"async", "--search-shape " + string(searchShapes[0]), "--async"})
	for _, j := range jobs {
		t.Run(j.name, func(t *testing.T) {
			flags := append([]string{"--k", "5", "--block-rows", "64"}, strings.Fields(j.flags)...)
			local := filepath.Join(t.TempDir(), "out")
			run(t, false, append([]string{"score", "--config", fixCfg, "--input", localIn, "--output", local}, flags...)...)

			remote, tmp := "gs://lemon/out/"+j.name, "gs://lemon/tmp/"+j.name
			cctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(cctx, "../../deploy/flink/submit.sh", append(append([]string{"--"}, flags...), strings.Fields(j.remote)...)...)
			cmd.Env = append(os.Environ(), "LEMON="+lemonBin, "WORKER_BINARY="+lemonBin, "LEMON_CONFIG="+fixCfg,
				"INPUT=gs://lemon/in", "OUTPUT="+remote, "TEMP_DIR="+tmp, fmt.Sprintf("JOB_SERVER=localhost:%d", jobPort),
				"ENVIRONMENT_TYPE=PROCESS", "ENVIRONMENT_CONFIG="+string(envCfg), "PARALLELISM=2")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("submit.sh: %v\n%s", err, out)
			}
			if j.remote == "--async" && !strings.Contains(string(out), "job submitted") {
				t.Fatalf("an --async launcher did not return at submission:\n%s", out)
			}
			for { // the job goes on after an --async launcher, and marks its run complete itself
				m, err := rundir.ReadManifest(ctx, remote)
				if err == nil && m.Status == rundir.Complete {
					break
				}
				if cctx.Err() != nil {
					t.Fatalf("the submitted job's run never completed: %+v, %v", m, err)
				}
				time.Sleep(200 * time.Millisecond)
			}

			sawDuplicate := false
			for _, sub := range []string{"scores", "kept", "rejected", "errors"} {
				// At any depth: the splits of a clip-retrieval input are clip-retrieval folders.
				want, _ := storage.Walk(ctx, filepath.Join(local, sub))
				got, err := storage.Walk(ctx, storage.Join(remote, sub))
				if err != nil || len(got) != len(want) || len(want) == 0 {
					t.Fatalf("%s: %d files on gs:// (%v), %d local", sub, len(got), err, len(want))
				}
				for i, f := range want {
					a, _ := os.ReadFile(f)
					b, err := storage.ReadFile(ctx, got[i])
					if sub == "errors" && strings.HasSuffix(f, ".parquet") {
						// Reasons name input files (a duplicate id's first occurrence), which
						// differ only by the input's location.
						a = []byte(strings.Join(columns(t, f, "key", "reason"), "\n"))
						b = []byte(strings.ReplaceAll(strings.Join(columns(t, got[i], "key", "reason"), "\n"), "gs://lemon/in", localIn))
						sawDuplicate = sawDuplicate || bytes.Contains(a, []byte("duplicate id"))
					}
					if err != nil || strings.TrimPrefix(got[i], remote) != strings.TrimPrefix(f, local) || !bytes.Equal(a, b) {
						t.Fatalf("%s differs from the local run's %s (%v)", got[i], f, err)
					}
				}
			}
			if !sawDuplicate {
				t.Fatal("no row in errors/ has the duplicate id's reason")
			}
			var lm, rm struct {
				Counts     map[string]int64   `json:"counts"`
				FinishedAt time.Time          `json:"finished_at"`
				Timings    map[string]float64 `json:"timings"`
				TempDir    string             `json:"temp_dir"`
			}
			lb, _ := os.ReadFile(filepath.Join(local, "manifest.json"))
			rb, err := storage.ReadFile(ctx, storage.Join(remote, "manifest.json"))
			if err != nil || json.Unmarshal(lb, &lm) != nil || json.Unmarshal(rb, &rm) != nil {
				t.Fatalf("reading the manifests: %v", err)
			}
			if fmt.Sprint(lm.Counts) != fmt.Sprint(rm.Counts) || rm.Counts["rows_in"] != 400 || rm.Counts["errors"] != 2 {
				t.Fatalf("manifest counts %v on gs://, %v local; want 400 rows in, 2 errors", rm.Counts, lm.Counts)
			}
			if rm.FinishedAt.IsZero() || rm.Timings["wall_seconds"] <= 0 {
				t.Fatalf("the job did not finish its manifest: finished_at %v, timings %v", rm.FinishedAt, rm.Timings)
			}
			if !strings.HasPrefix(rm.TempDir, tmp+"/run-") {
				t.Fatalf("the run's temporary folder %q is not a folder of its own under --temp-dir %s", rm.TempDir, tmp)
			}
			for _, sub := range []string{"blocks", "partials"} {
				if left, _ := storage.List(ctx, storage.Join(rm.TempDir, sub, "*")); len(left) != 0 {
					t.Fatalf("the job left %d temporary files, e.g. %s", len(left), left[0])
				}
			}
			if storage.Exists(ctx, storage.Join(remote, rundir.LockFile)) {
				t.Fatal("the job did not release its output's lock")
			}
		})
	}
}

// columns reads the named string columns of a Parquet file (local or gs://), row by row.
func columns(t *testing.T, p string, names ...string) []string {
	t.Helper()
	rr, err := metadata.Open(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	defer rr.Release()
	var rows []string
	for rr.Next() {
		var cols [][]string
		for _, n := range names {
			v, _, err := metadata.StringColumn(p, rr.RecordBatch(), n)
			if err != nil {
				t.Fatal(err)
			}
			cols = append(cols, v)
		}
		for i := range cols[0] {
			var r []string
			for _, c := range cols {
				r = append(r, c[i])
			}
			rows = append(rows, strings.Join(r, "\t"))
		}
	}
	return rows
}

// watchWorkers keeps track of the processes the test's jobs start (boot and the lemon workers
// it runs, known by their --semi_persist_dir under workdir) and, when the test ends, kills
// those still running and removes the worker binaries boot copied to /tmp/binNNN/. Beam's
// harness keeps a worker alive after its work is done until something kills it; on a cluster
// the container goes, here nothing would. Workers that exit earlier are seen while they run.
func watchWorkers(t *testing.T, workdir string) {
	var mu sync.Mutex
	copies := map[string]bool{}
	scan := func(kill bool) {
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			b, err := os.ReadFile(p)
			if err != nil || !bytes.Contains(b, []byte("--semi_persist_dir="+workdir+"/")) {
				continue
			}
			dir := filepath.Dir(p)
			if exe, _ := os.Readlink(filepath.Join(dir, "exe")); strings.HasPrefix(exe, "/tmp/bin") && filepath.Base(exe) == "worker" {
				mu.Lock()
				copies[filepath.Dir(exe)] = true
				mu.Unlock()
			}
			var pid int
			fmt.Sscan(filepath.Base(dir), &pid)
			if proc, err := os.FindProcess(pid); err == nil && kill {
				proc.Kill()
			}
		}
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(200 * time.Millisecond):
				scan(false)
			}
		}
	}()
	t.Cleanup(func() {
		close(done)
		scan(true)
		mu.Lock()
		defer mu.Unlock()
		for d := range copies {
			os.RemoveAll(d)
		}
	})
}
