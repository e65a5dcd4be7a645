package tiling

import (
	"slices"
	"testing"
)

// laion is the web-scale example of the README: LAION-400M's embeddings (D = 768, float16)
// scored against a sampled reference of 10M rows on 64 GiB workers.
func laion() (Job, Budget) {
	j := Job{QueryRows: 400_000_000, RefRows: 10_000_000, Dim: 768, K: 30, ValueBytes: 2, PackedBytes: 2,
		BlockRows: 8192, IDBytes: 9, CaptionBytes: 60, SampleCandidates: 10_500_000, RefBlocksWritten: true}
	for range 40_000 {
		j.Shards = append(j.Shards, 10_000)
	}
	return j, Budget{TaskBytes: 64 << 30, Workers: 64}
}

func TestLAIONExample(t *testing.T) {
	j, b := laion()
	c, all, err := Choose(j, b, CPU(16), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range all {
		t.Logf("%-6s fits=%v tasks=%d reads=%s writes=%s shuffle=%s mem=%s Q=%d T=%d hours=%.1f %s", x.Shape, x.Fits, x.Tasks,
			Bytes(float64(x.TempReadBytes)), Bytes(float64(x.TempWriteBytes)), Bytes(float64(x.ShuffleBytes)), Bytes(float64(x.PeakTaskMemoryBytes)), x.QueryRowsPerTask, x.TileRows, x.Hours, x.Why)
	}
	const tb = 1e12
	if c.TempReadBytes > 40*tb || c.ShuffleBytes > 4*tb || c.Tasks < 100 || c.Tasks > 1_000_000 || c.PeakTaskMemoryBytes > 64<<30 {
		t.Errorf("chose %s: reads %s, shuffle %s, %d tasks, %s per task: outside the issue's bounds", c.Shape,
			Bytes(float64(c.TempReadBytes)), Bytes(float64(c.ShuffleBytes)), c.Tasks, Bytes(float64(c.PeakTaskMemoryBytes)))
	}
}

// A sample's blocks group consecutive shards up to a block, as the sample writer does; a shard
// with more sampled rows than a block is cut.
func TestSampleBlocks(t *testing.T) {
	for _, c := range []struct {
		per       []int64
		blockRows int64
		want      []int64
	}{
		{[]int64{714, 714, 714, 714, 714, 714, 714}, 3122, []int64{2856, 2142}},
		{[]int64{2143, 2143, 2143}, 6233, []int64{4286, 2143}},
		{[]int64{0, 500, 0, 500}, 600, []int64{500, 500}},
		{[]int64{5000, 100}, 2000, []int64{2000, 2000, 1000, 100}},
	} {
		if got := SampleBlocks(c.per, c.blockRows); !slices.Equal(got, c.want) {
			t.Errorf("SampleBlocks(%v, %d) = %v, want %v", c.per, c.blockRows, got, c.want)
		}
	}
}
