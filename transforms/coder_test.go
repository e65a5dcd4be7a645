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
