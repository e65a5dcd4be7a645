package transforms

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/lemon-curation/lemon/dataset"
)

// meetingFormat is a test format whose Read of a shard returns only once every shard's Read has
// started (or fails after a timeout): shards read one after another never all meet.
type meetingFormat struct {
	shards  int
	mu      sync.Mutex
	started int
	all     chan struct{}
}

func (f *meetingFormat) Name() string                        { return "test-meeting" }
func (f *meetingFormat) Detect(context.Context, string) bool { return false }
func (f *meetingFormat) Plan(context.Context, string, dataset.Options) ([]dataset.Shard, error) {
	return nil, nil
}
func (f *meetingFormat) Metadata(context.Context, dataset.Shard, dataset.Options) (array.RecordReader, error) {
	return nil, fmt.Errorf("no metadata")
}

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
	for i := range sh.Rows {
		v := []float32{1, float32(sh.Index), float32(i)}
		if err := emit(dataset.Record{Index: i, ID: fmt.Sprintf("s%d-%d", sh.Index, i), Image: v, Text: v}); err != nil {
			return err
		}
	}
	return nil
}

// A bundle holding several shards reads them at once (prism hands one bundle every shard), and
// emits their outputs in shard order when the bundle finishes.
func TestReadShardsOfABundleInParallel(t *testing.T) {
	const shards = 2
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(shards))
	f := &meetingFormat{shards: shards, all: make(chan struct{})}
	dataset.Register(f)
	in := Input{Format: f.Name()}
	for i := range shards {
		in.Shards = append(in.Shards, dataset.Shard{Format: f.Name(), Index: i, Offset: int64(10 * i), Rows: 10, Dim: 3, Name: fmt.Sprint(i)})
	}
	fn := &readShardFn{Input: in, Config: ReadConfig{Side: "input", BlockRows: 4, TempDir: t.TempDir()}, IDBuckets: 1}
	var blocks []BlockRef
	var stats int
	emitBlock := func(b BlockRef) { blocks = append(blocks, b) }
	emitFault := func(f Fault) { t.Errorf("unexpected fault %+v", f) }
	emitIDs := func(int32, IDBatch) {}
	emitKeys := func(SampleKeys) {}
	emitStats := func(SearchStats) { stats++ }
	fn.StartBundle(context.Background(), emitBlock, emitFault, emitIDs, emitKeys, emitStats)
	for i := range shards {
		fn.ProcessElement(int32(i), emitBlock, emitFault, emitIDs, emitKeys, emitStats)
	}
	if err := fn.FinishBundle(emitBlock, emitFault, emitIDs, emitKeys, emitStats); err != nil {
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
