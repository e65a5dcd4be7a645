// Package webdataset reads img2dataset's webdataset output: a directory of NNNNN.tar shards (or
// one tar file) in which each sample is a run of adjacent members sharing a key,
// {key}.jpg|jpeg|png|webp|gif (the image), {key}.txt (the caption), {key}.json (metadata) and
// possibly others, with an optional NNNNN.parquet beside each tar (url, caption, key, status,
// ...). Shards may also be tars in a gzip stream (NNNNN.tar.gz or NNNNN.tgz). Other files in the
// directory are not read, and Plan says which (dataset.NoteUnread). It writes kept/, rejected/
// and errors/ as webdataset too (see WriteSplits).
//
// A shard's rows are its tar's samples, in tar order, then the rows of its Parquet that no
// sample matches by key, in Parquet order: img2dataset lists failed downloads there (status
// failed_to_download, with error_message) and writes nothing into the tar for them. Those rows
// are errors whose reason quotes the status and message, so they are counted like any other.
//
// Keys and members follow webdataset's own rule: a member's key is its name up to the first dot
// of its last path element, the rest is its extension. Only regular files are members;
// directories, links and __meta__ files are not samples, are not counted and are not copied.
//
// Options: IDColumn names a field of the .json member to use as the row id (default: the key);
// CaptionColumn names the caption member's extension (default "txt"), falling back to a field
// of that name in the .json member (a sample with no .txt member but a "caption" in its json
// uses that); ImageExtension names the image member's extension (default: the first of jpg, jpeg,
// png, webp, gif present).
//
// Planning needs the number of samples per tar, which no header holds, so Plan scans each tar's
// member headers, skipping the bodies (a seek per member on local plain tars; on streaming
// stores such as gs://, and in gzip streams, the skip reads through the file).
//
// Faults. A row with no image member, an empty image, no caption, an empty caption or a
// caption that is not UTF-8 is read with RawRecord.Err set, and so is a key that appears again
// after other samples (webdataset keeps a sample's members adjacent, so a second run of a key
// is a second row, and one id must not name two rows), a sample with two members of one name,
// or one with a member whose name leads outside the folder the tar is extracted into (absolute,
// or climbing out through ".."; such samples are copied to errors/ unchanged, so list that tar
// rather than extract it with a tool that trusts names).
// A broken file is an error naming the file and the byte offset, and stops the job: a tar that
// ends inside a member or a header, or without the end-of-archive marker (truncated), an
// invalid header (corrupt), or non-zero bytes after the end-of-archive marker (garbage
// appended, or tars concatenated, whose later members tar readers silently drop); for a gzip
// stream also a corrupt or truncated stream. Offsets in a gzip stream's errors count bytes of
// the decompressed tar, and the message says so. Plan finds all of these before any work
// starts; ReadRaw, reading the file again, emits the samples before the fault and then returns
// the same error.
package webdataset

import (
	"archive/tar"
	"bufio"
	"compress/flate"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
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

// TarExtensions are the shard file extensions: plain tars, and tars in a gzip stream.
var TarExtensions = []string{".tar", ".tar.gz", ".tgz"}

// tars lists the tar files at p: p itself if it names a tar file, else p's tar files, sorted.
func tars(ctx context.Context, p string) ([]string, error) {
	return dataset.ShardFiles(ctx, p, TarExtensions...)
}

// shardName is a tar file's name without its directory and extension: the shard's name.
func shardName(p string) string {
	base := storage.Base(p)
	return strings.TrimSuffix(base, dataset.Ext(base, TarExtensions...))
}

// siblingParquet is where the Parquet beside the tar at p would be.
func siblingParquet(p string) string {
	return strings.TrimSuffix(p, dataset.Ext(p, TarExtensions...)) + ".parquet"
}

// gzipped reports whether the tar at p is in a gzip stream.
func gzipped(p string) bool { return dataset.Ext(p, ".gz", ".tgz") != "" }

// Detect wants a tar file or a directory holding tar files.
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
		return nil, fmt.Errorf("%s: no .tar, .tar.gz or .tgz files (want img2dataset's webdataset output: NNNNN.tar shards)", p)
	}
	// Outputs and sibling Parquet files are named after the shard: two tars of one name (a.tar
	// and a.tar.gz) would share them.
	byName := map[string]string{}
	for _, file := range fs {
		if other, dup := byName[shardName(file)]; dup {
			return nil, fmt.Errorf("%s and %s are two shards named %q: their outputs would overwrite each other; keep one", other, file, shardName(file))
		}
		byName[shardName(file)] = file
	}
	read := map[string]bool{}
	for _, file := range fs {
		read[file], read[siblingParquet(file)] = true, true
	}
	if err := dataset.NoteUnread(ctx, f.Name(), p, func(file string) bool { return read[file] }); err != nil {
		return nil, err
	}
	return dataset.PlanShards(ctx, fs, planTar)
}

