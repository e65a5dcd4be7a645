package onnx_test

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/lemon-curation/lemon/embed/onnx"
	"github.com/lemon-curation/lemon/embed/onnx/onnxtest"
	"github.com/lemon-curation/lemon/embed/standin"
)

var vitDir string // ViT-B/32 stand-ins, written once per process when needed

func TestMain(m *testing.M) {
	code := m.Run()
	if vitDir != "" {
		os.RemoveAll(vitDir)
	}
	os.Exit(code)
}

// pixels returns batch images of deterministic values in [-2, 2], about the
// range of CLIP-normalised pixels.
func pixels(batch, size int, salt uint64) []float32 {
	p := make([]float32, batch*3*size*size)
	x := salt*0x9e3779b97f4a7c15 + 1
	for i := range p {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		p[i] = float32(x>>40)/float32(1<<24)*4 - 2
	}
	return p
}

// tokens returns batch CLIP-style rows: start, some ids, end, zero padding;
// row i has 3+i%20 ids so the rows' lengths differ.
func tokens(batch, L int) []int64 {
	t := make([]int64, batch*L)
	for i := range batch {
		row := t[i*L : (i+1)*L]
		n := 3 + i%20
		row[0] = 49406
		for j := 1; j <= n; j++ {
			row[j] = int64((i*7919 + j*104729) % 49406)
		}
		row[n+1] = 49407
	}
	return t
}

func writeTiny(t testing.TB, seed uint64, v standin.Variant) (img, txt string) {
	t.Helper()
	dir := t.TempDir()
	if err := standin.WriteTiny(dir, seed, v); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "image.onnx"), filepath.Join(dir, "text.onnx")
}

// openTiny writes a tiny stand-in pair and opens it.
func openTiny(t testing.TB, seed uint64, v standin.Variant, o onnx.Options) (*onnx.ImageEncoder, *onnx.TextEncoder) {
	t.Helper()
	img, txt := writeTiny(t, seed, v)
	return openPair(t, img, txt, o)
}

func openPair(t testing.TB, img, txt string, o onnx.Options) (*onnx.ImageEncoder, *onnx.TextEncoder) {
	t.Helper()
	ie, err := onnx.NewImageEncoder(img, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ie.Close() })
	te, err := onnx.NewTextEncoder(txt, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { te.Close() })
	return ie, te
}

func checkFinite(t *testing.T, what string, v []float32) {
	t.Helper()
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			t.Fatalf("%s[%d] = %v", what, i, x)
		}
	}
}

// checkClose checks that got equals want within tol per element.
func checkClose(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if d := math.Abs(float64(got[i] - want[i])); d > tol {
			t.Fatalf("%s[%d] = %v, want %v (|diff| %g > %g)", what, i, got[i], want[i], d, tol)
		}
	}
}

