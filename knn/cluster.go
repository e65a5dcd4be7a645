package knn

import (
	"math"
	"math/rand/v2"
)

// sketchOrder returns an order of n rows, given their leading coordinates p (lead per row), in
// which rows of one cluster sit together and similar clusters sit next to each other: k-means
// on a sample, every row assigned to its nearest centre, centres chained nearest first. Tiles
// then mostly lie within one cluster or between two distant ones, which the sketch skips. Like
// clusterOrder it only affects speed; nil when there are too few rows to cluster.
func sketchOrder(kern kernelFunc, p []float32, n, lead, nproc int) []int32 {
	k := min(orderClusters, n/orderClusterRows)
	if k < 2 {
		return nil
	}
	ns := min(n, orderSample)
	sample := make([]float32, ns*lead)
	for s := range ns {
		i := int(int64(s) * int64(n) / int64(ns))
		copy(sample[s*lead:(s+1)*lead], p[i*lead:(i+1)*lead])
	}
	cent := kmeans(kern, sample, ns, lead, k, nproc)

	at := func(src []float32) func(int) []float32 {
		return func(i int) []float32 { return src[i*lead : (i+1)*lead] }
	}
	label := nearest(kern, at(p), n, lead, cent, k, nproc)

	// Chain the centres: from centre 0, always on to the nearest one not yet visited.
	rank := make([]int32, k)
	seen := make([]bool, k)
	cur := 0
	seen[0] = true
	for step := 1; step < k; step++ {
		best, bestD := -1, math.Inf(1)
		for c := range k {
			if !seen[c] {
				if d := sqDist(cent[cur*lead:(cur+1)*lead], cent[c*lead:(c+1)*lead]); d < bestD {
					best, bestD = c, d
				}
			}
		}
		seen[best] = true
		rank[best] = int32(step)
		cur = best
	}
	// Rows by their centre's place in the chain, in row order within a cluster.
	start := make([]int, k+1)
	for _, c := range label {
		start[rank[c]+1]++
	}
	for c := range k {
		start[c+1] += start[c]
	}
	order := make([]int32, n)
	for i, c := range label {
		order[start[rank[c]]] = int32(i)
		start[rank[c]]++
	}
	return order
}

// How sketchOrder clusters: at most orderClusters clusters of orderClusterRows rows or more on
// average (many tiles each), found from orderSample rows in orderRounds rounds of k-means.
const (
	orderClusters    = 256
	orderClusterRows = 128
	orderSample      = 4096
	orderRounds      = 4
)

// kmeans returns k centres (lead floats each) for the n sample rows: k-means++ seeding, then
// orderRounds rounds of Lloyd's algorithm. A centre left without rows stays where it was.
func kmeans(kern kernelFunc, x []float32, n, lead, k, nproc int) []float32 {
	rng := rand.New(rand.NewPCG(0xc1a5, uint64(n))) // fixed: the order only affects speed
	cent := make([]float32, k*lead)
	row := func(i int) []float32 { return x[i*lead : (i+1)*lead] }
	copy(cent, row(0))
	d := make([]float64, n) // each row's squared distance to its nearest centre so far
	for i := range d {
		d[i] = sqDist(row(i), cent[:lead])
	}
	for c := 1; c < k; c++ {
		var total float64
		for _, v := range d {
			total += v
		}
		pick := 0
		if total > 0 {
			t := rng.Float64() * total
			for pick = 0; pick < n-1 && t >= d[pick]; pick++ {
				t -= d[pick]
			}
		}
		copy(cent[c*lead:(c+1)*lead], row(pick))
		for i := range d {
			d[i] = min(d[i], sqDist(row(i), cent[c*lead:(c+1)*lead]))
		}
	}
	sum := make([]float64, k*lead)
	cnt := make([]int, k)
	for range orderRounds {
		label := nearest(kern, row, n, lead, cent, k, nproc)
		clear(sum)
		clear(cnt)
		for i, c := range label {
			cnt[c]++
			for l, v := range row(i) {
				sum[int(c)*lead+l] += float64(v)
			}
		}
		for c := range k {
			if cnt[c] == 0 {
				continue
			}
			for l := range lead {
				cent[c*lead+l] = float32(sum[c*lead+l] / float64(cnt[c]))
			}
		}
	}
	return cent
}

// nearest returns, for each of n rows (row(i), lead floats), the index of its nearest of the k
// centres: the least |c|² - 2<x,c>, with dots from a float32 kernel, nr centres at a time.
func nearest(kern kernelFunc, row func(int) []float32, n, lead int, cent []float32, k, nproc int) []int32 {
	label := make([]int32, n)
	best := make([]float32, n)
	for i := range best {
		best[i] = float32(math.Inf(1))
	}
	for c0 := 0; c0 < k; c0 += nr {
		nb := min(nr, k-c0)
		dots := rowDots(kern, row, n, lead, cent[c0*lead:(c0+nb)*lead], nb, nproc)
		var norm [nr]float32
		for c := range nb {
			for _, v := range cent[(c0+c)*lead : (c0+c+1)*lead] {
				norm[c] += v * v
			}
		}
		for i := range n {
			for c, dot := range dots[i*nb : (i+1)*nb] {
				if s := norm[c] - 2*dot; s < best[i] {
					best[i], label[i] = s, int32(c0+c)
				}
			}
		}
	}
	return label
}

func sqDist(a, b []float32) float64 {
	var s float64
	for i, v := range a {
		d := float64(v) - float64(b[i])
		s += d * d
	}
	return s
}