func planTar(ctx context.Context, name string) (dataset.Shard, error) {
	files := map[string]string{"tar": name}
	if pq := siblingParquet(name); storage.Exists(ctx, pq) {
		files["parquet"] = pq
	}
	var rows int64
	keys := map[string]bool{}
	if err := scan(ctx, name, false, func(s *sample) error { rows++; keys[s.key] = true; return nil }); err != nil {
		return dataset.Shard{}, err
	}
	if pq := files["parquet"]; pq != "" {
		listed, err := readListed(ctx, pq, name)
		if err != nil {
			return dataset.Shard{}, err
		}
		rows += int64(len(unmatched(listed, keys)))
	}
	return dataset.Shard{Format: "webdataset", Rows: rows, Files: files, Name: shardName(name)}, nil
}

func (f Format) ReadRaw(ctx context.Context, sh dataset.Shard, o dataset.Options, emit func(dataset.RawRecord) error) error {
	var index int64
	keys := map[string]bool{}
	err := scan(ctx, sh.Files["tar"], true, func(s *sample) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		r := s.record(o)
		r.Index = index
		index++
		keys[s.key] = true
		return emit(r)
	})
	if err != nil || sh.Files["parquet"] == "" {
		return err
	}
	listed, err := readListed(ctx, sh.Files["parquet"], sh.Files["tar"])
	if err != nil {
		return err
	}
	for _, i := range unmatched(listed, keys) {
		l := listed[i]
		if err := emit(dataset.RawRecord{Index: index, ID: l.key, Caption: l.caption, Err: l.reason(sh.Files["tar"])}); err != nil {
			return err
		}
		index++
	}
	return nil
}

// listedRow is a row of the Parquet beside a tar, as far as matching it to a sample goes.
type listedRow struct {
	key                      string
	keyOK                    bool
	status, message, caption string
}

// reason is why a row of the Parquet beside tar that no sample matches is an error.
func (l listedRow) reason(tar string) string {
	switch {
	case !l.keyOK:
		return fmt.Sprintf("listed in %s without a key: no sample of %s matches it", storage.Base(siblingParquet(tar)), storage.Base(tar))
	case l.status != "" && l.status != "success":
		r := fmt.Sprintf("download failed: no sample in %s (status %s", storage.Base(tar), l.status)
		if l.message != "" {
			r += ": " + l.message
		}
		return r + ")"
	}
	r := fmt.Sprintf("no sample in %s, although %s lists it", storage.Base(tar), storage.Base(siblingParquet(tar)))
	if l.status != "" {
		r += " (status " + l.status + ")"
	}
	return r
}

// readListed reads the key column, and img2dataset's status, error_message and caption columns
// where present, of the Parquet pq beside tar.
func readListed(ctx context.Context, pq, tar string) ([]listedRow, error) {
	pf, err := metadata.OpenParquet(ctx, pq)
	if err != nil {
		return nil, err
	}
	cols, err := pf.Columns()
	if err != nil {
		pf.Close()
		return nil, err
	}
	if !slices.Contains(cols, KeyColumn) {
		pf.Close()
		return nil, fmt.Errorf("%s: no %q column to match its rows to the samples of %s (columns: %v)", pq, KeyColumn, tar, cols)
	}
	want := []string{KeyColumn}
	for _, c := range []string{"status", "error_message", "caption"} {
		if slices.Contains(cols, c) {
			want = append(want, c)
		}
	}
	rr, err := pf.Records(ctx, want) // closes pf when released
	if err != nil {
		pf.Close()
		return nil, err
	}
	defer rr.Release()
	var out []listedRow
	for rr.Next() {
		rec := rr.RecordBatch()
		keys, keyOK, err := metadata.StringColumn(pq, rec, KeyColumn)
		if err != nil {
			return nil, err
		}
		col := func(name string) []string {
			if !slices.Contains(want, name) {
				return nil
			}
			v, _, _ := metadata.StringColumn(pq, rec, name)
			return v
		}
		status, message, caption := col("status"), col("error_message"), col("caption")
		for i := range keys {
			l := listedRow{key: keys[i], keyOK: keyOK[i]}
			if status != nil {
				l.status = status[i]
			}
			if message != nil {
				l.message = message[i]
			}
			if caption != nil {
				l.caption = caption[i]
			}
			out = append(out, l)
		}
	}
	if err := rr.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", pq, err)
	}
	return out, nil
}

