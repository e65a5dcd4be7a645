package datacomp_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lemon-curation/lemon/dataset/datacomp"
	"github.com/lemon-curation/lemon/internal/npy"
)

func TestParseUID(t *testing.T) {
	u, err := datacomp.ParseUID("0123456789abcdef00000000000000ff")
	if err != nil || u != (datacomp.UID{0x0123456789abcdef, 0xff}) || u.String() != "0123456789abcdef00000000000000ff" {
		t.Errorf("ParseUID = %x, %v; want the halves 0123456789abcdef and ff", u, err)
	}
	for _, bad := range []string{"", "abc", "0123456789abcdef00000000000000f", "0123456789abcdef00000000000000fff",
		"0123456789ABCDEF00000000000000ff", "0123456789abcdeg00000000000000ff", "+123456789abcdef00000000000000ff", "data/a.parquet:17"} {
		if _, err := datacomp.ParseUID(bad); err == nil || !strings.Contains(err.Error(), "not 32 lowercase hex digits") {
			t.Errorf("ParseUID(%q) = %v; want an error saying it is not 32 lowercase hex digits", bad, err)
		}
	}
}

// Runs of uids (one of them empty) merge into one subset file: numpy's header for n pairs,
// then every uid once, in numpy's order (high half, then low).
func TestMergeUIDRuns(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(3, 4))
	var all []datacomp.UID
	var runs []string
	for r, n := range []int{50, 0, 7, 120} {
		var uids []datacomp.UID
		for range n {
			// Few distinct high halves, so the order of the low halves matters.
			u := datacomp.UID{uint64(rng.IntN(4)) << 60, rng.Uint64()}
			uids = append(uids, u)
			all = append(all, u)
		}
		p := filepath.Join(dir, fmt.Sprintf("run-%d", r))
		if err := datacomp.WriteUIDRun(ctx, p, uids); err != nil {
			t.Fatal(err)
		}
		runs = append(runs, p)
	}
	out := filepath.Join(dir, "uids.npy")
	n, err := datacomp.MergeUIDRuns(ctx, out, runs)
	if err != nil || n != int64(len(all)) {
		t.Fatalf("MergeUIDRuns = %d, %v; want %d", n, err, len(all))
	}
	b, _ := os.ReadFile(out)
	h := npy.UIDPairsHeader(n)
	if string(b[:len(h)]) != string(h) || len(b) != len(h)+len(all)*datacomp.UIDBytes {
		t.Fatalf("file of %d bytes does not start with the header for %d pairs or has the wrong size", len(b), n)
	}
	datacomp.SortUIDs(all)
	for i, want := range all {
		if got := datacomp.DecodeUID(b[len(h)+i*datacomp.UIDBytes:]); got != want {
			t.Fatalf("uid %d = %s, want %s", i, got, want)
		}
	}
	if !slices.IsSortedFunc(all, func(a, b datacomp.UID) int {
		return strings.Compare(a.String(), b.String())
	}) {
		t.Error("numeric order differs from the hex strings' order")
	}

	// A uid in two runs is refused, and no file is left under the final name.
	dup := filepath.Join(dir, "dup")
	if err := datacomp.WriteUIDRun(ctx, dup, all[3:4]); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.npy")
	if _, err := datacomp.MergeUIDRuns(ctx, bad, append(runs, dup)); err == nil || !strings.Contains(err.Error(), all[3].String()) {
		t.Errorf("a uid in two runs: %v; want an error naming it", err)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("a failed merge left %s", bad)
	}
}
