package knn

import (
	"os"
	"sync"
	"testing"
)

// emuDevice is a device emulated on the CPU, so the host side of device backends (chunking,
// thresholds, splitting on overflow, the candidate sets) is tested everywhere.
type emuDevice struct{ maxHits int }

type emuBlock struct{ b *Block }

func (e *emuDevice) upload(b *Block) (deviceBlock, error) { return emuBlock{b}, nil }
func (e *emuDevice) free(deviceBlock)                     {}

func (e *emuDevice) hits(m int, a, b deviceBlock, a0, a1, b0, b1 int, rowThr, colThr []float32, diag bool, max int, out []hit) ([]hit, bool, error) {
	ab, bb := a.(emuBlock).b, b.(emuBlock).b
	dim := ab.Dim
	ra, rb := rowsOf(ab, m), rowsOf(bb, m)
	max = min(max, e.maxHits)
	n := 0
	for i := a0; i < a1; i++ {
		for j := b0; j < b1; j++ {
			v := deviceDot(ra[i*dim:(i+1)*dim], rb[j*dim:(j+1)*dim])
			if v >= rowThr[i-a0] && (!diag || j >= i) {
				out = append(out, hit{row: int32(i), col: int32(j), dot: v})
				n++
			}
			if colThr != nil && v >= colThr[j-b0] && (!diag || j > i) {
				out = append(out, hit{row: int32(i), col: int32(j), dot: v, colSide: true})
				n++
			}
		}
	}
	return out, n <= max, nil
}

// withEmulatedCUDA makes backend "cuda" run on the emulator for the test.
func withEmulatedCUDA(t *testing.T, maxHits int) {
	old := openDevice
	openDevice = func(string) (device, error) { return &emuDevice{maxHits: maxHits}, nil }
	devices.Lock()
	devices.open = nil
	devices.Unlock()
	t.Cleanup(func() {
		openDevice = old
		devices.Lock()
		devices.open = nil
		devices.Unlock()
	})
}

// The device path gives exactly the brute-force lists, in every form, also when chunk passes
// overflow their hit buffer and must be split.
func TestDeviceBackendMatchesBruteForce(t *testing.T) {
	// 2 x 64 x 400: the narrowest split of the largest case always fits, wider passes overflow.
	for _, maxHits := range []int{1 << 30, 2 * deviceMinSplitTo * 400} {
		withEmulatedCUDA(t, maxHits)
		for _, c := range searchCases {
			t.Run(c.name, func(t *testing.T) {
				q, r := c.blocks(uint64(len(c.name)) + 21)
				opt := Options{K: c.k, Metric: c.metric, Backend: "cuda"}
				got, err := Search(q, r, opt)
				if err != nil {
					t.Fatal(err)
				}
				if d := diffLists(got, brute(q, r, c.k, c.metric)); d != "" {
					t.Fatalf("maxHits %d: %s", maxHits, d)
				}
				if r.Self == nil && !c.nilSelf {
					r = withSelf(r)
				}
				fa, fb, err := SearchPair(q, r, opt)
				if err != nil {
					t.Fatal(err)
				}
				if d := diffLists(fa, brute(q, r, c.k, c.metric)); d != "" {
					t.Fatalf("maxHits %d pair A: %s", maxHits, d)
				}
				if d := diffLists(fb, brute(r, q, c.k, c.metric)); d != "" {
					t.Fatalf("maxHits %d pair B: %s", maxHits, d)
				}
				d1, _, err := SearchPair(r, r, opt)
				if err != nil {
					t.Fatal(err)
				}
				if d := diffLists(d1, brute(r, r, c.k, c.metric)); d != "" {
					t.Fatalf("maxHits %d diagonal: %s", maxHits, d)
				}
			})
		}
	}
}

// On a machine with a GPU (LEMON_TEST_CUDA=1), the real CUDA backend must give the CPU
// backend's lists exactly.
func TestCUDAMatchesCPU(t *testing.T) {
	if os.Getenv("LEMON_TEST_CUDA") != "1" {
		t.Skip("set LEMON_TEST_CUDA=1 on a machine with an NVIDIA GPU")
	}
	for _, c := range append(searchCases, searchCase{name: "large", nq: 3000, nr: 9000, dim: 512, k: 30, selfJoin: true, gen: genOpts{clusters: 40, noise: 0.5, dupFrac: 0.02}}) {
		t.Run(c.name, func(t *testing.T) {
			q, r := c.blocks(uint64(len(c.name)) + 31)
			for _, pair := range []bool{false, true} {
				cpu, gpu := Options{K: c.k, Metric: c.metric}, Options{K: c.k, Metric: c.metric, Backend: "cuda"}
				var want, got Lists
				var err error
				if pair {
					want, _, _ = SearchPair(r, r, cpu)
					got, _, err = SearchPair(r, r, gpu)
				} else {
					want, _ = Search(q, r, cpu)
					got, err = Search(q, r, gpu)
				}
				if err != nil {
					t.Fatal(err)
				}
				if d := diffLists(got, want); d != "" {
					t.Fatalf("pair=%v: %s", pair, d)
				}
			}
		})
	}
}

// deviceDot is the emulator's product: float32, one accumulator, coordinates in order (a real
// device may use another order or fused multiply-adds; the window's bound covers both).
func deviceDot(x, y []float32) float32 {
	var s float32
	for d := range x {
		s += x[d] * y[d]
	}
	return s
}

// Device progress ends exactly at its total, in every form.
func TestDeviceProgressReachesTotal(t *testing.T) {
	withEmulatedCUDA(t, 1<<30)
	c := searchCase{nq: 300, nr: 700, dim: 16, k: 5, selfJoin: true}
	q, r := c.blocks(3)
	for _, pair := range []bool{false, true} {
		var mu sync.Mutex // Progress may be called from several goroutines at once
		var last, total int64
		opt := Options{K: 5, Backend: "cuda", Progress: func(d, tot int64) {
			mu.Lock()
			defer mu.Unlock()
			last, total = max(last, d), tot
		}}
		var err error
		if pair {
			_, _, err = SearchPair(r, r, opt)
		} else {
			_, err = Search(q, r, opt)
		}
		if err != nil || total == 0 || last != total {
			t.Fatalf("pair=%v: progress ended at %d of %d (%v)", pair, last, total, err)
		}
	}
}
