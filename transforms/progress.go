package transforms

import (
	"log"
	"os"
	"sync"
	"time"
)

// progress reports the neighbour search on stderr: tasks done of the total, the rate, and an
// estimate of the time left. It only prints; no result depends on it. Each worker process
// counts the tasks it ran, so on a single-process runner (prism) the count is the job's.
var progress = &searchProgress{}

// logf writes progress lines to stderr with the time of day (not through Beam's structured
// logger, which would wrap each line in key=value fields).
var logf = log.New(os.Stderr, "", log.Ltime).Printf

type searchProgress struct {
	mu    sync.Mutex
	start time.Time
	last  time.Time
	done  int64
	total int64
	flops float64
	busy  time.Duration
}

func (p *searchProgress) pairDone(total int64, qRows, rRows, dim int, took time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if p.total != total || p.start.IsZero() {
		p.start, p.last, p.total, p.done, p.flops, p.busy = now.Add(-took), time.Time{}, total, 0, 0, 0
	}
	p.done++
	p.busy += took
	// Two modalities, two flops per multiply-add.
	p.flops += 4 * float64(qRows) * float64(rRows) * float64(dim)
	if now.Sub(p.last) < 2*time.Second && p.done != p.total {
		return
	}
	p.last = now
	elapsed := now.Sub(p.start)
	eta := time.Duration(float64(elapsed) / float64(p.done) * float64(p.total-p.done))
	logf("lemon: neighbour blocks %d/%d done, elapsed %s, ETA %s, %.1f GFLOP/s", p.done, p.total,
		elapsed.Round(time.Second), eta.Round(time.Second), p.flops/elapsed.Seconds()/1e9)
}
