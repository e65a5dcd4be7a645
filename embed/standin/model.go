package standin

import (
	"bufio"
	"encoding/binary"
	"io"
	"math"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/lemon-curation/lemon/embed/onnxpb"
)

// The model writer for the stand-in graphs, on onnxpb's encoders.
//
// Weights are not held in memory: each initializer's raw_data is produced
// while the file is written, so writing the ViT-B/32 stand-in (~600 MB of
// float32 weights) needs only a small buffer.

const (
	irVersion    = 8  // ONNX IR version 8 (ONNX 1.10+), read by every ONNX Runtime since 1.10
	opsetVersion = 17 // first opset with LayerNormalization
)

// Symbolic (dynamic) dimensions, as negative dims of valueInfo.
const (
	symBatch  = -1 - iota // "batch"
	symHeight             // "height"
	symWidth              // "width"
	symSeq                // "sequence"
)

var symNames = []string{"batch", "height", "width", "sequence"}

// valueInfo encodes a ValueInfoProto for a tensor. A negative dim is one of
// the symbolic dimensions sym*.
func valueInfo(name string, elemType int64, dims ...int64) []byte {
	var shape []byte
	for _, d := range dims {
		var dim []byte
		if d < 0 {
			dim = onnxpb.AppendStr(nil, onnxpb.DimParam, symNames[-1-d])
		} else {
			dim = onnxpb.AppendInt(nil, onnxpb.DimValue, d)
		}
		shape = onnxpb.AppendMsg(shape, onnxpb.ShapeDim, dim)
	}
	tt := onnxpb.AppendInt(nil, onnxpb.TensorElemType, elemType)
	tt = onnxpb.AppendMsg(tt, onnxpb.TensorShape, shape)
	b := onnxpb.AppendStr(nil, onnxpb.ValueName, name)
	return onnxpb.AppendMsg(b, onnxpb.ValueType, onnxpb.AppendMsg(nil, onnxpb.TypeTensor, tt))
}

// rawData is an initializer's content, little-endian, produced on demand.
type rawData interface {
	size() int // in bytes
	writeTo(w *bufio.Writer) error
}

// bytesData is content already in memory (small constants).
type bytesData []byte

func (d bytesData) size() int { return len(d) }
func (d bytesData) writeTo(w *bufio.Writer) error {
	_, err := w.Write(d)
	return err
}

func float32Bytes(vs []float32) bytesData {
	b := make([]byte, 4*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

func int64Bytes(vs []int64) bytesData {
	b := make([]byte, 8*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(v))
	}
	return b
}

// initializer is a TensorProto in GraphProto.initializer.
type initializer struct {
	name  string
	dtype int64
	dims  []int64
	data  rawData
}

// header encodes GraphProto.initializer's tag and length and the TensorProto
// up to and including raw_data's tag and length: everything but the data.
func (t *initializer) header() []byte {
	var fields []byte
	for _, d := range t.dims {
		fields = onnxpb.AppendInt(fields, onnxpb.TensorDims, d)
	}
	fields = onnxpb.AppendInt(fields, onnxpb.TensorDataType, t.dtype)
	fields = onnxpb.AppendStr(fields, onnxpb.TensorName, t.name)
	n := t.data.size()
	fields = protowire.AppendTag(fields, onnxpb.TensorRawData, protowire.BytesType)
	fields = protowire.AppendVarint(fields, uint64(n))
	hdr := protowire.AppendTag(nil, onnxpb.GraphInitializer, protowire.BytesType)
	hdr = protowire.AppendVarint(hdr, uint64(len(fields)+n))
	return append(hdr, fields...)
}

// model is everything in a ModelProto except the initializers' contents.
type model struct {
	producer, version string
	doc               string
	metadata          [][2]string
	graphName         string
	nodes             [][]byte // encoded NodeProto
	inputs, outputs   [][]byte // encoded ValueInfoProto
	inits             []*initializer
}

// writeTo streams the encoded ModelProto to w. The graph goes last so that
// its (large) length can be computed up front and its initializers written
// one by one.
func (m *model) writeTo(w io.Writer) error {
	var head []byte
	head = onnxpb.AppendInt(head, onnxpb.ModelIRVersion, irVersion)
	head = onnxpb.AppendStr(head, onnxpb.ModelProducerName, m.producer)
	head = onnxpb.AppendStr(head, onnxpb.ModelProducerVer, m.version)
	if m.doc != "" {
		head = onnxpb.AppendStr(head, onnxpb.ModelDocString, m.doc)
	}
	opset := onnxpb.AppendStr(nil, onnxpb.OpsetDomain, "")
	opset = onnxpb.AppendInt(opset, onnxpb.OpsetVersion, opsetVersion)
	head = onnxpb.AppendMsg(head, onnxpb.ModelOpsetImport, opset)
	for _, kv := range m.metadata {
		e := onnxpb.AppendStr(nil, onnxpb.EntryKey, kv[0])
		e = onnxpb.AppendStr(e, onnxpb.EntryValue, kv[1])
		head = onnxpb.AppendMsg(head, onnxpb.ModelMetadataProps, e)
	}

	var graph []byte // the graph's fields other than initializers
	for _, n := range m.nodes {
		graph = onnxpb.AppendMsg(graph, onnxpb.GraphNode, n)
	}
	graph = onnxpb.AppendStr(graph, onnxpb.GraphName, m.graphName)
	if m.doc != "" {
		graph = onnxpb.AppendStr(graph, onnxpb.GraphDocString, m.doc)
	}
	for _, v := range m.inputs {
		graph = onnxpb.AppendMsg(graph, onnxpb.GraphInput, v)
	}
	for _, v := range m.outputs {
		graph = onnxpb.AppendMsg(graph, onnxpb.GraphOutput, v)
	}
	hdrs := make([][]byte, len(m.inits))
	graphLen := len(graph)
	for i, t := range m.inits {
		hdrs[i] = t.header()
		graphLen += len(hdrs[i]) + t.data.size()
	}
	head = protowire.AppendTag(head, onnxpb.ModelGraph, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(graphLen))

	bw := bufio.NewWriterSize(w, 1<<20)
	bw.Write(head)
	bw.Write(graph)
	for i, t := range m.inits {
		bw.Write(hdrs[i])
		if err := t.data.writeTo(bw); err != nil {
			return err
		}
	}
	return bw.Flush()
}
