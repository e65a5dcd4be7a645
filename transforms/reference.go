package transforms

import (
	"hash/fnv"
	"sort"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/transforms/top"
)

// SampleKey ranks rows for a seeded reference sample: the N rows with the smallest Hash form
// the sample, whatever the sharding or runner.
type SampleKey struct {
	Hash uint64
	Pos  int64
}

func sampleLess(a, b SampleKey) bool {
	if a.Hash != b.Hash {
		return a.Hash < b.Hash
	}
	return a.Pos < b.Pos
}

// SampleHash is a row's sample key: a hash of the seed and the row's id.
func SampleHash(seed int64, id string) uint64 {
	h := fnv.New64a()
	var b [8]byte
	for i := range b {
		b[i] = byte(seed >> (8 * i))
	}
	h.Write(b[:])
	h.Write([]byte(id))
	// fnv mixes the last bytes weakly; finish with a splitmix64 step.
	z := h.Sum64() + 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// SampleReference keys a seeded random sample of n rows by reference block. A row keeps its
// dataset position as its reference position (so ties break in dataset order, and a row
// in the sample is excluded from its own neighbours); blocks are cut by rank in the sample so
// they stay full.
func SampleReference(s beam.Scope, rows beam.PCollection, n int, seed int64, blockRows int64) beam.PCollection {
	s = s.Scope("SampleReference")
	keys := beam.ParDo(s, &sampleKeyFn{Seed: seed}, rows)
	sample := top.Smallest(s, keys, n, sampleLess)
	return beam.ParDo(s, &keySampledFn{BlockRows: blockRows}, rows, beam.SideInput{Input: sample})
}

type sampleKeyFn struct{ Seed int64 }

func (fn *sampleKeyFn) ProcessElement(r Row) SampleKey {
	return SampleKey{Hash: SampleHash(fn.Seed, r.ID), Pos: r.Pos}
}

type keySampledFn struct {
	BlockRows int64
	rank      map[int64]int64
}

func (fn *keySampledFn) ProcessElement(r Row, sample []SampleKey, emit func(int64, Row)) {
	if fn.rank == nil {
		pos := make([]int64, len(sample))
		for i, k := range sample {
			pos[i] = k.Pos
		}
		sort.Slice(pos, func(i, j int) bool { return pos[i] < pos[j] })
		fn.rank = make(map[int64]int64, len(pos))
		for i, p := range pos {
			fn.rank[p] = int64(i)
		}
	}
	if rank, ok := fn.rank[r.Pos]; ok {
		emit(rank/fn.BlockRows, r)
	}
}

// MarkSelf sets each query row's Self to the position of the reference row with the same id
// (a separate reference dataset may contain the query row itself), or -1.
func MarkSelf(s beam.Scope, queries, refs beam.PCollection) beam.PCollection {
	s = s.Scope("MarkSelf")
	q := beam.ParDo(s, rowByID, queries)
	rp := beam.ParDo(s, posByID, refs)
	return beam.ParDo(s, markSelfFn, beam.CoGroupByKey(s, q, rp))
}

func markSelfFn(_ string, qs func(*Row) bool, rs func(*int64) bool, emit func(Row)) {
	self := int64(-1)
	var p int64
	for rs(&p) {
		self = p
	}
	var r Row
	for qs(&r) {
		r.Self = self
		emit(r)
	}
}

// SetSelfToPos marks each row as its own reference (self-join and sampled reference).
func SetSelfToPos(s beam.Scope, rows beam.PCollection) beam.PCollection {
	s = s.Scope("SetSelf")
	return beam.ParDo(s, selfIsPos, rows)
}

func rowByID(r Row) (string, Row)   { return r.ID, r }
func posByID(r Row) (string, int64) { return r.ID, r.Pos }
func selfIsPos(r Row) Row           { r.Self = r.Pos; return r }
