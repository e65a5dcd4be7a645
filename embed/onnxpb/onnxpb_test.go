package onnxpb

import (
	"bytes"
	"math"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// A node written with Node reads back field by field, and each field's Raw bytes re-encode the
// message exactly (what a rewrite that copies unchanged fields relies on).
func TestFieldsReadBackNode(t *testing.T) {
	n := Node("Gemm", "com.example", "g1", []string{"a", "b"}, []string{"y"},
		AttrInt("transB", 1), AttrFloat("alpha", 0.5), AttrIntList("perm", 0, 2, 1))
	fs, err := Fields(n)
	if err != nil {
		t.Fatal(err)
	}
	var ins, outs []string
	var op, name, domain string
	var attrs [][]byte
	var raw []byte
	for _, f := range fs {
		raw = append(raw, f.Raw...)
		switch f.Num {
		case NodeInput:
			ins = append(ins, f.Str())
		case NodeOutput:
			outs = append(outs, f.Str())
		case NodeOpType:
			op = f.Str()
		case NodeName:
			name = f.Str()
		case NodeDomain:
			domain = f.Str()
		case NodeAttribute:
			attrs = append(attrs, f.B)
		}
	}
	if !slices.Equal(ins, []string{"a", "b"}) || !slices.Equal(outs, []string{"y"}) || op != "Gemm" || name != "g1" || domain != "com.example" {
		t.Errorf("read back inputs %v outputs %v op %q name %q domain %q", ins, outs, op, name, domain)
	}
	if !bytes.Equal(raw, n) {
		t.Error("the fields' Raw bytes do not re-encode the node")
	}
	if len(attrs) != 3 {
		t.Fatalf("%d attributes, want 3", len(attrs))
	}
	af, err := Fields(attrs[1])
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range af {
		if f.Num == AttrF && (f.Type != protowire.Fixed32Type || math.Float32frombits(uint32(f.V)) != 0.5) {
			t.Errorf("alpha read back as %v (wire type %v)", math.Float32frombits(uint32(f.V)), f.Type)
		}
	}
}

func TestFieldsRejectsTruncated(t *testing.T) {
	n := Node("Relu", "", "r", []string{"x"}, []string{"y"})
	if _, err := Fields(n[:len(n)-1]); err == nil {
		t.Error("a truncated message parsed without error")
	}
}
