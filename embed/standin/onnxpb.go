package standin

import (
	"bufio"
	"encoding/binary"
	"io"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// A minimal writer for the subset of ONNX's protobuf schema (onnx/onnx.proto)
// that the stand-in graphs need. Messages are built with protowire directly:
// the generated Go types for onnx.proto live in no maintained module, and the
// schema is small and frozen.
//
// Weights are not held in memory: each initializer's raw_data is produced
// while the file is written, so writing the ViT-B/32 stand-in (~600 MB of
// float32 weights) needs only a small buffer.

// Field numbers from onnx.proto.
const (
	// ModelProto
	fModelIRVersion     protowire.Number = 1
	fModelProducerName  protowire.Number = 2
	fModelProducerVer   protowire.Number = 3
	fModelDocString     protowire.Number = 6
	fModelGraph         protowire.Number = 7
	fModelOpsetImport   protowire.Number = 8
	fModelMetadataProps protowire.Number = 14
	// OperatorSetIdProto
	fOpsetDomain  protowire.Number = 1
	fOpsetVersion protowire.Number = 2
	// StringStringEntryProto
	fEntryKey   protowire.Number = 1
	fEntryValue protowire.Number = 2
	// GraphProto
	fGraphNode        protowire.Number = 1
	fGraphName        protowire.Number = 2
	fGraphInitializer protowire.Number = 5
	fGraphDocString   protowire.Number = 10
	fGraphInput       protowire.Number = 11
	fGraphOutput      protowire.Number = 12
	// NodeProto
	fNodeInput     protowire.Number = 1
	fNodeOutput    protowire.Number = 2
	fNodeName      protowire.Number = 3
	fNodeOpType    protowire.Number = 4
	fNodeAttribute protowire.Number = 5
	// AttributeProto
	fAttrName    protowire.Number = 1
	fAttrF       protowire.Number = 2
	fAttrI       protowire.Number = 3
	fAttrInts    protowire.Number = 8
	fAttrType    protowire.Number = 20
	attrTypeF                     = 1 // AttributeProto.FLOAT
	attrTypeI                     = 2 // AttributeProto.INT
	attrTypeInts                  = 7 // AttributeProto.INTS
	// TensorProto
	fTensorDims     protowire.Number = 1
	fTensorDataType protowire.Number = 2
	fTensorName     protowire.Number = 8
	fTensorRawData  protowire.Number = 9
	// ValueInfoProto
	fValueName protowire.Number = 1
	fValueType protowire.Number = 2
	// TypeProto and TypeProto.Tensor
	fTypeTensor     protowire.Number = 1
	fTensorElemType protowire.Number = 1
	fTensorShape    protowire.Number = 2
	// TensorShapeProto and its Dimension
	fShapeDim protowire.Number = 1
	fDimValue protowire.Number = 1
	fDimParam protowire.Number = 2
)

// TensorProto.DataType values.
const (
	dtFloat = 1
	dtInt64 = 7
	dtBool  = 9
)

const (
	irVersion    = 8  // ONNX IR version 8 (ONNX 1.10+), read by every ONNX Runtime since 1.10
	opsetVersion = 17 // first opset with LayerNormalization
)

// appendMsg appends field num holding the message body.
func appendMsg(b []byte, num protowire.Number, body []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, body)
}

func appendStr(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendInt(b []byte, num protowire.Number, v int64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(v))
}

// attr is an encoded AttributeProto.
type attr []byte

func attrInt(name string, v int64) attr {
	b := appendStr(nil, fAttrName, name)
	b = appendInt(b, fAttrType, attrTypeI)
	return appendInt(b, fAttrI, v)
}

func attrFloat(name string, v float32) attr {
	b := appendStr(nil, fAttrName, name)
	b = appendInt(b, fAttrType, attrTypeF)
	b = protowire.AppendTag(b, fAttrF, protowire.Fixed32Type)
	return protowire.AppendFixed32(b, math.Float32bits(v))
}

func attrInts(name string, vs ...int64) attr {
	b := appendStr(nil, fAttrName, name)
	b = appendInt(b, fAttrType, attrTypeInts)
	for _, v := range vs {
		b = appendInt(b, fAttrInts, v)
	}
	return b
}

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
			dim = appendStr(nil, fDimParam, symNames[-1-d])
		} else {
			dim = appendInt(nil, fDimValue, d)
		}
		shape = appendMsg(shape, fShapeDim, dim)
	}
	tt := appendInt(nil, fTensorElemType, elemType)
	tt = appendMsg(tt, fTensorShape, shape)
	b := appendStr(nil, fValueName, name)
	return appendMsg(b, fValueType, appendMsg(nil, fTypeTensor, tt))
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
		fields = appendInt(fields, fTensorDims, d)
	}
	fields = appendInt(fields, fTensorDataType, t.dtype)
	fields = appendStr(fields, fTensorName, t.name)
	n := t.data.size()
	fields = protowire.AppendTag(fields, fTensorRawData, protowire.BytesType)
	fields = protowire.AppendVarint(fields, uint64(n))
	hdr := protowire.AppendTag(nil, fGraphInitializer, protowire.BytesType)
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
	head = appendInt(head, fModelIRVersion, irVersion)
	head = appendStr(head, fModelProducerName, m.producer)
	head = appendStr(head, fModelProducerVer, m.version)
	if m.doc != "" {
		head = appendStr(head, fModelDocString, m.doc)
	}
	opset := appendStr(nil, fOpsetDomain, "")
	opset = appendInt(opset, fOpsetVersion, opsetVersion)
	head = appendMsg(head, fModelOpsetImport, opset)
	for _, kv := range m.metadata {
		e := appendStr(nil, fEntryKey, kv[0])
		e = appendStr(e, fEntryValue, kv[1])
		head = appendMsg(head, fModelMetadataProps, e)
	}

	var graph []byte // the graph's fields other than initializers
	for _, n := range m.nodes {
		graph = appendMsg(graph, fGraphNode, n)
	}
	graph = appendStr(graph, fGraphName, m.graphName)
	if m.doc != "" {
		graph = appendStr(graph, fGraphDocString, m.doc)
	}
	for _, v := range m.inputs {
		graph = appendMsg(graph, fGraphInput, v)
	}
	for _, v := range m.outputs {
		graph = appendMsg(graph, fGraphOutput, v)
	}
	hdrs := make([][]byte, len(m.inits))
	graphLen := len(graph)
	for i, t := range m.inits {
		hdrs[i] = t.header()
		graphLen += len(hdrs[i]) + t.data.size()
	}
	head = protowire.AppendTag(head, fModelGraph, protowire.BytesType)
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
