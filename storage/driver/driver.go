// Package driver is the small interface a storage backend implements: one URL scheme's files
// (local disk, gs://, memfs://). Package storage builds everything callers use (atomic writes,
// random-access reads, globs, recursive removal) on top of it, so a backend only moves bytes.
// storagetest is the conformance suite every backend passes.
package driver

import (
	"context"
	"io"
)

// Driver is one file system. Paths are full paths as users write them ("/data/x.npy",
// "gs://bucket/x.npy"). A missing file gives an error that wraps fs.ErrNotExist.
type Driver interface {
	// NewRangeReader reads length bytes of p starting at offset; length < 0 reads to the end.
	// Backends serve it with one ranged request, so reading a footer or a header costs only
	// those bytes.
	NewRangeReader(ctx context.Context, p string, offset, length int64) (io.ReadCloser, error)
	// Size returns the size of file p. A directory is not a file.
	Size(ctx context.Context, p string) (int64, error)
	// NewWriter creates or replaces p (creating parent directories where they exist). The file
	// is complete once Close returns nil; cancelling ctx before Close abandons the write.
	NewWriter(ctx context.Context, p string) (io.WriteCloser, error)
	// Move renames src to dst, replacing dst. Backends without rename copy on the server side
	// and delete src.
	Move(ctx context.Context, src, dst string) error
	// Delete removes file p, or directory p if it is empty (backends without directories
	// report fs.ErrNotExist for it).
	Delete(ctx context.Context, p string) error
	// List returns the entries directly inside directory dir, sorted by name; a missing
	// directory has none.
	List(ctx context.Context, dir string) ([]Entry, error)
	// CreateExclusive writes data to p only if p does not exist, atomically with the check
	// (a lock file): an existing p gives an error that wraps fs.ErrExist.
	CreateExclusive(ctx context.Context, p string, data []byte) error
}

// Entry is one item of a directory listing.
type Entry struct {
	Path string // full path
	Dir  bool   // a directory (or, on object stores, a common prefix)
}

// ReaderAtCloser is a file opened for reads at arbitrary offsets.
type ReaderAtCloser interface {
	io.ReaderAt
	io.Closer
}

// FileOpener is implemented by backends whose files are natively random access (local disk):
// storage then reads them directly instead of through ranged requests.
type FileOpener interface {
	OpenFile(ctx context.Context, p string) (ReaderAtCloser, int64, error)
}
