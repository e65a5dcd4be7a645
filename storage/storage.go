// Package storage reads and writes files by path on local disk, gs:// and memfs:// (tests),
// and writes them atomically: a file appears under its final name only once it is complete, so
// a killed or retried run never leaves a half-written file that looks finished.
//
// It follows go-cloud's blob design: this package is the API callers use, and each scheme is a
// backend implementing driver.Driver in its own subpackage (local, gcs, memfs); storagetest is
// the conformance suite every backend passes.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lemon-curation/lemon/storage/driver"
	"github.com/lemon-curation/lemon/storage/gcs"
	"github.com/lemon-curation/lemon/storage/local"
	"github.com/lemon-curation/lemon/storage/memfs"
)

// backends maps a path's scheme ("" for local paths) to its backend.
var backends = map[string]driver.Driver{
	"":      local.Driver{},
	"gs":    &gcs.Driver{},
	"memfs": memfs.New(),
}

// Scheme returns p's URL scheme ("gs" for gs://b/o), or "" for a local path.
func Scheme(p string) string {
	if i := strings.Index(p, "://"); i > 0 {
		return p[:i]
	}
	return ""
}

// IsLocal reports whether p is a path on this machine's disk.
func IsLocal(p string) bool { return Scheme(p) == "" }

func backend(p string) (driver.Driver, error) {
	d, ok := backends[Scheme(p)]
	if !ok {
		return nil, fmt.Errorf("%s: unknown storage scheme %q (lemon reads local paths, gs:// and memfs://)", p, Scheme(p)+"://")
	}
	return d, nil
}

// Join joins path elements, keeping a URL scheme such as gs:// intact.
func Join(base string, elem ...string) string {
	if s := Scheme(base); s != "" {
		return base[:len(s)+3] + path.Join(append([]string{base[len(s)+3:]}, elem...)...)
	}
	return path.Join(append([]string{base}, elem...)...)
}

// Clean returns the shortest equivalent of p ("/x/./d/" is "/x/d"), keeping its scheme.
func Clean(p string) string {
	if s := Scheme(p); s != "" {
		return p[:len(s)+3] + strings.TrimPrefix(path.Clean("/"+p[len(s)+3:]), "/")
	}
	return filepath.Clean(p)
}

// Abs makes a local path absolute (against the working directory) and cleans it; URLs are
// only cleaned. Jobs use absolute paths, since workers do not share the launcher's directory.
func Abs(p string) (string, error) {
	switch {
	case p == "":
		return "", nil
	case !IsLocal(p):
		return Clean(p), nil
	}
	return filepath.Abs(p)
}

// Base returns the last element of p.
func Base(p string) string {
	if s := Scheme(p); s != "" {
		p = p[len(s)+3:]
	}
	return path.Base(p)
}

// List returns the files matching a glob whose wildcards are in its last element only
// ("dir/img_emb_*.npy"), sorted. Directories are not listed; a missing directory has no files.
func List(ctx context.Context, glob string) ([]string, error) {
	d, err := backend(glob)
	if err != nil {
		return nil, err
	}
	dir, pattern := Join(glob, ".."), Base(glob)
	if strings.ContainsAny(dir, "*?[") {
		return nil, fmt.Errorf("%s: wildcards are only supported in the last path element", glob)
	}
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, fmt.Errorf("%s: %w", glob, err)
	}
	ents, err := d.List(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	var out []string
	for _, e := range ents {
		if ok, _ := path.Match(pattern, Base(e.Path)); ok && !e.Dir {
			out = append(out, e.Path)
		}
	}
	return out, nil
}

// walkDepth bounds how deep Walk descends: links can make a directory its own descendant.
const walkDepth = 32

