// Package quantize rewrites a float32 ONNX encoder for int8 inference, as ONNX Runtime's
// quantize_dynamic does for MatMul and Gemm: every such node whose weight is a constant 2-D
// float32 matrix becomes one com.microsoft DynamicQuantizeMatMul (a contrib op of ONNX Runtime's
// CPU build) holding the weight as int8, symmetric, with one scale per output column (or one per
// matrix); activations are quantised to uint8 at run time, per tensor, inside the op. A bias Add
// that only that MatMul feeds is folded into the op. Everything else in the model (other ops,
// embedding tables, convolutions, metadata) is copied unchanged, so the rewritten file takes the
// same inputs and gives the same outputs, approximately.
//
// Activation scales are computed over the whole input tensor of each op, that is over the batch:
// a row's int8 embedding depends (slightly) on the rows it is batched with, so it can change
// with the batch size or the shard layout (which decides the batches). It does not change with
// the number of decode workers or encoder threads.
//
// The rewrite works on the protobuf wire format (embed/onnxpb) and needs no Python. Models with
// weights in external data files or with control-flow subgraphs (If, Loop, Scan) are refused:
// CLIP encoder exports have neither.
package quantize

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/lemon-curation/lemon/embed/onnxpb"
	"github.com/lemon-curation/lemon/storage"
)

// Options chooses how weights are quantised.
type Options struct {
	// PerTensor gives each weight matrix one scale; by default each output column has its own,
	// which keeps columns of small weights from losing their precision to one large column.
	PerTensor bool
}

// MetadataKey is the model metadata entry the rewrite adds, saying how it was quantised.
const MetadataKey = "lemon.quantization"

// MicrosoftDomain is the operator domain of ONNX Runtime's contrib ops.
const MicrosoftDomain = "com.microsoft"

// Report says what a rewrite did.
type Report struct {
	Quantized  int      // MatMul and Gemm nodes replaced by DynamicQuantizeMatMul
	FusedBias  int      // bias Adds folded into them
	Skipped    []string // MatMul and Gemm nodes with constant weights left in float32, and why
	FloatBytes int64    // bytes of the float32 weights replaced
	Int8Bytes  int64    // bytes of their int8 weights and scales
}

// File quantises the model at in and writes it to out (local paths or any storage URL),
// atomically.
func File(ctx context.Context, in, out string, o Options) (Report, error) {
	data, err := storage.ReadFile(ctx, in)
	if err != nil {
		return Report{}, err
	}
	w, err := storage.Create(ctx, out)
	if err != nil {
		return Report{}, err
	}
	r, err := Rewrite(data, w, o)
	if err != nil {
		w.Abort()
		return r, fmt.Errorf("%s: %w", in, err)
	}
	return r, w.Commit()
}

// tensor is a graph initializer as read.
type tensor struct {
	name     string
	dataType int64
	dims     []int64
	raw      []byte // raw_data, if the tensor has it
	floats   []byte // float_data, packed, if it has that instead
	external bool
}

func (t *tensor) numel() int {
	n := 1
	for _, d := range t.dims {
		n *= int(d)
	}
	return n
}

// values decodes a float32 tensor.
func (t *tensor) values() ([]float32, error) {
	b := t.raw
	if b == nil {
		b = t.floats
	}
	if len(b) != 4*t.numel() {
		return nil, fmt.Errorf("initializer %s: %d bytes of data for %v float32 values", t.name, len(b), t.dims)
	}
	v := make([]float32, t.numel())
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v, nil
}

func parseTensor(b []byte) (*tensor, error) {
	fs, err := onnxpb.Fields(b)
	if err != nil {
		return nil, err
	}
	t := &tensor{}
	for _, f := range fs {
		switch f.Num {
		case onnxpb.TensorDims:
			if f.Type == protowire.BytesType { // packed
				for p := f.B; len(p) > 0; {
					v, n := protowire.ConsumeVarint(p)
					if n < 0 {
						return nil, protowire.ParseError(n)
					}
					t.dims = append(t.dims, int64(v))
					p = p[n:]
				}
			} else {
				t.dims = append(t.dims, int64(f.V))
			}
		case onnxpb.TensorDataType:
			t.dataType = int64(f.V)
		case onnxpb.TensorName:
			t.name = f.Str()
		case onnxpb.TensorRawData:
			t.raw = f.B
		case onnxpb.TensorFloatData:
			if f.Type == protowire.BytesType {
				t.floats = append(t.floats, f.B...)
			} else {
				t.floats = binary.LittleEndian.AppendUint32(t.floats, uint32(f.V))
			}
		case onnxpb.TensorDataLocation:
			t.external = f.V == 1 // TensorProto.EXTERNAL
		case onnxpb.TensorExternalData:
			t.external = true
		}
	}
	return t, nil
}

