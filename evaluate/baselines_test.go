package evaluate

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// testVectors makes n rows of unit vectors in dim dimensions: text embeddings one per class
// (classes of them), images near their class's text embedding with the given spread.
func testVectors(n, dim, classes int, spread float64, seed uint64) (*vectors, []string, []string, []int) {
	rng := rand.New(rand.NewPCG(seed, 1))
	text := make([][]float32, classes)
	for c := range text {
		text[c] = make([]float32, dim)
		for j := range text[c] {
			text[c][j] = float32(rng.NormFloat64())
		}
	}
	v := &vectors{dim: dim, image: make([]float64, n*dim), text: make([]float64, n*dim)}
	ids, caps, class := make([]string, n), make([]string, n), make([]int, n)
	for i := 0; i < n; i++ {
		c := rng.IntN(classes)
		img := make([]float32, dim)
		for j := range img {
			img[j] = text[c][j] + float32(spread*rng.NormFloat64())
		}
		normalise(v.img(i), img)
		normalise(v.txt(i), text[c])
		ids[i], caps[i], class[i] = fmt.Sprintf("r%04d", (i*7919)%n), fmt.Sprintf("class %d", c), c
	}
	return v, ids, caps, class
}

// TestCLIPLogitsDefinition checks clipLogits against the formula computed the plain way on rows
// where that is exact enough, and that confident rows keep distinct, positive values where
// 1 - p would round to 0 (the reason for log1p).
func TestCLIPLogitsDefinition(t *testing.T) {
	v, ids, caps, _ := testVectors(300, 16, 5, 0.05, 3)
	got, classes, note, reason := clipLogits(v, ids, caps, 0.01)
	if reason != "" || classes != 5 || note != "" {
		t.Fatalf("classes %d, note %q, reason %q", classes, note, reason)
	}
	names := []string{"class 0", "class 1", "class 2", "class 3", "class 4"}
	first := map[string]int{}
	for i, c := range caps {
		if j, ok := first[c]; !ok || ids[i] < ids[j] {
			first[c] = i
		}
	}
	tiny := 0
	for i := range caps {
		// -log p = -z_y + log sum exp z, summed directly around the largest term.
		z := make([]float64, len(names))
		m := math.Inf(-1)
		for k, c := range names {
			z[k] = dot(v.img(i), v.txt(first[c])) / 0.01
			m = math.Max(m, z[k])
		}
		var s float64
		for _, x := range z {
			s += math.Exp(x - m)
		}
		var y int
		fmt.Sscanf(caps[i], "class %d", &y)
		want := m + math.Log(s) - z[y]
		if want > 1e-6 && math.Abs(got[i]-want) > 1e-9*want {
			t.Errorf("row %d: %v, direct %v", i, got[i], want)
		}
		if !(got[i] > 0) {
			t.Errorf("row %d: -log p = %v, want > 0", i, got[i])
		}
		if want == 0 {
			tiny++ // the direct form rounds these to 0; log1p keeps them
		}
	}
	if tiny == 0 {
		t.Fatalf("no confident rows: the test does not exercise log1p")
	}
	// A caption's text embedding is that of its row with the smallest id, so row order does
	// not matter.
	perm := rand.New(rand.NewPCG(5, 5)).Perm(len(caps))
	v2 := &vectors{dim: v.dim, image: make([]float64, len(v.image)), text: make([]float64, len(v.text))}
	ids2, caps2 := make([]string, len(ids)), make([]string, len(caps))
	for a, i := range perm {
		copy(v2.img(a), v.img(i))
		copy(v2.txt(a), v.txt(i))
		ids2[a], caps2[a] = ids[i], caps[i]
	}
	got2, _, _, _ := clipLogits(v2, ids2, caps2, 0.01)
	for a, i := range perm {
		if got2[a] != got[i] {
			t.Fatalf("row %s: %v in one order, %v in another", ids[i], got[i], got2[a])
		}
	}
	if _, _, _, reason := clipLogits(v, ids, make([]string, len(ids)), 0.01); reason == "" {
		t.Error("one distinct caption: want a reason, not scores")
	}
}

