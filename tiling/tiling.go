// Package tiling decides how lemon's neighbour search is cut into tasks, and what each way of
// cutting it costs, before anything runs. It prices every search shape for a job's size and a
// per-task memory budget (temporary-storage reads and writes, shuffle, memory per task, FLOPs,
// estimated hours on a stated worker profile) and picks the cheapest that fits. The pipeline
// runs the shape it picks, and `lemon plan` prints the same figures. It knows nothing of Beam.
//
// The shapes:
//
//   - memory: every task holds the whole reference (loaded once per worker process and shared
//     by the tasks running there). A self-join done by one task computes each pair once and
//     feeds both rows; otherwise query groups of Q rows each search the whole reference.
//   - stream: query groups of Q rows each stream the reference in tiles of T rows, keeping a
//     running top-k, and score their rows in place. Nothing but scored rows leaves a task.
//   - pairs: the rows are cut into tiles of T rows and each task searches one tile pair (in a
//     self-join only pairs i <= j, each product feeding both tiles' rows); the partial lists
//     go to temporary storage and a merge task per query tile combines and scores them.
package tiling

import (
	"fmt"
	"math"
	"strings"
)

// Shape names a way of cutting the search into tasks.
type Shape string

const (
	Memory Shape = "memory"
	Stream Shape = "stream"
	Pairs  Shape = "pairs"
)

// Shapes lists every shape, in the order they are tried.
var Shapes = []Shape{Memory, Stream, Pairs}

// Job is the size of one search: what the cost of each shape depends on.
type Job struct {
	QueryRows int64 // rows to score (N)
	RefRows   int64 // rows of the reference set (M); the same rows in a self-join
	Dim       int
	K         int
	// SelfJoin: the reference is the query rows themselves, so a product can feed both sides.
	SelfJoin bool
	// ValueBytes is the size of one stored embedding value in the temporary blocks: 2 when the
	// input is float16, else 4.
	ValueBytes int
	// PackedBytes is the size of one value as the search kernel holds it: 2 for the bf16
	// backend, else 4.
	PackedBytes int
	// BlockRows is the most rows one block file holds (--block-rows); groups and tiles are made
	// of whole blocks.
	BlockRows int64
	// Shards lists the input's shard row counts: blocks never span shards, so these fix how
	// many blocks there are. Nil means one shard of QueryRows rows.
	Shards []int64
	// RefShards is the same for a separate reference dataset (nil: the reference is made of
	// blocks of BlockRows rows).
	RefShards []int64
	// IDBytes and CaptionBytes are the mean lengths of a row's id and caption.
	IDBytes, CaptionBytes float64
	// EmitIDs: neighbour ids travel with the scored rows (--emit-neighbours); SaveLists: whole
	// neighbour lists do (--save-neighbour-lists).
	EmitIDs, SaveLists bool
	// SampleCandidates is how many candidate rows the read stage keeps for a sampled reference
	// (0: the reference is not sampled). They are written once and read once to build the
	// sample's blocks.
	SampleCandidates int64
	// RefBlocksWritten: the reference's rows are written to blocks of their own (a separate
	// reference dataset, a sample or a split), rather than being the query blocks.
	RefBlocksWritten bool
}

// Budget is what a task may use and how many run at once.
type Budget struct {
	TaskBytes int64 // memory one task may hold (--worker-memory-mib)
	Workers   int   // worker processes the runner keeps busy at once
}

// Profile is the worker a time estimate assumes.
type Profile struct {
	Name      string  `json:"name"`
	Flops     float64 `json:"flops_per_second"`      // sustained FLOP/s of one worker on the search's products
	TempBytes float64 `json:"temp_bytes_per_second"` // bytes/s one worker reads or writes temporary storage at
	Note      string  `json:"note"`                  // where the rates come from
}

// Cost is one shape priced for a job. The byte and FLOP counts are what the job itself
// measures and records in its manifest ("search"), so a prediction can be checked.
type Cost struct {
	Shape Shape
	// Fits says whether a task of this shape stays within the budget; Why says why not.
	Fits bool
	Why  string
	// QueryRowsPerTask (Q) and TileRows (T), before rounding to whole blocks.
	QueryRowsPerTask int64
	TileRows         int64
	// Groups is the number of query groups (memory, stream) or tiles (pairs).
	Groups int64
	// BlockRows is the most rows a block file holds: --block-rows, or less where query
	// groups or tiles are smaller (they are made of whole blocks).
	BlockRows int64

	Tasks               int64
	TempReadBytes       int64
	TempWriteBytes      int64
	ShuffleBytes        int64
	PeakTaskMemoryBytes int64
	Flops               float64
	// Hours is the estimated wall time of the search on Budget.Workers workers of the
	// profile; WorkerHours the same summed over workers.
	Hours, WorkerHours float64
}