// node is a NodeProto as read.
type node struct {
	raw             []byte
	name, op, dom   string
	inputs, outputs []string
	ints            map[string]int64
	floats          map[string]float32
	subgraph        bool
}

func parseNode(b []byte) (*node, error) {
	fs, err := onnxpb.Fields(b)
	if err != nil {
		return nil, err
	}
	n := &node{raw: b, ints: map[string]int64{}, floats: map[string]float32{}}
	for _, f := range fs {
		switch f.Num {
		case onnxpb.NodeInput:
			n.inputs = append(n.inputs, f.Str())
		case onnxpb.NodeOutput:
			n.outputs = append(n.outputs, f.Str())
		case onnxpb.NodeName:
			n.name = f.Str()
		case onnxpb.NodeOpType:
			n.op = f.Str()
		case onnxpb.NodeDomain:
			n.dom = f.Str()
		case onnxpb.NodeAttribute:
			if err := n.parseAttr(f.B); err != nil {
				return nil, err
			}
		}
	}
	return n, nil
}

// AttributeProto fields and types beyond those onnxpb writes.
const (
	attrG      protowire.Number = 6
	attrGraphs protowire.Number = 11
)

func (n *node) parseAttr(b []byte) error {
	fs, err := onnxpb.Fields(b)
	if err != nil {
		return err
	}
	var name string
	for _, f := range fs {
		switch f.Num {
		case onnxpb.AttrName:
			name = f.Str()
		case onnxpb.AttrI:
			n.ints[name] = int64(f.V)
		case onnxpb.AttrF:
			n.floats[name] = math.Float32frombits(uint32(f.V))
		case attrG, attrGraphs:
			n.subgraph = true
		}
	}
	return nil
}

func (n *node) intAttr(name string, def int64) int64 {
	if v, ok := n.ints[name]; ok {
		return v
	}
	return def
}

func (n *node) floatAttr(name string, def float32) float32 {
	if v, ok := n.floats[name]; ok {
		return v
	}
	return def
}

// graph is what the rewrite needs of a GraphProto.
type graph struct {
	fields  []onnxpb.Field
	nodes   []*node
	inits   map[string]*tensor
	inputs  map[string]bool // graph inputs: initializers listed here can be overridden, so are not constant
	outputs map[string]bool
	uses    map[string]int // how many node inputs and graph outputs read each value
	names   map[string]bool
}

func parseGraph(b []byte) (*graph, error) {
	fs, err := onnxpb.Fields(b)
	if err != nil {
		return nil, err
	}
	g := &graph{fields: fs, inits: map[string]*tensor{}, inputs: map[string]bool{}, outputs: map[string]bool{}, uses: map[string]int{}, names: map[string]bool{}}
	for _, f := range fs {
		switch f.Num {
		case onnxpb.GraphNode:
			n, err := parseNode(f.B)
			if err != nil {
				return nil, fmt.Errorf("node %d: %w", len(g.nodes), err)
			}
			if n.subgraph {
				return nil, fmt.Errorf("node %s (%s) holds a subgraph; models with control flow (If, Loop, Scan) are not supported", n.name, n.op)
			}
			g.nodes = append(g.nodes, n)
			for _, in := range n.inputs {
				g.uses[in]++
			}
			for _, out := range n.outputs {
				g.names[out] = true
			}
			g.names[n.name] = true
		case onnxpb.GraphInitializer:
			t, err := parseTensor(f.B)
			if err != nil {
				return nil, fmt.Errorf("initializer: %w", err)
			}
			g.inits[t.name] = t
			g.names[t.name] = true
		case onnxpb.GraphInput, onnxpb.GraphOutput:
			vf, err := onnxpb.Fields(f.B)
			if err != nil {
				return nil, err
			}
			for _, v := range vf {
				if v.Num == onnxpb.ValueName {
					if f.Num == onnxpb.GraphInput {
						g.inputs[v.Str()] = true
					} else {
						g.outputs[v.Str()] = true
						g.uses[v.Str()]++
					}
					g.names[v.Str()] = true
				}
			}
		}
	}
	return g, nil
}

