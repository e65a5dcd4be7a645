package rundir

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lemon-curation/lemon/storage"
)

func newRun(out string) *Manifest {
	id := NewRunID()
	return &Manifest{Header: Header{Tool: "lemon", RunID: id, TempDir: TempDir(storage.Join(out, TempDirName), id), StartedAt: time.Now().UTC()},
		Outputs: map[string]string{"dir": out}}
}

func write(t *testing.T, p, data string) {
	t.Helper()
	if err := storage.WriteFile(context.Background(), p, []byte(data)); err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one saying %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not say %q", err, p)
		}
	}
}

// TestLifecycle runs a run from Begin to Finish and a second run into the same output, on local
// disk and on an object store without directories (memfs).
func TestLifecycle(t *testing.T) {
	for _, root := range []string{t.TempDir(), "memfs://lifecycle"} {
		t.Run(storage.Scheme(root), func(t *testing.T) {
			ctx := context.Background()
			out := storage.Join(root, "out")
			first := newRun(out)
			start := Start{Out: out, Dirs: ScoreDirs, Files: ScoreFiles}
			if err := Begin(ctx, start, first); err != nil {
				t.Fatal(err)
			}
			if m, err := ReadManifest(ctx, out); err != nil || m.Status != Running || m.RunID != first.RunID {
				t.Fatalf("after Begin the manifest is %+v, %v; want run %s running", m, err, first.RunID)
			}
			_, err := RequireComplete(ctx, out)
			wantErr(t, err, "has not finished", first.RunID)

			// A second run while the first holds the output is refused, even with Overwrite.
			wantErr(t, Begin(ctx, Start{Out: out, Dirs: ScoreDirs, Overwrite: true}, newRun(out)), "in use by run "+first.RunID)

			write(t, storage.Join(out, ScoresDir, PartFile(0, "csv")), "id\n")
			write(t, storage.Join(first.TempDir, "blocks", "input-000000-000000.blk"), "x")
			if err := Finish(ctx, out, first); err != nil {
				t.Fatal(err)
			}
			m, err := RequireComplete(ctx, out)
			if err != nil || m.FinishedAt == nil {
				t.Fatalf("after Finish: %+v, %v", m, err)
			}
			if storage.Exists(ctx, storage.Join(out, LockFile)) {
				t.Error("Finish left the lock")
			}
			if files, _ := storage.List(ctx, storage.Join(first.TempDir, "blocks", "*")); len(files) > 0 {
				t.Errorf("Finish left temporary files %v", files)
			}
			if _, err := os.Stat(storage.Join(out, TempDirName)); storage.IsLocal(out) && err == nil {
				t.Errorf("Finish left the empty %s", TempDirName)
			}

			// The output holds a run now: a new one needs Overwrite, which removes it.
			second := newRun(out)
			wantErr(t, Begin(ctx, start, second), "already holds a run", first.RunID, "--overwrite")
			if storage.Exists(ctx, storage.Join(out, LockFile)) {
				t.Error("a refused Begin left its lock")
			}
			write(t, storage.Join(out, KeptDir, PartFile(3, "parquet")), "old")
			write(t, storage.Join(out, KeptUIDsFile), "old")
			write(t, storage.Join(out, "notes.txt"), "another tool's")
			if err := Begin(ctx, Start{Out: out, Dirs: ScoreDirs, Files: ScoreFiles, Overwrite: true}, second); err != nil {
				t.Fatal(err)
			}
			for _, d := range ScoreDirs {
				if files, _ := storage.List(ctx, storage.Join(out, d, "*")); len(files) > 0 {
					t.Errorf("--overwrite left the earlier run's %v", files)
				}
			}
			if storage.Exists(ctx, storage.Join(out, KeptUIDsFile)) {
				t.Errorf("--overwrite left the earlier run's %s", KeptUIDsFile)
			}
			if !storage.Exists(ctx, storage.Join(out, "notes.txt")) {
				t.Error("--overwrite removed a file that is not the run's")
			}
			if err := End(ctx, out, second.RunID, Failed, errors.New("the job failed: boom"), &Manifest{}); err != nil {
				t.Fatal(err)
			}
			_, err = RequireComplete(ctx, out)
			wantErr(t, err, "failed", "boom")
			if storage.Exists(ctx, storage.Join(out, LockFile)) {
				t.Error("End left the lock")
			}
		})
	}
}

