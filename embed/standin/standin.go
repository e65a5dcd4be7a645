// Package standin writes stand-in CLIP encoders: ONNX models with the
// interface of an exported CLIP image and text encoder but random weights.
//
// No pretrained weights can be downloaded where lemon is built and tested, yet
// everything from embed/onnx to the pipeline's benchmarks needs encoder
// files. Write generates them, deterministically from a seed:
//
//	image.onnx: pixel_values float32 [batch,3,224,224] -> image_embeds float32 [batch,D]
//	text.onnx:  input_ids    int64   [batch,77]        -> text_embeds  float32 [batch,D]
//
// Sizes:
//
//   - "tiny" (D = 64): a 32x32-patch convolution, ReLU and mean pool for
//     images; a bag of token embeddings averaged up to the end-of-text token
//     for text. Well under a millisecond per image on a CPU; for tests.
//   - "vit-b-32" (D = 512): the architecture, shapes and FLOPs of OpenAI's
//     CLIP ViT-B/32 (patch embedding, class token, positions, 12 pre-LN
//     transformer layers of width 768 with 12 heads and QuickGELU, ln_post,
//     projection; text: token and position embeddings, 12 causal layers of
//     width 512 with 8 heads, ln_final, the features at the end-of-text
//     token, projection). For benchmarks and capacity planning.
//
// The embeddings mean nothing: images and captions land in unrelated random
// spaces. Like Hugging Face's CLIP exports, outputs are not L2-normalised.
//
// WriteTiny writes variants of the tiny pair (other tensor names, a fixed
// batch axis, dynamic sizes, an attention_mask input, another D) for testing
// how consumers handle real-world exports.
package standin

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"github.com/lemon-curation/lemon/embed/onnxpb"
)

const (
	imageSize     = 224
	patchSize     = 32
	contextLength = 77
	vocabSize     = 49408
)

// Sizes lists the model sizes Write accepts.
func Sizes() []string { return []string{"tiny", "vit-b-32"} }

// Write writes dir/image.onnx and dir/text.onnx, a stand-in CLIP encoder
// pair of the given size (see Sizes) with weights drawn from seed. The same
// size and seed always give byte-identical files. dir is created if needed;
// each file is written under a temporary name and renamed into place.
func Write(dir, size string, seed uint64) error {
	switch size {
	case "tiny":
		return WriteTiny(dir, seed, Variant{})
	case "vit-b-32":
		return write(dir, size, seed, vitImage(seed), vitText(seed))
	}
	return fmt.Errorf("standin: unknown size %q (want one of %v)", size, Sizes())
}

// Variant changes the interface of the tiny stand-ins, to test how
// consumers handle exports that differ from the canonical CLIP one. The zero
// Variant is size "tiny". Weights are seeded by name, so variants with the
// same seed and Dim compute the same function.
type Variant struct {
	// Dim is the embedding dimension of both models; 0 means 64.
	Dim int
	// ImageInput, ImageOutput, TextInput and TextOutput rename the tensors
	// ("" keeps pixel_values, image_embeds, input_ids, text_embeds).
	ImageInput, ImageOutput, TextInput, TextOutput string
	// BatchSize > 0 fixes the batch axis of inputs and outputs at that size.
	BatchSize int
	// DynamicImageSize declares height and width dynamic, as Hugging Face
	// exports do; the model then takes any size from 32 up.
	DynamicImageSize bool
	// DynamicContextLength declares the token axis dynamic; the model still
	// needs rows of 77 ids.
	DynamicContextLength bool
	// AttentionMask gives the text model a second input, attention_mask
	// int64 [batch,77], which weights the tokens it averages.
	AttentionMask bool
}

// WriteTiny writes a tiny stand-in pair changed by v (see Write).
func WriteTiny(dir string, seed uint64, v Variant) error {
	if v.Dim < 0 || v.BatchSize < 0 {
		return fmt.Errorf("standin: negative Dim or BatchSize in %+v", v)
	}
	if v.Dim == 0 {
		v.Dim = 64
	}
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&v.ImageInput, "pixel_values")
	def(&v.ImageOutput, "image_embeds")
	def(&v.TextInput, "input_ids")
	def(&v.TextOutput, "text_embeds")
	return write(dir, "tiny", seed, tinyImage(seed, v), tinyText(seed, v))
}

