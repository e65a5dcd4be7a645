package transforms

import (
	"cmp"
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/lemon-curation/lemon/tiling"
)

// A seeded reference sample of n rows is the n rows with the smallest (SampleHash(seed, id),
// position) among the first occurrence of each valid id: the same rows whatever the sharding,
// runner or worker count. It is drawn without an element per row:
//
//  1. While reading, each shard keeps as candidates the rows whose hash is at most a threshold
//     chosen so that about 1.25 n rows (plus a safety margin) pass; it writes them to blocks
//     of their own and emits their keys (hash, position, id) as one batch per shard.
//  2. A combiner over the keys finds the cutoff: the n-th smallest (hash, position) among the
//     candidates' first occurrences, and the later occurrences of the ids it keeps.
//  3. The candidate blocks, grouped by shard, are trimmed to the sample and rewritten as the
//     reference's blocks. Only the candidates (about 1.25 n rows) are read again.
//
// Should fewer than n distinct candidates pass the threshold although the input has more
// rows (many invalid or duplicate rows), the job stops with an error saying so, since the
// sample would not be the one defined above.

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

// SampleCandidates is how many rows a sample of n from rows rows keeps as candidates (on
// average), and SampleThreshold the hash at or below which a row is one. The margin (25% plus
// ten standard deviations) leaves room for invalid and duplicate rows.
func SampleCandidates(n, rows int64) int64 {
	want := 1.25*float64(n) + 10*math.Sqrt(float64(n)) + 100
	return int64(min(want, float64(rows)))
}

// SampleThreshold is the hash at or below which a row is a sample candidate: every row
// (math.MaxUint64) when the candidates would be nearly all rows anyway.
func SampleThreshold(n, rows int64) uint64 {
	c := SampleCandidates(n, rows)
	if c >= rows {
		return math.MaxUint64
	}
	return uint64(float64(c) / float64(rows) * (1 << 64))
}

// SampleKeys are one shard's sample candidates, in position order.
type SampleKeys struct {
	Shard int32
	Hash  []uint64
	Pos   []int64
	ID    []string
}

// SampleCutoff is what the combiner finds: the sample is the first occurrences with (hash,
// position) at most (Hash, Pos), leaving out the positions in Drop (later occurrences of the
// sampled ids). Rows is how many rows it holds (n, or fewer if there are not enough
// candidates), and PerShard how many of them each shard holds.
type SampleCutoff struct {
	Hash     uint64
	Pos      int64
	Rows     int64
	Drop     []int64
	Shards   []int32
	PerShard []int64
}

// sampleAccum collects candidate keys; sampleCutoffFn keeps it to about 2n entries by
// trimming to the n best ids whenever it grows past that.
type sampleAccum struct {
	Shard []int32
	Hash  []uint64
	Pos   []int64
	ID    []string
}

type sampleCutoffFn struct{ N int64 }

func (fn *sampleCutoffFn) CreateAccumulator() sampleAccum { return sampleAccum{} }

func (fn *sampleCutoffFn) AddInput(a sampleAccum, k SampleKeys) sampleAccum {
	for range k.Pos {
		a.Shard = append(a.Shard, k.Shard)
	}
	a.Hash = append(a.Hash, k.Hash...)
	a.Pos = append(a.Pos, k.Pos...)
	a.ID = append(a.ID, k.ID...)
	return fn.maybeTrim(a)
}

func (fn *sampleCutoffFn) MergeAccumulators(a, b sampleAccum) sampleAccum {
	a.Shard = append(a.Shard, b.Shard...)
	a.Hash = append(a.Hash, b.Hash...)
	a.Pos = append(a.Pos, b.Pos...)
	a.ID = append(a.ID, b.ID...)
	return fn.maybeTrim(a)
}

func (fn *sampleCutoffFn) maybeTrim(a sampleAccum) sampleAccum {
	if int64(len(a.Pos)) <= 2*fn.N+4096 {
		return a
	}
	groups := sampleGroups(a)
	return keepGroups(a, groups[:min(len(groups), int(fn.N))])
}