// unmatched lists, in order, the listed rows that no sample key of the tar matches: the rows a
// shard has beyond its samples.
func unmatched(listed []listedRow, keys map[string]bool) []int {
	var out []int
	for i, l := range listed {
		if !l.keyOK || !keys[l.key] {
			out = append(out, i)
		}
	}
	return out
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
// member's data. Any fault of the file itself is an error naming p and the byte offset (in the
// decompressed tar, for a gzip stream).
func scan(ctx context.Context, p string, bodies bool, fn func(*sample) error) error {
	ts, err := openTar(ctx, p)
	if err != nil {
		return err
	}
	defer ts.close()
	err = scanTar(ts, p, bodies, fn)
	var fe fileError
	if errors.As(err, &fe) && gzipped(p) {
		return fmt.Errorf("%w (%s is gzip-compressed: byte offsets count its decompressed tar)", err, storage.Base(p))
	}
	return err
}

// fileError is a fault of the tar file itself, as opposed to one of fn's errors.
type fileError struct{ error }

func faultf(format string, args ...any) error { return fileError{fmt.Errorf(format, args...)} }

// tarStream is a tar file opened for scanning.
type tarStream struct {
	r     io.Reader
	pos   func() int64 // the offset in the tar of the next byte r gives
	size  int64        // the tar's size; -1 while unknown (a gzip stream's)
	tail  func(p string, marker, from int64) error
	close func() error
}

// openTar opens the tar at p. A plain tar is read through a SectionReader, which can seek, so
// tar.Reader skips unread bodies without reading them; a gzip stream is decompressed in order.
func openTar(ctx context.Context, p string) (*tarStream, error) {
	if !gzipped(p) {
		ra, size, err := storage.OpenReaderAt(ctx, p)
		if err != nil {
			return nil, err
		}
		sr := io.NewSectionReader(ra, 0, size)
		return &tarStream{
			r:     sr,
			pos:   func() int64 { off, _ := sr.Seek(0, io.SeekCurrent); return off },
			size:  size,
			tail:  func(p string, marker, from int64) error { return zeroTail(p, sr, marker, from, size) },
			close: ra.Close,
		}, nil
	}
	rc, err := storage.Open(ctx, p)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(bufio.NewReaderSize(rc, 1<<20))
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("%s: not a gzip stream: %w", p, err)
	}
	cr := &countingReader{r: zr}
	return &tarStream{
		r:     cr,
		pos:   func() int64 { return cr.n },
		size:  -1,
		tail:  func(p string, marker, _ int64) error { return zeroStreamTail(p, cr, marker) },
		close: rc.Close,
	}, nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

func scanTar(ts *tarStream, p string, bodies bool, fn func(*sample) error) error {
	tr := tar.NewReader(ts.r)
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
			size := ts.size
			if size < 0 { // the stream stopped where it was read to
				size = ts.pos()
			}
			return headerError(p, err, next, size, samples, last.name, last.off, last.size)
		}
		off := ts.pos()
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
		if ts.size >= 0 && hdr.Size > ts.size-off {
			return faultf("%s: truncated tar: member %q needs bytes %d to %d, but the file ends at byte %d", p, hdr.Name, off, off+hdr.Size, ts.size)
		}
		if !ok {
			continue
		}
		m := member{hdr: hdr, ext: ext}
		if bodies {
			m.data = make([]byte, hdr.Size)
			if _, err := io.ReadFull(tr, m.data); err != nil {
				if err == io.ErrUnexpectedEOF || err == io.EOF {
					return faultf("%s: truncated tar: member %q needs bytes %d to %d, but the file ends early", p, hdr.Name, off, off+hdr.Size)
				}
				return faultf("%s: reading member %q at byte %d: %w", p, hdr.Name, off, err)
			}
		}
		if cur != nil {
			cur.members = append(cur.members, m)
			continue
		}
		cur = &sample{key: key, members: []member{m}, again: seen[key]}
		seen[key] = true
	}
	end := ts.pos()
	// tar.Reader reports a clean end after the end-of-archive marker (two zero blocks; a lone
	// one, as GNU tar also accepts, still shows the writer finished), but also when the file
	// simply stops at a header boundary, which is a truncated tar.
	if end == next {
		return faultf("%s: truncated tar: the file ends at byte %d without the end-of-archive marker (after %d complete samples)", p, end, samples)
	}
	// The end-of-archive marker completes the last sample, whatever follows it.
	if err := flush(); err != nil {
		return err
	}
	return ts.tail(p, next, end)
}

