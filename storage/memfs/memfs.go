// Package memfs is storage's in-memory backend (memfs://...), for tests: it has no directories
// and no rename, like an object store, so it exercises the same code paths as gs://.
package memfs

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"
	"sync"

	"github.com/lemon-curation/lemon/storage/driver"
)

// Driver holds files in memory, shared by every caller in the process.
type Driver struct {
	mu    sync.Mutex
	files map[string][]byte
}

// New returns an empty in-memory file system.
func New() *Driver { return &Driver{files: map[string][]byte{}} }

var _ driver.Driver = (*Driver)(nil)

func (d *Driver) get(p string) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	b, ok := d.files[p]
	if !ok {
		return nil, fmt.Errorf("%s: %w", p, fs.ErrNotExist)
	}
	return b, nil
}

func (d *Driver) NewRangeReader(ctx context.Context, p string, offset, length int64) (io.ReadCloser, error) {
	b, err := d.get(p)
	if err != nil {
		return nil, err
	}
	offset = min(offset, int64(len(b)))
	end := int64(len(b))
	if length >= 0 {
		end = min(end, offset+length)
	}
	return io.NopCloser(bytes.NewReader(b[offset:end])), nil
}

func (d *Driver) Size(ctx context.Context, p string) (int64, error) {
	b, err := d.get(p)
	return int64(len(b)), err
}

type writer struct {
	bytes.Buffer
	ctx context.Context
	d   *Driver
	p   string
}

func (w *writer) Close() error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	w.d.mu.Lock()
	w.d.files[w.p] = bytes.Clone(w.Bytes())
	w.d.mu.Unlock()
	return nil
}

func (d *Driver) NewWriter(ctx context.Context, p string) (io.WriteCloser, error) {
	return &writer{ctx: ctx, d: d, p: p}, nil
}

func (d *Driver) CreateExclusive(ctx context.Context, p string, data []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.files[p]; ok {
		return fmt.Errorf("%s: %w", p, fs.ErrExist)
	}
	d.files[p] = bytes.Clone(data)
	return nil
}

// Move copies and deletes, as an object store does: there is no rename.
func (d *Driver) Move(ctx context.Context, src, dst string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	b, ok := d.files[src]
	if !ok {
		return fmt.Errorf("%s: %w", src, fs.ErrNotExist)
	}
	d.files[dst] = b
	delete(d.files, src)
	return nil
}

func (d *Driver) Delete(ctx context.Context, p string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.files[p]; !ok {
		return fmt.Errorf("%s: %w", p, fs.ErrNotExist)
	}
	delete(d.files, p)
	return nil
}

func (d *Driver) List(ctx context.Context, dir string) ([]driver.Entry, error) {
	prefix := strings.TrimSuffix(dir, "/") + "/"
	d.mu.Lock()
	defer d.mu.Unlock()
	seen := map[string]bool{}
	var out []driver.Entry
	for p := range d.files {
		rest, ok := strings.CutPrefix(p, prefix)
		if !ok {
			continue
		}
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			if sub := prefix + rest[:i]; !seen[sub] {
				seen[sub] = true
				out = append(out, driver.Entry{Path: sub, Dir: true})
			}
			continue
		}
		out = append(out, driver.Entry{Path: p})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}