// neighbourBytes is the in-memory size of one knn.Neighbour; candBytes of a selection candidate.
const (
	neighbourBytes = 56
	candBytes      = 8
	stringHeader   = 16
)

// Sizes per row, from how the knn package and the transforms hold and store rows. They are
// estimates of the large buffers only; the pipeline accounts what it holds with the same
// figures (HeldRowBytes, QueryRowBytes), so prediction and manifest agree by construction for
// memory, and the byte counts of files and shuffled rows are measured exactly.

// FileRowBytes is the size of one row in a block file.
func (j Job) FileRowBytes() float64 {
	return float64(2*j.Dim*j.ValueBytes) + 16 + 8 + j.IDBytes + j.CaptionBytes
}

// HeldRowBytes is what a task holds per reference row it has loaded: float32 embeddings of
// both modalities, their packed copy, the per-row figures of the search and its sketch, and the
// row's strings.
func (j Job) HeldRowBytes() float64 {
	return float64(2*j.Dim*4+2*j.Dim*j.PackedBytes) + 24 + 2*stringHeader + j.IDBytes + j.CaptionBytes + 64 + sketchRowBytes
}

// sketchRowBytes is what the knn package's sketch (knn/sketch.go) holds per row at its peak,
// both modalities: 30 leading coordinates and a 32-value sketch row in float32, the sketch row
// packed (float32 at most), and per-row figures (norms, error bound, slack, threshold).
const sketchRowBytes = 2 * (30*4 + 32*4 + 32*4 + 4*8 + 4)

// QueryRowBytes is what a task holds per query row: as HeldRowBytes, plus its candidate sets,
// its neighbour lists (the running lists and one tile's), and its scored row.
func (j Job) QueryRowBytes() float64 {
	cands := 2 * float64((2*j.K+64)*candBytes+4*j.K+16)
	lists := 2 * 2 * float64(j.K*neighbourBytes)
	return j.HeldRowBytes() + cands + lists + 200
}

// PartialRowBytes is the encoded size of one query row's partial lists (both modalities), as
// the pairs shape writes them to temporary storage.
func (j Job) PartialRowBytes() float64 {
	id := 0.0
	if j.EmitIDs {
		id = j.IDBytes
	}
	return 2 * (1 + float64(j.K)*(varintBytes(j.RefRows)+24+1+1+id))
}

// ScoredRowBytes is the encoded size of one scored row on its way to the writers: what every
// shape sends through the runner's shuffle.
func (j Job) ScoredRowBytes() float64 {
	n := varintBytes(j.QueryRows)*2 + 1 + (1 + j.IDBytes) + (2 + j.CaptionBytes) + 32 + 4
	if j.EmitIDs {
		n += 2 * float64(j.K) * (1 + j.IDBytes)
	}
	if j.SaveLists {
		n += 2 * float64(j.K) * (varintBytes(j.RefRows) + 24 + 1 + 1 + j.IDBytes)
	}
	return n
}

// varintBytes is the mean length of a zig-zag varint over 0..n-1.
func varintBytes(n int64) float64 {
	if n <= 1 {
		return 1
	}
	var total float64
	lo := int64(0)
	for size := 1; lo < n; size++ {
		hi := min(n, int64(1)<<(7*size-1)) // zig-zag: v uses size bytes while 2v < 2^(7 size)
		total += float64(hi-lo) * float64(size)
		lo = hi
	}
	return total / float64(n)
}

// Groups splits rows held in blocks of the given sizes (in order) into consecutive runs of at
// most limit rows (a block larger than limit is a run of its own). The pipeline cuts real
// blocks with it and the planner predicted blocks, so both count the same groups.
func Groups(blockRows []int64, limit int64) [][2]int {
	var out [][2]int
	start, rows := 0, int64(0)
	for i, r := range blockRows {
		if i > start && rows+r > limit {
			out = append(out, [2]int{start, i})
			start, rows = i, 0
		}
		rows += r
	}
	if start < len(blockRows) {
		out = append(out, [2]int{start, len(blockRows)})
	}
	return out
}

