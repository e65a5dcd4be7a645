// Package onnxpb reads and writes ONNX model files at the protobuf wire level: the field numbers
// of the subset of onnx/onnx.proto that lemon touches, encoders for the messages it builds (the
// stand-in encoders of embed/standin, the nodes and tensors of embed/quantize) and a decoder
// that splits a message into its fields, keeping each field's encoded bytes so that a rewrite
// can copy what it does not change.
//
// Messages are handled with protowire directly: the generated Go types for onnx.proto live in
// no maintained module, and the schema is small and frozen.
package onnxpb

import (
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers from onnx.proto.
const (
	// ModelProto
	ModelIRVersion     protowire.Number = 1
	ModelProducerName  protowire.Number = 2
	ModelProducerVer   protowire.Number = 3
	ModelDocString     protowire.Number = 6
	ModelGraph         protowire.Number = 7
	ModelOpsetImport   protowire.Number = 8
	ModelMetadataProps protowire.Number = 14
	// OperatorSetIdProto
	OpsetDomain  protowire.Number = 1
	OpsetVersion protowire.Number = 2
	// StringStringEntryProto
	EntryKey   protowire.Number = 1
	EntryValue protowire.Number = 2
	// GraphProto
	GraphNode        protowire.Number = 1
	GraphName        protowire.Number = 2
	GraphInitializer protowire.Number = 5
	GraphDocString   protowire.Number = 10
	GraphInput       protowire.Number = 11
	GraphOutput      protowire.Number = 12
	// NodeProto
	NodeInput     protowire.Number = 1
	NodeOutput    protowire.Number = 2
	NodeName      protowire.Number = 3
	NodeOpType    protowire.Number = 4
	NodeAttribute protowire.Number = 5
	NodeDomain    protowire.Number = 7
	// AttributeProto
	AttrName     protowire.Number = 1
	AttrF        protowire.Number = 2
	AttrI        protowire.Number = 3
	AttrInts     protowire.Number = 8
	AttrType     protowire.Number = 20
	AttrTypeF                     = 1 // AttributeProto.FLOAT
	AttrTypeI                     = 2 // AttributeProto.INT
	AttrTypeInts                  = 7 // AttributeProto.INTS
	// TensorProto
	TensorDims         protowire.Number = 1
	TensorDataType     protowire.Number = 2
	TensorFloatData    protowire.Number = 4
	TensorName         protowire.Number = 8
	TensorRawData      protowire.Number = 9
	TensorExternalData protowire.Number = 13
	TensorDataLocation protowire.Number = 14
	// ValueInfoProto
	ValueName protowire.Number = 1
	ValueType protowire.Number = 2
	// TypeProto and TypeProto.Tensor
	TypeTensor     protowire.Number = 1
	TensorElemType protowire.Number = 1
	TensorShape    protowire.Number = 2
	// TensorShapeProto and its Dimension
	ShapeDim protowire.Number = 1
	DimValue protowire.Number = 1
	DimParam protowire.Number = 2
)

// TensorProto.DataType values.
const (
	Float = 1
	Int8  = 3
	Int64 = 7
	Bool  = 9
)

// AppendMsg appends field num holding the encoded message body.
func AppendMsg(b []byte, num protowire.Number, body []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, body)
}

// AppendStr appends the string field num.
func AppendStr(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// AppendInt appends the varint field num.
func AppendInt(b []byte, num protowire.Number, v int64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(v))
}

// Attr is an encoded AttributeProto.
type Attr []byte

// AttrInt is an INT attribute.
func AttrInt(name string, v int64) Attr {
	b := AppendStr(nil, AttrName, name)
	b = AppendInt(b, AttrType, AttrTypeI)
	return AppendInt(b, AttrI, v)
}

// AttrFloat is a FLOAT attribute.
func AttrFloat(name string, v float32) Attr {
	b := AppendStr(nil, AttrName, name)
	b = AppendInt(b, AttrType, AttrTypeF)
	b = protowire.AppendTag(b, AttrF, protowire.Fixed32Type)
	return protowire.AppendFixed32(b, math.Float32bits(v))
}

// AttrIntList is an INTS attribute.
func AttrIntList(name string, vs ...int64) Attr {
	b := AppendStr(nil, AttrName, name)
	b = AppendInt(b, AttrType, AttrTypeInts)
	for _, v := range vs {
		b = AppendInt(b, AttrInts, v)
	}
	return b
}

// Node encodes a NodeProto. domain "" is the default ONNX domain.
func Node(opType, domain, name string, inputs, outputs []string, attrs ...Attr) []byte {
	var n []byte
	for _, in := range inputs {
		n = AppendStr(n, NodeInput, in)
	}
	for _, out := range outputs {
		n = AppendStr(n, NodeOutput, out)
	}
	n = AppendStr(n, NodeName, name)
	n = AppendStr(n, NodeOpType, opType)
	for _, a := range attrs {
		n = AppendMsg(n, NodeAttribute, a)
	}
	if domain != "" {
		n = AppendStr(n, NodeDomain, domain)
	}
	return n
}

// Tensor encodes a TensorProto whose content is raw (little-endian) data.
func Tensor(name string, dataType int64, dims []int64, raw []byte) []byte {
	var b []byte
	for _, d := range dims {
		b = AppendInt(b, TensorDims, d)
	}
	b = AppendInt(b, TensorDataType, dataType)
	b = AppendStr(b, TensorName, name)
	b = protowire.AppendTag(b, TensorRawData, protowire.BytesType)
	return protowire.AppendBytes(b, raw)
}

// Field is one decoded protobuf field. Varint and fixed-width values are in V, length-delimited
// ones in B; Raw is the whole field as encoded (tag included), for copying it unchanged.
type Field struct {
	Num  protowire.Number
	Type protowire.Type
	V    uint64
	B    []byte
	Raw  []byte
}

// Str is a length-delimited field's content as a string.
func (f Field) Str() string { return string(f.B) }

// Fields splits an encoded message into its fields, in order. The slices point into b.
func Fields(b []byte) ([]Field, error) {
	var fs []Field
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("bad protobuf tag: %w", protowire.ParseError(n))
		}
		f := Field{Num: num, Type: typ}
		rest := b[n:]
		var m int
		switch typ {
		case protowire.VarintType:
			f.V, m = protowire.ConsumeVarint(rest)
		case protowire.Fixed32Type:
			var v uint32
			v, m = protowire.ConsumeFixed32(rest)
			f.V = uint64(v)
		case protowire.Fixed64Type:
			f.V, m = protowire.ConsumeFixed64(rest)
		case protowire.BytesType:
			f.B, m = protowire.ConsumeBytes(rest)
		default:
			m = protowire.ConsumeFieldValue(num, typ, rest)
		}
		if m < 0 {
			return nil, fmt.Errorf("protobuf field %d: %w", num, protowire.ParseError(m))
		}
		f.Raw = b[:n+m]
		b = rest[m:]
		fs = append(fs, f)
	}
	return fs, nil
}
