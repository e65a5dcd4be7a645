package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/goccy/go-yaml"

	"github.com/lemon-curation/lemon/dataset/embdir"
	"github.com/lemon-curation/lemon/storage"
	"github.com/lemon-curation/lemon/synth"
)

// inProcessGCS starts a fake GCS server inside the test with the given buckets and points this
// process and the lemon processes it starts at it.
func inProcessGCS(t *testing.T, buckets ...string) {
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", Port: 0, PublicHost: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	for _, b := range buckets {
		srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: b})
	}
	t.Setenv("STORAGE_EMULATOR_HOST", strings.TrimPrefix(srv.URL(), "http://"))
}

// script runs one of deploy/'s scripts with extra environment and returns its stdout.
func script(t *testing.T, name string, env []string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(filepath.Join("..", "..", "deploy", name), args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = append(os.Environ(), env...), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("deploy/%s %v: %v\n%s%s", name, args, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// words splits a command line printed with bash's printf %q back into its arguments, as bash
// would run it.
func words(t *testing.T, line string) []string {
	t.Helper()
	out, err := exec.Command("bash", "-c", `eval "set -- $1"; printf '%s\0' "$@"`, "words", line).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
}

// TestDataflowGPUDryRun: deploy/dataflow/submit.sh with configs/dataflow-gpu.env and lemon's
// --dry_run builds the Dataflow job offline against a GCS emulator (lemon plans the gs://
// input; Beam's runner checks the staging bucket) and prints it on stdout, with the GPU
// machine type, the accelerator service option and the worker settings of the config, exit 0
// and no manifest.
func TestDataflowGPUDryRun(t *testing.T) {
	inProcessGCS(t, "lemon", "lemon-staging")
	ctx := context.Background()
	o := synth.Defaults()
	o.Rows, o.Dim = 200, 16
	rows, _ := synth.Generate(o)
	if err := embdir.Write(ctx, "gs://lemon/in", synth.Split(rows, 2), embdir.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	env := []string{"LEMON=" + lemonBin, "PROJECT=test-project", "STAGING=gs://lemon-staging/df",
		"INPUT=gs://lemon/in", "OUTPUT=gs://lemon/out", "TEMP_DIR=gs://lemon/tmp"}
	// The script's own dry run prints the command it would run.
	cmdline := words(t, strings.TrimSpace(script(t, "dataflow/submit.sh", env, "--dry-run")))
	for _, want := range [][]string{{"--runner", "dataflow"}, {"--worker_machine_type", "g2-standard-8"},
		{"--dataflow_service_options", "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"}, {"--input", "gs://lemon/in"}} {
		if i := slices.Index(cmdline, want[0]); i < 0 || i+1 >= len(cmdline) || cmdline[i+1] != want[1] {
			t.Fatalf("submit.sh --dry-run printed %q, want %s %s in it", cmdline, want[0], want[1])
		}
	}

	out := script(t, "dataflow/submit.sh", env, "--", "--dry_run")
	var job struct {
		Environment struct {
			ServiceOptions []string `json:"serviceOptions"`
			WorkerPools    []struct {
				MachineType         string `json:"machineType"`
				NumThreadsPerWorker int    `json:"numThreadsPerWorker"`
				DiskSizeGb          int    `json:"diskSizeGb"`
				Autoscaling         struct {
					MaxNumWorkers int `json:"maxNumWorkers"`
				} `json:"autoscalingSettings"`
			} `json:"workerPools"`
		} `json:"environment"`
	}
	if err := json.Unmarshal([]byte(out), &job); err != nil {
		t.Fatalf("stdout is not the job's JSON: %v\n%.2000s", err, out)
	}
	e := job.Environment
	if len(e.WorkerPools) != 1 {
		t.Fatalf("%d worker pools in the printed job, want 1", len(e.WorkerPools))
	}
	wp := e.WorkerPools[0]
	if wp.MachineType != "g2-standard-8" || wp.NumThreadsPerWorker != 1 || wp.DiskSizeGb != 50 || wp.Autoscaling.MaxNumWorkers != 8 {
		t.Fatalf("worker pool %+v, want configs/dataflow-gpu.env's g2-standard-8, 1 thread, 50 GB, at most 8 workers", wp)
	}
	if !slices.Contains(e.ServiceOptions, "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver") {
		t.Fatalf("service options %q lack the GPU accelerator", e.ServiceOptions)
	}
	if !strings.Contains(out, "us-docker.pkg.dev/my-project/lemon/worker-cuda:0.1.0") {
		t.Fatal("the printed job does not run the CUDA worker image")
	}
	if storage.Exists(ctx, "gs://lemon/out/manifest.json") {
		t.Fatal("a dry run wrote a manifest")
	}
}

// TestFlinkSubmitDryRun: deploy/flink/submit.sh --dry-run prints the lemon command it would
// run: the configured job, on Beam's flink runner, with lemon's flags after -- appended (the
// multi-process test runs this script for real against prism's job server).
func TestFlinkSubmitDryRun(t *testing.T) {
	env := []string{"LEMON=/opt/lemon/bin/lemon", "INPUT=gs://b/in", "OUTPUT=gs://b/out dir", "TEMP_DIR=gs://b/tmp"}
	got := words(t, strings.TrimSpace(script(t, "flink/submit.sh", env, "--dry-run", "--", "--search-shape", "pairs")))
	want := []string{"/opt/lemon/bin/lemon", "score", "--config", "configs/laion-sample.yaml",
		"--input", "gs://b/in", "--output", "gs://b/out dir", "--temp-dir", "gs://b/tmp",
		"--runner", "flink", "--endpoint", "localhost:8099",
		"--environment_type", "EXTERNAL", "--environment_config", "localhost:50000",
		"--worker_binary", "deploy/out/lemon-worker", "--parallelism", "8", "--search-shape", "pairs"}
	if !slices.Equal(got, want) {
		t.Fatalf("submit.sh --dry-run printed\n%q\nwant\n%q", got, want)
	}
}

// TestBuildScriptDryRun: deploy/dataflow/build.sh --dry-run prints the docker build of the
// chosen Dockerfile (which must exist) for the image given.
func TestBuildScriptDryRun(t *testing.T) {
	for _, c := range []struct{ flag, dockerfile string }{{"--dry-run", "deploy/dataflow/Dockerfile"}, {"--cuda", "deploy/dataflow/Dockerfile.cuda"}} {
		out := script(t, "dataflow/build.sh", nil, "--dry-run", c.flag, "registry/lemon:1")
		first := strings.SplitN(out, "\n", 2)[0]
		if want := "docker build -f " + c.dockerfile + " -t registry/lemon:1 . "; first != want {
			t.Fatalf("build.sh %s printed %q first, want %q", c.flag, first, want)
		}
		if _, err := os.Stat(filepath.Join("..", "..", c.dockerfile)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFlinkComposeValidates: deploy/flink/compose.yaml is a valid Compose file (checked by
// docker-compose, which scripts/setup.sh installs; no Docker engine is needed), with lemon's
// worker pool beside the task manager and the job server where configs/flink.env submits.
// A broken copy must fail the same check.
func TestFlinkComposeValidates(t *testing.T) {
	dc, err := exec.LookPath("docker-compose")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("docker-compose missing in CI (scripts/setup.sh installs it)")
		}
		t.Skip("docker-compose not installed (scripts/setup.sh installs it)")
	}
	file := filepath.Join("..", "..", "deploy", "flink", "compose.yaml")
	out, err := exec.Command(dc, "-f", file, "config").CombinedOutput()
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	var cfg struct {
		Services map[string]struct {
			Image       string `yaml:"image"`
			NetworkMode string `yaml:"network_mode"`
			Command     any    `yaml:"command"`
			Ports       []struct {
				Published any `yaml:"published"`
				Target    int `yaml:"target"`
			} `yaml:"ports"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	w, js := cfg.Services["lemon-worker"], cfg.Services["jobserver"]
	if w.NetworkMode != "service:taskmanager" || fmt.Sprint(w.Command) != "[--worker_pool]" {
		t.Fatalf("lemon-worker %+v: want Beam's boot as a worker pool in the task manager's network namespace", w)
	}
	if !strings.Contains(js.Image, "flink") || !strings.Contains(js.Image, "job_server") || len(js.Ports) == 0 || js.Ports[0].Target != 8099 {
		t.Fatalf("jobserver %+v: want Beam's Flink job server on 8099 (configs/flink.env's JOB_SERVER)", js)
	}
	broken := filepath.Join(t.TempDir(), "compose.yaml")
	b, _ := os.ReadFile(file)
	os.WriteFile(broken, bytes.Replace(b, []byte("network_mode:"), []byte("network_mod:"), 1), 0o644)
	if out, err := exec.Command(dc, "-f", broken, "config", "-q").CombinedOutput(); err == nil {
		t.Fatalf("docker-compose accepted a compose file with an unknown key:\n%s", out)
	}
}