// PlannedBlocks lists the row counts of the blocks a read stage writes for shards of the given
// sizes (every row valid).
func PlannedBlocks(shards []int64, rows, blockRows int64) []int64 {
	if shards == nil {
		shards = []int64{rows}
	}
	var out []int64
	for _, s := range shards {
		for s > 0 {
			n := min(s, blockRows)
			out = append(out, n)
			s -= n
		}
	}
	return out
}

// SampleBlocks lists the row counts of the blocks a sampled reference is written to, given the
// sample's rows in each input shard (in shard order): consecutive shards are grouped up to
// blockRows rows (Groups) and each group is cut into blocks of at most blockRows. The
// pipeline's sample writer groups shards with the same rule.
func SampleBlocks(perShard []int64, blockRows int64) []int64 {
	var out []int64
	for _, g := range Groups(perShard, blockRows) {
		var rows int64
		for _, r := range perShard[g[0]:g[1]] {
			rows += r
		}
		out = append(out, PlannedBlocks(nil, rows, blockRows)...)
	}
	return out
}

// Headroom is the share of a task's budget its large buffers may take: the rest is left for
// what the model does not count (the runtime, read buffers, the collector's slack).
const Headroom = 0.85

// Price works out one shape's cost for job j under budget b.
func Price(j Job, s Shape, b Budget, p Profile) Cost {
	c := Cost{Shape: s, Fits: true}
	b.TaskBytes = int64(Headroom * float64(b.TaskBytes))
	n, m := j.QueryRows, j.RefRows
	file, held, query := j.FileRowBytes(), j.HeldRowBytes(), j.QueryRowBytes()
	// Groups and tiles are made of whole blocks, so blocks are cut no larger than they are.
	blocksOf := func(limit int64) (q, r []int64) {
		c.BlockRows = max(1, min(j.BlockRows, limit))
		q = PlannedBlocks(j.Shards, n, c.BlockRows)
		r = q
		switch {
		case j.SampleCandidates > 0:
			// A sample takes about m/n of each shard's rows.
			shards := j.Shards
			if shards == nil {
				shards = []int64{n}
			}
			per := make([]int64, len(shards))
			for i, rows := range shards {
				per[i] = int64(math.Round(float64(m) * float64(rows) / float64(max(1, n))))
			}
			r = SampleBlocks(per, c.BlockRows)
		case j.RefBlocksWritten:
			r = PlannedBlocks(j.RefShards, m, c.BlockRows)
		}
		return q, r
	}
	// Writes: the read stage writes every valid query row once, and the reference's own blocks
	// if it has them; a sample's candidates are written, read back and the sample rewritten.
	writes := float64(n) * file
	reads := 0.0
	if j.RefBlocksWritten {
		writes += float64(m) * file
	}
	if j.SampleCandidates > 0 {
		writes += float64(j.SampleCandidates) * file
		reads += float64(j.SampleCandidates) * file
	}
	workers := int64(max(1, b.Workers))
	var mem float64
	switch s {
	case Memory:
		c.TileRows = m
		if j.SelfJoin && workers == 1 {
			// One task searches every row against every other, each product feeding both.
			c.QueryRowsPerTask, c.Groups, c.Tasks, c.BlockRows = n, 1, 1, j.BlockRows
			mem = float64(n) * query
			reads += float64(n) * file
			c.Flops = 2 * float64(j.Dim) * float64(n) * float64(n+1) // n(n+1)/2 pairs, 2 modalities
			break
		}
		// Query groups, at least one per worker, each searching the whole reference, which each
		// worker process loads once.
		q := int64(float64(b.TaskBytes)-float64(m)*held) / int64(max(1, query))
		q = min(q, ceilDiv(n, workers))
		if q < 1 {
			c.Fits, c.Why = false, fmt.Sprintf("the whole reference (%s) does not fit in a task", Bytes(float64(m)*held))
			q = max(1, min(n, j.BlockRows))
		}
		c.QueryRowsPerTask = q
		qBlocks, _ := blocksOf(q)
		c.Groups = int64(len(Groups(qBlocks, q)))
		c.Tasks = c.Groups
		mem = float64(m)*held + float64(min(q, n))*query
		reads += float64(n)*file + float64(min(workers, c.Tasks))*float64(m)*file
		c.Flops = 4 * float64(j.Dim) * float64(n) * float64(m)
	case Stream:
		// A tile gets a quarter of the budget (at least a block, at most the reference); the
		// rest holds the query group. Bigger groups mean fewer passes over the reference.
		t := int64(0.25 * float64(b.TaskBytes) / held)
		t = max(min(t, m), min(j.BlockRows, m))
		q := int64((float64(b.TaskBytes) - float64(t)*held) / query)
		q = min(q, ceilDiv(n, workers))
		if q < 1 {
			c.Fits, c.Why = false, "a block of reference rows and of query rows do not fit in a task together"
			q = max(1, min(n, j.BlockRows))
		}
		c.QueryRowsPerTask, c.TileRows = q, t
		qBlocks, _ := blocksOf(min(q, t))
		c.Groups = int64(len(Groups(qBlocks, q)))
		c.Tasks = c.Groups
		mem = float64(t)*held + float64(min(q, n))*query
		reads += float64(n)*file + float64(c.Groups)*float64(m)*file
		c.Flops = 4 * float64(j.Dim) * float64(n) * float64(m)
	case Pairs:
		// Tiles of T rows on both sides; a task holds two tiles as query rows (in a self-join
		// both sides get lists).
		other := held
		if j.SelfJoin {
			other = query
		}
		t := int64(float64(b.TaskBytes) / (query + other))
		t = min(t, max(n, m))
		if t < 1 {
			c.Fits, c.Why = false, "two tiles of one row do not fit in a task"
			t = 1
		}
		c.TileRows, c.QueryRowsPerTask = t, t
		qBlocks, refBlocks := blocksOf(t)
		qt := int64(len(Groups(qBlocks, t)))
		rt := int64(len(Groups(refBlocks, t)))
		c.Groups = qt
		if j.SelfJoin {
			c.Tasks = qt * (qt + 1) / 2
			c.Flops = 2 * float64(j.Dim) * float64(n) * float64(n+1)
			// Each task reads its two tiles (a diagonal task one) and writes a partial per tile:
			// every tile is read by the qt tasks it is in, whatever the tiles' sizes (tiles
			// are whole blocks, so most hold fewer than t rows).
			reads += float64(qt) * float64(n) * file
			partials := float64(n) * float64(qt) * j.PartialRowBytes()
			writes += partials
			reads += partials + float64(n)*file // the merge reads the partials and the query rows
		} else {
			c.Tasks = qt * rt
			c.Flops = 4 * float64(j.Dim) * float64(n) * float64(m)
			reads += float64(rt)*float64(n)*file + float64(qt)*float64(m)*file
			partials := float64(n) * float64(rt) * j.PartialRowBytes()
			writes += partials
			reads += partials + float64(n)*file
		}
		// A search task holds two tiles (in a self-join both get lists); a merge task holds
		// less (one tile's lists and rows).
		mem = float64(min(t, n))*query + float64(min(t, m))*other
		c.Tasks += qt // the merge tasks
	}
	c.TempReadBytes, c.TempWriteBytes = int64(reads), int64(writes)
	c.ShuffleBytes = int64(float64(n) * j.ScoredRowBytes())
	c.PeakTaskMemoryBytes = int64(mem)
	if c.Fits && c.PeakTaskMemoryBytes > b.TaskBytes {
		c.Fits, c.Why = false, fmt.Sprintf("a task needs %s, more than %.0f%% of the budget (%s)", Bytes(mem), 100*Headroom, Bytes(float64(b.TaskBytes)))
	}
	c.estimate(p, workers)
	return c
}