func write(dir, size string, seed uint64, img, txt *builder) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("standin: %w", err)
	}
	for _, f := range []struct {
		name string
		b    *builder
	}{{"image.onnx", img}, {"text.onnx", txt}} {
		m := &f.b.m
		m.producer, m.version = "lemon standin", "1"
		m.doc = fmt.Sprintf("Stand-in CLIP %s encoder (size %s, seed %d): random weights, not a trained model.",
			m.graphName, size, seed)
		m.metadata = [][2]string{
			{"lemon.standin.size", size},
			{"lemon.standin.seed", strconv.FormatUint(seed, 10)},
		}
		if err := writeFile(filepath.Join(dir, f.name), m); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(path string, m *model) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("standin: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := m.writeTo(tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("standin: writing %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("standin: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("standin: writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("standin: %w", err)
	}
	return nil
}

// batchDim is the batch axis of v's inputs and outputs.
func (v Variant) batchDim() int64 {
	if v.BatchSize > 0 {
		return int64(v.BatchSize)
	}
	return symBatch
}

// tinyImage: Conv 32x32/32 (3 -> 64) -> ReLU -> mean over the patches ->
// linear 64 -> D.
func tinyImage(seed uint64, v Variant) *builder {
	const width = 64
	b := newBuilder(seed, "image")
	var h, w int64 = imageSize, imageSize
	if v.DynamicImageSize {
		h, w = symHeight, symWidth
	}
	x := b.input(v.ImageInput, onnxpb.Float, v.batchDim(), 3, h, w)
	k := b.param("patch.w", 1/float64(3*patchSize), width, 3, patchSize, patchSize) // 1/sqrt(fan-in 3072) ~ 1/55
	x = b.op("Conv", []string{x, k, b.param("patch.b", 0.02, width)}, "",
		onnxpb.AttrIntList("kernel_shape", patchSize, patchSize), onnxpb.AttrIntList("strides", patchSize, patchSize))
	x = b.op("Relu", []string{x}, "")
	x = b.op("ReduceMean", []string{x}, "", onnxpb.AttrIntList("axes", 2, 3), onnxpb.AttrInt("keepdims", 0)) // [B,64]
	b.linearTo(x, "proj", width, int64(v.Dim), v.ImageOutput)
	b.output(v.ImageOutput, onnxpb.Float, v.batchDim(), int64(v.Dim))
	return b
}

// tinyText: token embeddings (49408 x 64) averaged over the positions up to
// and including end-of-text -> tanh -> linear 64 -> D.
func tinyText(seed uint64, v Variant) *builder {
	const width = 64
	b := newBuilder(seed, "text")
	var L int64 = contextLength
	if v.DynamicContextLength {
		L = symSeq
	}
	ids := b.input(v.TextInput, onnxpb.Int64, v.batchDim(), L)
	emb := b.op("Gather", []string{b.param("token_embedding", 1, vocabSize, width), ids}, "") // [B,77,64]

	// weights[b,t] = (t <= eot[b]) / (eot[b]+1): a mean over the caption's
	// tokens that ignores the zero padding after end-of-text.
	eot := b.op("ArgMax", []string{ids}, "", onnxpb.AttrInt("axis", 1), onnxpb.AttrInt("keepdims", 1)) // [B,1]
	pos := make([]int64, contextLength)
	for i := range pos {
		pos[i] = int64(i)
	}
	in := b.op("LessOrEqual", []string{b.int64s("positions", pos, 1, contextLength), eot}, "") // [B,77] bool
	mask := b.op("Cast", []string{in}, "", onnxpb.AttrInt("to", onnxpb.Float))
	if v.AttentionMask {
		am := b.input("attention_mask", onnxpb.Int64, v.batchDim(), L)
		mask = b.op("Mul", []string{mask, b.op("Cast", []string{am}, "", onnxpb.AttrInt("to", onnxpb.Float))}, "")
	}
	count := b.op("ReduceSum", []string{mask, b.int64s("axis1", []int64{1}, 1)}, "", onnxpb.AttrInt("keepdims", 1))
	wts := b.op("Div", []string{mask, count}, "")
	wts = b.op("Unsqueeze", []string{wts, b.int64s("axes1", []int64{1}, 1)}, "")    // [B,1,77]
	x := b.op("MatMul", []string{wts, emb}, "")                                     // [B,1,64]
	x = b.op("Reshape", []string{x, b.int64s("flatten", []int64{0, width}, 2)}, "") // [B,64]
	x = b.op("Tanh", []string{x}, "")
	b.linearTo(x, "proj", width, int64(v.Dim), v.TextOutput)
	b.output(v.TextOutput, onnxpb.Float, v.batchDim(), int64(v.Dim))
	return b
}

// linearTo is linear without bias, writing to the named output.
func (b *builder) linearTo(x, name string, in, out int64, output string) string {
	w := b.param(name+".w", 1/math.Sqrt(float64(in)), in, out)
	return b.op("MatMul", []string{x, w}, output)
}

// vitImage is CLIP ViT-B/32's image tower.
func vitImage(seed uint64) *builder {
	const (
		width  = 768
		layers = 12
		heads  = 12
		dim    = 512
		grid   = imageSize / patchSize // 7
		tokens = grid*grid + 1         // 49 patches + class token
	)
	b := newBuilder(seed, "image")
	x := b.input("pixel_values", onnxpb.Float, symBatch, 3, imageSize, imageSize)
	w := b.param("conv1.w", 0.02, width, 3, patchSize, patchSize)
	x = b.op("Conv", []string{x, w}, "", // [B,768,7,7]
		onnxpb.AttrIntList("kernel_shape", patchSize, patchSize), onnxpb.AttrIntList("strides", patchSize, patchSize))
	x = b.op("Reshape", []string{x, b.int64s("patches_shape", []int64{0, width, grid * grid}, 3)}, "")
	x = b.op("Transpose", []string{x}, "", onnxpb.AttrIntList("perm", 0, 2, 1)) // [B,49,768]

	// Prepending the class token and adding positions is written as padding
	// the sequence with a zero row in front and adding one [50,768] tensor
	// whose row 0 is class_embedding + positional_embedding[0]: the same
	// arithmetic in two ops.
	x = b.op("Pad", []string{x, b.int64s("cls_pad", []int64{0, 1, 0, 0, 0, 0}, 6)}, "") // [B,50,768]
	cls := newRandData(seed, "class_embedding", width, 0.02).values()
	pos := newRandData(seed, "positional_embedding", tokens*width, 0.01).values()
	for i, c := range cls {
		pos[i] += c
	}
	x = b.op("Add", []string{x, b.floats("class_and_positional_embedding", pos, tokens, width)}, "")
	x = b.layerNorm(x, "ln_pre", width)

	x = b.transformer(x, "visual", layers, width, heads, "")

	x = b.op("Gather", []string{x, b.int64s("class_index", []int64{0})}, "", onnxpb.AttrInt("axis", 1)) // [B,768]
	x = b.layerNorm(x, "ln_post", width)
	b.linearTo(x, "visual_projection", width, dim, "image_embeds")
	b.output("image_embeds", onnxpb.Float, symBatch, dim)
	return b
}

// vitText is CLIP ViT-B/32's text tower.
func vitText(seed uint64) *builder {
	const (
		width  = 512
		layers = 12
		heads  = 8
		dim    = 512
	)
	b := newBuilder(seed, "text")
	ids := b.input("input_ids", onnxpb.Int64, symBatch, contextLength)
	x := b.op("Gather", []string{b.param("token_embedding", 0.02, vocabSize, width), ids}, "") // [B,77,512]
	x = b.op("Add", []string{x, b.param("positional_embedding", 0.01, contextLength, width)}, "")

	// Causal mask: position i attends to j <= i. CLIP uses -inf above the
	// diagonal; a large finite value gives the same softmax without any
	// risk of inf-inf = NaN in fused kernels.
	mask := make([]float32, contextLength*contextLength)
	for i := range contextLength {
		for j := i + 1; j < contextLength; j++ {
			mask[i*contextLength+j] = -1e9
		}
	}
	x = b.transformer(x, "text", layers, width, heads, b.floats("causal_mask", mask, contextLength, contextLength))

	// Features at end-of-text (<|endoftext|>, 49407, is the largest id, so it is at
	// argmax(input_ids)) per row, picked with
	// GatherND over the batch. ln_final acts on each token alone, so it is
	// applied after the pick, to one row instead of 77.
	eot := b.op("ArgMax", []string{ids}, "", onnxpb.AttrInt("axis", 1), onnxpb.AttrInt("keepdims", 1)) // [B,1]
	x = b.op("GatherND", []string{x, eot}, "", onnxpb.AttrInt("batch_dims", 1))                        // [B,512]
	x = b.layerNorm(x, "ln_final", width)
	b.linearTo(x, "text_projection", width, dim, "text_embeds")
	b.output("text_embeds", onnxpb.Float, symBatch, dim)
	return b
}