// constant is the float32 initializer named name, if it is one and not also a graph input.
func (g *graph) constant(name string) *tensor {
	t := g.inits[name]
	if t == nil || g.inputs[name] || t.dataType != onnxpb.Float {
		return nil
	}
	return t
}

// fresh is a value or node name not yet used in the graph, based on base.
func (g *graph) fresh(base string) string {
	name := base
	for i := 2; g.names[name]; i++ {
		name = base + "_" + strconv.Itoa(i)
	}
	g.names[name] = true
	return name
}

// quantized weights, keyed by initializer name and whether they were transposed.
type weightKey struct {
	name      string
	transpose bool
}

type qweight struct{ q, scale string }

// rewriter holds a rewrite in progress.
type rewriter struct {
	g       *graph
	o       Options
	report  Report
	weights map[weightKey]qweight
	newInit [][]byte // encoded TensorProtos to add
	dropped map[string]bool
}

// Rewrite reads an ONNX model and writes its quantised form to w.
func Rewrite(model []byte, w io.Writer, o Options) (Report, error) {
	mf, err := onnxpb.Fields(model)
	if err != nil {
		return Report{}, fmt.Errorf("not an ONNX model: %w", err)
	}
	var gf *onnxpb.Field
	for i := range mf {
		if mf[i].Num == onnxpb.ModelGraph && mf[i].Type == protowire.BytesType {
			gf = &mf[i]
		}
	}
	if gf == nil {
		return Report{}, errors.New("not an ONNX model: no graph")
	}
	g, err := parseGraph(gf.B)
	if err != nil {
		return Report{}, fmt.Errorf("not a readable ONNX graph: %w", err)
	}
	for _, t := range g.inits {
		if t.external {
			return Report{}, fmt.Errorf("initializer %s is stored in an external data file; quantising such models is not supported (save the model with its weights inside the .onnx file)", t.name)
		}
	}
	rw := &rewriter{g: g, o: o, weights: map[weightKey]qweight{}, dropped: map[string]bool{}}
	nodes, err := rw.nodes()
	if err != nil {
		return rw.report, err
	}
	if rw.report.Quantized == 0 {
		return rw.report, errors.New("no MatMul or Gemm node with a constant float32 weight matrix: nothing to quantise")
	}

	// The graph: nodes in their new form, other fields as they were, then the new initializers.
	var pieces [][]byte
	for _, n := range nodes {
		pieces = append(pieces, onnxpb.AppendMsg(nil, onnxpb.GraphNode, n))
	}
	for _, f := range g.fields {
		switch f.Num {
		case onnxpb.GraphNode:
			continue
		case onnxpb.GraphInitializer:
			if t, _ := parseTensor(f.B); t != nil && rw.dropped[t.name] && g.uses[t.name] == 0 {
				continue
			}
		}
		pieces = append(pieces, f.Raw)
	}
	for _, t := range rw.newInit {
		pieces = append(pieces, onnxpb.AppendMsg(nil, onnxpb.GraphInitializer, t))
	}
	graphLen := 0
	for _, p := range pieces {
		graphLen += len(p)
	}

	// The model: its fields as they were, the graph replaced, plus the contrib opset (if the
	// model lacks it) and a metadata entry.
	hasMS := false
	for _, f := range mf {
		if f.Num != onnxpb.ModelOpsetImport {
			continue
		}
		of, err := onnxpb.Fields(f.B)
		if err != nil {
			return rw.report, err
		}
		for _, x := range of {
			if x.Num == onnxpb.OpsetDomain && x.Str() == MicrosoftDomain {
				hasMS = true
			}
		}
	}
	var head, tail []byte
	cur := &head
	for _, f := range mf {
		switch f.Num {
		case onnxpb.ModelGraph:
			cur = &tail
			continue
		case onnxpb.ModelMetadataProps:
			if metadataKey(f.B) == MetadataKey {
				continue // quantising a quantised model: the entry is replaced
			}
		}
		*cur = append(*cur, f.Raw...)
	}
	if !hasMS {
		opset := onnxpb.AppendStr(nil, onnxpb.OpsetDomain, MicrosoftDomain)
		opset = onnxpb.AppendInt(opset, onnxpb.OpsetVersion, 1)
		tail = onnxpb.AppendMsg(tail, onnxpb.ModelOpsetImport, opset)
	}
	entry := onnxpb.AppendStr(nil, onnxpb.EntryKey, MetadataKey)
	entry = onnxpb.AppendStr(entry, onnxpb.EntryValue, rw.describe())
	tail = onnxpb.AppendMsg(tail, onnxpb.ModelMetadataProps, entry)

	head = protowire.AppendTag(head, onnxpb.ModelGraph, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(graphLen))
	if _, err := w.Write(head); err != nil {
		return rw.report, err
	}
	for _, p := range pieces {
		if _, err := w.Write(p); err != nil {
			return rw.report, err
		}
	}
	_, err = w.Write(tail)
	return rw.report, err
}