// estimate fills in the hours: products at the profile's FLOP rate plus temporary-storage
// traffic at its bandwidth, spread over the workers the tasks can keep busy.
func (c *Cost) estimate(p Profile, workers int64) {
	if p.Flops <= 0 {
		return
	}
	seconds := c.Flops / p.Flops
	if p.TempBytes > 0 {
		seconds += float64(c.TempReadBytes+c.TempWriteBytes) / p.TempBytes
	}
	c.WorkerHours = seconds / 3600
	c.Hours = c.WorkerHours / float64(max(1, min(workers, c.Tasks)))
}

// Choose prices every shape and returns the one to run: forced if given, else the fitting
// shape with the least estimated time (memory traffic included), preferring fewer bytes moved
// on a tie. It also returns every shape's cost, for `lemon plan`.
func Choose(j Job, b Budget, p Profile, forced Shape) (Cost, []Cost, error) {
	if err := j.check(); err != nil {
		return Cost{}, nil, err
	}
	all := make([]Cost, 0, len(Shapes))
	for _, s := range Shapes {
		all = append(all, Price(j, s, b, p))
	}
	if forced != "" {
		for _, c := range all {
			if c.Shape == forced {
				if !c.Fits {
					return c, all, fmt.Errorf("--search-shape %s does not fit: %s; raise --worker-memory-mib or let lemon choose (--search-shape auto)", forced, c.Why)
				}
				return c, all, nil
			}
		}
		return Cost{}, all, fmt.Errorf("unknown search shape %q (want auto, %s)", forced, strings.Join(shapeNames(), ", "))
	}
	best := -1
	for i, c := range all {
		if !c.Fits {
			continue
		}
		if best < 0 || better(c, all[best]) {
			best = i
		}
	}
	if best < 0 {
		return Cost{}, all, fmt.Errorf("no search shape fits in %s per task (%s); raise --worker-memory-mib", Bytes(float64(b.TaskBytes)), all[len(all)-1].Why)
	}
	return all[best], all, nil
}

