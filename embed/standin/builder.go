package standin

import (
	"fmt"
	"math"

	"github.com/lemon-curation/lemon/embed/onnxpb"
)

// builder assembles an ONNX graph node by node. Values are named by the
// builder (op type plus a counter), weights by their role ("l3.attn.q.w"),
// which also seeds their generator.
type builder struct {
	seed  uint64
	m     model
	count int
	geluK string // the shared 1.702 constant, once created
}

func newBuilder(seed uint64, graphName string) *builder {
	return &builder{seed: seed, m: model{graphName: graphName}}
}

func (b *builder) input(name string, elemType int64, dims ...int64) string {
	b.m.inputs = append(b.m.inputs, valueInfo(name, elemType, dims...))
	return name
}

func (b *builder) output(name string, elemType int64, dims ...int64) {
	b.m.outputs = append(b.m.outputs, valueInfo(name, elemType, dims...))
}

// op adds a node with one output and returns the output's name. out names
// the output; "" lets the builder choose.
func (b *builder) op(opType string, inputs []string, out string, attrs ...onnxpb.Attr) string {
	b.count++
	if out == "" {
		out = fmt.Sprintf("%s_%d", opType, b.count)
	}
	n := onnxpb.Node(opType, "", fmt.Sprintf("%s_%d", opType, b.count), inputs, []string{out}, attrs...)
	b.m.nodes = append(b.m.nodes, n)
	return out
}

func (b *builder) init(name string, dtype int64, dims []int64, data rawData) string {
	b.m.inits = append(b.m.inits, &initializer{name: name, dtype: dtype, dims: dims, data: data})
	return name
}

// param is a random float32 weight with standard deviation std.
func (b *builder) param(name string, std float64, dims ...int64) string {
	return b.init(name, onnxpb.Float, dims, newRandData(b.seed, name, numel(dims), std))
}

// fill is a float32 weight with every element v.
func (b *builder) fill(name string, v float32, dims ...int64) string {
	return b.init(name, onnxpb.Float, dims, constData{n: numel(dims), v: v})
}

func (b *builder) floats(name string, vs []float32, dims ...int64) string {
	return b.init(name, onnxpb.Float, dims, float32Bytes(vs))
}

func (b *builder) int64s(name string, vs []int64, dims ...int64) string {
	return b.init(name, onnxpb.Int64, dims, int64Bytes(vs))
}

func numel(dims []int64) int {
	n := 1
	for _, d := range dims {
		n *= int(d)
	}
	return n
}

// Layers. Shapes in comments: B batch, T tokens, W width.

// linear is x @ w (+ bias): x [..., in] -> [..., out], weights scaled by
// 1/sqrt(in) so that outputs have about the variance of the inputs.
func (b *builder) linear(x, name string, in, out int64, bias bool) string {
	w := b.param(name+".w", 1/math.Sqrt(float64(in)), in, out)
	y := b.op("MatMul", []string{x, w}, "")
	if bias {
		y = b.op("Add", []string{y, b.param(name+".b", 0.02, out)}, "")
	}
	return y
}

// layerNorm normalises over the last axis, with the scale 1 and shift 0 of a
// freshly initialised network.
func (b *builder) layerNorm(x, name string, width int64) string {
	scale := b.fill(name+".scale", 1, width)
	shift := b.fill(name+".shift", 0, width)
	return b.op("LayerNormalization", []string{x, scale, shift}, "",
		onnxpb.AttrInt("axis", -1), onnxpb.AttrFloat("epsilon", 1e-5))
}

// quickGELU is CLIP's activation, x * sigmoid(1.702 x).
func (b *builder) quickGELU(x string) string {
	if b.geluK == "" {
		b.geluK = b.floats("quickgelu_k", []float32{1.702})
	}
	s := b.op("Sigmoid", []string{b.op("Mul", []string{x, b.geluK}, "")}, "")
	return b.op("Mul", []string{x, s}, "")
}

// transformer is CLIP's residual attention stack over x [B,T,W]: per layer,
// x += attn(ln_1(x)); x += mlp(ln_2(x)). mask, if not "", is added to the
// attention scores (the text encoder's causal mask).
func (b *builder) transformer(x, name string, layers, width, heads int64, mask string) string {
	dh := width / heads
	split := b.int64s(name+".split_heads", []int64{0, 0, heads, dh}, 4) // [B,T,W] -> [B,T,H,dh]
	merge := b.int64s(name+".merge_heads", []int64{0, 0, width}, 3)     // [B,T,H,dh] -> [B,T,W]
	scale := b.floats(name+".attn_scale", []float32{float32(1 / math.Sqrt(float64(dh)))})
	heads4 := func(v string, perm ...int64) string {
		return b.op("Transpose", []string{b.op("Reshape", []string{v, split}, "")}, "", onnxpb.AttrIntList("perm", perm...))
	}
	for l := range layers {
		p := fmt.Sprintf("%s.l%d", name, l)

		h := b.layerNorm(x, p+".ln_1", width)
		q := heads4(b.linear(h, p+".attn.q", width, width, true), 0, 2, 1, 3)     // [B,H,T,dh]
		k := heads4(b.linear(h, p+".attn.k", width, width, true), 0, 2, 3, 1)     // [B,H,dh,T]
		v := heads4(b.linear(h, p+".attn.v", width, width, true), 0, 2, 1, 3)     // [B,H,T,dh]
		s := b.op("Mul", []string{b.op("MatMul", []string{q, k}, ""), scale}, "") // [B,H,T,T]
		if mask != "" {
			s = b.op("Add", []string{s, mask}, "")
		}
		a := b.op("Softmax", []string{s}, "", onnxpb.AttrInt("axis", -1))
		o := b.op("MatMul", []string{a, v}, "")                                        // [B,H,T,dh]
		o = b.op("Transpose", []string{o}, "", onnxpb.AttrIntList("perm", 0, 2, 1, 3)) // [B,T,H,dh]
		o = b.linear(b.op("Reshape", []string{o, merge}, ""), p+".attn.out", width, width, true)
		x = b.op("Add", []string{x, o}, "")

		h = b.layerNorm(x, p+".ln_2", width)
		h = b.quickGELU(b.linear(h, p+".mlp.fc", width, 4*width, true))
		h = b.linear(h, p+".mlp.proj", 4*width, width, true)
		x = b.op("Add", []string{x, h}, "")
	}
	return x
}