func metadataKey(entry []byte) string {
	fs, _ := onnxpb.Fields(entry)
	for _, f := range fs {
		if f.Num == onnxpb.EntryKey {
			return f.Str()
		}
	}
	return ""
}

// describe is the metadata entry's value.
func (rw *rewriter) describe() string {
	scales := "per output column"
	if rw.o.PerTensor {
		scales = "per tensor"
	}
	return fmt.Sprintf("dynamic int8 (lemon quantize): %d MatMul/Gemm weights int8 symmetric, scales %s; activations uint8 per tensor at run time (com.microsoft DynamicQuantizeMatMul)",
		rw.report.Quantized, scales)
}

// nodes returns the graph's nodes, encoded, with MatMul and Gemm nodes on constant weights
// replaced and the bias Adds folded into them removed.
func (rw *rewriter) nodes() ([][]byte, error) {
	g := rw.g
	// A MatMul's bias Add: the Add that is the only reader of its output, adding a constant
	// vector of one value per output column.
	fused := map[*node]bool{}
	addOf := map[string]*node{}
	for _, n := range g.nodes {
		if n.op == "Add" && n.dom == "" && len(n.inputs) == 2 {
			for _, in := range n.inputs {
				if _, ok := addOf[in]; ok {
					addOf[in] = nil // read by two Adds
				} else {
					addOf[in] = n
				}
			}
		}
	}
	var out [][]byte
	for i, n := range g.nodes {
		if fused[n] {
			continue
		}
		if n.dom != "" || (n.op != "MatMul" && n.op != "Gemm") || len(n.inputs) < 2 || len(n.outputs) != 1 {
			out = append(out, n.raw)
			continue
		}
		w := g.constant(n.inputs[1])
		if w == nil {
			out = append(out, n.raw) // activation x activation (attention), or a non-float weight
			continue
		}
		name := n.name
		if name == "" {
			name = fmt.Sprintf("%s_%d", n.op, i)
		}
		if len(w.dims) != 2 {
			rw.skip(name, fmt.Sprintf("weight %s has shape %v, not a matrix", w.name, w.dims))
			out = append(out, n.raw)
			continue
		}
		k, cols := w.dims[0], w.dims[1]
		transpose := false
		var alpha float32 = 1
		var bias []float32 // Gemm's beta*C
		biasName := ""
		if n.op == "Gemm" {
			if n.intAttr("transA", 0) != 0 {
				rw.skip(name, "Gemm with transA")
				out = append(out, n.raw)
				continue
			}
			if n.intAttr("transB", 0) != 0 {
				transpose = true
				k, cols = cols, k
			}
			alpha = n.floatAttr("alpha", 1)
			if len(n.inputs) > 2 && n.inputs[2] != "" {
				c := g.constant(n.inputs[2])
				if c == nil || c.numel() != int(cols) || len(c.dims) > 2 || (len(c.dims) == 2 && c.dims[0] != 1) {
					rw.skip(name, fmt.Sprintf("Gemm's C %s is not a constant vector of %d values", n.inputs[2], cols))
					out = append(out, n.raw)
					continue
				}
				v, err := c.values()
				if err != nil {
					return nil, err
				}
				beta := n.floatAttr("beta", 1)
				for j := range v {
					v[j] *= beta
				}
				bias = v
			}
		}
		if !(alpha > 0) { // also NaN: a negative or zero scale is not worth supporting
			rw.skip(name, fmt.Sprintf("Gemm with alpha %g", alpha))
			out = append(out, n.raw)
			continue
		}
		qw, err := rw.weight(w, transpose, alpha)
		if err != nil {
			return nil, err
		}
		output := n.outputs[0]
		if n.op == "MatMul" {
			if add := addOf[output]; add != nil && g.uses[output] == 1 && !g.outputs[output] {
				other := add.inputs[0]
				if other == output {
					other = add.inputs[1]
				}
				if c := g.constant(other); c != nil && len(c.dims) == 1 && c.dims[0] == cols && other != output {
					biasName = other
					output = add.outputs[0]
					fused[add] = true
					rw.report.FusedBias++
				}
			}
		}
		if bias != nil {
			biasName = g.fresh(n.inputs[2] + "_bias")
			rw.newInit = append(rw.newInit, onnxpb.Tensor(biasName, onnxpb.Float, []int64{cols}, float32Bytes(bias)))
			g.uses[n.inputs[2]]--
			rw.dropped[n.inputs[2]] = true
		}
		inputs := []string{n.inputs[0], qw.q, qw.scale}
		if biasName != "" {
			inputs = append(inputs, "", biasName) // no b_zero_point: symmetric
		}
		g.uses[w.name]--
		rw.dropped[w.name] = true
		out = append(out, onnxpb.Node("DynamicQuantizeMatMul", MicrosoftDomain, name, inputs, []string{output}))
		rw.report.Quantized++
	}
	return out, nil
}

