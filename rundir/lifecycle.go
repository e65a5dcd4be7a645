package rundir

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/lemon-curation/lemon/storage"
)

// A run's life:
//
//  1. Begin (the launcher, before any work): take the output's lock, refuse an output that
//     already holds a run unless Overwrite (then remove that run's folders, manifest and
//     temporary files), and write a manifest with status Running.
//  2. The job writes its part files (each atomically) into its own temporary folder and the
//     output's folders.
//  3. Finish (the job's last stage, so also for jobs submitted with --async): remove the
//     run's temporary folder, write the manifest with status Complete, release the lock.
//     Or End (the launcher, when the job fails or a signal stops it): the same, with status
//     Failed or Interrupted.
//
// A killed run leaves its lock and a Running manifest: the next run into that output sees
// that the lock's process is gone (same host), says the output holds an unfinished run, and
// with Overwrite removes what it left, temporary files included.

// Lock is what a run's lock file holds: which run, which process on which host.
type Lock struct {
	RunID string `json:"run_id"`
	Host  string `json:"host"`
	PID   int    `json:"pid"`
	// ProcStart is the process's start time as the kernel counts it (Linux), so that a pid
	// reused by another process is not taken for the run.
	ProcStart string `json:"proc_start,omitempty"`
	// Async: the launcher returns once the job is submitted; the job releases the lock.
	Async     bool      `json:"async,omitempty"`
	StartedAt time.Time `json:"started_at"`
}

// NewRunID returns a run id: the UTC start time and a random suffix.
func NewRunID() string {
	var b [4]byte
	rand.Read(b[:])
	return time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// TempDir is the temporary folder of run runID under root (--temp-dir, or the output's
// TempDirName): each run has its own, so runs sharing a temporary directory never touch each
// other's files.
func TempDir(root, runID string) string { return storage.Join(root, "run-"+runID) }

// Start is how a run begins.
type Start struct {
	Out string
	// Dirs are the folders the run writes under Out (ScoreDirs for lemon score), Files the
	// files besides the manifest (ScoreFiles).
	Dirs  []string
	Files []string
	// Overwrite replaces a run that Out already holds, finished or not.
	Overwrite bool
	// Async: the job is submitted and the launcher returns; the job releases the lock.
	Async bool
}

// Begin starts run r (its header's RunID, StartedAt and TempDir set) in s.Out: see the package
// comment. On success the manifest in Out says Running and the caller must see the run to its
// end (the job's Finish, or End).
func Begin(ctx context.Context, s Start, r Record) error {
	h := r.RunHeader()
	lock := newLock(h.RunID, s.Async, h.StartedAt)
	if err := acquire(ctx, s.Out, lock); err != nil {
		return err
	}
	prev, holds := previousRun(ctx, s.Out, s.Dirs, s.Files)
	if holds && !s.Overwrite {
		releaseLock(ctx, s.Out, h.RunID)
		return fmt.Errorf("%s already holds a run (%s); give --overwrite to replace it, or another --output", s.Out, prev)
	}
	if holds {
		if err := removeRun(ctx, s.Out, s.Dirs, s.Files); err != nil {
			releaseLock(ctx, s.Out, h.RunID)
			return fmt.Errorf("--overwrite: removing the run %s holds: %w", s.Out, err)
		}
	}
	h.Status = Running
	if err := WriteManifest(ctx, s.Out, r); err != nil {
		releaseLock(ctx, s.Out, h.RunID)
		return err
	}
	return nil
}

// Finish ends run r successfully (the job's last stage): its temporary folder is removed, the
// manifest is written with status Complete and the finish time, and the lock released. A
// retry repeats it harmlessly.
func Finish(ctx context.Context, out string, r Record) error {
	h := r.RunHeader()
	if err := removeTemp(ctx, h.TempDir); err != nil {
		return fmt.Errorf("removing the run's temporary files: %w", err)
	}
	now := time.Now().UTC()
	h.Status, h.FinishedAt = Complete, &now
	h.Timings = map[string]float64{"wall_seconds": now.Sub(h.StartedAt).Seconds()}
	if err := WriteManifest(ctx, out, r); err != nil {
		return err
	}
	releaseLock(ctx, out, h.RunID)
	return nil
}

// End ends run runID in out unsuccessfully (status Failed or Interrupted, cause saying why):
// the launcher's counterpart of Finish. The manifest is read into r (an empty record of the
// run's kind, so that fields beyond the header survive) and written back. A run already
// complete is left as it is.
func End(ctx context.Context, out, runID string, status Status, cause error, r Record) error {
	b, err := storage.ReadFile(ctx, storage.Join(out, ManifestFile))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, r); err != nil {
		return err
	}
	h := r.RunHeader()
	if h.RunID != runID || h.Status == Complete {
		return nil // not ours any more, or finished after all: leave it
	}
	rmErr := removeTemp(ctx, h.TempDir)
	now := time.Now().UTC()
	h.Status, h.FinishedAt, h.Error = status, &now, cause.Error()
	if err := WriteManifest(ctx, out, r); err != nil {
		return err
	}
	releaseLock(ctx, out, runID)
	return rmErr
}

// removeTemp removes a run's temporary folder (none: "") and, when it sits in the default
// temporary directory (OUT/.lemon-tmp), that directory too if no other run's folder is left in
// it: removing a directory that is not empty fails, and the failure is ignored.
func removeTemp(ctx context.Context, dir string) error {
	if dir == "" {
		return nil
	}
	if err := storage.RemoveAll(ctx, dir); err != nil {
		return err
	}
	if parent := strings.TrimSuffix(dir, "/"+storage.Base(dir)); storage.Base(parent) == TempDirName {
		storage.Remove(ctx, parent)
	}
	return nil
}

