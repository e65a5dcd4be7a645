package dataset_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lemon-curation/lemon/dataset"
)

// TestPlanShards: files are planned at once (several in flight), and the shards come back in
// file order with indices and offsets from that order, whatever order the plans finish in;
// failures report the first failing file in order and how many more failed.
func TestPlanShards(t *testing.T) {
	files := []string{"a", "b", "c", "d", "e"}
	var inFlight, most atomic.Int32
	plan := func(ctx context.Context, name string) (dataset.Shard, error) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		i := strings.Index("abcde", name)
		time.Sleep(time.Duration(5-i) * 20 * time.Millisecond) // later files finish first
		return dataset.Shard{Rows: int64(10 * (i + 1)), Name: name}, nil
	}
	shards, err := dataset.PlanShards(context.Background(), files, plan)
	if err != nil {
		t.Fatal(err)
	}
	var offset int64
	for i, sh := range shards {
		if sh.Name != files[i] || sh.Index != i || sh.Offset != offset {
			t.Fatalf("shard %d = %+v, want %s at index %d, offset %d", i, sh, files[i], i, offset)
		}
		offset += sh.Rows
	}
	if most.Load() < 2 {
		t.Fatalf("at most %d files were planned at once", most.Load())
	}
	failing := func(ctx context.Context, name string) (dataset.Shard, error) {
		if name == "b" || name == "d" || name == "e" {
			return dataset.Shard{}, fmt.Errorf("%s: broken", name)
		}
		return dataset.Shard{}, nil
	}
	_, err = dataset.PlanShards(context.Background(), files, failing)
	if err == nil || !strings.HasPrefix(err.Error(), "b: broken") || !strings.Contains(err.Error(), "2 more of the 5 files") {
		t.Fatalf("err = %v, want b's error first and 2 more counted", err)
	}
}
