package standin

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/lemon-curation/lemon/embed/onnxpb"
)

// These tests read the written files back with protowire and check them
// against onnx.proto's structure, without ONNX Runtime; runtime_test.go
// runs them.

func parse(t *testing.T, b []byte) []onnxpb.Field {
	t.Helper()
	fs, err := onnxpb.Fields(b)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func get(fs []onnxpb.Field, num protowire.Number) []onnxpb.Field {
	var out []onnxpb.Field
	for _, f := range fs {
		if f.Num == num {
			out = append(out, f)
		}
	}
	return out
}

func one(t *testing.T, fs []onnxpb.Field, num protowire.Number) onnxpb.Field {
	t.Helper()
	g := get(fs, num)
	if len(g) != 1 {
		t.Fatalf("field %d occurs %d times, want once", num, len(g))
	}
	return g[0]
}

// tensorSig renders a ValueInfoProto as "name elem [dims]" (symbolic dims by
// name).
func tensorSig(t *testing.T, vi []byte) string {
	fs := parse(t, vi)
	name := string(one(t, fs, onnxpb.ValueName).B)
	tt := parse(t, one(t, parse(t, one(t, fs, onnxpb.ValueType).B), onnxpb.TypeTensor).B)
	elem := one(t, tt, onnxpb.TensorElemType).V
	var dims []string
	for _, d := range get(parse(t, one(t, tt, onnxpb.TensorShape).B), onnxpb.ShapeDim) {
		df := parse(t, d.B)
		if p := get(df, onnxpb.DimParam); len(p) == 1 {
			dims = append(dims, string(p[0].B))
		} else {
			dims = append(dims, fmt.Sprint(one(t, df, onnxpb.DimValue).V))
		}
	}
	return fmt.Sprintf("%s %d %v", name, elem, dims)
}

// checkModel checks a written model's structure: header fields, that every
// initializer's raw_data has numel*elemsize bytes, and that the nodes are
// in topological order (each input defined before use). It returns the
// graph's input and output signatures and the number of parameters.
func checkModel(t *testing.T, path string) (inputs, outputs []string, params int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := parse(t, data)
	if v := one(t, m, onnxpb.ModelIRVersion).V; v != irVersion {
		t.Errorf("ir_version %d", v)
	}
	opset := parse(t, one(t, m, onnxpb.ModelOpsetImport).B)
	if v := one(t, opset, onnxpb.OpsetVersion).V; v != opsetVersion {
		t.Errorf("opset %d", v)
	}
	g := parse(t, one(t, m, onnxpb.ModelGraph).B)

	defined := map[string]bool{"": true}
	for _, in := range get(g, onnxpb.GraphInput) {
		sig := tensorSig(t, in.B)
		inputs = append(inputs, sig)
		defined[strings.Fields(sig)[0]] = true
	}
	for _, init := range get(g, onnxpb.GraphInitializer) {
		tf := parse(t, init.B)
		name := string(one(t, tf, onnxpb.TensorName).B)
		n := 1
		for _, d := range get(tf, onnxpb.TensorDims) {
			n *= int(d.V)
		}
		size := map[uint64]int{onnxpb.Float: 4, onnxpb.Int64: 8}[one(t, tf, onnxpb.TensorDataType).V]
		if got := len(one(t, tf, onnxpb.TensorRawData).B); got != n*size {
			t.Errorf("initializer %s: %d bytes of raw_data, want %d", name, got, n*size)
		}
		if defined[name] {
			t.Errorf("initializer %s defined twice", name)
		}
		defined[name] = true
		params += n
	}
	nodes := get(g, onnxpb.GraphNode)
	if len(nodes) == 0 {
		t.Fatal("no nodes")
	}
	for _, nd := range nodes {
		nf := parse(t, nd.B)
		op := string(one(t, nf, onnxpb.NodeOpType).B)
		for _, in := range get(nf, onnxpb.NodeInput) {
			if !defined[string(in.B)] {
				t.Errorf("%s node uses %q before it is defined", op, in.B)
			}
		}
		for _, out := range get(nf, onnxpb.NodeOutput) {
			defined[string(out.B)] = true
		}
	}
	for _, out := range get(g, onnxpb.GraphOutput) {
		sig := tensorSig(t, out.B)
		outputs = append(outputs, sig)
		if !defined[strings.Fields(sig)[0]] {
			t.Errorf("output %s is not computed", sig)
		}
	}
	return inputs, outputs, params
}

func TestTinyStructure(t *testing.T) {
	dir := t.TempDir()
	if err := Write(dir, "tiny", 1); err != nil {
		t.Fatal(err)
	}
	in, out, _ := checkModel(t, filepath.Join(dir, "image.onnx"))
	if want := []string{"pixel_values 1 [batch 3 224 224]"}; !slices.Equal(in, want) {
		t.Errorf("image inputs %v, want %v", in, want)
	}
	if want := []string{"image_embeds 1 [batch 64]"}; !slices.Equal(out, want) {
		t.Errorf("image outputs %v, want %v", out, want)
	}
	in, out, _ = checkModel(t, filepath.Join(dir, "text.onnx"))
	if want := []string{"input_ids 7 [batch 77]"}; !slices.Equal(in, want) {
		t.Errorf("text inputs %v, want %v", in, want)
	}
	if want := []string{"text_embeds 1 [batch 64]"}; !slices.Equal(out, want) {
		t.Errorf("text outputs %v, want %v", out, want)
	}
}

func TestVariantStructure(t *testing.T) {
	dir := t.TempDir()
	v := Variant{Dim: 32, BatchSize: 4, DynamicImageSize: true, DynamicContextLength: true, AttentionMask: true, ImageInput: "x"}
	if err := WriteTiny(dir, 1, v); err != nil {
		t.Fatal(err)
	}
	in, out, _ := checkModel(t, filepath.Join(dir, "image.onnx"))
	if want := []string{"x 1 [4 3 height width]"}; !slices.Equal(in, want) {
		t.Errorf("image inputs %v, want %v", in, want)
	}
	if want := []string{"image_embeds 1 [4 32]"}; !slices.Equal(out, want) {
		t.Errorf("image outputs %v, want %v", out, want)
	}
	in, _, _ = checkModel(t, filepath.Join(dir, "text.onnx"))
	if want := []string{"input_ids 7 [4 sequence]", "attention_mask 7 [4 sequence]"}; !slices.Equal(in, want) {
		t.Errorf("text inputs %v, want %v", in, want)
	}
}

// The ViT-B/32 stand-ins have CLIP ViT-B/32's parameter counts: 87,849,216
// in the image tower, less the 768 of the class embedding, which is folded
// into the positional embedding; 63,428,096 in the text tower, plus its
// 77x77 causal mask. Reshape shapes and scalar constants add a few more.
func TestViTB32Structure(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 600 MB")
	}
	dir := t.TempDir()
	if err := Write(dir, "vit-b-32", 1); err != nil {
		t.Fatal(err)
	}
	in, out, params := checkModel(t, filepath.Join(dir, "image.onnx"))
	t.Logf("image: %v -> %v, %d parameters", in, out, params)
	if want := []string{"image_embeds 1 [batch 512]"}; !slices.Equal(out, want) {
		t.Errorf("image outputs %v, want %v", out, want)
	}
	if lo, hi := 87_849_216-768, 87_849_216-768+100; params < lo || params > hi {
		t.Errorf("image tower has %d parameters, want %d (+ a few constants)", params, lo)
	}
	in, out, params = checkModel(t, filepath.Join(dir, "text.onnx"))
	t.Logf("text: %v -> %v, %d parameters", in, out, params)
	if want := []string{"text_embeds 1 [batch 512]"}; !slices.Equal(out, want) {
		t.Errorf("text outputs %v, want %v", out, want)
	}
	if lo, hi := 63_428_096+77*77, 63_428_096+77*77+100; params < lo || params > hi {
		t.Errorf("text tower has %d parameters, want %d (+ mask and a few constants)", params, lo)
	}
}

