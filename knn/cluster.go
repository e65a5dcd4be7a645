package knn

import (
	"math"
	"math/rand/v2"
	"sort"
)

// sketchOrder returns an order of n rows, given their leading coordinates p (lead per row), in
// which rows of one cluster sit together and similar clusters sit next to each other: k-means
// on a sample, every row assigned to its nearest centre, centres chained nearest first. Tiles
// then mostly lie within one cluster or between two distant ones, which the sketch skips. Like
// clusterOrder it only affects speed; nil when there are too few rows to cluster.
func sketchOrder(kern kernelFunc, p []float32, n, lead, nproc int) []int32 {
	cl := newClustering(kern, [][]float32{p}, lead, nproc)
	if cl == nil {
		return nil
	}
	order, _ := cl.order(p, nproc)
	return order
}

// clustering is k-means centres in the leading coordinates and their place in a chain that
// visits each centre's nearest unvisited one next.
type clustering struct {
	kern    kernelFunc
	cent    []float32
	k, lead int
	rank    []int32 // centre -> its place in the chain
}

// newClustering clusters a sample of the rows of all of ps (lead coordinates per row); nil
// when there are too few rows.
func newClustering(kern kernelFunc, ps [][]float32, lead, nproc int) *clustering {
	n := 0
	for _, p := range ps {
		n += len(p) / lead
	}
	k := min(orderClusters, n/orderClusterRows)
	if k < 2 {
		return nil
	}
	ns := min(n, orderSample)
	sample := make([]float32, ns*lead)
	for s := range ns {
		i, src := int(int64(s)*int64(n)/int64(ns)), 0
		for i >= len(ps[src])/lead {
			i -= len(ps[src]) / lead
			src++
		}
		copy(sample[s*lead:(s+1)*lead], ps[src][i*lead:(i+1)*lead])
	}
	cl := &clustering{kern: kern, cent: kmeans(kern, sample, ns, lead, k, nproc), k: k, lead: lead}
	// Chain the centres: from centre 0, always on to the nearest one not yet visited.
	cent := cl.cent
	cl.rank = make([]int32, k)
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
		cl.rank[best] = int32(step)
		cur = best
	}
	return cl
}

// order returns the order of the rows p (lead coordinates each): by their nearest centre's
// place in the chain, in row order within a cluster; and where each place's rows start in it
// (k+1 entries).
func (cl *clustering) order(p []float32, nproc int) (order []int32, start []int) {
	lead, n := cl.lead, len(p)/cl.lead
	label := nearest(cl.kern, func(i int) []float32 { return p[i*lead : (i+1)*lead] }, n, lead, cl.cent, cl.k, nproc)
	start = make([]int, cl.k+1)
	for _, c := range label {
		start[cl.rank[c]+1]++
	}
	for c := range cl.k {
		start[c+1] += start[c]
	}
	next := append([]int(nil), start...)
	order = make([]int32, n)
	for i, c := range label {
		order[next[cl.rank[c]]] = int32(i)
		next[cl.rank[c]]++
	}
	return order, start
}

// rowMatch maps a row's place in one side's cluster order to the place in the other side's
// where rows of the same cluster sit (the same fraction of the way into its cluster).
type rowMatch struct{ from, to []int } // per chain place, where its rows start on each side (k+1 entries)

func (mt rowMatch) at(r int) int {
	k := len(mt.from) - 1
	c := min(sort.Search(k, func(c int) bool { return mt.from[c+1] > r }), k-1) // the place holding r
	lo, size := mt.from[c], mt.from[c+1]-mt.from[c]
	olo, osize := mt.to[c], mt.to[c+1]-mt.to[c]
	if size == 0 || osize == 0 {
		return olo
	}
	return olo + (r-lo)*osize/size
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
// centres: the least |c|² - 2<x,c>, with dots from a float32 kernel, a tile of mr rows by nr
// centres at a time.
func nearest(kern kernelFunc, row func(int) []float32, n, lead int, cent []float32, k, nproc int) []int32 {
	cp := (k + nr - 1) / nr
	bp := packB(cent, k, lead)
	norm := make([]float32, k)
	for c := range k {
		for _, v := range cent[c*lead : (c+1)*lead] {
			norm[c] += v * v
		}
	}
	label := make([]int32, n)
	eachRowPanel(row, n, lead, nproc, func(p, rows int, ap []uint32, c []float32, masks *[2 * mr]uint32) {
		var best [mr]float32
		for l := range best {
			best[l] = float32(math.Inf(1))
		}
		for q := range cp {
			kern(ap, bp[q*lead*nr:(q+1)*lead*nr], lead, c, infThr, infThr, masks)
			for l := range rows {
				for jj, dot := range c[l*nr : l*nr+min(nr, k-q*nr)] {
					if s := norm[q*nr+jj] - 2*dot; s < best[l] {
						best[l], label[p*mr+l] = s, int32(q*nr+jj)
					}
				}
			}
		}
	})
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