// TestKMeansRecoversBlobs: well-separated blobs come back as clusters, whatever the CPU count.
func TestKMeansRecoversBlobs(t *testing.T) {
	v, _, _, class := testVectors(600, 12, 8, 0.2, 9)
	cent := kmeans(v.image, v.dim, 8, kmeansSeed)
	if len(cent) != 8*v.dim {
		t.Fatalf("%d centroid values", len(cent))
	}
	// Same class <=> same cluster.
	clusterOf := map[int]int{}
	for i := range class {
		c, _ := nearest(v.img(i), cent, v.dim)
		if prev, ok := clusterOf[class[i]]; ok && prev != c {
			t.Fatalf("class %d split between clusters %d and %d", class[i], prev, c)
		}
		clusterOf[class[i]] = c
	}
	seen := map[int]bool{}
	for _, c := range clusterOf {
		if seen[c] {
			t.Fatalf("two classes share a cluster: %v", clusterOf)
		}
		seen[c] = true
	}
	// The sample cap (1024 points per centroid) keeps a canonical order: with k = 1 and 2000
	// points the centroid is the mean of a seeded sample, the same each time.
	big, _, _, _ := testVectors(2000, 4, 3, 0.5, 2)
	a, b := kmeans(big.image, 4, 1, 1), kmeans(big.image, 4, 1, 1)
	for j := range a {
		if a[j] != b[j] {
			t.Fatal("k-means is not deterministic")
		}
	}
}

// TestCaptionClusters: every row, trained on or not, takes its caption's nearest centroid.
func TestCaptionClusters(t *testing.T) {
	v, ids, _, class := testVectors(400, 10, 6, 0.02, 4)
	train := []int{}
	for i := 0; i < 400; i += 2 {
		train = append(train, i)
	}
	labels := captionClusters(v, ids, train, 6)
	byClass := map[int]string{}
	for i, l := range labels {
		if prev, ok := byClass[class[i]]; ok && prev != l {
			t.Fatalf("row %d (class %d): %s, other rows of its class %s", i, class[i], l, prev)
		}
		byClass[class[i]] = l
	}
	if len(byClass) != 6 {
		t.Errorf("%d classes seen", len(byClass))
	}
}

// TestFitAndTestDegenerate: a training set with one label predicts it for every test row, and
// an empty one has no accuracy, rather than failing the evaluation.
func TestFitAndTestDegenerate(t *testing.T) {
	v, _, caps, _ := testVectors(40, 6, 3, 0.1, 8)
	var one []int
	for i, c := range caps {
		if c == caps[0] && i < 30 {
			one = append(one, i)
		}
	}
	test := []int{30, 31, 32, 33, 34, 35, 36, 37, 38, 39}
	want := 0
	for _, i := range test {
		if caps[i] == caps[0] {
			want++
		}
	}
	ts, err := fitAndTest(v, caps, caps, one, test)
	if err != nil || ts.Accuracy == nil || *ts.Accuracy != float64(want)/10 || ts.Classes != 1 || ts.Note == "" {
		t.Errorf("one label: %+v, %v; want accuracy %v", ts, err, float64(want)/10)
	}
	ts, err = fitAndTest(v, caps, caps, nil, test)
	if err != nil || ts.Accuracy != nil || ts.Reason == "" {
		t.Errorf("no rows: %+v, %v", ts, err)
	}
	ts, err = fitAndTest(v, caps, caps, test[:0:0], test)
	if err != nil || ts.Accuracy != nil {
		t.Errorf("empty rows: %+v, %v", ts, err)
	}
	// All rows: a real fit, well above chance on these separated classes.
	all := make([]int, 30)
	for i := range all {
		all[i] = i
	}
	ts, err = fitAndTest(v, caps, caps, all, test)
	if err != nil || ts.Accuracy == nil || *ts.Accuracy < 0.8 || !ts.Converged {
		t.Errorf("all rows: %+v, %v", ts, err)
	}
}
