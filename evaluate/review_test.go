package evaluate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lemon-curation/lemon/rundir"
)

// The review's suspects are the n highest scores over every scores file, ties in file order,
// whatever the order rows arrive in; the distributions hold every row; neighbours' captions
// are looked up among all the run's rows, and named by id when not among them.
func TestReviewPicksTheHighestScores(t *testing.T) {
	ctx := context.Background()
	run := t.TempDir()
	if err := rundir.WriteManifest(ctx, run, &rundir.Manifest{Header: rundir.Header{Tool: "lemon", Status: rundir.Complete, RunID: "r", Input: "in", Format: "embdir"}}); err != nil {
		t.Fatal(err)
	}
	type row struct {
		id    string
		score float64
	}
	var all []row
	for f := range 3 {
		var b strings.Builder
		b.WriteString("id,caption,d_mm,s_n,s_m,score,flagged,image_neighbours,text_neighbours\n")
		for i := range 40 {
			id := fmt.Sprintf("f%d-%d", f, i)
			score := float64((i*7+f*13)%23) / 4 // many ties, in every file
			all = append(all, row{id, score})
			fmt.Fprintf(&b, "%s,caption of %s,0.5,0.1,0.2,%g,false,f0-0 elsewhere,f0-0\n", id, id, score)
		}
		p := filepath.Join(run, "scores", rundir.PartFile(f, "csv"))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	slices.SortStableFunc(all, func(a, b row) int {
		switch {
		case a.score > b.score:
			return -1
		case a.score < b.score:
			return 1
		}
		return 0
	})
	for _, n := range []int{1, 5, 17, 200} {
		rv, err := MakeReview(ctx, ReviewOptions{RunDir: run, Suspects: n})
		if err != nil {
			t.Fatal(err)
		}
		if rv.Rows != 120 || len(rv.Values[rundir.ColSm]) != 120 {
			t.Fatalf("n=%d: %d rows, %d s_m values; want 120", n, rv.Rows, len(rv.Values[rundir.ColSm]))
		}
		want := all[:min(n, len(all))]
		if len(rv.Suspects) != len(want) {
			t.Fatalf("n=%d: %d suspects", n, len(rv.Suspects))
		}
		for k, s := range rv.Suspects {
			if s.ID != want[k].id || s.Score != want[k].score || s.Rank != k+1 {
				t.Fatalf("n=%d: suspect %d is %s (%g), want %s (%g)", n, k+1, s.ID, s.Score, want[k].id, want[k].score)
			}
			if !slices.Equal(s.NeighbourCaptions, []string{"caption of f0-0", "(elsewhere: not among this run's scored rows)"}) {
				t.Fatalf("neighbour captions %q", s.NeighbourCaptions)
			}
		}
		if !strings.Contains(rv.Images, "holds embeddings, not images") {
			t.Errorf("images: %q", rv.Images)
		}
	}
}
