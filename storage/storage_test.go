package storage_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/lemon-curation/lemon/storage"
	"github.com/lemon-curation/lemon/storage/storagetest"
)

func TestJoin(t *testing.T) {
	for _, c := range []struct{ base, elem, want string }{
		{"gs://bucket/run", "scores/a.parquet", "gs://bucket/run/scores/a.parquet"},
		{"/tmp/out", "kept", "/tmp/out/kept"},
		{"memfs://x", "../y", "memfs://y"},
	} {
		if got := storage.Join(c.base, c.elem); got != c.want {
			t.Errorf("Join(%q, %q) = %q, want %q", c.base, c.elem, got, c.want)
		}
	}
}

func TestCleanAndAbs(t *testing.T) {
	wd, _ := os.Getwd()
	for _, c := range []struct{ in, clean, abs string }{
		{"/x/./d/", "/x/d", "/x/d"},
		{"gs://b/x/./d/", "gs://b/x/d", "gs://b/x/d"},
		{"gs://b/x/../d", "gs://b/d", "gs://b/d"},
		{"rel/../out", "out", filepath.Join(wd, "out")},
	} {
		if got := storage.Clean(c.in); got != c.clean {
			t.Errorf("Clean(%q) = %q, want %q", c.in, got, c.clean)
		}
		if got, err := storage.Abs(c.in); err != nil || got != c.abs {
			t.Errorf("Abs(%q) = %q, %v; want %q", c.in, got, err, c.abs)
		}
	}
}

func TestUnknownScheme(t *testing.T) {
	if _, err := storage.ReadFile(t.Context(), "s3://bucket/x"); err == nil {
		t.Fatal("an s3:// path was accepted")
	}
}

// The suite also runs in each backend's package; here it checks that paths reach the backend
// their scheme names.
func TestSchemes(t *testing.T) {
	t.Run("local", func(t *testing.T) { storagetest.Run(t, t.TempDir()) })
	t.Run("memfs", func(t *testing.T) { storagetest.Run(t, "memfs://schemes") })
}
