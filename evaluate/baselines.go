package evaluate

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sort"
	"sync"
)

// DefaultLogitTemperature is CLIP Logits' softmax temperature T. The LEMoN paper used T = 1
// (Feng et al.'s formulation); its authors' later note (January 2026) evaluates T in
// {0.01, 0.015, 0.07, 1} and finds the baseline strongest at 0.01, Liang et al.'s setting.
const DefaultLogitTemperature = 0.01

// maxLogitClasses bounds CLIP Logits' classes: it is a baseline for class prompts, and with
// free-text captions every caption would be a class (n x n products).
const maxLogitClasses = 10000

// clipLogits is the CLIP Logits baseline: zero-shot classification of each image over the
// dataset's distinct captions. With t_c the text embedding of caption c and
// z_c = cos(image_i, t_c) / T, p_i = softmax(z)[y_i] for the row's own caption y_i, and the score
// is -log p_i (higher: the image looks less like its caption's class than like another's).
//
// -log p_i = (m - z_y) + log1p(sum over c != argmax of exp(z_c - m)), m = max z: log-sum-exp,
// in float64, with log1p keeping the confident rows' tiny values apart (1 - p_i in float32 is 0
// for all of them, a tie). Each caption's embedding is that of its row with the smallest id, so
// the result does not depend on row order; note says when a caption's rows disagree.
func clipLogits(v *vectors, ids, captions []string, T float64) (scores []float64, classes int, note, reason string) {
	first := map[string]int{} // caption -> row with the smallest id
	for i, c := range captions {
		if j, ok := first[c]; !ok || ids[i] < ids[j] {
			first[c] = i
		}
	}
	if len(first) > maxLogitClasses {
		return nil, 0, "", fmt.Sprintf("%d distinct captions: CLIP Logits treats each as a class and is meant for class prompts (at most %d)", len(first), maxLogitClasses)
	}
	if len(first) < 2 {
		return nil, 0, "", "fewer than 2 distinct captions: no classes to compare"
	}
	names := make([]string, 0, len(first))
	for c := range first {
		names = append(names, c)
	}
	sort.Strings(names)
	class := make(map[string]int, len(names))
	for k, c := range names {
		class[c] = k
	}
	disagree := 0
	for i, c := range captions {
		if d := dot(v.txt(i), v.txt(first[c])); d < 1-1e-6 {
			disagree++
		}
	}
	if disagree > 0 {
		note = fmt.Sprintf("%d rows have a text embedding that differs from the one their caption's class uses (the row with the smallest id's)", disagree)
	}
	scores = make([]float64, len(captions))
	parallelRows(len(captions), func(lo, hi int) {
		z := make([]float64, len(names))
		for i := lo; i < hi; i++ {
			img := v.img(i)
			m, arg := math.Inf(-1), 0
			for k, c := range names {
				z[k] = dot(img, v.txt(first[c])) / T
				if z[k] > m {
					m, arg = z[k], k
				}
			}
			var s float64
			for k := range z {
				if k != arg {
					s += math.Exp(z[k] - m)
				}
			}
			scores[i] = (m - z[class[captions[i]]]) + math.Log1p(s)
		}
	})
	return scores, len(names), note, ""
}

