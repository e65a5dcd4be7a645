// Package rundir owns the run directory: the layout of what `lemon score` writes to its output
// (folder, part-file and column names), the manifest and the run's status in it, and the
// lifecycle that keeps a directory truthful: a run locks its output, refuses one that already
// holds a run unless told to replace it, marks itself running, keeps its temporary files in a
// folder of its own, and is marked complete by the job's last stage (or failed or interrupted
// by the launcher). Everything that reads a run (eval, tune, a rerun) goes through this
// package. It knows nothing of Beam.
package rundir

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/lemon-curation/lemon/storage"
)

// Version is lemon's version, recorded in every manifest and printed by --version.
const Version = "0.1.0"

// Names in a run directory.
const (
	ScoresDir     = "scores"     // scores, one part file per input shard
	KeptDir       = "kept"       // the input's rows that pass, with the score columns
	RejectedDir   = "rejected"   // the rows that do not
	ErrorsDir     = "errors"     // rows that could not be scored, with a reason
	NeighboursDir = "neighbours" // whole neighbour lists (--save-neighbour-lists)
	ManifestFile  = "manifest.json"
	// KeptUIDsFile and RejectedUIDsFile are the kept and rejected rows' uids in DataComp's
	// subset format (--write-uids), written by the job's last stage.
	KeptUIDsFile     = "kept_uids.npy"
	RejectedUIDsFile = "rejected_uids.npy"
	// ReportFile is lemon report's review page, by default in the run it reviews.
	ReportFile = "report.html"
	LockFile   = ".lemon-run.lock"
	// TempDirName is the default temporary directory under the output; each run uses a
	// folder of its own inside it (see TempDir).
	TempDirName = ".lemon-tmp"
)

// ScoreDirs are the folders a scoring run writes under its output directory, ScoreFiles the
// files besides the manifest.
var (
	ScoreDirs  = []string{ScoresDir, KeptDir, RejectedDir, ErrorsDir, NeighboursDir}
	ScoreFiles = []string{KeptUIDsFile, RejectedUIDsFile, ReportFile}
)

// The folders of a `lemon embed` run: the clip-retrieval layout, and errors/.
const (
	ImageEmbDir = "img_emb"  // img_emb_N.npy
	TextEmbDir  = "text_emb" // text_emb_N.npy
	MetadataDir = "metadata" // metadata_N.parquet
)

// EmbedDirs are the folders a `lemon embed` run writes.
var EmbedDirs = []string{ImageEmbDir, TextEmbDir, MetadataDir, ErrorsDir}

// PartFile is the name of input shard i's file in an output folder.
func PartFile(shard int, ext string) string { return fmt.Sprintf("part-%05d.%s", shard, ext) }

// Columns of the scores files.
const (
	ColID              = "id"
	ColCaption         = "caption"
	ColDmm             = "d_mm"
	ColSn              = "s_n"
	ColSm              = "s_m"
	ColScore           = "score"
	ColFlagged         = "flagged"
	ColImageNeighbours = "image_neighbours"
	ColTextNeighbours  = "text_neighbours"
)

// ScoreColumns are the columns appended to the input's own rows in kept/ and rejected/: d_mm,
// s_n, s_m and the score. An input that already has them (a run's kept/ scored again) has them
// replaced, not repeated.
var ScoreColumns = []string{"lemon_d_mm", "lemon_s_n", "lemon_s_m", "lemon_score"}

// IsScoreColumn says whether name is one of ScoreColumns.
func IsScoreColumn(name string) bool { return slices.Contains(ScoreColumns, name) }

// ReasonColumn is the column of errors/ files that says why a row could not be scored.
const ReasonColumn = "reason"

// Status is where a run stands.
type Status string

const (
	Running     Status = "running"     // started; not finished (or killed: see the lock)
	Complete    Status = "complete"    // every row written and counted
	Failed      Status = "failed"      // the job failed; Manifest.Error says why
	Interrupted Status = "interrupted" // stopped by a signal
)

// ReadManifest reads dir's manifest, a scoring run's.
func ReadManifest(ctx context.Context, dir string) (*Manifest, error) {
	var m Manifest
	if err := ReadRecord(ctx, dir, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// ReadHeader reads the header of dir's manifest, whatever kind of run wrote it.
func ReadHeader(ctx context.Context, dir string) (*Header, error) {
	var h Header
	if err := ReadRecord(ctx, dir, &h); err != nil {
		return nil, err
	}
	return &h, nil
}

// ReadRecord reads dir's manifest into r, a manifest of the run's kind.
func ReadRecord(ctx context.Context, dir string, r Record) error {
	p := storage.Join(dir, ManifestFile)
	b, err := storage.ReadFile(ctx, p)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, r); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

// WriteManifest writes r as dir's manifest, atomically.
func WriteManifest(ctx context.Context, dir string, r Record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return storage.WriteFile(ctx, storage.Join(dir, ManifestFile), append(b, '\n'))
}

// RequireComplete returns dir's manifest if dir holds a complete run, and otherwise an error
// that says what is there instead: what eval and tune check before reading a run.
func RequireComplete(ctx context.Context, dir string) (*Manifest, error) {
	m, err := ReadManifest(ctx, dir)
	if err != nil {
		if !storage.Exists(ctx, storage.Join(dir, ManifestFile)) {
			return nil, fmt.Errorf("%s holds no finished lemon score run (no %s)", dir, ManifestFile)
		}
		return nil, err
	}
	if m.Tool != "lemon" {
		return nil, fmt.Errorf("%s holds a %q run, not a lemon score run", dir, m.Tool)
	}
	switch m.Status {
	case Complete:
		return m, nil
	case Running:
		return nil, fmt.Errorf("%s holds a run that has not finished (run %s, started %s): it is still running or was killed; its files are incomplete", dir, m.RunID, m.StartedAt.Format("2006-01-02 15:04:05 MST"))
	case Failed, Interrupted:
		return nil, fmt.Errorf("%s holds a run that %s (run %s): %s; its files are incomplete", dir, endedAs(m.Status), m.RunID, m.Error)
	}
	return nil, fmt.Errorf("%s: its %s has no status this lemon knows (%q): it was written by another version, or is not a lemon score run", dir, ManifestFile, m.Status)
}

// CheckInput refuses an input folder written by a `lemon embed` run that has not completed
// (still running, killed, failed or interrupted): its shards are only a part of the data, and
// scoring them would silently leave rows out. Folders that no lemon embed run wrote pass.
func CheckInput(ctx context.Context, dir string) error {
	h, err := ReadHeader(ctx, dir)
	if err != nil || h.Tool != "lemon embed" {
		return nil
	}
	switch h.Status {
	case Complete, "": // "": lemon versions before 0.1.0 wrote the manifest only when done
		return nil
	case Running:
		return fmt.Errorf("%s holds a lemon embed run that has not finished (run %s, started %s): it is still running or was killed, and its shards are incomplete; rerun lemon embed with --overwrite", dir, h.RunID, h.StartedAt.Format("2006-01-02 15:04:05 MST"))
	}
	return fmt.Errorf("%s holds a lemon embed run that %s (run %s: %s): its shards are incomplete; rerun lemon embed with --overwrite", dir, endedAs(h.Status), h.RunID, h.Error)
}

// endedAs says how a run that did not complete ended.
func endedAs(s Status) string {
	if s == Interrupted {
		return "was interrupted"
	}
	return string(s)
}
