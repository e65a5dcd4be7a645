package transforms

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/lemon-curation/lemon/knn"
)

// fill sets every field reachable from v (a pointer) to a non-zero value, each a different one:
// a coder that forgets a field, or swaps two, then fails the round trip below.
func fill(v reflect.Value, next *int) {
	*next++
	n := *next
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), next)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			fill(v.Field(i), next)
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := 0; i < 2; i++ {
			fill(v.Index(i), next)
		}
	case reflect.String:
		v.SetString(fmt.Sprintf("s%d é", n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(-int64(n) * 1000003)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(n) + 0.25)
	default:
		panic(fmt.Sprintf("fill: no value for a %s", v.Type()))
	}
}

func filled[T any]() T {
	var v T
	n := 0
	fill(reflect.ValueOf(&v).Elem(), &n)
	return v
}

// Every field of every coded type survives its coder.
func TestCodersKeepEveryField(t *testing.T) {
	encOutcome := func(o Outcome) ([]byte, error) { return encodeOutcome(o), nil }
	roundTrip(t, Outcome{Scored: filled[[]Scored]()}, encOutcome, decodeOutcome)
	roundTrip(t, Outcome{Fault: filled[*Fault]()}, encOutcome, decodeOutcome)
	roundTrip(t, filled[PartialBlock](), encodePartialBlock, decodePartialBlock)
	roundTrip(t, filled[IDBatch](), encodeIDBatch, decodeIDBatch)
}

func roundTrip[T any](t *testing.T, want T, enc func(T) ([]byte, error), dec func([]byte) (T, error)) {
	t.Helper()
	b, err := enc(want)
	if err != nil {
		t.Fatalf("%T: %v", want, err)
	}
	got, err := dec(b)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("%T: got %+v, %v;\nwant %+v", want, got, err, want)
	}
}

func TestCodersRoundTrip(t *testing.T) {
	nbs := []knn.Neighbour{{Pos: 3, ID: "a", Dist: 0.25, Cross: -1e-300, Dmm: 2, SameCaption: true}, {Pos: -7, Dist: 1}}
	scored := []Scored{
		{},
		{Pos: 1 << 40, Shard: 3, Index: 9, ID: "id é", Caption: "a photo", Dmm: 0.1, Sn: 0.2, Sm: 0.3, Score: 1.5,
			ImageNeighbours: []string{"x", ""}, TextNeighbours: []string{}, ImageList: nbs, TextList: []knn.Neighbour{}},
	}
	o := Outcome{Scored: scored}
	b := encodeOutcome(o)
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
		b := encodeOutcome(o)
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

// joinIDs takes a shortcut for ids encoding/csv writes as they are: the bytes must not change.
func TestJoinIDsAsCSV(t *testing.T) {
	cases := [][]string{
		{"a", "b"}, {"000123", "x_y-z.jpg", "é"}, {}, {""}, {"a", ""}, {" a"}, {"a b"}, {`a"b`},
		{"a\nb"}, {"a\rb"}, {`\.`}, {"\u00a0x"}, {"x\u00a0"}, {"\tx"}, {"x\t"}, {"a,b"}, {"#x"},
	}
	for _, ids := range cases {
		if got, want := joinIDs(ids), csvIDs(ids); got != want {
			t.Errorf("joinIDs(%q) = %q, encoding/csv writes %q", ids, got, want)
		}
	}
}