// Walk returns every file under directory dir, at any depth, sorted. Names that start with a
// dot, files and directories alike, are skipped: they are unfinished writes (TempName) or tools'
// own state (.git, .cache). A missing directory has no files.
func Walk(ctx context.Context, dir string) ([]string, error) {
	d, err := backend(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	var walk func(dir string, depth int) error
	walk = func(dir string, depth int) error {
		if depth > walkDepth {
			return fmt.Errorf("%s: more than %d directories deep (a link loop?)", dir, walkDepth)
		}
		ents, err := d.List(ctx, dir)
		if err != nil {
			return fmt.Errorf("listing %s: %w", dir, err)
		}
		for _, e := range ents {
			switch {
			case strings.HasPrefix(Base(e.Path), "."):
			case e.Dir:
				if err := walk(e.Path, depth+1); err != nil {
					return err
				}
			default:
				out = append(out, e.Path)
			}
		}
		return nil
	}
	if err := walk(dir, 0); err != nil {
		return nil, err
	}
	sort.Strings(out)
	return out, nil
}

// IsDir reports whether p is a directory: on local disk one that exists, on object stores a
// prefix with objects under it.
func IsDir(ctx context.Context, p string) bool {
	if IsLocal(p) {
		st, err := os.Stat(p)
		return err == nil && st.IsDir()
	}
	d, err := backend(p)
	if err != nil {
		return false
	}
	ents, err := d.List(ctx, p)
	return err == nil && len(ents) > 0
}

// Size returns a file's size in bytes.
func Size(ctx context.Context, p string) (int64, error) {
	d, err := backend(p)
	if err != nil {
		return 0, err
	}
	return d.Size(ctx, p)
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
	d, err := backend(p)
	if err != nil {
		return nil, err
	}
	r, err := d.NewRangeReader(ctx, p, 0, -1)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", p, err)
	}
	return r, nil
}

// Remove deletes a file; a missing file is not an error.
func Remove(ctx context.Context, p string) error {
	d, err := backend(p)
	if err != nil {
		return err
	}
	if err := d.Delete(ctx, p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", p, err)
	}
	return nil
}

// RemoveAll deletes directory dir and every file under it; a missing directory is not an
// error. Give it only directories lemon made for itself.
func RemoveAll(ctx context.Context, dir string) error {
	d, err := backend(dir)
	if err != nil {
		return err
	}
	ents, err := d.List(ctx, dir)
	if err != nil {
		return fmt.Errorf("listing %s: %w", dir, err)
	}
	for _, e := range ents {
		if e.Dir {
			err = RemoveAll(ctx, e.Path)
		} else {
			err = Remove(ctx, e.Path)
		}
		if err != nil {
			return err
		}
	}
	// The directory itself, where the backend has directories.
	return Remove(ctx, dir)
}

var tempSeq atomic.Int64

// CreateExclusive writes data to p only if no file p exists, atomically with that check: what
// a lock needs. An existing p gives an error that wraps fs.ErrExist.
func CreateExclusive(ctx context.Context, p string, data []byte) error {
	b, err := backend(p)
	if err != nil {
		return err
	}
	return b.CreateExclusive(ctx, p, data)
}

// TempName is the name a file is written under before it is renamed to p: hidden (leading dot)
// and unique, so readers listing a directory never mistake it for a finished file.
func TempName(p string) string {
	dir, base := Join(p, ".."), Base(p)
	return Join(dir, fmt.Sprintf(".%s.tmp-%d-%d", base, time.Now().UnixNano(), tempSeq.Add(1)))
}

// Writer writes a file under a temporary name; Commit moves it to its final name. Abort (or a
// crash) leaves at most a hidden temporary file, never a partial file under the final name.
type Writer struct {
	io.Writer
	ctx        context.Context
	cancel     context.CancelFunc
	d          driver.Driver
	w          io.WriteCloser
	tmp, final string
	done       bool
}

// Create starts an atomic write of p. The caller must call Commit or Abort.
func Create(ctx context.Context, p string) (*Writer, error) {
	d, err := backend(p)
	if err != nil {
		return nil, err
	}
	tmp := TempName(p)
	wctx, cancel := context.WithCancel(ctx)
	w, err := d.NewWriter(wctx, tmp)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("creating %s: %w", tmp, err)
	}
	return &Writer{Writer: w, ctx: ctx, cancel: cancel, d: d, w: w, tmp: tmp, final: p}, nil
}

