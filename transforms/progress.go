package transforms

import (
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	meter "github.com/lemon-curation/lemon/internal/progress"
)

// progress reports the neighbour search on stderr: the share of the work done, the rate, and
// an estimate of the time left. It only prints; no result depends on it. Each worker process
// counts the work it ran, so on a single-process runner (prism) the count is the job's.
var progress = &searchProgress{}

// logf writes progress lines to stderr with the time of day (not through Beam's structured
// logger, which would wrap each line in key=value fields).
var logf = log.New(os.Stderr, "", log.Ltime).Printf

// searchProgress counts work in row pairs: one (query row, reference row) pair searched in
// both modalities. A self-join counts both directions of every pair, although one product
// serves both, so the rate printed is the effective one: 4 * row pairs * D flops per second.
type searchProgress struct {
	mu       sync.Mutex
	start    time.Time
	last     time.Time // when the last line was printed
	lastDone int64     // row pairs done then
	done     int64
	total    int64
}

// begin notes that work on a job of total row pairs started at the given time; the first call
// of a job dates its start.
func (p *searchProgress) begin(total int64, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reset(total, at)
}

func (p *searchProgress) reset(total int64, at time.Time) {
	if p.total != total || p.start.IsZero() || p.done >= p.total {
		p.start, p.last, p.lastDone, p.total, p.done = at, at, 0, total, 0
	}
}

// add records rowPairs more row pairs done, of total in the job, and prints a line at most
// every two seconds and at the end.
func (p *searchProgress) add(total, rowPairs int64, dim int) {
	if line := p.addAt(time.Now(), total, rowPairs, dim); line != "" {
		logf("%s", line)
	}
}

// addAt is add at time now; it returns the line to print, if any. The time left is estimated
// from the rate since the previous line, not since the start: the start-up (ordering and
// packing rows) and the first tiles are slower than the rest, so the first line, which has no
// previous one, says the time left is not known yet.
func (p *searchProgress) addAt(now time.Time, total, rowPairs int64, dim int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reset(total, now)
	p.done += rowPairs
	elapsed := now.Sub(p.start)
	rate := 4 * float64(p.done) * float64(dim) / elapsed.Seconds() / 1e9
	if p.done >= p.total {
		return fmt.Sprintf("lemon: neighbour search done in %.3fs, %.1f GFLOP/s effective", elapsed.Seconds(), rate)
	}
	if now.Sub(p.last) < 2*time.Second || p.done == 0 {
		return ""
	}
	eta := "unknown"
	if p.lastDone > 0 && p.done > p.lastDone {
		left := time.Duration(float64(now.Sub(p.last)) / float64(p.done-p.lastDone) * float64(p.total-p.done))
		eta = left.Round(time.Second).String()
	}
	p.last, p.lastDone = now, p.done
	return fmt.Sprintf("lemon: neighbour search %.0f%% done, elapsed %s, ETA %s, %.1f GFLOP/s effective",
		100*float64(p.done)/float64(p.total), elapsed.Round(time.Second), eta, rate)
}

// embedMeters holds this process's progress meter of each embedding stage.
var embedMeters sync.Map

// embedMeter is the progress meter of embedding stage ("input", "reference", or "" for lemon
// embed) of a job of total rows. $LEMON_PROGRESS_INTERVAL (a Go duration, such as 30s) sets
// the interval between lines.
func embedMeter(stage string, total int64) *meter.Meter {
	what := "embedding"
	if stage != "" {
		what += " (" + stage + ")"
	}
	m := &meter.Meter{What: what, Total: total, Print: func(line string) { logf("lemon: %s", line) }}
	if d, err := time.ParseDuration(os.Getenv("LEMON_PROGRESS_INTERVAL")); err == nil && d > 0 {
		m.First, m.Every = min(d, meter.First), d
	}
	got, _ := embedMeters.LoadOrStore(fmt.Sprintf("%s/%d", stage, total), m)
	return got.(*meter.Meter)
}
