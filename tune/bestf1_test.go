package tune

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lemon-curation/lemon/metrics"
)

// The radix-sort best-F1 search agrees exactly with metrics.BestF1Threshold, ties included.
func TestBestF1MatchesMetrics(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var sc f1Scratch
	for trial := 0; trial < 300; trial++ {
		n := 2 + rng.IntN(400)
		scores, truth := make([]float64, n), make([]bool, n)
		pos := 0
		for i := range scores {
			switch trial % 4 {
			case 0:
				scores[i] = rng.NormFloat64()
			case 1:
				scores[i] = float64(rng.IntN(7)) - 3 // many ties, negatives, zeros
			case 2:
				scores[i] = math.Ldexp(rng.Float64(), rng.IntN(80)-40) // wide exponents
			default:
				scores[i] = []float64{0, math.Copysign(0, -1), 1e-300, -1e-300, 0.5}[rng.IntN(5)]
			}
			truth[i] = rng.IntN(3) == 0
			if truth[i] {
				pos++
			}
		}
		if pos == 0 || pos == n {
			truth[0] = !truth[0]
			pos = count(truth)
		}
		thr, f1, ok := sc.bestF1(scores, truth, pos)
		wantThr, wantF1, err := metrics.BestF1Threshold(scores, truth)
		if err != nil || !ok {
			t.Fatal(err, ok)
		}
		if f1 != wantF1 || thr != wantThr {
			t.Fatalf("trial %d: got threshold %v F1 %v, metrics gives %v %v", trial, thr, f1, wantThr, wantF1)
		}
	}
	if _, _, ok := sc.bestF1([]float64{1, math.NaN()}, []bool{true, false}, 1); ok {
		t.Error("NaN score accepted")
	}
	if _, _, ok := sc.bestF1([]float64{1, math.Inf(1)}, []bool{true, false}, 1); ok {
		t.Error("Inf score accepted")
	}
}

func TestDescKeyOrder(t *testing.T) {
	xs := []float64{math.Inf(-1), -1e300, -2, -1, -1e-300, 0, 1e-300, 1, 2, 1e300, math.Inf(1)}
	for i := 1; i < len(xs); i++ {
		if descKey(xs[i]) >= descKey(xs[i-1]) {
			t.Errorf("descKey(%v) >= descKey(%v)", xs[i], xs[i-1])
		}
	}
	for _, x := range xs {
		if keyFloat(descKey(x)) != x {
			t.Errorf("round trip of %v gives %v", x, keyFloat(descKey(x)))
		}
	}
	if descKey(math.Copysign(0, -1)) != descKey(0) {
		t.Error("-0 and +0 differ")
	}
}

// BenchmarkBestF1 compares the radix search with metrics.BestF1Threshold (which sorts with
// sort.Slice) at a validation split's typical sizes.
func BenchmarkBestF1(b *testing.B) {
	for _, n := range []int{500, 5000} {
		rng := rand.New(rand.NewPCG(1, 2))
		s, tr := make([]float64, n), make([]bool, n)
		for i := range s {
			s[i], tr[i] = rng.Float64(), rng.IntN(3) == 0
		}
		pos := count(tr)
		var sc f1Scratch
		b.Run(fmt.Sprintf("radix/n=%d", n), func(b *testing.B) {
			for b.Loop() {
				sc.bestF1(s, tr, pos)
			}
		})
		b.Run(fmt.Sprintf("metrics/n=%d", n), func(b *testing.B) {
			for b.Loop() {
				metrics.BestF1Threshold(s, tr)
			}
		})
	}
}