// Commit closes the temporary file and moves it to the final name, replacing any older file.
func (w *Writer) Commit() error {
	if w.done {
		return fmt.Errorf("%s: already committed or aborted", w.final)
	}
	w.done = true
	defer w.cancel()
	if err := w.w.Close(); err != nil {
		w.d.Delete(w.ctx, w.tmp)
		return fmt.Errorf("writing %s: %w", w.final, err)
	}
	if err := w.d.Move(w.ctx, w.tmp, w.final); err != nil {
		return fmt.Errorf("moving %s to %s: %w", w.tmp, w.final, err)
	}
	return nil
}

// Abort discards the temporary file. It is safe to call after Commit (then it does nothing).
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.cancel() // abandons an upload in progress
	w.w.Close()
	w.d.Delete(w.ctx, w.tmp)
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
type ReaderAtCloser = driver.ReaderAtCloser

// OpenReaderAt opens p for ReadAt. Local files are read directly. Elsewhere reads are ranged
// requests: a read after a jump fetches a small window from its offset (a Parquet footer or an
// npy header costs only those bytes), and a read that carries on past that window streams the
// rest of the file (a scan costs one more request, not one per read).
func OpenReaderAt(ctx context.Context, p string) (ReaderAtCloser, int64, error) {
	d, err := backend(p)
	if err != nil {
		return nil, 0, err
	}
	if fo, ok := d.(driver.FileOpener); ok {
		f, size, err := fo.OpenFile(ctx, p)
		if err != nil {
			return nil, 0, fmt.Errorf("opening %s: %w", p, err)
		}
		return f, size, nil
	}
	size, err := d.Size(ctx, p)
	if err != nil {
		return nil, 0, fmt.Errorf("opening %s: %w", p, err)
	}
	return &rangeReaderAt{ctx: ctx, d: d, path: p, size: size}, size, nil
}

const (
	// window is what a read after a jump fetches at least.
	window = 64 << 10
	// skipLimit is how far ahead of the open stream a read may start and still continue it:
	// skipping that much costs less than a new request's round trip.
	skipLimit = 256 << 10
)

type rangeReaderAt struct {
	ctx  context.Context
	d    driver.Driver
	path string
	size int64

	mu       sync.Mutex // ReadAt may be called concurrently; the stream is shared
	r        io.ReadCloser
	off, end int64 // the open stream's position and where its range ends
}

func (f *rangeReaderAt) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: negative offset %d", f.path, off)
	}
	if off >= f.size {
		return 0, io.EOF
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	end := min(off+int64(len(b)), f.size)
	ahead := f.r != nil && off >= f.off && off-f.off <= skipLimit
	if ahead && end <= f.end {
		n, err := io.CopyN(io.Discard, f.r, off-f.off)
		f.off += n
		if err != nil {
			f.close()
		}
	} else {
		f.close()
	}
	if f.r == nil {
		length := max(int64(len(b)), window) // after a jump: a small window
		if ahead {
			length = -1 // reading on past the window: a scan, so stream the rest
		}
		r, err := f.d.NewRangeReader(f.ctx, f.path, off, length)
		if err != nil {
			return 0, fmt.Errorf("reading %s at %d: %w", f.path, off, err)
		}
		f.r, f.off, f.end = r, off, f.size
		if length >= 0 {
			f.end = min(off+length, f.size)
		}
	}
	n, err := io.ReadFull(f.r, b[:end-off])
	f.off += int64(n)
	if err != nil {
		f.close()
		return n, fmt.Errorf("reading %s at %d: %w", f.path, off, err)
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

func (f *rangeReaderAt) close() {
	if f.r != nil {
		f.r.Close()
		f.r = nil
	}
}

func (f *rangeReaderAt) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.close()
	return nil
}
