// Package onnxtest helps tests that need ONNX Runtime: it loads the library
// or skips (fails in CI), and writes tiny stand-in encoders.
package onnxtest

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/lemon-curation/lemon/embed/onnx"
	"github.com/lemon-curation/lemon/embed/standin"
)

// InCI reports whether $CI says the tests run in continuous integration
// (set and not "false" or "0").
func InCI() bool {
	ci := os.Getenv("CI")
	return ci != "" && ci != "false" && ci != "0"
}

// RequireRuntime initialises ONNX Runtime. When the library is missing the
// test is skipped, with how to fetch it, unless InCI, where missing is a
// failure: CI must run scripts/fetch-onnxruntime.sh first.
func RequireRuntime(tb testing.TB) {
	tb.Helper()
	err := onnx.Init()
	if err == nil {
		return
	}
	if errors.Is(err, onnx.ErrLibraryNotFound) && !InCI() {
		tb.Skipf("skipping: %v", err)
	}
	tb.Fatal(err)
}

// TinyEncoders requires the runtime and writes the "tiny" stand-in encoders
// (seed 1) into a temporary directory, returning the image and text model
// paths.
func TinyEncoders(tb testing.TB) (image, text string) {
	tb.Helper()
	RequireRuntime(tb)
	dir := tb.TempDir()
	if err := standin.Write(dir, "tiny", 1); err != nil {
		tb.Fatal(err)
	}
	return filepath.Join(dir, "image.onnx"), filepath.Join(dir, "text.onnx")
}