// better says whether a should be preferred to b: less estimated time (within 2%: the
// estimate is rough), then fewer bytes moved, then the simpler shape (earlier in Shapes).
func better(a, b Cost) bool {
	if a.Hours < b.Hours*0.98 {
		return true
	}
	if b.Hours < a.Hours*0.98 {
		return false
	}
	ma, mb := a.TempReadBytes+a.TempWriteBytes+a.ShuffleBytes, b.TempReadBytes+b.TempWriteBytes+b.ShuffleBytes
	return float64(ma) < 0.98*float64(mb)
}

func shapeNames() []string {
	var s []string
	for _, x := range Shapes {
		s = append(s, string(x))
	}
	return s
}

// ParseShape reads a --search-shape value: "auto" or "" is "", meaning choose.
func ParseShape(s string) (Shape, error) {
	if s == "" || s == "auto" {
		return "", nil
	}
	for _, x := range Shapes {
		if string(x) == s {
			return x, nil
		}
	}
	return "", fmt.Errorf("--search-shape must be auto, %s, got %q", strings.Join(shapeNames(), ", "), s)
}

func (j Job) check() error {
	switch {
	case j.QueryRows < 1:
		return fmt.Errorf("no rows to search")
	case j.RefRows < 1:
		return fmt.Errorf("the reference set is empty")
	case j.Dim < 1:
		return fmt.Errorf("dimension must be at least 1")
	case j.K < 1:
		return fmt.Errorf("k must be at least 1")
	case j.BlockRows < 1:
		return fmt.Errorf("--block-rows must be at least 1")
	case j.ValueBytes != 2 && j.ValueBytes != 4:
		return fmt.Errorf("stored values must be 2 or 4 bytes")
	}
	return nil
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// Bytes formats a byte count for people (powers of 1024).
func Bytes(v float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", v)
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

// CPU is a worker of the given number of cores running the fastest CPU backend. The rate is
// what the whole search (products, selection, re-ranking) sustained per core on the project's
// 2-core AMD EPYC machine with AVX512_BF16: 50,000 x 512 self-join, 2026-11-26.
func CPU(cores int) Profile {
	return Profile{Name: fmt.Sprintf("cpu:%d", cores), Flops: float64(cores) * 180e9, TempBytes: 400e6,
		Note: fmt.Sprintf("%d cores at 180 GFLOP/s each (the whole search's measured rate per AVX512_BF16 core); temporary storage at 400 MB/s per worker", cores)}
}

// GPUs are the GPU kinds --gpu knows, with their float32 peak (for reference only: see GPU).
var GPUs = map[string]float64{"h100": 67e12, "h200": 67e12, "a100": 19.5e12, "l4": 30.3e12}

// GPU is a worker with one GPU of the given kind running --knn-backend cuda. lemon's CUDA path
// computes the products on the device but selects and re-ranks candidates on the host's cores,
// which bound it: with an H200 and 16 host cores it sustained 0.47 TFLOP/s on a 50,000 x 512
// self-join (2026-11-26), less than the 16 cores alone. The estimate uses that measured rate
// for every kind, not the device's peak, until the selection moves to the device.
func GPU(kind string) (Profile, error) {
	peak, ok := GPUs[kind]
	if !ok {
		return Profile{}, fmt.Errorf("unknown GPU %q (known: h100, h200, a100, l4)", kind)
	}
	return Profile{Name: "gpu:" + kind, Flops: 0.47e12, TempBytes: 400e6,
		Note: fmt.Sprintf("0.47 TFLOP/s: lemon's CUDA backend as measured on an H200 with 16 host cores, bound by host-side selection (the %s's float32 peak is %.0f TFLOP/s); temporary storage at 400 MB/s per worker", kind, peak/1e12)}, nil
}