func headerError(p string, err error, at, size int64, samples int, lastName string, lastOff, lastSize int64) error {
	var corrupt flate.CorruptInputError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) && lastName != "" && lastOff+lastSize > size:
		return faultf("%s: truncated tar: member %q needs bytes %d to %d, but the file ends at byte %d", p, lastName, lastOff, lastOff+lastSize, size)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return faultf("%s: truncated tar: the file ends at byte %d inside the header that starts at byte %d (after %d complete samples)", p, size, at, samples)
	case errors.Is(err, tar.ErrHeader):
		return faultf("%s: corrupt tar: invalid header at byte %d (after %d complete samples): %v", p, at, samples, err)
	case errors.As(err, &corrupt) || errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader):
		return faultf("%s: corrupt gzip stream before byte %d (after %d complete samples): %v", p, size, samples, err)
	}
	return faultf("%s: reading the header at byte %d: %w", p, at, err)
}

const tailNote = "garbage appended, or tars concatenated (whose later members would be lost); the file is not read"

// zeroTail checks that nothing but zero padding follows the end-of-archive marker.
func zeroTail(p string, r io.ReaderAt, marker, from, size int64) error {
	buf := make([]byte, 64<<10)
	for off := from; off < size; {
		n, err := r.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		if i := slices.IndexFunc(buf[:n], func(b byte) bool { return b != 0 }); i >= 0 {
			return faultf("%s: non-zero bytes at byte %d, after the tar's end-of-archive marker at byte %d: %s", p, off+int64(i), marker, tailNote)
		}
		off += int64(n)
		if err != nil && off < size {
			return faultf("%s: reading at byte %d: %w", p, off, err)
		}
	}
	return nil
}

// zeroStreamTail is zeroTail for a gzip stream: the rest of the decompressed tar must be zeros,
// and the gzip stream must end cleanly (its checksum verified, nothing but gzip after it).
func zeroStreamTail(p string, cr *countingReader, marker int64) error {
	buf := make([]byte, 64<<10)
	for {
		off := cr.n
		n, err := cr.Read(buf)
		if i := slices.IndexFunc(buf[:n], func(b byte) bool { return b != 0 }); i >= 0 {
			return faultf("%s: non-zero bytes at byte %d, after the tar's end-of-archive marker at byte %d: %s", p, off+int64(i), marker, tailNote)
		}
		if err == io.EOF {
			return nil
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return faultf("%s: truncated gzip stream: it ends without its trailer, after byte %d of the tar", p, cr.n)
		}
		if err != nil {
			return faultf("%s: corrupt gzip stream, found at its end (the tar's end-of-archive marker is at byte %d): %v", p, marker, err)
		}
	}
}

// escapesDir reports whether a member name would be written outside the folder the tar is
// extracted into: an absolute path (or a Windows drive or UNC path), or one that climbs out
// through "..". Backslashes count as separators, as Windows tools read them.
func escapesDir(name string) bool {
	n := strings.ReplaceAll(name, `\`, "/")
	drive := len(n) >= 2 && n[1] == ':' && ('a' <= n[0]|0x20 && n[0]|0x20 <= 'z')
	if strings.HasPrefix(n, "/") || drive {
		return true
	}
	c := path.Clean(n)
	return c == ".." || strings.HasPrefix(c, "../")
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
	if o.ImageExtension != "" {
		exts = []string{strings.ToLower(o.ImageExtension)}
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
	escapes := ""
	for _, m := range s.members {
		if escapes == "" && escapesDir(m.hdr.Name) {
			escapes = m.hdr.Name
		}
	}
	switch {
	case escapes != "":
		r.Err = fmt.Sprintf("member name %q leads outside the tar's folder (absolute, or through ..)", escapes)
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
