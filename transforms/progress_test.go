package transforms

import (
	"strings"
	"testing"
	"time"
)

// The search's time left comes from the rate since the previous line: a slow start does not
// inflate it, and the first line, with nothing to go on, does not guess.
func TestSearchProgressTimeLeft(t *testing.T) {
	p := &searchProgress{}
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	const total = 1000
	p.begin(total, t0)
	// Start-up: 10 s for the first 10 row pairs (1%).
	if line := p.addAt(t0.Add(10*time.Second), total, 10, 512); !strings.Contains(line, "1% done") || !strings.Contains(line, "ETA unknown") {
		t.Errorf("first line %q", line)
	}
	// Then 100 row pairs a second: 190 more in 1.9 s is too soon for a line ...
	if line := p.addAt(t0.Add(11900*time.Millisecond), total, 190, 512); line != "" {
		t.Errorf("a line %q within 2 s of the last", line)
	}
	// ... and at 300 done, 2.9 s after the last line, 700 are left at 100 per second: 7 s, where
	// the rate since the start (300 in 12.9 s) would say 30 s.
	if line := p.addAt(t0.Add(12900*time.Millisecond), total, 100, 512); !strings.Contains(line, "30% done") || !strings.Contains(line, "ETA 7s") {
		t.Errorf("line %q, want 30%% done and ETA 7s", line)
	}
	if line := p.addAt(t0.Add(20*time.Second), total, 700, 512); !strings.Contains(line, "done in 20.000s") {
		t.Errorf("last line %q", line)
	}
}