func (fn *sampleCutoffFn) ExtractOutput(a sampleAccum) SampleCutoff {
	groups := sampleGroups(a)
	groups = groups[:min(len(groups), int(fn.N))]
	c := SampleCutoff{Rows: int64(len(groups))}
	perShard := map[int32]int64{}
	for _, g := range groups {
		first := g.members[0]
		perShard[a.Shard[first]]++
		for _, m := range g.members[1:] {
			c.Drop = append(c.Drop, a.Pos[m])
		}
	}
	if len(groups) > 0 {
		last := groups[len(groups)-1]
		c.Hash, c.Pos = last.hash, a.Pos[last.members[0]]
	}
	slices.Sort(c.Drop)
	for sh := range perShard {
		c.Shards = append(c.Shards, sh)
	}
	slices.Sort(c.Shards)
	for _, sh := range c.Shards {
		c.PerShard = append(c.PerShard, perShard[sh])
	}
	return c
}

// sampleGroup is one id among the candidates: its hash and its entries, first occurrence first.
type sampleGroup struct {
	hash    uint64
	members []int
}

// sampleGroups groups a's entries by id (equal ids have equal hashes) and orders the groups by
// (hash, first position): the sample's order.
func sampleGroups(a sampleAccum) []sampleGroup {
	idx := make([]int, len(a.Pos))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(x, y int) int {
		if c := cmp.Compare(a.Hash[x], a.Hash[y]); c != 0 {
			return c
		}
		if c := strings.Compare(a.ID[x], a.ID[y]); c != 0 {
			return c
		}
		return cmp.Compare(a.Pos[x], a.Pos[y])
	})
	var groups []sampleGroup
	for i := 0; i < len(idx); {
		j := i + 1
		for j < len(idx) && a.Hash[idx[j]] == a.Hash[idx[i]] && a.ID[idx[j]] == a.ID[idx[i]] {
			j++
		}
		groups = append(groups, sampleGroup{hash: a.Hash[idx[i]], members: idx[i:j:j]})
		i = j
	}
	slices.SortFunc(groups, func(x, y sampleGroup) int {
		if c := cmp.Compare(x.hash, y.hash); c != 0 {
			return c
		}
		return cmp.Compare(a.Pos[x.members[0]], a.Pos[y.members[0]])
	})
	return groups
}

func keepGroups(a sampleAccum, groups []sampleGroup) sampleAccum {
	var out sampleAccum
	for _, g := range groups {
		for _, m := range g.members {
			out.Shard = append(out.Shard, a.Shard[m])
			out.Hash = append(out.Hash, a.Hash[m])
			out.Pos = append(out.Pos, a.Pos[m])
			out.ID = append(out.ID, a.ID[m])
		}
	}
	return out
}

// SampleReference trims the candidates read from the input (their blocks, of side
// SideCandidates, and their keys) to the sample of n rows drawn with seed and writes it as reference blocks of
// at most blockRows rows. complete says the candidates are every valid row (the threshold let
// all through), so a short sample is simply all of them. It returns the sample's blocks and the
// bytes it read and wrote.
func SampleReference(s beam.Scope, candidateBlocks, keys beam.PCollection, n int64, seed int64, complete bool, blockRows int64, tempDir string) (blocks, stats beam.PCollection) {
	s = s.Scope("SampleReference")
	cutoff := beam.Combine(s, &sampleCutoffFn{N: n}, keys)
	groups := beam.ParDo(s, &groupSampleFn{N: n, Complete: complete, BlockRows: blockRows}, beam.Impulse(s),
		beam.SideInput{Input: candidateBlocks}, beam.SideInput{Input: cutoff})
	return beam.ParDo2(s, &writeSampleFn{Seed: seed, BlockRows: blockRows, TempDir: tempDir}, beam.Reshuffle(s, groups))
}

