package transforms

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/lemon-curation/lemon/dataset"
)

// testFormat is the part of a test input format that the read stage does not use, and rows,
// which emits a shard's rows.
type testFormat struct{}

func (testFormat) Detect(context.Context, string) bool { return false }
func (testFormat) Plan(context.Context, string, dataset.Options) ([]dataset.Shard, error) {
	return nil, nil
}
func (testFormat) Metadata(context.Context, dataset.Shard, dataset.Options) (array.RecordReader, error) {
	return nil, fmt.Errorf("no metadata")
}

func (testFormat) rows(sh dataset.Shard, emit func(dataset.Record) error) error {
	for i := range sh.Rows {
		v := []float32{1, float32(sh.Index), float32(i)}
		if err := emit(dataset.Record{Index: i, ID: fmt.Sprintf("s%d-%d", sh.Index, i), Image: v, Text: v}); err != nil {
			return err
		}
	}
	return nil
}

// meetingFormat's Read of a shard returns only once every shard's Read has started (or fails
// after a timeout): shards read one after another never all meet.
type meetingFormat struct {
	testFormat
	shards  int
	mu      sync.Mutex
	started int
	all     chan struct{}
}

func (f *meetingFormat) Name() string { return "test-meeting" }

func (f *meetingFormat) Read(_ context.Context, sh dataset.Shard, _ dataset.Options, emit func(dataset.Record) error) error {
	f.mu.Lock()
	f.started++
	if f.started == f.shards {
		close(f.all)
	}
	f.mu.Unlock()
	select {
	case <-f.all:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("shard %d: the other shards were not read at the same time", sh.Index)
	}
	return f.rows(sh, emit)
}

// failingFormat cannot read shard 1.
type failingFormat struct{ testFormat }

func (failingFormat) Name() string { return "test-failing" }

func (f failingFormat) Read(_ context.Context, sh dataset.Shard, _ dataset.Options, emit func(dataset.Record) error) error {
	if sh.Index == 1 {
		return fmt.Errorf("shard 1 is unreadable")
	}
	return f.rows(sh, emit)
}

// readBundle runs readShardFn over one bundle of the given shards of format f (10 rows each,
// blocks of 4 rows) and returns the blocks it emitted, how many stats, and its error.
func readBundle(t *testing.T, f dataset.Format, shards int) (blocks []BlockRef, stats int, err error) {
	dataset.Register(f)
	in := Input{Format: f.Name()}
	for i := range shards {
		in.Shards = append(in.Shards, dataset.Shard{Format: f.Name(), Index: i, Offset: int64(10 * i), Rows: 10, Dim: 3, Name: fmt.Sprint(i)})
	}
	fn := &readShardFn{Input: in, Config: ReadConfig{Side: "input", BlockRows: 4, TempDir: t.TempDir()}, IDBuckets: 1}
	emitBlock := func(b BlockRef) { blocks = append(blocks, b) }
	emitFault := func(f Fault) { t.Errorf("unexpected fault %+v", f) }
	emitIDs := func(int32, IDBatch) {}
	emitKeys := func(SampleKeys) {}
	emitStats := func(SearchStats) { stats++ }
	fn.StartBundle(context.Background(), emitBlock, emitFault, emitIDs, emitKeys, emitStats)
	for i := range shards {
		fn.ProcessElement(int32(i), emitBlock, emitFault, emitIDs, emitKeys, emitStats)
	}
	err = fn.FinishBundle(emitBlock, emitFault, emitIDs, emitKeys, emitStats)
	return blocks, stats, err
}

// A bundle holding several shards reads them at once (prism hands one bundle every shard), and
// emits their outputs in shard order when the bundle finishes.
func TestReadShardsOfABundleInParallel(t *testing.T) {
	const shards = 2
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(shards))
	blocks, stats, err := readBundle(t, &meetingFormat{shards: shards, all: make(chan struct{})}, shards)
	if err != nil {
		t.Fatal(err)
	}
	// 10 rows per shard in blocks of 4: 3 blocks each, shard 0's first.
	if len(blocks) != 6 || stats != shards {
		t.Fatalf("got %d blocks and %d stats, want 6 and %d", len(blocks), stats, shards)
	}
	for i, b := range blocks {
		if want := int32(i / 3); b.Shard != want || b.Chunk != int64(i%3) {
			t.Errorf("block %d is shard %d chunk %d, want shard %d chunk %d", i, b.Shard, b.Chunk, want, i%3)
		}
	}
}

// A shard that cannot be read fails the bundle with the reader's error.
func TestReadShardsOfABundleFailure(t *testing.T) {
	if _, _, err := readBundle(t, failingFormat{}, 3); err == nil || !strings.Contains(err.Error(), "shard 1 is unreadable") {
		t.Fatalf("FinishBundle: %v, want shard 1's read error", err)
	}
}
