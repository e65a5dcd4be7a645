// Package pathcsv reads a CSV of image paths and captions (one .csv file, or a directory of
// them, each a shard): a header row, an image path column (the first of ImageColumns, or
// Options.ImagePathColumn), a caption column (dataset.CaptionColumns, or Options.CaptionColumn) and
// optionally an id column (dataset.IDColumns, or Options.IDColumn; without one a row's id is
// "<shard name>-<row>"). Relative image paths resolve against the CSV's own directory; any path
// storage reads (local, gs://, memfs://) may be given. It writes kept/, rejected/ and errors/ as
// CSV too (see WriteSplits).
//
// Image paths must lead inside the CSV's folder: a path that climbs out through "..", an
// absolute path or URL elsewhere, or a local symbolic link to a file elsewhere is a row fault
// and nothing is read from it, unless Options.AllowOutsidePaths (--allow-outside-paths). The
// split files name images by their resolved paths, so reading them again needs that option.
//
// Plan reads each CSV once to count its rows (CSV has no footer), not the images. A malformed
// CSV (a row with the wrong number of fields, a broken quote) is an error naming the file and
// line. Per-row faults (RawRecord.Err): a missing id, a missing, empty or non-UTF-8 caption, an
// empty image path, a path outside the CSV's folder, "image file not found: PATH", a directory
// or other file that is not a regular one (a device or pipe), or an empty image file. An image
// that exists but cannot be read is an error, not a row fault, since it is more likely a storage
// outage than a bad row.
package pathcsv

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/rundir"
	"github.com/lemon-curation/lemon/storage"
)

func init() { dataset.RegisterRaw(Format{}) }

// Format is a CSV of image paths and captions.
type Format struct{}

func (Format) Name() string { return "pathcsv" }

// ImageColumns are the image path column names tried, in order, when none is configured
// (file_name is what Hugging Face's imagefolder metadata.csv uses).
var ImageColumns = []string{"image", "image_path", "path", "filepath", "file_name"}

// ImageExtensions are the image file extensions Plan expects beside the CSVs (it notes other
// files there as not read).
var ImageExtensions = []string{".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}

// Columns appended to the split files.
var (
	ScoreColumns      = rundir.ScoreColumns
	ReasonColumn      = "reason"
	LemonReasonColumn = "lemon_reason"
)

// fetchWorkers is how many images ReadRaw reads ahead at once: reads from object stores wait
// on latency, and rows must still be emitted in order.
const fetchWorkers = 16

// Detect wants a CSV (or a directory whose first CSV) has an image path column.
func (Format) Detect(ctx context.Context, p string) bool {
	fs, err := dataset.ShardFiles(ctx, p, ".csv")
	if err != nil || len(fs) == 0 {
		return false
	}
	c, err := openCSV(ctx, fs[0])
	if err != nil {
		return false
	}
	defer c.close()
	_, err = dataset.PickColumn(fs[0], c.header, "", ImageColumns, "image-path")
	return err == nil
}

// csvFile is a CSV opened for reading: its header and a record reader.
type csvFile struct {
	path   string
	header []string
	r      *csv.Reader
	rc     io.ReadCloser
}

func openCSV(ctx context.Context, p string) (*csvFile, error) {
	rc, err := storage.Open(ctx, p)
	if err != nil {
		return nil, err
	}
	r := csv.NewReader(bufio.NewReaderSize(rc, 1<<20))
	header, err := r.Read()
	if err != nil {
		rc.Close()
		if err == io.EOF {
			return nil, fmt.Errorf("%s: empty file (want a header row)", p)
		}
		return nil, fmt.Errorf("%s: reading the CSV header: %w", p, err)
	}
	header[0] = strings.TrimPrefix(header[0], "\ufeff")
	return &csvFile{path: p, header: slices.Clone(header), r: r, rc: rc}, nil
}

// next returns the next record, nil at the end.
func (c *csvFile) next() ([]string, error) {
	rec, err := c.r.Read()
	if err == io.EOF {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.path, err)
	}
	return rec, nil
}

func (c *csvFile) close() { c.rc.Close() }

