// Package webdataset reads img2dataset's webdataset output: a directory of NNNNN.tar shards (or
// one .tar file) in which each sample is a run of adjacent members sharing a key,
// {key}.jpg|jpeg|png|webp|gif (the image), {key}.txt (the caption), {key}.json (metadata) and
// possibly others, with an optional NNNNN.parquet beside each tar (url, caption, key, status,
// ...). It writes kept/, rejected/ and errors/ as webdataset too (see WriteSplits).
//
// Keys and members follow webdataset's own rule: a member's key is its name up to the first dot
// of its last path element, the rest is its extension. Only regular files are members;
// directories, links and __meta__ files are not samples, are not counted and are not copied.
//
// Options: IDColumn names a field of the .json member to use as the row id (default: the key);
// CaptionColumn names the caption member's extension (default "txt"), falling back to a field
// of that name in the .json member (a sample with no .txt member but a "caption" in its json
// uses that); ImageColumn names the image member's extension (default: the first of jpg, jpeg,
// png, webp, gif present).
//
// Planning needs the number of samples per tar, which no header holds, so Plan scans each tar's
// member headers, skipping the bodies (a seek per member on local files; on streaming stores
// such as gs:// the skip reads through the file).
//
// Faults. A row with no image member, an empty image, no caption, an empty caption or a
// caption that is not UTF-8 is read with RawRecord.Err set, and so is a key that appears again
// after other samples (webdataset keeps a sample's members adjacent, so a second run of a key
// is a second row, and one id must not name two rows) or a sample with two members of one name.
// A broken file is an error naming the file and the byte offset, and stops the job: a tar that
// ends inside a member or a header, or without the end-of-archive marker (truncated), an
// invalid header (corrupt), or non-zero bytes after the end-of-archive marker (garbage
// appended, or tars concatenated, whose later members tar readers silently drop). Plan finds
// all of these before any work starts; ReadRaw, reading the file again, emits the samples
// before the fault and then returns the same error.
package webdataset

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/storage"
)

func init() { dataset.RegisterRaw(Format{}) }

// Format is img2dataset's webdataset layout.
type Format struct{}

func (Format) Name() string { return "webdataset" }

// ImageExtensions are the image member extensions looked for, in order.
var ImageExtensions = []string{"jpg", "jpeg", "png", "webp", "gif"}

// KeyColumn is the column of the Parquet beside a tar that names each row's sample.
const KeyColumn = "key"

// tars lists the tar files at p: p itself if it names a .tar file, else p/*.tar, sorted.
func tars(ctx context.Context, p string) ([]string, error) {
	if strings.HasSuffix(p, ".tar") {
		if !storage.Exists(ctx, p) {
			return nil, fmt.Errorf("%s: no such file", p)
		}
		return []string{p}, nil
	}
	fs, err := storage.List(ctx, storage.Join(p, "*.tar"))
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", p, err)
	}
	// Names starting with a dot are other writers' unfinished files (storage.TempName).
	fs = slices.DeleteFunc(fs, func(f string) bool { return strings.HasPrefix(storage.Base(f), ".") })
	sort.Strings(fs)
	return fs, nil
}

// Detect wants a .tar file or a directory holding .tar files.
func (Format) Detect(ctx context.Context, p string) bool {
	fs, err := tars(ctx, p)
	return err == nil && len(fs) > 0
}

func (f Format) Plan(ctx context.Context, p string, o dataset.Options) ([]dataset.Shard, error) {
	fs, err := tars(ctx, p)
	if err != nil {
		return nil, err
	}
	if len(fs) == 0 {
		return nil, fmt.Errorf("%s: no .tar files (want img2dataset's webdataset output: NNNNN.tar shards)", p)
	}
	return dataset.PlanShards(ctx, fs, planTar)
}

func planTar(ctx context.Context, name string) (dataset.Shard, error) {
	files := map[string]string{"tar": name}
	if pq := strings.TrimSuffix(name, ".tar") + ".parquet"; storage.Exists(ctx, pq) {
		pf, err := metadata.OpenParquet(ctx, pq)
		if err != nil {
			return dataset.Shard{}, err
		}
		cols, err := pf.Columns()
		pf.Close()
		if err != nil {
			return dataset.Shard{}, err
		}
		if !slices.Contains(cols, KeyColumn) {
			return dataset.Shard{}, fmt.Errorf("%s: no %q column to match its rows to the samples of %s (columns: %v)", pq, KeyColumn, name, cols)
		}
		files["parquet"] = pq
	}
	var rows int64
	if err := scan(ctx, name, false, func(*sample) error { rows++; return nil }); err != nil {
		return dataset.Shard{}, err
	}
	return dataset.Shard{Format: "webdataset", Rows: rows, Files: files, Name: strings.TrimSuffix(storage.Base(name), ".tar")}, nil
}

