// Package storage reads and writes files by path on any file system Beam knows (local paths,
// gs://, memfs://), and writes them atomically: a file appears under its final name only once it
// is complete, so a killed or retried run never leaves a half-written file that looks finished.
package storage

import (
	"context"
	"fmt"
	"io"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem"

	// The file systems lemon supports; each registers itself with Beam's registry.
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/gcs"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/local"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/memfs"
)

// Join joins path elements, keeping a URL scheme such as gs:// intact.
func Join(base string, elem ...string) string {
	if i := strings.Index(base, "://"); i > 0 {
		return base[:i+3] + path.Join(append([]string{base[i+3:]}, elem...)...)
	}
	return path.Join(append([]string{base}, elem...)...)
}

// Base returns the last element of p.
func Base(p string) string {
	if i := strings.Index(p, "://"); i > 0 {
		p = p[i+3:]
	}
	return path.Base(p)
}

func open(ctx context.Context, p string) (filesystem.Interface, error) {
	fs, err := filesystem.New(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return fs, nil
}

// List returns the files matching a glob, sorted as the file system returns them.
func List(ctx context.Context, glob string) ([]string, error) {
	fs, err := open(ctx, glob)
	if err != nil {
		return nil, err
	}
	defer fs.Close()
	return fs.List(ctx, glob)
}

// Size returns a file's size in bytes.
func Size(ctx context.Context, p string) (int64, error) {
	fs, err := open(ctx, p)
	if err != nil {
		return 0, err
	}
	defer fs.Close()
	return fs.Size(ctx, p)
}

// Exists reports whether p names an existing file.
func Exists(ctx context.Context, p string) bool {
	_, err := Size(ctx, p)
	return err == nil
}

// ReadFile reads a whole file.
func ReadFile(ctx context.Context, p string) ([]byte, error) {
	r, err := Open(ctx, p)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	return b, nil
}

// Open opens a file for streaming reads.
func Open(ctx context.Context, p string) (io.ReadCloser, error) {
	fs, err := open(ctx, p)
	if err != nil {
		return nil, err
	}
	r, err := fs.OpenRead(ctx, p)
	if err != nil {
		fs.Close()
		return nil, fmt.Errorf("opening %s: %w", p, err)
	}
	return &closeBoth{ReadCloser: r, fs: fs}, nil
}

type closeBoth struct {
	io.ReadCloser
	fs filesystem.Interface
}

func (c *closeBoth) Close() error {
	err := c.ReadCloser.Close()
	c.fs.Close()
	return err
}

// Remove deletes a file; a missing file is not an error.
func Remove(ctx context.Context, p string) error {
	fs, err := open(ctx, p)
	if err != nil {
		return err
	}
	defer fs.Close()
	rm, ok := fs.(filesystem.Remover)
	if !ok {
		return fmt.Errorf("%s: file system cannot remove files", p)
	}
	if !Exists(ctx, p) {
		return nil
	}
	return rm.Remove(ctx, p)
}

var tempSeq atomic.Int64

// TempName is the name a file is written under before it is renamed to p: hidden (leading dot)
// and unique, so readers listing a directory never mistake it for a finished file.
func TempName(p string) string {
	dir, base := Join(p, ".."), Base(p)
	return Join(dir, fmt.Sprintf(".%s.tmp-%d-%d", base, time.Now().UnixNano(), tempSeq.Add(1)))
}

// Writer writes a file under a temporary name; Commit renames it to its final name. Abort (or a
// crash) leaves at most a hidden temporary file, never a partial file under the final name.
type Writer struct {
	io.Writer
	ctx        context.Context
	fs         filesystem.Interface
	w          io.WriteCloser
	tmp, final string
	done       bool
}

// Create starts an atomic write of p. The caller must call Commit or Abort.
func Create(ctx context.Context, p string) (*Writer, error) {
	fs, err := open(ctx, p)
	if err != nil {
		return nil, err
	}
	if _, ok := fs.(filesystem.Renamer); !ok {
		if _, ok := fs.(filesystem.Copier); !ok {
			fs.Close()
			return nil, fmt.Errorf("%s: file system can neither rename nor copy, so it cannot write atomically", p)
		}
	}
	tmp := TempName(p)
	w, err := fs.OpenWrite(ctx, tmp)
	if err != nil {
		fs.Close()
		return nil, fmt.Errorf("creating %s: %w", tmp, err)
	}
	return &Writer{Writer: w, ctx: ctx, fs: fs, w: w, tmp: tmp, final: p}, nil
}

// Commit closes the temporary file and moves it to the final name, replacing any older file.
func (w *Writer) Commit() error {
	if w.done {
		return fmt.Errorf("%s: already committed or aborted", w.final)
	}
	w.done = true
	defer w.fs.Close()
	if err := w.w.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", w.final, err)
	}
	if rn, ok := w.fs.(filesystem.Renamer); ok {
		if err := rn.Rename(w.ctx, w.tmp, w.final); err != nil {
			return fmt.Errorf("renaming %s to %s: %w", w.tmp, w.final, err)
		}
		return nil
	}
	if err := w.fs.(filesystem.Copier).Copy(w.ctx, w.tmp, w.final); err != nil {
		return fmt.Errorf("copying %s to %s: %w", w.tmp, w.final, err)
	}
	if rm, ok := w.fs.(filesystem.Remover); ok {
		_ = rm.Remove(w.ctx, w.tmp)
	}
	return nil
}

// Abort discards the temporary file. It is safe to call after Commit (then it does nothing).
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.w.Close()
	if rm, ok := w.fs.(filesystem.Remover); ok {
		_ = rm.Remove(w.ctx, w.tmp)
	}
	w.fs.Close()
}

// WriteFile writes data to p atomically.
func WriteFile(ctx context.Context, p string, data []byte) error {
	w, err := Create(ctx, p)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		w.Abort()
		return fmt.Errorf("writing %s: %w", p, err)
	}
	return w.Commit()
}

// ReaderAtCloser is a file opened for reads at arbitrary offsets.
type ReaderAtCloser interface {
	io.ReaderAt
	io.Closer
}

// OpenReaderAt opens p for ReadAt. Local files give true random access; streaming back ends (gs://)
// are wrapped so that reads at increasing offsets stream, and a read behind the current offset
// reopens the file. Readers that go through a file in order therefore cost one pass.
func OpenReaderAt(ctx context.Context, p string) (ReaderAtCloser, int64, error) {
	size, err := Size(ctx, p)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", p, err)
	}
	r, err := Open(ctx, p)
	if err != nil {
		return nil, 0, err
	}
	if ra, ok := r.(*closeBoth).ReadCloser.(io.ReaderAt); ok {
		return struct {
			io.ReaderAt
			io.Closer
		}{ra, r}, size, nil
	}
	return &forwardReaderAt{ctx: ctx, path: p, r: r}, size, nil
}

type forwardReaderAt struct {
	ctx  context.Context
	path string
	r    io.ReadCloser
	off  int64
}

func (f *forwardReaderAt) ReadAt(b []byte, off int64) (int, error) {
	if off < f.off {
		f.r.Close()
		r, err := Open(f.ctx, f.path)
		if err != nil {
			return 0, err
		}
		f.r, f.off = r, 0
	}
	if off > f.off {
		n, err := io.CopyN(io.Discard, f.r, off-f.off)
		f.off += n
		if err != nil {
			return 0, err
		}
	}
	n, err := io.ReadFull(f.r, b)
	f.off += int64(n)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return n, err
}

func (f *forwardReaderAt) Close() error { return f.r.Close() }
