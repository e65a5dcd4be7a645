package transforms

import (
	"context"
	"fmt"
	"hash/fnv"
	"sort"
	"sync"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/transforms/top"

	"github.com/lemon-curation/lemon/knn"
	"github.com/lemon-curation/lemon/storage"
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
	// FNV mixes its last bytes weakly; finish with a splitmix64 step.
	z := h.Sum64() + 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// SampledRow is one row of the reference sample on its way into a reference block.
type SampledRow struct {
	Pos     int64
	ID      string
	Caption string
	Dmm     float64
	Image   []float32
	Text    []float32
}

// SampleReference builds reference blocks from a seeded random sample of n rows, chosen among
// the first occurrence of each id (firsts: KV<id, position>). Sampled rows keep their dataset
// positions (so ties break in dataset order and a sampled row is excluded from its own
// neighbours). Only the sample's rows pass through the shuffle.
func SampleReference(s beam.Scope, firsts, inputBlocks beam.PCollection, n int, seed int64, blockRows int64, tempDir string) beam.PCollection {
	s = s.Scope("SampleReference")
	keys := beam.ParDo(s, &sampleKeyFn{Seed: seed}, firsts)
	sample := top.Smallest(s, keys, n, sampleLess)
	rows := beam.ParDo(s, &extractSampleFn{BlockRows: blockRows}, inputBlocks, beam.SideInput{Input: sample})
	return beam.ParDo(s, &writeSampleBlockFn{TempDir: tempDir}, beam.GroupByKey(s, rows))
}

type sampleKeyFn struct{ Seed int64 }

func (fn *sampleKeyFn) ProcessElement(id string, pos int64) SampleKey {
	return SampleKey{Hash: SampleHash(fn.Seed, id), Pos: pos}
}

type extractSampleFn struct {
	BlockRows int64
	once      sync.Once
	rank      map[int64]int64
}

func (fn *extractSampleFn) ProcessElement(ctx context.Context, ref BlockRef, sample []SampleKey, emit func(int64, SampledRow)) error {
	fn.once.Do(func() {
		pos := make([]int64, len(sample))
		for i, k := range sample {
			pos[i] = k.Pos
		}
		sort.Slice(pos, func(i, j int) bool { return pos[i] < pos[j] })
		fn.rank = make(map[int64]int64, len(pos))
		for i, p := range pos {
			fn.rank[p] = int64(i)
		}
	})
	b, err := readBlock(ctx, ref.Path)
	if err != nil {
		return err
	}
	d := b.Dim
	for i, p := range b.Pos {
		if rank, ok := fn.rank[p]; ok {
			emit(rank/fn.BlockRows, SampledRow{Pos: p, ID: b.ID[i], Caption: b.Caption[i], Dmm: b.Dmm[i],
				Image: b.Image[i*d : (i+1)*d], Text: b.Text[i*d : (i+1)*d]})
		}
	}
	return nil
}

type writeSampleBlockFn struct{ TempDir string }

func (fn *writeSampleBlockFn) ProcessElement(ctx context.Context, index int64, rows func(*SampledRow) bool) (BlockRef, error) {
	var all []SampledRow
	var r SampledRow
	for rows(&r) {
		all = append(all, r)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Pos < all[j].Pos })
	b := &knn.Block{}
	for _, r := range all {
		b.Dim = len(r.Image)
		b.Image = append(b.Image, r.Image...)
		b.Text = append(b.Text, r.Text...)
		b.Pos = append(b.Pos, r.Pos)
		b.Self = append(b.Self, -1)
		b.Dmm = append(b.Dmm, r.Dmm)
		b.ID = append(b.ID, r.ID)
		b.Caption = append(b.Caption, r.Caption)
	}
	p := storage.Join(fn.TempDir, "blocks", fmt.Sprintf("sample-%06d.blk", index))
	if err := writeBlock(ctx, p, b); err != nil {
		return BlockRef{}, err
	}
	return BlockRef{Side: "sample", Chunk: index, Path: p, Rows: int64(b.Len()), FirstPos: b.Pos[0]}, nil
}