func (f Format) ReadRaw(ctx context.Context, sh dataset.Shard, o dataset.Options, emit func(dataset.RawRecord) error) error {
	var index int64
	return scan(ctx, sh.Files["tar"], true, func(s *sample) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		r := s.record(o)
		r.Index = index
		index++
		return emit(r)
	})
}

// member is one regular file of a tar.
type member struct {
	hdr  *tar.Header
	ext  string
	data []byte // nil when scanning headers only
}

// sample is a run of adjacent members sharing a key.
type sample struct {
	key     string
	members []member
	again   bool // the key was used by an earlier, non-adjacent run
}

// splitName splits a member name into key and extension, as webdataset does; ok is false for
// names that are not sample members (no extension, or a __meta__ file).
func splitName(name string) (key, ext string, ok bool) {
	if !strings.Contains(name, "/") && strings.HasPrefix(name, "__") && strings.HasSuffix(name, "__") {
		return "", "", false
	}
	dir, base := path.Split(name)
	i := strings.IndexByte(base, '.')
	if i <= 0 {
		return "", "", false
	}
	return dir + base[:i], base[i+1:], true
}

// scan calls fn for each sample of the tar at p, in order; with bodies it also reads each
// member's data. Any fault of the file itself is an error naming p and the byte offset.
func scan(ctx context.Context, p string, bodies bool, fn func(*sample) error) error {
	ra, size, err := storage.OpenReaderAt(ctx, p)
	if err != nil {
		return err
	}
	defer ra.Close()
	// A SectionReader can seek, so tar.Reader skips unread bodies without reading them.
	sr := io.NewSectionReader(ra, 0, size)
	tr := tar.NewReader(sr)
	seen := map[string]bool{}
	var cur *sample
	var samples int
	flush := func() error {
		if cur == nil {
			return nil
		}
		s := cur
		cur = nil
		samples++
		return fn(s)
	}
	// next is where the next header starts; last describes the member before it.
	var next int64
	var last struct {
		name      string
		off, size int64
	}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return headerError(p, err, next, size, samples, last.name, last.off, last.size)
		}
		off, _ := sr.Seek(0, io.SeekCurrent)
		last.name, last.off, last.size = hdr.Name, off, hdr.Size
		next = off + (hdr.Size+511)/512*512
		key, ext, ok := splitName(hdr.Name)
		ok = ok && hdr.Typeflag == tar.TypeReg
		// A member of another key completes the current sample, even if this one is broken.
		if ok && cur != nil && cur.key != key {
			if err := flush(); err != nil {
				return err
			}
		}
		if hdr.Size > size-off {
			return fmt.Errorf("%s: truncated tar: member %q needs bytes %d to %d, but the file ends at byte %d", p, hdr.Name, off, off+hdr.Size, size)
		}
		if !ok {
			continue
		}
		m := member{hdr: hdr, ext: ext}
		if bodies {
			m.data = make([]byte, hdr.Size)
			if _, err := io.ReadFull(tr, m.data); err != nil {
				if err == io.ErrUnexpectedEOF || err == io.EOF {
					return fmt.Errorf("%s: truncated tar: member %q needs bytes %d to %d, but the file ends early", p, hdr.Name, off, off+hdr.Size)
				}
				return fmt.Errorf("%s: reading member %q at byte %d: %w", p, hdr.Name, off, err)
			}
		}
		if cur != nil {
			cur.members = append(cur.members, m)
			continue
		}
		cur = &sample{key: key, members: []member{m}, again: seen[key]}
		seen[key] = true
	}
	end, _ := sr.Seek(0, io.SeekCurrent)
	// tar.Reader reports a clean end after the end-of-archive marker (two zero blocks; a lone
	// one, as GNU tar also accepts, still shows the writer finished), but also when the file
	// simply stops at a header boundary, which is a truncated tar.
	if end == next {
		return fmt.Errorf("%s: truncated tar: the file ends at byte %d without the end-of-archive marker (after %d complete samples)", p, size, samples)
	}
	// The end-of-archive marker completes the last sample, whatever follows it.
	if err := flush(); err != nil {
		return err
	}
	return zeroTail(p, sr, next, end, size)
}

