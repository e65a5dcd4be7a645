package local_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/lemon-curation/lemon/storage"
	"github.com/lemon-curation/lemon/storage/storagetest"
)

func TestConformance(t *testing.T) { storagetest.Run(t, t.TempDir()) }

// TestNoFileLeftOpen: sizes, existence checks, listings and reads leave no file open (Beam's
// local file system opened a file for every Size and never closed it).
func TestNoFileLeftOpen(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	p := filepath.Join(dir, "x")
	if err := storage.WriteFile(ctx, p, []byte("data")); err != nil {
		t.Fatal(err)
	}
	before := openFiles(t)
	for range 200 {
		storage.Size(ctx, p)
		storage.Exists(ctx, p)
		storage.ReadFile(ctx, p)
		storage.List(ctx, filepath.Join(dir, "*"))
		if r, _, err := storage.OpenReaderAt(ctx, p); err == nil {
			r.Close()
		}
	}
	if after := openFiles(t); after > before+2 {
		t.Fatalf("%d files open before, %d after 200 rounds of calls", before, after)
	}
}

func openFiles(t *testing.T) int {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(fds)
}