// TestStaleLock: a lock whose process has exited is taken over, as after a kill; locks whose
// owner may still be running (another host, a job submitted to a cluster) are not.
func TestStaleLock(t *testing.T) {
	ctx := context.Background()
	out := filepath.Join(t.TempDir(), "out")
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skip("no `true` to make an exited process:", err)
	}
	dead := cmd.Process.Pid
	for _, c := range []struct {
		name string
		lock Lock
		want string // "" means the lock is taken over
	}{
		{"exited process", Lock{RunID: "old", Host: hostname(), PID: dead}, ""},
		{"reused pid", Lock{RunID: "old", Host: hostname(), PID: 1, ProcStart: "no such start"}, ""},
		{"other host", Lock{RunID: "old", Host: "elsewhere.example", PID: dead}, "host elsewhere.example"},
		{"async job", Lock{RunID: "old", Host: hostname(), PID: dead, Async: true}, "submitted to a cluster"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.lock.PID == 1 && procStart(1) == "" {
				t.Skip("no /proc to tell a reused pid")
			}
			b, _ := json.Marshal(c.lock)
			write(t, filepath.Join(out, LockFile), string(b))
			err := Begin(ctx, Start{Out: out, Dirs: ScoreDirs, Overwrite: true}, newRun(out))
			if c.want == "" {
				if err != nil {
					t.Fatalf("a stale lock was not taken over: %v", err)
				}
			} else {
				wantErr(t, err, c.want, LockFile)
			}
			storage.Remove(ctx, filepath.Join(out, LockFile))
			storage.Remove(ctx, filepath.Join(out, ManifestFile))
		})
	}
}

func TestRequireComplete(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	_, err := RequireComplete(ctx, dir)
	wantErr(t, err, "no finished lemon score run")
	write(t, filepath.Join(dir, ManifestFile), `{"tool": "lemon", "counts": {"rows_in": 3}}`)
	_, err = RequireComplete(ctx, dir)
	wantErr(t, err, "another version")
	write(t, filepath.Join(dir, ManifestFile), `{"tool": "lemon", "status": "interrupted", "run_id": "r1", "error": "stopped by a signal"}`)
	_, err = RequireComplete(ctx, dir)
	wantErr(t, err, "was interrupted", "r1", "stopped by a signal")
	write(t, filepath.Join(dir, ManifestFile), `{"tool": "lemon embed", "status": "complete", "run_id": "r2"}`)
	_, err = RequireComplete(ctx, dir)
	wantErr(t, err, `"lemon embed" run, not a lemon score run`)
}

// embedRun stands for transforms.EmbedManifest: a manifest of another kind, with fields of its own.
type embedRun struct {
	Header
	Counts map[string]int64 `json:"counts"`
}

// An embed run goes through the same life, keeps its own fields when it fails, and an input
// folder it has not completed is refused.
func TestOtherRunKinds(t *testing.T) {
	ctx := context.Background()
	out := t.TempDir()
	if err := CheckInput(ctx, out); err != nil {
		t.Fatalf("a folder no lemon run wrote: %v", err)
	}
	r := &embedRun{Header: Header{Tool: "lemon embed", RunID: NewRunID(), StartedAt: time.Now().UTC()}, Counts: map[string]int64{"rows_in": 7}}
	start := Start{Out: out, Dirs: EmbedDirs}
	if err := Begin(ctx, start, r); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(out, ImageEmbDir, "img_emb_0.npy"), "partial")
	wantErr(t, CheckInput(ctx, out), "has not finished", r.RunID, "--overwrite")
	if err := End(ctx, out, r.RunID, Failed, errors.New("encoder crashed"), &embedRun{}); err != nil {
		t.Fatal(err)
	}
	var got embedRun
	if err := ReadRecord(ctx, out, &got); err != nil {
		t.Fatal(err)
	}
	if got.Status != Failed || got.Error != "encoder crashed" || got.Counts["rows_in"] != 7 || got.FinishedAt == nil {
		t.Errorf("after End: %+v", got)
	}
	wantErr(t, CheckInput(ctx, out), "run that failed", "encoder crashed")
	// The next run must replace it explicitly; with Overwrite its files are gone.
	r2 := &embedRun{Header: Header{Tool: "lemon embed", RunID: NewRunID(), StartedAt: time.Now().UTC()}}
	wantErr(t, Begin(ctx, start, r2), "already holds a run", "--overwrite")
	start.Overwrite = true
	if err := Begin(ctx, start, r2); err != nil {
		t.Fatal(err)
	}
	if storage.Exists(ctx, filepath.Join(out, ImageEmbDir, "img_emb_0.npy")) {
		t.Error("--overwrite left the failed run's shard")
	}
	if err := Finish(ctx, out, r2); err != nil {
		t.Fatal(err)
	}
	if err := CheckInput(ctx, out); err != nil {
		t.Errorf("a complete embed run: %v", err)
	}
	if storage.Exists(ctx, filepath.Join(out, LockFile)) {
		t.Error("the lock outlived the run")
	}
}

// An output holding only a run's uid file (its manifest lost) holds a run: it is refused
// without Overwrite, and Overwrite removes the file.
func TestLeftoverUIDFileIsARun(t *testing.T) {
	ctx := context.Background()
	out := filepath.Join(t.TempDir(), "out")
	write(t, filepath.Join(out, RejectedUIDsFile), "old")
	wantErr(t, Begin(ctx, Start{Out: out, Dirs: ScoreDirs, Files: ScoreFiles}, newRun(out)), RejectedUIDsFile, "--overwrite")
	if err := Begin(ctx, Start{Out: out, Dirs: ScoreDirs, Files: ScoreFiles, Overwrite: true}, newRun(out)); err != nil {
		t.Fatal(err)
	}
	if storage.Exists(ctx, filepath.Join(out, RejectedUIDsFile)) {
		t.Errorf("--overwrite left %s", RejectedUIDsFile)
	}
}
