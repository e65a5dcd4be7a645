package standin_test

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/lemon-curation/lemon/embed/onnx"
	"github.com/lemon-curation/lemon/embed/onnx/onnxtest"
	"github.com/lemon-curation/lemon/embed/standin"
)

// The stand-ins load in ONNX Runtime and compute finite embeddings. (More
// runtime behaviour is tested in embed/onnx.)
func TestTinyRuns(t *testing.T) {
	onnxtest.RequireRuntime(t)
	dir := t.TempDir()
	if err := standin.Write(dir, "tiny", 3); err != nil {
		t.Fatal(err)
	}
	img, err := onnx.NewImageEncoder(filepath.Join(dir, "image.onnx"), onnx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	txt, err := onnx.NewTextEncoder(filepath.Join(dir, "text.onnx"), onnx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer txt.Close()

	px := make([]float32, 2*3*224*224)
	for i := range px {
		px[i] = float32(i%511)/128 - 2
	}
	ie, err := img.Encode(px, 2)
	if err != nil {
		t.Fatal(err)
	}
	// "a photo": start, two ids, end; the second row has junk after end,
	// which the masked mean must ignore.
	ids := make([]int64, 2*77)
	copy(ids, []int64{49406, 320, 1125, 49407})
	copy(ids[77:], []int64{49406, 320, 1125, 49407, 999, 998})
	te, err := txt.Encode(ids, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range append(ie, te...) {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatalf("value %d = %v", i, v)
		}
	}
	for j := range 64 {
		if d := math.Abs(float64(te[j] - te[64+j])); d > 1e-6 {
			t.Fatalf("tokens after end-of-text changed the text embedding (|diff| %g at %d)", d, j)
		}
	}
}