func newLock(runID string, async bool, at time.Time) Lock {
	host, _ := os.Hostname()
	return Lock{RunID: runID, Host: host, PID: os.Getpid(), ProcStart: procStart(os.Getpid()), Async: async, StartedAt: at}
}

// acquire takes out's lock, clearing a lock whose process is gone.
func acquire(ctx context.Context, out string, l Lock) error {
	p := storage.Join(out, LockFile)
	b, _ := json.Marshal(l)
	for try := 0; ; try++ {
		err := storage.CreateExclusive(ctx, p, b)
		if err == nil {
			return nil
		}
		if !errors.Is(err, fs.ErrExist) || try > 0 {
			return fmt.Errorf("locking %s: %w", out, err)
		}
		held, err := readLock(ctx, p)
		if err != nil {
			return fmt.Errorf("%s is locked by another run, and its lock is unreadable (%v); if no run is using it, remove %s", out, err, p)
		}
		if reason := held.stale(); reason != "" {
			if err := storage.Remove(ctx, p); err != nil {
				return err
			}
			continue
		}
		return held.inUse(out, p)
	}
}

func readLock(ctx context.Context, p string) (Lock, error) {
	var l Lock
	b, err := storage.ReadFile(ctx, p)
	if err == nil {
		err = json.Unmarshal(b, &l)
	}
	return l, err
}

// inUse is the error for an output whose lock l is held.
func (l Lock) inUse(out, p string) error {
	since := l.StartedAt.Format("2006-01-02 15:04:05 MST")
	switch {
	case l.Async:
		return fmt.Errorf("%s is in use by run %s, submitted to a cluster at %s (the job removes its lock when it ends); if that job failed or was cancelled, remove %s", out, l.RunID, since, p)
	case l.Host != hostname():
		return fmt.Errorf("%s is in use by run %s (process %d on host %s, started %s); if that run is no longer going, remove %s", out, l.RunID, l.PID, l.Host, since, p)
	}
	return fmt.Errorf("%s is in use by run %s (process %d, started %s): two runs cannot write one output; wait for it to end, or give another --output", out, l.RunID, l.PID, since)
}

// stale says why lock l's run is certainly gone ("" if it may be running): its process, on
// this host, no longer exists (or its pid now belongs to another process).
func (l Lock) stale() string {
	if l.Async || l.Host != hostname() || l.PID <= 0 {
		return ""
	}
	if err := syscall.Kill(l.PID, 0); errors.Is(err, syscall.ESRCH) {
		return fmt.Sprintf("process %d has exited", l.PID)
	}
	if l.ProcStart != "" && procStart(l.PID) != l.ProcStart {
		return fmt.Sprintf("process %d is another process now", l.PID)
	}
	return ""
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

// procStart is process pid's start time in clock ticks since boot (field 22 of
// /proc/PID/stat), or "" where there is no /proc.
func procStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces and parentheses
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19] // fields after the name start at field 3
}

// releaseLock removes out's lock if run runID holds it.
func releaseLock(ctx context.Context, out, runID string) {
	p := storage.Join(out, LockFile)
	if l, err := readLock(ctx, p); err == nil && l.RunID == runID {
		storage.Remove(ctx, p)
	}
}

// previousRun says whether out holds a run (a manifest, any of the run's folders with files
// in them, or any of its files), and describes it.
func previousRun(ctx context.Context, out string, dirs, files []string) (string, bool) {
	if h, err := ReadHeader(ctx, out); err == nil {
		switch h.Status {
		case Running:
			return fmt.Sprintf("run %s, started %s, did not finish: its process is gone", h.RunID, h.StartedAt.Format("2006-01-02 15:04:05 MST")), true
		case "":
			return "a run of an earlier lemon version", true
		}
		return fmt.Sprintf("run %s, %s", h.RunID, h.Status), true
	} else if storage.Exists(ctx, storage.Join(out, ManifestFile)) {
		return fmt.Sprintf("an unreadable %s: %v", ManifestFile, err), true
	}
	for _, d := range dirs {
		if files, _ := storage.List(ctx, storage.Join(out, d, "*")); len(files) > 0 {
			return fmt.Sprintf("files in %s/ but no %s: a run that did not finish", d, ManifestFile), true
		}
	}
	for _, f := range files {
		if storage.Exists(ctx, storage.Join(out, f)) {
			return fmt.Sprintf("%s but no %s: a run that did not finish", f, ManifestFile), true
		}
	}
	return "", false
}

// removeRun removes what a run left in out: its folders and files, its manifest, and the
// temporary folder its manifest names.
func removeRun(ctx context.Context, out string, dirs, files []string) error {
	if h, err := ReadHeader(ctx, out); err == nil && h.TempDir != "" && strings.HasPrefix(storage.Base(h.TempDir), "run-") {
		if err := removeTemp(ctx, h.TempDir); err != nil {
			return err
		}
	}
	for _, d := range dirs {
		if err := storage.RemoveAll(ctx, storage.Join(out, d)); err != nil {
			return err
		}
	}
	for _, f := range files {
		if err := storage.Remove(ctx, storage.Join(out, f)); err != nil {
			return err
		}
	}
	return storage.Remove(ctx, storage.Join(out, ManifestFile))
}
