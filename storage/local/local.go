// Package local is storage's backend for files on local disk. It keeps no file open beyond
// the call that needs it: sizes come from stat, never from opening the file.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/lemon-curation/lemon/storage/driver"
)

// Driver reads and writes local files.
type Driver struct{}

var _ driver.Driver = Driver{}
var _ driver.FileOpener = Driver{}

func (Driver) NewRangeReader(ctx context.Context, p string, offset, length int64) (io.ReadCloser, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return nil, err
		}
	}
	if length < 0 {
		return f, nil
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, length), f}, nil
}

func (Driver) OpenFile(ctx context.Context, p string) (driver.ReaderAtCloser, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if st.IsDir() {
		f.Close()
		return nil, 0, fmt.Errorf("%s: is a directory, not a file", p)
	}
	return f, st.Size(), nil
}

func (Driver) Size(ctx context.Context, p string) (int64, error) {
	st, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	if st.IsDir() {
		return 0, fmt.Errorf("%s: is a directory, not a file", p)
	}
	return st.Size(), nil
}

func (Driver) NewWriter(ctx context.Context, p string) (io.WriteCloser, error) {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, err
	}
	return os.Create(p)
}

func (Driver) Move(ctx context.Context, src, dst string) error { return os.Rename(src, dst) }

func (Driver) CreateExclusive(ctx context.Context, p string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err // wraps fs.ErrExist when p exists
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(p)
	}
	return err
}

func (Driver) Delete(ctx context.Context, p string) error { return os.Remove(p) }

func (Driver) List(ctx context.Context, dir string) ([]driver.Entry, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]driver.Entry, 0, len(ents))
	for _, e := range ents {
		isDir := e.IsDir()
		if e.Type()&fs.ModeSymlink != 0 { // follow links, as reading them does
			if st, err := os.Stat(filepath.Join(dir, e.Name())); err == nil {
				isDir = st.IsDir()
			}
		}
		out = append(out, driver.Entry{Path: filepath.Join(dir, e.Name()), Dir: isDir})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}