// parallelRows runs fn over [0, n) in contiguous chunks, one per CPU. Each row's result depends
// only on that row, so the split does not change any value.
func parallelRows(n int, fn func(lo, hi int)) {
	w := min(runtime.GOMAXPROCS(0), max(1, n/64))
	var wg sync.WaitGroup
	for p := 0; p < w; p++ {
		lo, hi := p*n/w, (p+1)*n/w
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}

// Deep kNN's settings on captioning data, as the authors ran it (run_deepknn.py: knn_k 10,
// num_text_clusters 100; clustering.py: seed 42, at most 1024 points per centroid).
const (
	DefaultDeepKNNK        = 10
	DefaultCaptionClusters = 100
	kmeansSeed             = 42
	kmeansMaxPerCentroid   = 1024
	kmeansRedo             = 5   // starts, the best kept (FAISS's nredo, as the authors set it)
	kmeansMaxIter          = 100 // rounds per start (the authors allow 300; Lloyd's settles far sooner)
)

// kmeans clusters points (row-major, dim values each, already in a canonical order) into k
// clusters: Lloyd's algorithm from kmeansRedo seeded k-means++ starts, each run until no
// assignment changes (or kmeansMaxIter rounds), keeping the one with the least squared error.
// Like the authors' FAISS k-means it trains on at most kmeansMaxPerCentroid*k points, a seeded
// sample. It returns the centroids.
func kmeans(points []float64, dim, k int, seed uint64) []float64 {
	n := len(points) / dim
	rng := rand.New(rand.NewPCG(seed, 0x6b6d65616e73))
	if n > kmeansMaxPerCentroid*k {
		idx := rng.Perm(n)[:kmeansMaxPerCentroid*k]
		sort.Ints(idx) // keep the canonical order
		sample := make([]float64, 0, len(idx)*dim)
		for _, i := range idx {
			sample = append(sample, points[i*dim:(i+1)*dim]...)
		}
		points = sample
	}
	var best []float64
	bestErr := math.Inf(1)
	for r := 0; r < kmeansRedo; r++ {
		cent, sse := lloyd(points, dim, k, rng)
		if sse < bestErr {
			best, bestErr = cent, sse
		}
	}
	return best
}

// lloyd runs one k-means++ start and Lloyd's rounds; it returns the centroids and the sum of
// squared distances of the points to them.
func lloyd(points []float64, dim, k int, rng *rand.Rand) ([]float64, float64) {
	n := len(points) / dim
	pt := func(i int) []float64 { return points[i*dim : (i+1)*dim] }
	// k-means++: each next centre is a point drawn with probability proportional to its squared
	// distance to the nearest centre so far.
	cent := make([]float64, 0, k*dim)
	cent = append(cent, pt(rng.IntN(n))...)
	d2 := make([]float64, n)
	for i := range d2 {
		d2[i] = sqDist(pt(i), cent[:dim])
	}
	for c := 1; c < k; c++ {
		var total float64
		for _, d := range d2 {
			total += d
		}
		next := n - 1
		if total > 0 {
			u := rng.Float64() * total
			for i, d := range d2 {
				if u < d {
					next = i
					break
				}
				u -= d
			}
		} else {
			next = rng.IntN(n) // every point sits on a centre already
		}
		cent = append(cent, pt(next)...)
		for i := range d2 {
			d2[i] = min(d2[i], sqDist(pt(i), pt(next)))
		}
	}
	assign := make([]int, n)
	for i := range assign {
		assign[i] = -1
	}
	count := make([]int, k)
	for iter := 0; iter < kmeansMaxIter; iter++ {
		changed := 0
		var mu sync.Mutex
		parallelRows(n, func(lo, hi int) {
			ch := 0
			for i := lo; i < hi; i++ {
				a, d := nearest(pt(i), cent, dim)
				d2[i] = d
				if a != assign[i] {
					assign[i] = a
					ch++
				}
			}
			mu.Lock()
			changed += ch
			mu.Unlock()
		})
		if changed == 0 {
			break
		}
		for j := range cent {
			cent[j] = 0
		}
		clear(count)
		for i, a := range assign {
			count[a]++
			c := cent[a*dim : (a+1)*dim]
			for j, x := range pt(i) {
				c[j] += x
			}
		}
		for c := 0; c < k; c++ {
			if count[c] == 0 {
				// An empty cluster takes the point farthest from its centre.
				far := 0
				for i := range d2 {
					if d2[i] > d2[far] {
						far = i
					}
				}
				copy(cent[c*dim:(c+1)*dim], pt(far))
				d2[far] = 0
				continue
			}
			for j := c * dim; j < (c+1)*dim; j++ {
				cent[j] /= float64(count[c])
			}
		}
	}
	var sse float64
	for i := 0; i < n; i++ {
		_, d := nearest(pt(i), cent, dim)
		sse += d
	}
	return cent, sse
}

// nearest returns the centroid closest to x and the squared distance (ties: the lower index).
func nearest(x, cent []float64, dim int) (int, float64) {
	best, bd := 0, math.Inf(1)
	for c := 0; c*dim < len(cent); c++ {
		if d := sqDist(x, cent[c*dim:(c+1)*dim]); d < bd {
			best, bd = c, d
		}
	}
	return best, bd
}

func sqDist(a, b []float64) float64 {
	var s float64
	for j := range a {
		d := a[j] - b[j]
		s += d * d
	}
	return s
}

// captionClusters labels every row with the k-means cluster of its caption embedding, as the
// authors label captioning data for deep kNN (clustering.py): the clusters are fitted on the
// training rows' caption embeddings (train: rows in neither the validation nor the test split;
// all rows when there is no split) in id order, and every row takes its nearest centroid.
func captionClusters(v *vectors, ids []string, train []int, k int) []string {
	order := append([]int(nil), train...)
	sort.Slice(order, func(a, b int) bool { return ids[order[a]] < ids[order[b]] })
	pts := make([]float64, 0, len(order)*v.dim)
	for _, i := range order {
		pts = append(pts, v.txt(i)...)
	}
	cent := kmeans(pts, v.dim, min(k, len(order)), kmeansSeed)
	labels := make([]string, len(ids))
	parallelRows(len(ids), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			c, _ := nearest(v.txt(i), cent, v.dim)
			labels[i] = fmt.Sprintf("cluster %d", c)
		}
	})
	return labels
}

// clipLogits computes the CLIP Logits column: by default for --discrete-text runs (captions
// are class prompts), for any run with Options.ClipLogits.
func (r *Report) clipLogits(ctx context.Context, o Options) (vals []float64, note, reason string, err error) {
	if !o.ClipLogits && (r.runParams == nil || !r.runParams.DiscreteText) {
		return nil, "", "for classification data: computed for --discrete-text runs (captions are class prompts), or with --clip-logits", nil
	}
	v, why, err := r.vectors(ctx, o)
	if err != nil || v == nil {
		return nil, "", why, err
	}
	vals, classes, caveat, reason := clipLogits(v, r.table.id, v.caption, o.LogitTemperature)
	if vals == nil {
		return nil, "", reason, nil
	}
	note = fmt.Sprintf("%d classes (the distinct captions), T = %g", classes, o.LogitTemperature)
	if caveat != "" {
		note += "; " + caveat
	}
	return vals, note, "", nil
}
