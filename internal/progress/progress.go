// Package progress reports a long stage of a job (embedding) at a steady pace: a line with the
// rows done of the total, the rate and the time left, the first soon after the stage starts and
// then at a fixed interval while work is under way, so a user never waits long in silence. It
// only prints; no result depends on it.
//
// A Meter counts what its own process does: on a single-process runner (prism) that is the
// job; on a cluster each worker reports its share against the job's total.
package progress

import (
	"fmt"
	"sync"
	"time"
)

// Defaults: the first line this long after the stage starts, then one every Every.
const (
	First = 2 * time.Second
	Every = 5 * time.Second
)

// Meter reports the progress of one stage. Set its fields before the first Begin.
type Meter struct {
	What  string // the stage, as lines name it: "embedding"
	Total int64  // rows in the stage
	// First and Every pace the lines (defaults First and Every); Print prints one; Now is
	// the clock (default time.Now).
	First, Every time.Duration
	Print        func(line string)
	Now          func() time.Time

	mu       sync.Mutex
	start    time.Time // when the stage began: the first Begin
	done     int64
	active   int           // Begin calls not yet matched by End
	stop     chan struct{} // closes the running ticker; nil when none runs
	finished bool
}

// Begin notes that a piece of the stage (a shard) started; while any piece runs, lines are
// printed. The first Begin dates the stage's start.
func (m *Meter) Begin() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.start.IsZero() {
		m.start = m.now()
	}
	m.active++
	if m.stop == nil && !m.finished {
		m.stop = make(chan struct{})
		go m.tick(m.stop)
	}
}

// End notes that a piece of the stage finished (or failed). With no piece running the lines
// stop, so an idle worker is silent.
func (m *Meter) End() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.active--
	if m.active <= 0 && m.stop != nil {
		close(m.stop)
		m.stop = nil
	}
}

// Add counts rows done; when they reach the total it prints the stage's last line.
func (m *Meter) Add(rows int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.done += rows
	if m.done >= m.Total && !m.finished {
		m.finished = true
		elapsed := m.now().Sub(m.start)
		m.print(fmt.Sprintf("%s done: %d rows in %s, %s rows/s", m.What, m.done, round(elapsed), rate(m.done, elapsed)))
	}
}

// Line is the progress line for now: rows done of the total, the rate, the elapsed time and
// the time left.
func (m *Meter) Line() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.line()
}

func (m *Meter) line() string {
	elapsed := m.now().Sub(m.start)
	eta := "unknown"
	if m.done > 0 && elapsed > 0 {
		eta = round(time.Duration(float64(elapsed) / float64(m.done) * float64(m.Total-m.done))).String()
	}
	pct := 0.0
	if m.Total > 0 {
		pct = 100 * float64(m.done) / float64(m.Total)
	}
	return fmt.Sprintf("%s: %d/%d rows (%.0f%%), %s rows/s, elapsed %s, ETA %s", m.What, m.done, m.Total, pct, rate(m.done, elapsed), round(elapsed), eta)
}

// tick prints a line First after it starts, then every Every, until stop closes or the stage
// is finished.
func (m *Meter) tick(stop chan struct{}) {
	first, every := m.First, m.Every
	if first <= 0 {
		first = First
	}
	if every <= 0 {
		every = Every
	}
	t := time.NewTimer(first)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		m.mu.Lock()
		if m.finished || m.stop != stop {
			m.mu.Unlock()
			return
		}
		m.print(m.line())
		m.mu.Unlock()
		t.Reset(every)
	}
}

func (m *Meter) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *Meter) print(line string) {
	if m.Print != nil {
		m.Print(line)
	}
}

func rate(rows int64, elapsed time.Duration) string {
	if elapsed <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(rows)/elapsed.Seconds())
}

// round rounds d for reading: to the second from 10 s up, else to 0.1 s.
func round(d time.Duration) time.Duration {
	if d >= 10*time.Second {
		return d.Round(time.Second)
	}
	return d.Round(100 * time.Millisecond)
}
