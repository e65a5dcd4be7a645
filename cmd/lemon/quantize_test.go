package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// lemon quantize writes an int8 copy of an encoder and says what it changed; it refuses to
// overwrite its input and names a missing file.
func TestQuantize(t *testing.T) {
	dir := t.TempDir()
	run(t, false, "dev", "make-encoders", "--size", "tiny", "--out", dir)
	in, out := filepath.Join(dir, "image.onnx"), filepath.Join(dir, "image.int8.onnx")
	msg := run(t, false, "quantize", "--input", in, "--output", out)
	if want := "wrote " + out + ": 1 MatMul/Gemm weights int8 (0 biases folded in), 0.02 MB of float32 weights now 0.00 MB"; !strings.Contains(msg, want) {
		t.Errorf("output %q, want %q", msg, want)
	}
	if st, err := os.Stat(out); err != nil || st.Size() == 0 {
		t.Fatalf("no int8 model: %v", err)
	}
	if msg := run(t, true, "quantize", "--input", in, "--output", in); !strings.Contains(msg, "--output must differ from --input") {
		t.Errorf("same path: %q", msg)
	}
	missing := filepath.Join(dir, "missing.onnx")
	if msg := run(t, true, "quantize", "--input", missing, "--output", out); !strings.Contains(msg, missing) {
		t.Errorf("missing input: %q", msg)
	}
}