func mustEncodeImages(t testing.TB, e *onnx.ImageEncoder, px []float32, batch int) []float32 {
	t.Helper()
	out, err := e.Encode(px, batch)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustEncodeText(t testing.TB, e *onnx.TextEncoder, ids []int64, batch int) []float32 {
	t.Helper()
	out, err := e.Encode(ids, batch)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLibraryPath(t *testing.T) {
	t.Run("env", func(t *testing.T) {
		t.Setenv(onnx.EnvLibrary, filepath.Join(t.TempDir(), "missing.so"))
		_, err := onnx.LibraryPath()
		if !errors.Is(err, onnx.ErrLibraryNotFound) || !strings.Contains(err.Error(), onnx.EnvLibrary) {
			t.Fatalf("err = %v, want ErrLibraryNotFound naming $%s", err, onnx.EnvLibrary)
		}
	})
	t.Run("upward from working directory", func(t *testing.T) {
		root := t.TempDir()
		lib := filepath.Join(root, "third_party", "onnxruntime", "libonnxruntime.so.1")
		sub := filepath.Join(root, "a", "b")
		for _, d := range []string{filepath.Dir(lib), sub} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(lib, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Setenv(onnx.EnvLibrary, "")
		t.Chdir(sub)
		got, err := onnx.LibraryPath()
		if err != nil || got != lib {
			t.Fatalf("LibraryPath() = %q, %v; want %q", got, err, lib)
		}
	})
	t.Run("missing", func(t *testing.T) {
		t.Setenv(onnx.EnvLibrary, "")
		t.Chdir(t.TempDir()) // the test binary's directory has no library either
		_, err := onnx.LibraryPath()
		if !errors.Is(err, onnx.ErrLibraryNotFound) {
			t.Fatalf("err = %v, want ErrLibraryNotFound", err)
		}
		for _, s := range []string{onnx.EnvLibrary, "scripts/fetch-onnxruntime.sh"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not mention %s", err, s)
			}
		}
	})
}

func TestTinyEncoders(t *testing.T) {
	imgPath, txtPath := onnxtest.TinyEncoders(t)
	img, txt := openPair(t, imgPath, txtPath, onnx.Options{})
	if img.Size() != 224 || img.Dim() != 64 || txt.ContextLength() != 77 || txt.Dim() != 64 {
		t.Fatalf("Size %d Dim %d, ContextLength %d Dim %d; want 224 64, 77 64",
			img.Size(), img.Dim(), txt.ContextLength(), txt.Dim())
	}
	if err := onnx.CheckPair(img, txt); err != nil {
		t.Fatal(err)
	}
	if v := onnx.RuntimeVersion(); v == "" {
		t.Error("RuntimeVersion() is empty after Init")
	}

	const B = 7
	px, ids := pixels(B, 224, 1), tokens(B, 77)
	imgs := mustEncodeImages(t, img, px, B)
	txts := mustEncodeText(t, txt, ids, B)
	if len(imgs) != B*64 || len(txts) != B*64 {
		t.Fatalf("got %d image and %d text values, want %d", len(imgs), len(txts), B*64)
	}
	checkFinite(t, "image", imgs)
	checkFinite(t, "text", txts)

	// Row i of a batch of 7 is the batch-of-1 result for item i.
	row := 3 * 224 * 224
	for i := range B {
		one := mustEncodeImages(t, img, px[i*row:(i+1)*row], 1)
		checkClose(t, fmt.Sprintf("image row %d", i), imgs[i*64:(i+1)*64], one, 1e-5)
		one = mustEncodeText(t, txt, ids[i*77:(i+1)*77], 1)
		checkClose(t, fmt.Sprintf("text row %d", i), txts[i*64:(i+1)*64], one, 1e-5)
	}
	// Embeddings differ between items (the model is not constant).
	if imgs[0] == imgs[64] && imgs[1] == imgs[65] || txts[0] == txts[64] && txts[1] == txts[65] {
		t.Error("rows 0 and 1 look identical")
	}

	// Empty batches are fine.
	if out, err := img.Encode(nil, 0); err != nil || len(out) != 0 {
		t.Errorf("Encode(nil, 0) = %d values, %v", len(out), err)
	}

	// Chunked runs (BatchSize 3: 3+3+1 rows) and one thread give the same rows.
	img3, txt3 := openPair(t, imgPath, txtPath, onnx.Options{BatchSize: 3, IntraOpThreads: 1})
	checkClose(t, "chunked images", mustEncodeImages(t, img3, px, B), imgs, 1e-5)
	checkClose(t, "chunked text", mustEncodeText(t, txt3, ids, B), txts, 1e-5)

	// Concurrent Encode calls on one encoder.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 4 {
		wg.Go(func() {
			got, err := img.Encode(px, B)
			if err == nil && !equal(got, imgs) {
				err = errors.New("concurrent image Encode gave different values")
			}
			errs <- err
			got, err = txt.Encode(ids, B)
			if err == nil && !equal(got, txts) {
				err = errors.New("concurrent text Encode gave different values")
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func equal(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestDeterminism(t *testing.T) {
	onnxtest.RequireRuntime(t)
	const B = 7
	px, ids := pixels(B, 224, 2), tokens(B, 77)
	encode := func(seed uint64) ([]float32, []float32) {
		img, txt := openTiny(t, seed, standin.Variant{}, onnx.Options{})
		return mustEncodeImages(t, img, px, B), mustEncodeText(t, txt, ids, B)
	}
	i1, t1 := encode(5)
	i2, t2 := encode(5)
	if !equal(i1, i2) || !equal(t1, t2) {
		t.Error("same seed, different embeddings")
	}
	i3, t3 := encode(6)
	if equal(i1, i3) || equal(t1, t3) {
		t.Error("different seeds, same embeddings")
	}
}

// Threads that sleep instead of spinning compute the same embeddings.
func TestNoSpinning(t *testing.T) {
	onnxtest.RequireRuntime(t)
	const B = 5
	px, ids := pixels(B, 224, 3), tokens(B, 77)
	img, txt := writeTiny(t, 4, standin.Variant{})
	var embs [2][]float32
	for i, o := range []onnx.Options{{IntraOpThreads: 2}, {IntraOpThreads: 2, NoSpinning: true}} {
		ie, te := openPair(t, img, txt, o)
		embs[i] = append(mustEncodeImages(t, ie, px, B), mustEncodeText(t, te, ids, B)...)
	}
	if !equal(embs[0], embs[1]) {
		t.Error("NoSpinning changed the embeddings")
	}
}

func TestModelErrors(t *testing.T) {
	onnxtest.RequireRuntime(t)
	img, txt := writeTiny(t, 1, standin.Variant{})
	garbage := filepath.Join(t.TempDir(), "garbage.onnx")
	if err := os.WriteFile(garbage, []byte("not a model"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "image.onnx")

	for _, c := range []struct {
		name  string
		open  func() error
		wants []string
	}{
		{"missing file", func() error { _, err := onnx.NewImageEncoder(missing, onnx.Options{}); return err },
			[]string{missing, "no such file"}},
		{"not a model", func() error { _, err := onnx.NewTextEncoder(garbage, onnx.Options{}); return err },
			[]string{garbage, "not a loadable ONNX model"}},
		{"wrong input name", func() error {
			_, err := onnx.NewImageEncoder(img, onnx.Options{InputName: "pixels"})
			return err
		}, []string{img, `no input named "pixels"`, "pixel_values"}},
		{"wrong output name", func() error {
			_, err := onnx.NewTextEncoder(txt, onnx.Options{OutputName: "pooler_output"})
			return err
		}, []string{txt, `no output named "pooler_output"`, "text_embeds"}},
		{"text model as image encoder", func() error { _, err := onnx.NewImageEncoder(txt, onnx.Options{}); return err },
			[]string{txt, "input input_ids is int64 [-1 77], want float32 [batch,3,S,S]"}},
		{"image model as text encoder", func() error { _, err := onnx.NewTextEncoder(img, onnx.Options{}); return err },
			[]string{img, "input pixel_values is float32 [-1 3 224 224], want int64 [batch,L]"}},
		{"image size disagrees", func() error {
			_, err := onnx.NewImageEncoder(img, onnx.Options{ImageSize: 336})
			return err
		}, []string{"ImageSize is 336"}},
		{"context length disagrees", func() error {
			_, err := onnx.NewTextEncoder(txt, onnx.Options{ContextLength: 64})
			return err
		}, []string{"ContextLength is 64"}},
		{"unknown device", func() error { _, err := onnx.NewImageEncoder(img, onnx.Options{Device: "tpu"}); return err },
			[]string{`unknown device "tpu"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.open()
			if err == nil {
				t.Fatal("no error")
			}
			t.Log(err)
			for _, w := range c.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestEncodeErrors(t *testing.T) {
	imgPath, txtPath := onnxtest.TinyEncoders(t)
	img, txt := openPair(t, imgPath, txtPath, onnx.Options{})
	if _, err := img.Encode(make([]float32, 100), 1); err == nil || !strings.Contains(err.Error(), "want 150528") {
		t.Errorf("short pixels: err = %v", err)
	}
	if _, err := txt.Encode(make([]int64, 77), 2); err == nil || !strings.Contains(err.Error(), "want 154") {
		t.Errorf("short tokens: err = %v", err)
	}
	// Token ids outside the vocabulary are ONNX Runtime's error, reported with the model's path.
	bad := tokens(1, 77)
	bad[3] = 1 << 40
	if _, err := txt.Encode(bad, 1); err == nil || !strings.Contains(err.Error(), txtPath) {
		t.Errorf("out-of-vocabulary id: err = %v", err)
	} else {
		t.Log(err)
	}
	img.Close()
	if err := img.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := img.Encode(pixels(1, 224, 1), 1); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Encode after Close: err = %v", err)
	}
}

func TestCheckPairMismatch(t *testing.T) {
	onnxtest.RequireRuntime(t)
	img, _ := writeTiny(t, 1, standin.Variant{})
	_, txt := writeTiny(t, 1, standin.Variant{Dim: 32})
	ie, te := openPair(t, img, txt, onnx.Options{})
	err := onnx.CheckPair(ie, te)
	want := txt + ": output dimension 32 but image encoder gives 64"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("CheckPair: %v, want %q", err, want)
	}
}

func TestCUDAOnCPUBuild(t *testing.T) {
	imgPath, _ := onnxtest.TinyEncoders(t)
	e, err := onnx.NewImageEncoder(imgPath, onnx.Options{Device: "cuda"})
	if err == nil {
		e.Close()
		t.Skip("this ONNX Runtime library has a working CUDA execution provider")
	}
	if !errors.Is(err, onnx.ErrNoCUDA) ||
		!strings.Contains(err.Error(), "this ONNX Runtime build has no CUDA execution provider; install the GPU build (see README)") {
		t.Fatalf("err = %v, want ErrNoCUDA", err)
	}
}

// Exports that differ from the canonical interface in ways real exports do.
func TestVariants(t *testing.T) {
	onnxtest.RequireRuntime(t)
	const B = 7
	px, ids := pixels(B, 224, 3), tokens(B, 77)
	refImg, refTxt := openTiny(t, 9, standin.Variant{}, onnx.Options{})
	wantImg, wantTxt := mustEncodeImages(t, refImg, px, B), mustEncodeText(t, refTxt, ids, B)

	t.Run("fixed batch", func(t *testing.T) { // 7 rows go as 4 + 3 padded to 4
		img, txt := openTiny(t, 9, standin.Variant{BatchSize: 4}, onnx.Options{})
		checkClose(t, "images", mustEncodeImages(t, img, px, B), wantImg, 1e-5)
		checkClose(t, "text", mustEncodeText(t, txt, ids, B), wantTxt, 1e-5)
	})
	t.Run("renamed tensors", func(t *testing.T) {
		v := standin.Variant{ImageInput: "x", ImageOutput: "y", TextInput: "ids", TextOutput: "z"}
		img, txt := openTiny(t, 9, v, onnx.Options{})
		checkClose(t, "images", mustEncodeImages(t, img, px, B), wantImg, 1e-5)
		checkClose(t, "text", mustEncodeText(t, txt, ids, B), wantTxt, 1e-5)
	})
	t.Run("attention mask", func(t *testing.T) {
		_, txtPath := writeTiny(t, 9, standin.Variant{AttentionMask: true})
		txt, err := onnx.NewTextEncoder(txtPath, onnx.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer txt.Close()
		checkClose(t, "text", mustEncodeText(t, txt, ids, B), wantTxt, 1e-5)
	})
	t.Run("dynamic sizes", func(t *testing.T) {
		imgPath, txtPath := writeTiny(t, 9, standin.Variant{DynamicImageSize: true, DynamicContextLength: true})
		_, err := onnx.NewImageEncoder(imgPath, onnx.Options{})
		if err == nil || !strings.Contains(err.Error(), "dynamic height and width") {
			t.Fatalf("no ImageSize: err = %v", err)
		}
		img, txt := openPair(t, imgPath, txtPath, onnx.Options{ImageSize: 224})
		if img.Size() != 224 || txt.ContextLength() != 77 {
			t.Fatalf("Size %d ContextLength %d, want 224 77", img.Size(), txt.ContextLength())
		}
		checkClose(t, "images", mustEncodeImages(t, img, px, B), wantImg, 1e-5)
		checkClose(t, "text", mustEncodeText(t, txt, ids, B), wantTxt, 1e-5)
	})
}

// vitModels writes the ViT-B/32 stand-ins once per process.
var vitOnce sync.Once

func vitModels(tb testing.TB) (img, txt string) {
	tb.Helper()
	onnxtest.RequireRuntime(tb)
	vitOnce.Do(func() {
		dir, err := os.MkdirTemp("", "lemon-vitb32-")
		if err != nil {
			tb.Fatal(err)
		}
		vitDir = dir
		if err := standin.Write(dir, "vit-b-32", 1); err != nil {
			tb.Fatal(err)
		}
	})
	img, txt = filepath.Join(vitDir, "image.onnx"), filepath.Join(vitDir, "text.onnx")
	if _, err := os.Stat(txt); err != nil {
		tb.Fatal(err) // an earlier Write failed
	}
	return img, txt
}

func TestViTB32(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and loads 600 MB of stand-in weights")
	}
	imgPath, txtPath := vitModels(t)
	img, txt := openPair(t, imgPath, txtPath, onnx.Options{})
	if img.Size() != 224 || img.Dim() != 512 || txt.ContextLength() != 77 || txt.Dim() != 512 {
		t.Fatalf("Size %d Dim %d, ContextLength %d Dim %d; want 224 512, 77 512",
			img.Size(), img.Dim(), txt.ContextLength(), txt.Dim())
	}
	if err := onnx.CheckPair(img, txt); err != nil {
		t.Fatal(err)
	}
	ie := mustEncodeImages(t, img, pixels(1, 224, 4), 1)
	checkFinite(t, "image", ie)
	te := mustEncodeText(t, txt, tokens(2, 77), 2)
	checkFinite(t, "text", te)
	// Causal attention: what follows end-of-text cannot change the embedding.
	ids := tokens(1, 77)
	ids[60] = 1234
	checkClose(t, "text with junk after end-of-text", mustEncodeText(t, txt, ids, 1), te[:512], 1e-4)
}

func benchmarkEncoder(b *testing.B, imageSide bool) {
	imgPath, txtPath := vitModels(b)
	const B = 32
	o := onnx.Options{IntraOpThreads: runtime.NumCPU()}
	var run func() error
	if imageSide {
		e, err := onnx.NewImageEncoder(imgPath, o)
		if err != nil {
			b.Fatal(err)
		}
		defer e.Close()
		px := pixels(B, 224, 5)
		run = func() error { _, err := e.Encode(px, B); return err }
	} else {
		e, err := onnx.NewTextEncoder(txtPath, o)
		if err != nil {
			b.Fatal(err)
		}
		defer e.Close()
		ids := tokens(B, 77)
		run = func() error { _, err := e.Encode(ids, B); return err }
	}
	if err := run(); err != nil { // warm-up: first run allocates and prepacks
		b.Fatal(err)
	}
	n := 0
	for b.Loop() {
		if err := run(); err != nil {
			b.Fatal(err)
		}
		n++
	}
	unit := "images/s"
	if !imageSide {
		unit = "captions/s"
	}
	b.ReportMetric(float64(n*B)/b.Elapsed().Seconds(), unit)
}

// BenchmarkImageEncoderViTB32 measures the ViT-B/32 stand-in (the FLOPs of
// CLIP ViT-B/32's image tower) at batch 32 on all cores.
func BenchmarkImageEncoderViTB32(b *testing.B) { benchmarkEncoder(b, true) }

// BenchmarkTextEncoderViTB32 measures the ViT-B/32 text tower stand-in at
// batch 32 on all cores.
func BenchmarkTextEncoderViTB32(b *testing.B) { benchmarkEncoder(b, false) }

// BenchmarkImageEncoderTiny measures the tiny stand-in used by tests.
func BenchmarkImageEncoderTiny(b *testing.B) {
	imgPath, _ := onnxtest.TinyEncoders(b)
	e, err := onnx.NewImageEncoder(imgPath, onnx.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	const B = 32
	px := pixels(B, 224, 6)
	n := 0
	for b.Loop() {
		if _, err := e.Encode(px, B); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n*B)/b.Elapsed().Seconds(), "images/s")
}