// columns are the indexes of the columns read; id is -1 when there is none.
type columns struct{ id, caption, image int }

func pick(c *csvFile, o dataset.Options) (columns, error) {
	idx := func(name string) int { return slices.Index(c.header, name) }
	img, err := dataset.PickColumn(c.path, c.header, o.ImagePathColumn, ImageColumns, "image-path")
	if err != nil {
		return columns{}, err
	}
	capt, err := dataset.PickColumn(c.path, c.header, o.CaptionColumn, dataset.CaptionColumns, "caption")
	if err != nil {
		return columns{}, err
	}
	cols := columns{id: -1, caption: idx(capt), image: idx(img)}
	if o.IDColumn != "" || slices.ContainsFunc(dataset.IDColumns, func(n string) bool { return idx(n) >= 0 }) {
		id, err := dataset.PickColumn(c.path, c.header, o.IDColumn, dataset.IDColumns, "id")
		if err != nil {
			return columns{}, err
		}
		cols.id = idx(id)
	}
	return cols, nil
}

func (f Format) Plan(ctx context.Context, p string, o dataset.Options) ([]dataset.Shard, error) {
	fs, err := dataset.ShardFiles(ctx, p, ".csv")
	if err != nil {
		return nil, err
	}
	if len(fs) == 0 {
		return nil, fmt.Errorf("%s: no .csv files", p)
	}
	// Images may sit beside the CSVs: they are read through the CSVs' paths.
	if err := dataset.NoteUnread(ctx, f.Name(), p, func(file string) bool {
		return dataset.Ext(file, ".csv") != "" || dataset.Ext(file, ImageExtensions...) != ""
	}); err != nil {
		return nil, err
	}
	return dataset.PlanShards(ctx, fs, func(ctx context.Context, name string) (dataset.Shard, error) {
		c, err := openCSV(ctx, name)
		if err != nil {
			return dataset.Shard{}, err
		}
		defer c.close()
		var rows int64
		_, err = pick(c, o)
		for err == nil {
			var rec []string
			if rec, err = c.next(); rec == nil {
				break
			}
			rows++
		}
		return dataset.Shard{Format: f.Name(), Rows: rows, Files: map[string]string{"data": name}, Name: strings.TrimSuffix(storage.Base(name), filepath.Ext(name))}, err
	})
}

// Resolve returns the image path of a CSV cell: as given if absolute (a leading slash or a
// scheme such as gs://), else relative to the CSV's directory.
func Resolve(csvPath, image string) string {
	if strings.HasPrefix(image, "/") || strings.Contains(image, "://") {
		return image
	}
	return storage.Join(storage.Join(csvPath, ".."), image)
}

// Inside reports whether path p (as Resolve gives it) lies within the folder of the CSV at
// csvPath, comparing cleaned paths: "..", and absolute paths or URLs elsewhere, lead outside.
// Symbolic links are not followed here (fetch checks where local ones lead).
func Inside(csvPath, p string) bool {
	dir, err1 := storage.Abs(storage.Join(csvPath, ".."))
	q, err2 := storage.Abs(p)
	return err1 == nil && err2 == nil && within(dir, q)
}

// within reports whether cleaned path p is dir or lies under it.
func within(dir, p string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

type fetched struct {
	data []byte
	err  string // a row fault
	fail error  // a file-level error
}

// fetch reads the image at p. A local p must be a regular file (not a directory, device or
// pipe) and, unless realDir is "", must lead into realDir (the CSV's folder with symbolic links
// followed) when its own links are followed.
func fetch(ctx context.Context, p, realDir string) fetched {
	var size int64
	if strings.Contains(p, "://") {
		n, err := storage.Size(ctx, p)
		if err != nil {
			return fetched{err: "image file not found: " + p}
		}
		size = n
	} else {
		fi, err := os.Stat(p)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return fetched{err: "image file not found: " + p}
		case err != nil:
			return fetched{fail: err}
		case fi.IsDir():
			return fetched{err: "image path is a directory: " + p}
		case !fi.Mode().IsRegular():
			return fetched{err: "image path is not a regular file: " + p}
		}
		if realDir != "" {
			ap, err := storage.Abs(p)
			if err == nil {
				ap, err = filepath.EvalSymlinks(ap)
			}
			if err != nil || ap == realDir || !within(realDir, ap) {
				return fetched{err: outsideFault(p, "through a symbolic link")}
			}
		}
		size = fi.Size()
	}
	if size == 0 {
		return fetched{data: []byte{}, err: "empty image file: " + p}
	}
	b, err := storage.ReadFile(ctx, p)
	if err != nil {
		return fetched{fail: err}
	}
	return fetched{data: b}
}

