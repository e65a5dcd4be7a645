package storage_test

import (
	"testing"

	"github.com/lemon-curation/lemon/storage"
	"github.com/lemon-curation/lemon/storage/storagetest"
)

func TestLocal(t *testing.T) { storagetest.Run(t, t.TempDir()) }

func TestMemfs(t *testing.T) { storagetest.Run(t, "memfs://conformance") }

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
