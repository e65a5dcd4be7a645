package transforms

import (
	"reflect"
	"strings"
	"testing"

	"github.com/lemon-curation/lemon/knn"
)

func TestCodersRoundTrip(t *testing.T) {
	nbs := []knn.Neighbour{{Pos: 3, ID: "a", Dist: 0.25, Cross: -1e-300, Dmm: 2, SameCaption: true}, {Pos: -7, Dist: 1}}
	scored := []Scored{
		{},
		{Pos: 1 << 40, Shard: 3, Index: 9, ID: "id é", Caption: "a photo", Dmm: 0.1, Sn: 0.2, Sm: 0.3, Score: 1.5,
			ImageNeighbours: []string{"x", ""}, TextNeighbours: []string{}, ImageList: nbs, TextList: []knn.Neighbour{}},
	}
	batch := ScoredBatch{Shard: 2, Rows: scored}
	b, _ := encodeScoredBatch(batch)
	if got, err := decodeScoredBatch(b); err != nil || !reflect.DeepEqual(got, batch) {
		t.Fatalf("batch: got %+v, %v; want %+v", got, err, batch)
	}
	o := Outcome{Scored: scored}
	b, _ = encodeOutcome(o)
	if got, err := decodeOutcome(b); err != nil || !reflect.DeepEqual(got, o) {
		t.Fatalf("outcome: got %+v, %v; want %+v", got, err, o)
	}
	// Every truncation is an error, never a panic or a silent partial value.
	for n := 0; n < len(b); n++ {
		if _, err := decodeOutcome(b[:n]); err == nil {
			t.Fatalf("outcome truncated to %d of %d bytes decoded without error", n, len(b))
		}
	}
	for _, o := range []Outcome{{}, {Fault: &Fault{Pos: 5, Shard: 1, Index: 2, ID: "q", Reason: "bad row"}}} {
		b, _ := encodeOutcome(o)
		if got, err := decodeOutcome(b); err != nil || !reflect.DeepEqual(got, o) {
			t.Fatalf("outcome: got %+v, %v; want %+v", got, err, o)
		}
	}
	p := PartialBlock{Lists: knn.Lists{Image: [][]knn.Neighbour{nbs, nil}, Text: [][]knn.Neighbour{{}, nbs}}}
	b, _ = encodePartialBlock(p)
	if got, err := decodePartialBlock(b); err != nil || !reflect.DeepEqual(got, p) {
		t.Fatalf("partial: got %+v, %v; want %+v", got, err, p)
	}
	if _, err := decodePartialBlock(append(b, 0)); err == nil || !strings.Contains(err.Error(), "trailing") {
		t.Fatalf("trailing bytes: %v", err)
	}
}

func TestIDBatchCoder(t *testing.T) {
	want := IDBatch{IDs: []string{"a", "", "id é"}, Pos: []int64{0, 1 << 40, 7}}
	b, _ := encodeIDBatch(want)
	if got, err := decodeIDBatch(b); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, %v; want %+v", got, err, want)
	}
	for n := 0; n < len(b); n++ {
		if _, err := decodeIDBatch(b[:n]); err == nil {
			t.Fatalf("batch truncated to %d of %d bytes decoded without error", n, len(b))
		}
	}
}

// An id lands in the same bucket in every shard's batcher (so duplicates across shards meet),
// and ids spread over the buckets.
func TestIDBatcherBuckets(t *testing.T) {
	a, b := newIDBatcher(8), newIDBatcher(8)
	for i := range 1000 {
		id := strings.Repeat("x", i%7) + string(rune('a'+i%26)) + strings.Repeat("y", i%5)
		a.add(id, int64(i))
		b.add(id, int64(i+1000))
	}
	used := 0
	for k := range a.batches {
		if !reflect.DeepEqual(a.batches[k].IDs, b.batches[k].IDs) {
			t.Fatalf("bucket %d holds different ids in two batchers", k)
		}
		if len(a.batches[k].IDs) > 0 {
			used++
		}
	}
	if used < 4 {
		t.Fatalf("ids used %d of 8 buckets", used)
	}
	var got []int32
	a.emit(func(k int32, _ IDBatch) { got = append(got, k) })
	if len(got) != used {
		t.Fatalf("emitted %d batches, want %d (the non-empty buckets)", len(got), used)
	}
}