func headerError(p string, err error, at, size int64, samples int, lastName string, lastOff, lastSize int64) error {
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) && lastName != "" && lastOff+lastSize > size:
		return fmt.Errorf("%s: truncated tar: member %q needs bytes %d to %d, but the file ends at byte %d", p, lastName, lastOff, lastOff+lastSize, size)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%s: truncated tar: the file ends at byte %d inside the header that starts at byte %d (after %d complete samples)", p, size, at, samples)
	case errors.Is(err, tar.ErrHeader):
		return fmt.Errorf("%s: corrupt tar: invalid header at byte %d (after %d complete samples): %v", p, at, samples, err)
	}
	return fmt.Errorf("%s: reading the header at byte %d: %w", p, at, err)
}

// zeroTail checks that nothing but zero padding follows the end-of-archive marker.
func zeroTail(p string, r io.ReaderAt, marker, from, size int64) error {
	buf := make([]byte, 64<<10)
	for off := from; off < size; {
		n, err := r.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		if i := slices.IndexFunc(buf[:n], func(b byte) bool { return b != 0 }); i >= 0 {
			return fmt.Errorf("%s: non-zero bytes at byte %d, after the tar's end-of-archive marker at byte %d: garbage appended, or tars concatenated (whose later members would be lost); the file is not read", p, off+int64(i), marker)
		}
		off += int64(n)
		if err != nil && off < size {
			return fmt.Errorf("%s: reading at byte %d: %w", p, off, err)
		}
	}
	return nil
}

// record turns a sample into a row: its id, caption, image and first fault.
func (s *sample) record(o dataset.Options) dataset.RawRecord {
	r := dataset.RawRecord{ID: s.key}
	byExt := map[string]*member{}
	var fault string
	for i := range s.members {
		m := &s.members[i]
		e := strings.ToLower(m.ext)
		if _, dup := byExt[e]; dup && fault == "" {
			fault = fmt.Sprintf("two members named %q", m.hdr.Name)
		}
		if _, dup := byExt[e]; !dup {
			byExt[e] = m
		}
	}
	var meta map[string]json.RawMessage
	metaErr := ""
	if m := byExt["json"]; m != nil {
		if err := json.Unmarshal(m.data, &meta); err != nil {
			metaErr = fmt.Sprintf("%s is not a JSON object: %v", m.hdr.Name, err)
		}
	}
	field := func(name string) (string, bool) {
		raw, ok := meta[name]
		if !ok || string(raw) == "null" {
			return "", false
		}
		var str string
		if json.Unmarshal(raw, &str) == nil {
			return str, true
		}
		return string(raw), true
	}
	if o.IDColumn != "" {
		if id, ok := field(o.IDColumn); ok {
			r.ID = id
		} else if fault == "" {
			fault = "missing id"
			if metaErr != "" {
				fault = "missing id: " + metaErr
			}
		}
	}
	capExt := strings.ToLower(o.CaptionColumn)
	if capExt == "" {
		capExt = "txt"
	}
	capField := o.CaptionColumn
	if capField == "" {
		capField = "caption"
	}
	var capOK bool
	if m := byExt[capExt]; m != nil {
		// Caption files often end with a newline that is no part of the caption.
		r.Caption, capOK = strings.TrimRight(string(m.data), "\r\n"), true
	} else {
		r.Caption, capOK = field(capField)
	}
	exts := ImageExtensions
	if o.ImageColumn != "" {
		exts = []string{strings.ToLower(o.ImageColumn)}
	}
	var img *member
	for _, e := range exts {
		if img = byExt[e]; img != nil {
			break
		}
	}
	if img != nil {
		r.Image = img.data
	}
	switch {
	case s.again:
		r.Err = fmt.Sprintf("key %q appears again after other samples: a sample's members must be adjacent in the tar", s.key)
	case fault != "":
		r.Err = fault
	case img == nil:
		r.Err = fmt.Sprintf("missing image (no .%s member)", strings.Join(exts, ", ."))
	case len(img.data) == 0:
		r.Err = "empty image"
	case !capOK:
		r.Err = fmt.Sprintf("missing caption (no .%s member)", capExt)
	case !utf8.ValidString(r.Caption):
		r.Err = "caption is not valid UTF-8"
	case strings.TrimSpace(r.Caption) == "":
		r.Err = "empty caption"
	}
	return r
}
