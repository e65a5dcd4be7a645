// Package onnx runs CLIP image and text encoders exported to ONNX on ONNX
// Runtime, through github.com/yalue/onnxruntime_go (cgo).
//
// The runtime is a shared library loaded at run time, not linked: LibraryPath
// finds it ($LEMON_ONNXRUNTIME_LIB, or third_party/onnxruntime/ as written by
// scripts/fetch-onnxruntime.sh) and Init loads it once per process.
//
// An encoder checks its model's inputs and outputs when it is created, before
// any work is done, so a wrong export fails at start-up with a message naming
// the file and the tensor rather than deep inside a pipeline:
//
//	ImageEncoder: float32 [batch,3,S,S] -> float32 [batch,D]
//	TextEncoder:  int64   [batch,L]     -> float32 [batch,D] (L = 77 for CLIP)
//
// Encoders are safe for concurrent use (ONNX Runtime sessions are); Close
// must not race with Encode.
package onnx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// EnvLibrary names the environment variable that, when set, is the path of
// the ONNX Runtime shared library.
const EnvLibrary = "LEMON_ONNXRUNTIME_LIB"

// libraryRel is where scripts/fetch-onnxruntime.sh puts the library,
// relative to the repository root.
var libraryRel = filepath.Join("third_party", "onnxruntime", "libonnxruntime.so.1")

// ErrLibraryNotFound is returned (wrapped) by LibraryPath and Init when the
// ONNX Runtime library cannot be found.
var ErrLibraryNotFound = errors.New("ONNX Runtime library not found")

// LibraryPath finds the ONNX Runtime shared library: $LEMON_ONNXRUNTIME_LIB if
// set, else third_party/onnxruntime/libonnxruntime.so.1 in the working
// directory or any directory above it, else libonnxruntime.so.1 beside the
// executable or third_party/onnxruntime/libonnxruntime.so.1 in the
// executable's directory or above it.
func LibraryPath() (string, error) {
	if p := os.Getenv(EnvLibrary); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("onnx: %w: $%s is %q: %v (unset it to use %s, written by scripts/fetch-onnxruntime.sh)",
				ErrLibraryNotFound, EnvLibrary, p, err, libraryRel)
		}
		return filepath.Abs(p)
	}
	var roots []string
	if wd, err := os.Getwd(); err == nil {
		if p, ok := searchUp(wd); ok {
			return p, nil
		}
		roots = append(roots, wd)
	}
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		dir := filepath.Dir(exe)
		if p := filepath.Join(dir, filepath.Base(libraryRel)); isFile(p) {
			return p, nil
		}
		if p, ok := searchUp(dir); ok {
			return p, nil
		}
		roots = append(roots, dir)
	}
	return "", fmt.Errorf("onnx: %w: set $%s to the path of libonnxruntime.so.1, "+
		"or run scripts/fetch-onnxruntime.sh to put it in %s (looked for it upward from %v)",
		ErrLibraryNotFound, EnvLibrary, libraryRel, roots)
}

// searchUp looks for libraryRel in dir and its ancestors.
func searchUp(dir string) (string, bool) {
	for {
		if p := filepath.Join(dir, libraryRel); isFile(p) {
			return p, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

var (
	initOnce sync.Once
	initErr  error
)

// Init loads the ONNX Runtime library (see LibraryPath) and creates the
// process's runtime environment. Only the first call does anything; it is
// safe to call many times, concurrently, and the encoder constructors call
// it. A failure is remembered: the library is not retried.
func Init() error {
	initOnce.Do(func() {
		if ort.IsInitialized() { // another package of this process did it
			return
		}
		path, err := LibraryPath()
		if err != nil {
			initErr = err
			return
		}
		ort.SetSharedLibraryPath(path)
		if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
			initErr = fmt.Errorf("onnx: loading ONNX Runtime from %s: %w", path, err)
		}
	})
	return initErr
}

// RuntimeVersion is the loaded ONNX Runtime's version ("1.30.0"), or "" before
// a successful Init.
func RuntimeVersion() string {
	if !ort.IsInitialized() {
		return ""
	}
	return ort.GetVersion()
}
