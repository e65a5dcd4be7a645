package npy

import (
	"archive/zip"
	"bytes"
	"fmt"
	"io"
	"sort"
	"strings"
)

// NPZ is an open .npz archive: numpy's zip of .npy files, one per array, named NAME.npy.
// np.savez stores the members as they are, np.savez_compressed deflates them.
//
// A stored member is read in place, through ranges of the archive's io.ReaderAt, so reading
// one array of an archive on cloud storage fetches only that array's bytes. A deflated member
// can only be read from its start: Array decompresses it into memory (the zip's checksum is
// verified), Header only as far as its header.
type NPZ struct {
	ra      io.ReaderAt
	members map[string]*zip.File
}

// OpenNPZ reads the directory of the .npz archive of the given size held in ra.
func OpenNPZ(ra io.ReaderAt, size int64) (*NPZ, error) {
	zr, err := zip.NewReader(ra, size)
	if err != nil {
		return nil, fmt.Errorf("npz: not a readable zip archive: %w", err)
	}
	z := &NPZ{ra: ra, members: map[string]*zip.File{}}
	for _, f := range zr.File {
		name, ok := strings.CutSuffix(f.Name, ".npy")
		if !ok {
			continue // numpy writes nothing else; other members are no arrays
		}
		if _, dup := z.members[name]; dup {
			return nil, fmt.Errorf("npz: two members named %q", f.Name)
		}
		z.members[name] = f
	}
	return z, nil
}

// Names lists the archive's arrays (member names without .npy), sorted.
func (z *NPZ) Names() []string {
	var n []string
	for k := range z.members {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

func (z *NPZ) member(name string) (*zip.File, error) {
	f, ok := z.members[name]
	if !ok {
		return nil, fmt.Errorf("npz: no array %q (arrays: %s)", name, strings.Join(z.Names(), ", "))
	}
	switch f.Method {
	case zip.Store, zip.Deflate:
		return f, nil
	}
	return nil, fmt.Errorf("npz: array %q is compressed with zip method %d; want stored or deflated, as numpy writes", name, f.Method)
}

// Header reads array name's header only.
func (z *NPZ) Header(name string) (Header, error) {
	f, err := z.member(name)
	if err != nil {
		return Header{}, err
	}
	if f.Method == zip.Store {
		r, err := z.stored(name, f)
		if err != nil {
			return Header{}, err
		}
		return r.Header(), nil
	}
	rc, err := f.Open()
	if err != nil {
		return Header{}, fmt.Errorf("npz: array %q: %w", name, err)
	}
	defer rc.Close()
	h, err := ReadHeader(rc)
	if err != nil {
		return Header{}, fmt.Errorf("npz: array %q: %w", name, err)
	}
	if want := uint64(h.DataOffset + h.DataSize()); want != f.UncompressedSize64 {
		return Header{}, fmt.Errorf("npz: array %q: the zip directory says %d bytes, its .npy header promises %d", name, f.UncompressedSize64, want)
	}
	return h, nil
}

// Array opens array name for reading rows.
func (z *NPZ) Array(name string) (*Reader, error) {
	f, err := z.member(name)
	if err != nil {
		return nil, err
	}
	if f.Method == zip.Store {
		return z.stored(name, f)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("npz: array %q: %w", name, err)
	}
	defer rc.Close()
	// Read no more than the directory's size and one byte: a longer stream is a fault, and
	// reading on to the end is what verifies the checksum.
	var buf bytes.Buffer
	buf.Grow(int(min(f.UncompressedSize64, 64<<20)))
	if _, err := io.Copy(&buf, io.LimitReader(rc, int64(min(f.UncompressedSize64, 1<<62))+1)); err != nil {
		return nil, fmt.Errorf("npz: array %q: %w", name, err)
	}
	if uint64(buf.Len()) != f.UncompressedSize64 {
		return nil, errorf(ErrTruncated, "array %q decompresses to %d bytes or more, the zip directory says %d", name, buf.Len(), f.UncompressedSize64)
	}
	r, err := NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		return nil, fmt.Errorf("npz: array %q: %w", name, err)
	}
	return r, nil
}

// stored opens a stored member in place.
func (z *NPZ) stored(name string, f *zip.File) (*Reader, error) {
	off, err := f.DataOffset()
	if err != nil {
		return nil, fmt.Errorf("npz: array %q: %w", name, err)
	}
	if f.CompressedSize64 != f.UncompressedSize64 {
		return nil, fmt.Errorf("npz: stored array %q has sizes %d and %d in the zip directory", name, f.CompressedSize64, f.UncompressedSize64)
	}
	n := int64(f.UncompressedSize64)
	r, err := NewReader(io.NewSectionReader(z.ra, off, n), n)
	if err != nil {
		return nil, fmt.Errorf("npz: array %q: %w", name, err)
	}
	return r, nil
}