func (rw *rewriter) skip(name, why string) {
	rw.report.Skipped = append(rw.report.Skipped, name+": "+why)
}

// weight quantises w (transposed first, for Gemm's transB), once per weight and layout,
// and returns the names of the int8 matrix and its scales. alpha (Gemm's) multiplies the scales.
func (rw *rewriter) weight(w *tensor, transpose bool, alpha float32) (qweight, error) {
	key := weightKey{w.name, transpose}
	if q, ok := rw.weights[key]; ok && alpha == 1 {
		return q, nil
	}
	v, err := w.values()
	if err != nil {
		return qweight{}, err
	}
	rows, cols := int(w.dims[0]), int(w.dims[1])
	if transpose {
		t := make([]float32, len(v))
		for r := range rows {
			for c := range cols {
				t[c*rows+r] = v[r*cols+c]
			}
		}
		v, rows, cols = t, cols, rows
	}
	q, scales := Symmetric(v, rows, cols, rw.o.PerTensor)
	for i := range scales {
		scales[i] *= alpha
	}
	qw := qweight{q: rw.g.fresh(w.name + "_int8"), scale: rw.g.fresh(w.name + "_scale")}
	qb := make([]byte, len(q))
	for i, x := range q {
		qb[i] = byte(x)
	}
	rw.newInit = append(rw.newInit,
		onnxpb.Tensor(qw.q, onnxpb.Int8, []int64{int64(rows), int64(cols)}, qb),
		onnxpb.Tensor(qw.scale, onnxpb.Float, []int64{int64(len(scales))}, float32Bytes(scales)))
	rw.report.FloatBytes += int64(4 * len(v))
	rw.report.Int8Bytes += int64(len(q) + 4*len(scales))
	if alpha == 1 {
		rw.weights[key] = qw
	}
	return qw, nil
}

// Symmetric quantises a rows x cols matrix (row-major) to int8 in [-127, 127] with zero point 0:
// w ≈ q * scale, scale = max|w| / 127 over each column (or over the whole matrix if perTensor),
// rounding half to even as numpy (and so ONNX Runtime's quantiser) does. A column of zeros gets
// scale 1.
func Symmetric(w []float32, rows, cols int, perTensor bool) (q []int8, scales []float32) {
	scales = make([]float32, cols)
	for r := range rows {
		for c, x := range w[r*cols : (r+1)*cols] {
			scales[c] = max(scales[c], float32(math.Abs(float64(x))))
		}
	}
	if perTensor {
		var m float32
		for _, s := range scales {
			m = max(m, s)
		}
		scales = []float32{m}
	}
	for i, m := range scales {
		if m == 0 {
			scales[i] = 1
		} else {
			scales[i] = m / 127
		}
	}
	q = make([]int8, len(w))
	for r := range rows {
		for c, x := range w[r*cols : (r+1)*cols] {
			s := scales[0]
			if !perTensor {
				s = scales[c]
			}
			v := math.RoundToEven(float64(x / s))
			q[r*cols+c] = int8(max(-127, min(127, v)))
		}
	}
	return q, scales
}

func float32Bytes(vs []float32) []byte {
	b := make([]byte, 4*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}