func TestDeterministicFiles(t *testing.T) {
	a, b, c := t.TempDir(), t.TempDir(), t.TempDir()
	for _, w := range []struct {
		dir  string
		seed uint64
	}{{a, 7}, {b, 7}, {c, 8}} {
		if err := Write(w.dir, "tiny", w.seed); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"image.onnx", "text.onnx"} {
		fa, _ := os.ReadFile(filepath.Join(a, name))
		fb, _ := os.ReadFile(filepath.Join(b, name))
		fc, _ := os.ReadFile(filepath.Join(c, name))
		if len(fa) == 0 || !bytes.Equal(fa, fb) {
			t.Errorf("%s: same seed, different files", name)
		}
		if bytes.Equal(fa, fc) {
			t.Errorf("%s: different seeds, same file", name)
		}
	}
	// Rewriting over existing files leaves no temporary files behind.
	if err := Write(a, "tiny", 7); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(a)
	if len(ents) != 2 {
		t.Errorf("%d entries in the output directory, want 2", len(ents))
	}
}

// The tiny files are pinned: tests downstream may depend on their exact
// embeddings, and the generator must give the same bytes on every
// platform. Change these only on purpose.
func TestTinyGolden(t *testing.T) {
	dir := t.TempDir()
	if err := Write(dir, "tiny", 1); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"image.onnx": "7c3ca58db474b9c71a5662b7ed3d66b7b854af51b4b38bcd445ea366a3300d22",
		"text.onnx":  "0084d8f130502016bd03e843d6198e641c12470ce7d3fe01a617a44684170f13",
	} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != want {
			t.Errorf("%s: sha256 %s, want %s", name, got, want)
		}
	}
}

func TestUnknownSize(t *testing.T) {
	err := Write(t.TempDir(), "vit-h-14", 1)
	if err == nil || !strings.Contains(err.Error(), "vit-h-14") || !strings.Contains(err.Error(), "tiny") {
		t.Fatalf("err = %v", err)
	}
	if !slices.Equal(Sizes(), []string{"tiny", "vit-b-32"}) {
		t.Errorf("Sizes() = %v", Sizes())
	}
}