func outsideFault(p, how string) string {
	return fmt.Sprintf("image path %s leads outside the CSV's folder (%s); pass --allow-outside-paths to read such paths", p, how)
}

func (f Format) ReadRaw(ctx context.Context, sh dataset.Shard, o dataset.Options, emit func(dataset.RawRecord) error) error {
	name := sh.Files["data"]
	c, err := openCSV(ctx, name)
	if err != nil {
		return err
	}
	defer c.close()
	cols, err := pick(c, o)
	if err != nil {
		return err
	}
	// Where local images must lead once symbolic links are followed: into the CSV's folder.
	var realDir string
	if !o.AllowOutsidePaths && !strings.Contains(name, "://") {
		d, err := storage.Abs(storage.Join(name, ".."))
		if err == nil {
			realDir, err = filepath.EvalSymlinks(d)
		}
		if err != nil {
			return fmt.Errorf("%s: finding its folder: %w", name, err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	type pending struct {
		r     dataset.RawRecord
		path  string // the image to read, if any
		fault string // why there is none
		done  chan fetched
	}
	// Rows queue in order; up to fetchWorkers images are read at once.
	queue := make(chan *pending, fetchWorkers)
	sem := make(chan struct{}, fetchWorkers)
	readErr := make(chan error, 1)
	// On an early return, stop the reader and wait for it, before the deferred close.
	defer func() {
		cancel()
		for range queue {
		}
	}()
	go func() {
		defer close(queue)
		var index int64
		for {
			rec, err := c.next()
			if err != nil || rec == nil {
				readErr <- err
				return
			}
			p := &pending{r: dataset.RawRecord{Index: index, Caption: rec[cols.caption]}, done: make(chan fetched, 1)}
			if cols.id >= 0 {
				p.r.ID = rec[cols.id]
			} else {
				p.r.ID = sh.Name + "-" + strconv.FormatInt(index, 10)
			}
			index++
			cell := rec[cols.image]
			switch {
			case cell == "":
				p.fault = "missing image path"
			case !o.AllowOutsidePaths && !Inside(name, Resolve(name, cell)):
				how := "through .."
				if strings.HasPrefix(cell, "/") || strings.Contains(cell, "://") {
					how = "absolute path or URL"
				}
				p.fault = outsideFault(Resolve(name, cell), how)
			default:
				p.path = Resolve(name, cell)
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					readErr <- ctx.Err()
					return
				}
				go func() {
					defer func() { <-sem }()
					p.done <- fetch(ctx, p.path, realDir)
				}()
			}
			select {
			case queue <- p:
			case <-ctx.Done():
				readErr <- ctx.Err()
				return
			}
		}
	}()
	var n int64
	for p := range queue {
		r := p.r
		var img fetched
		if p.path != "" {
			img = <-p.done
			if img.fail != nil {
				return img.fail
			}
			r.Image = img.data
		}
		switch {
		case cols.id >= 0 && r.ID == "":
			r.Err = "missing id"
		case !utf8.ValidString(r.Caption):
			r.Err = "caption is not valid UTF-8"
		case strings.TrimSpace(r.Caption) == "":
			r.Err = "empty caption"
		case p.fault != "":
			r.Err = p.fault
		case img.err != "":
			r.Err = img.err
		}
		if err := emit(r); err != nil {
			return err
		}
		n++
	}
	if err := <-readErr; err != nil {
		return err
	}
	if n != sh.Rows {
		return fmt.Errorf("%s: read %d rows, %d planned: it changed since the job was planned", name, n, sh.Rows)
	}
	return nil
}

// WriteSplits writes outDir/kept/NAME.csv, outDir/rejected/NAME.csv and outDir/errors/NAME.csv
// (NAME.csv being the input's name) with the rows routed there, in input order: every original
// column, then lemon_d_mm, lemon_s_n, lemon_s_m and lemon_score (kept, rejected) or reason
// (errors; lemon_reason if the input has a reason column). Old lemon columns (a rerun on
// lemon's outputs) are replaced. Relative image paths are written resolved (absolute for local
// files), so the outputs read back from where they are; every other value is copied unchanged.
func (f Format) WriteSplits(ctx context.Context, sh dataset.Shard, o dataset.Options, outDir string, outcomes []dataset.Outcome) error {
	name := sh.Files["data"]
	if int64(len(outcomes)) != sh.Rows {
		return fmt.Errorf("%s: %d outcomes for a shard of %d rows", name, len(outcomes), sh.Rows)
	}
	c, err := openCSV(ctx, name)
	if err != nil {
		return err
	}
	defer c.close()
	cols, err := pick(c, o)
	if err != nil {
		return err
	}
	var keep []int
	var header []string
	for i, h := range c.header {
		if !slices.Contains(ScoreColumns, h) && h != LemonReasonColumn {
			keep = append(keep, i)
			header = append(header, h)
		}
	}
	reason := ReasonColumn
	if slices.Contains(header, ReasonColumn) {
		reason = LemonReasonColumn
	}
	var outs [3]*csvOut
	abort := func() {
		for _, w := range outs {
			if w != nil {
				w.out.Abort()
			}
		}
	}
	for s := range outs {
		p := storage.Join(outDir, dataset.Split(s).String(), storage.Base(name))
		w, err := storage.Create(ctx, p)
		if err != nil {
			abort()
			return err
		}
		bw := bufio.NewWriterSize(w, 1<<20)
		outs[s] = &csvOut{out: w, buf: bw, cw: csv.NewWriter(bw), p: p}
		h := slices.Clone(header)
		if dataset.Split(s) == dataset.Errors {
			h = append(h, reason)
		} else {
			h = append(h, ScoreColumns...)
		}
		outs[s].cw.Write(h)
	}
	local := !strings.Contains(name, "://")
	var n int64
	for {
		rec, err := c.next()
		if err != nil {
			abort()
			return err
		}
		if rec == nil {
			break
		}
		if n >= sh.Rows {
			abort()
			return fmt.Errorf("%s has more rows than the %d planned: it changed since the job was planned", name, sh.Rows)
		}
		oc := outcomes[n]
		n++
		if cell := rec[cols.image]; cell != "" {
			p := Resolve(name, cell)
			if local && !filepath.IsAbs(p) {
				if abs, err := filepath.Abs(p); err == nil {
					p = abs
				}
			}
			rec[cols.image] = p
		}
		row := make([]string, 0, len(keep)+len(ScoreColumns))
		for _, i := range keep {
			row = append(row, rec[i])
		}
		if oc.Split == dataset.Errors {
			row = append(row, oc.Reason)
		} else {
			for _, v := range []float64{oc.Dmm, oc.Sn, oc.Sm, oc.Score} {
				row = append(row, strconv.FormatFloat(v, 'g', -1, 64))
			}
		}
		w := outs[oc.Split]
		if err := w.cw.Write(row); err != nil {
			abort()
			return fmt.Errorf("writing %s: %w", w.p, err)
		}
	}
	if n != sh.Rows {
		abort()
		return fmt.Errorf("%s has %d rows, %d planned: it changed since the job was planned", name, n, sh.Rows)
	}
	for _, w := range outs {
		w.cw.Flush()
		if err := errors.Join(w.cw.Error(), w.buf.Flush()); err != nil {
			abort()
			return fmt.Errorf("writing %s: %w", w.p, err)
		}
	}
	for i, w := range outs {
		if err := w.out.Commit(); err != nil {
			outs[i] = nil
			abort()
			return err
		}
		outs[i] = nil
	}
	return nil
}

type csvOut struct {
	out *storage.Writer
	buf *bufio.Writer
	cw  *csv.Writer
	p   string
}
