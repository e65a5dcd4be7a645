package progress_test

import (
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/lemon-curation/lemon/internal/progress"
)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// lines collects printed lines.
type lines struct {
	mu  sync.Mutex
	got []string
}

func (l *lines) print(s string) { l.mu.Lock(); l.got = append(l.got, s); l.mu.Unlock() }
func (l *lines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.got...)
}

// The line's figures, on a settable clock: rows done of the total, the rate, the elapsed time
// and the time left; and the last line once every row is done.
func TestLineFigures(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	var out lines
	m := &progress.Meter{What: "embedding", Total: 640, Now: c.now, Print: out.print, First: time.Hour, Every: time.Hour}
	m.Begin()
	defer m.End()
	if got, want := m.Line(), "embedding: 0/640 rows (0%), - rows/s, elapsed 0s, ETA unknown"; got != want {
		t.Errorf("at the start: %q, want %q", got, want)
	}
	c.add(8 * time.Second)
	m.Add(64)
	if got, want := m.Line(), "embedding: 64/640 rows (10%), 8.0 rows/s, elapsed 8s, ETA 1m12s"; got != want {
		t.Errorf("after 64 rows in 8 s: %q, want %q", got, want)
	}
	c.add(72 * time.Second)
	m.Add(576)
	if got, want := out.all(), []string{"embedding done: 640 rows in 1m20s, 8.0 rows/s"}; len(got) != 1 || got[0] != want[0] {
		t.Errorf("printed %q, want %q", got, want)
	}
}

var lineRE = regexp.MustCompile(`^embedding: (\d+)/100 rows \(\d+%\), ([\d.]+|-) rows/s, elapsed \S+, ETA \S+$`)

// Lines come on their own, paced by First and Every, while a piece of work runs, each with
// every field; none after the last piece ends.
func TestLinesWhileWorking(t *testing.T) {
	var out lines
	m := &progress.Meter{What: "embedding", Total: 100, Print: out.print, First: time.Millisecond, Every: 2 * time.Millisecond}
	m.Begin()
	// A slow encoder: 10 rows at a time, with pauses far longer than Every.
	deadline := time.Now().Add(20 * time.Second)
	for done := 0; done < 50; done += 10 {
		for n := len(out.all()); len(out.all()) < n+2; {
			if time.Now().After(deadline) {
				t.Fatalf("no progress line for 20 s; printed %q", out.all())
			}
			time.Sleep(time.Millisecond)
		}
		m.Add(10)
	}
	m.End()
	got := out.all()
	seen := map[string]bool{}
	for _, l := range got {
		f := lineRE.FindStringSubmatch(l)
		if f == nil {
			t.Fatalf("line %q lacks a field (want rows done of the total, rows/s, elapsed, ETA)", l)
		}
		seen[f[1]] = true
	}
	for _, n := range []string{"0", "10", "20", "30", "40"} {
		if !seen[n] {
			t.Errorf("no line says %s rows done; lines: %q", n, got)
		}
	}
	time.Sleep(20 * time.Millisecond) // ten intervals
	if after := out.all(); len(after) != len(got) {
		t.Errorf("lines after the work ended: %q", after[len(got):])
	}
}