// SampleGroup is candidate blocks of consecutive shards whose sampled rows make up about one
// block, with what is needed to pick those rows.
type SampleGroup struct {
	Index  int64
	Blocks []BlockRef
	Cutoff SampleCutoff // Drop holds only the positions within Blocks
}

type groupSampleFn struct {
	N         int64
	Complete  bool
	BlockRows int64
}

func (fn *groupSampleFn) ProcessElement(_ []byte, blockIter func(*BlockRef) bool, cutoffIter func(*SampleCutoff) bool, emit func(SampleGroup)) error {
	var c SampleCutoff
	if !cutoffIter(&c) {
		return nil // no candidates at all: there is no valid row
	}
	if c.Rows < fn.N && !fn.Complete {
		return fmt.Errorf("the reference sample has only %d of the %d rows asked for: so many rows are invalid or duplicate ids that too few were kept as sample candidates; ask for fewer rows with --reference-sample", c.Rows, fn.N)
	}
	perShard := map[int32]int64{}
	for i, sh := range c.Shards {
		perShard[sh] = c.PerShard[i]
	}
	byShard := map[int32][]BlockRef{}
	var b BlockRef
	for blockIter(&b) {
		if perShard[b.Shard] > 0 {
			byShard[b.Shard] = append(byShard[b.Shard], b)
		}
	}
	// Consecutive shards whose sampled rows make up about one block form a group, by the rule
	// the planner predicts the sample's blocks with (tiling.SampleBlocks).
	per := make([]int64, len(c.Shards))
	for i, sh := range c.Shards {
		per[i] = perShard[sh]
	}
	var index int64
	for _, span := range tiling.Groups(per, fn.BlockRows) {
		g := SampleGroup{Index: index}
		for _, sh := range c.Shards[span[0]:span[1]] {
			bs := byShard[sh]
			sort.Slice(bs, func(i, j int) bool { return bs[i].FirstPos < bs[j].FirstPos })
			g.Blocks = append(g.Blocks, bs...)
		}
		if len(g.Blocks) == 0 {
			continue
		}
		g.Cutoff = c
		g.Cutoff.Drop = positionsIn(c.Drop, g.Blocks)
		g.Cutoff.Shards, g.Cutoff.PerShard = nil, nil
		emit(g)
		index++
	}
	return nil
}

type writeSampleFn struct {
	Seed      int64
	BlockRows int64
	TempDir   string
}

func (fn *writeSampleFn) ProcessElement(ctx context.Context, g SampleGroup, emitBlock func(BlockRef), emitStats func(SearchStats)) error {
	var stats SearchStats
	drop := dropSet(g.Cutoff.Drop)
	var w *blockWriter
	defer func() {
		if w != nil {
			w.release()
		}
	}()
	for _, ref := range g.Blocks {
		b, n, err := readBlockRaw(ctx, ref.Path)
		if err != nil {
			return err
		}
		stats.TempReadBytes += n
		d := b.Dim
		if w == nil {
			w = &blockWriter{ctx: ctx, dir: fn.TempDir, side: SideSample, shard: int32(g.Index), dim: d, rows: fn.BlockRows, emit: emitBlock, stats: &stats}
		}
		for i, p := range b.Pos {
			if drop[p] || !sampled(SampleHash(fn.Seed, b.ID[i]), p, g.Cutoff) {
				continue
			}
			if err := w.add(p, b.ID[i], b.Caption[i], b.Image[i*d:(i+1)*d], b.Text[i*d:(i+1)*d], b.Dmm[i]); err != nil {
				return err
			}
		}
	}
	if w != nil {
		if err := w.flush(); err != nil {
			return err
		}
	}
	emitStats(stats)
	return nil
}

// sampled says whether a first occurrence with this hash and position is in the sample.
func sampled(hash uint64, pos int64, c SampleCutoff) bool {
	return hash < c.Hash || hash == c.Hash && pos <= c.Pos
}
