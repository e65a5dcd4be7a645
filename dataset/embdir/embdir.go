// Package embdir reads the clip-retrieval / LAION embedding layout: img_emb/img_emb_N.npy and
// text_emb/text_emb_N.npy (float16 or float32, row-aligned per shard N) and, optionally,
// metadata/metadata_N.parquet, .csv or .jsonl with an id and a caption column. Plan notes any
// other file in those three folders (dataset.NoteUnread), and refuses a file that matches a
// pattern but has no shard number (img_emb_x.npy). A run's kept/, rejected/ and errors/ of such
// a folder are clip-retrieval folders again (splits.go).
package embdir

import (
	"context"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/internal/npy"
	"github.com/lemon-curation/lemon/storage"
)

func init() { dataset.Register(Format{}) }

// Format is the clip-retrieval embedding directory.
type Format struct{}

func (Format) Name() string { return "embdir" }

func (Format) Detect(ctx context.Context, dir string) bool {
	files, err := storage.List(ctx, storage.Join(dir, "img_emb", "img_emb_*.npy"))
	return err == nil && len(files) > 0
}

var shardNum = regexp.MustCompile(`_(\d+)\.[a-z]+$`)

// byShard maps shard numbers to the file for each number, rejecting two files for one number.
func byShard(files []string) (map[int]string, error) {
	m := map[int]string{}
	for _, f := range files {
		s := shardNum.FindStringSubmatch(storage.Base(f))
		if s == nil {
			return nil, fmt.Errorf("%s: no shard number in its name (want a name ending in _N%s, N a number); rename or remove it", f, path.Ext(f))
		}
		n, _ := strconv.Atoi(s[1])
		if old, dup := m[n]; dup {
			return nil, fmt.Errorf("two files for shard %d: %s and %s", n, old, f)
		}
		m[n] = f
	}
	return m, nil
}

func (Format) Plan(ctx context.Context, dir string, o dataset.Options) ([]dataset.Shard, error) {
	list := func(glob string) (map[int]string, error) {
		files, err := storage.List(ctx, storage.Join(dir, glob))
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", storage.Join(dir, glob), err)
		}
		return byShard(files)
	}
	imgs, err := list("img_emb/img_emb_*.npy")
	if err != nil {
		return nil, err
	}
	if len(imgs) == 0 {
		return nil, fmt.Errorf("%s: no img_emb/img_emb_N.npy files", dir)
	}
	txts, err := list("text_emb/text_emb_*.npy")
	if err != nil {
		return nil, err
	}
	meta := map[int]string{}
	for _, ext := range metadata.Extensions {
		m, err := list("metadata/metadata_*" + ext)
		if err != nil {
			return nil, err
		}
		for n, f := range m {
			if old, dup := meta[n]; dup {
				return nil, fmt.Errorf("two metadata files for shard %d: %s and %s", n, old, f)
			}
			meta[n] = f
		}
	}
	var nums []int
	for n := range imgs {
		if _, ok := txts[n]; !ok {
			return nil, fmt.Errorf("%s has no matching text_emb/text_emb_%d.npy", imgs[n], n)
		}
		nums = append(nums, n)
	}
	for n, f := range txts {
		if _, ok := imgs[n]; !ok {
			return nil, fmt.Errorf("%s has no matching img_emb/img_emb_%d.npy", f, n)
		}
	}
	if len(meta) > 0 {
		for _, n := range nums {
			if _, ok := meta[n]; !ok {
				return nil, fmt.Errorf("%s: metadata exists for some shards but not shard %d (%s)", dir, n, imgs[n])
			}
		}
		for n, f := range meta {
			if _, ok := imgs[n]; !ok {
				return nil, fmt.Errorf("%s has no matching img_emb/img_emb_%d.npy", f, n)
			}
		}
	}
	used := map[string]bool{}
	for _, m := range []map[int]string{imgs, txts, meta} {
		for _, f := range m {
			used[f] = true
		}
	}
	for _, sub := range []string{"img_emb", "text_emb", "metadata"} {
		if err := dataset.NoteUnread(ctx, "embdir", storage.Join(dir, sub), func(file string) bool { return used[file] }); err != nil {
			return nil, err
		}
	}
	sort.Ints(nums)
	numOf := map[string]int{}
	var files []string
	for _, n := range nums {
		numOf[imgs[n]] = n
		files = append(files, imgs[n])
	}
	shards, err := dataset.PlanShards(ctx, files, func(ctx context.Context, img string) (dataset.Shard, error) {
		n := numOf[img]
		hi, err := header(ctx, img)
		if err != nil {
			return dataset.Shard{}, err
		}
		ht, err := header(ctx, txts[n])
		if err != nil {
			return dataset.Shard{}, err
		}
		if hi.Rows != ht.Rows {
			return dataset.Shard{}, fmt.Errorf("row-count mismatch: %s has %d rows, %s has %d", img, hi.Rows, txts[n], ht.Rows)
		}
		if hi.Cols != ht.Cols {
			return dataset.Shard{}, fmt.Errorf("dimension mismatch: %s has dimension %d, %s has %d", img, hi.Cols, txts[n], ht.Cols)
		}
		files := map[string]string{"image": img, "text": txts[n]}
		if m, ok := meta[n]; ok {
			files["metadata"] = m
			if err := checkMetadata(ctx, m, int64(hi.Rows), img, o); err != nil {
				return dataset.Shard{}, err
			}
		}
		return dataset.Shard{Format: "embdir", Rows: int64(hi.Rows), Dim: hi.Cols, Files: files, Name: fmt.Sprintf("%d", n)}, nil
	})
	if err != nil {
		return nil, err
	}
	for _, sh := range shards[1:] {
		if sh.Dim != shards[0].Dim {
			return nil, fmt.Errorf("dimension mismatch: %s has dimension %d, but %s has %d", sh.Files["image"], sh.Dim, shards[0].Files["image"], shards[0].Dim)
		}
	}
	return shards, nil
}

func header(ctx context.Context, p string) (npy.Header, error) {
	ra, size, err := storage.OpenReaderAt(ctx, p)
	if err != nil {
		return npy.Header{}, err
	}
	defer ra.Close()
	r, err := npy.NewReader(ra, size)
	if err != nil {
		return npy.Header{}, fmt.Errorf("%s: %w", p, err)
	}
	return r.Header(), nil
}

// checkMetadata checks what is cheap to check before the job starts, opening the file once:
// the id and caption (and split) columns, and for Parquet the row count from the footer. CSV and JSON
// Lines row counts are checked as they are read.
func checkMetadata(ctx context.Context, p string, rows int64, npyFile string, o dataset.Options) error {
	var cols []string
	if strings.HasSuffix(p, ".parquet") {
		f, err := metadata.OpenParquet(ctx, p)
		if err != nil {
			return err
		}
		defer f.Close()
		if f.Rows() != rows {
			return fmt.Errorf("row-count mismatch: %s has %d rows, %s has %d", p, f.Rows(), npyFile, rows)
		}
		if cols, err = f.Columns(); err != nil {
			return err
		}
	} else {
		rr, err := metadata.Open(ctx, p)
		if err != nil {
			return err
		}
		for _, f := range rr.Schema().Fields() {
			cols = append(cols, f.Name)
		}
		rr.Release()
	}
	if _, err := dataset.PickColumn(p, cols, o.IDColumn, dataset.IDColumns, "id"); err != nil {
		return err
	}
	if _, err := dataset.PickColumn(p, cols, o.CaptionColumn, dataset.CaptionColumns, "caption"); err != nil {
		return err
	}
	if o.SplitColumn != "" {
		if _, err := dataset.PickColumn(p, cols, o.SplitColumn, nil, "split"); err != nil {
			return err
		}
	}
	return nil
}

const chunkRows = 1024

func (Format) Read(ctx context.Context, sh dataset.Shard, o dataset.Options, emit func(dataset.Record) error) error {
	img, closeImg, err := openNpy(ctx, sh.Files["image"], sh)
	if err != nil {
		return err
	}
	defer closeImg()
	txt, closeTxt, err := openNpy(ctx, sh.Files["text"], sh)
	if err != nil {
		return err
	}
	defer closeTxt()

	var meta *idCaptions
	if m := sh.Files["metadata"]; m != "" {
		meta, err = openIDCaptions(ctx, m, o)
		if err != nil {
			return err
		}
		defer meta.close()
	}
	d := sh.Dim
	ibuf := make([]float32, chunkRows*d)
	tbuf := make([]float32, chunkRows*d)
	for lo := int64(0); lo < sh.Rows; lo += chunkRows {
		hi := min(lo+chunkRows, sh.Rows)
		n := int(hi - lo)
		if err := img.ReadRows(int(lo), int(hi), ibuf[:n*d]); err != nil {
			return fmt.Errorf("%s rows %d-%d: %w", sh.Files["image"], lo, hi, err)
		}
		if err := txt.ReadRows(int(lo), int(hi), tbuf[:n*d]); err != nil {
			return fmt.Errorf("%s rows %d-%d: %w", sh.Files["text"], lo, hi, err)
		}
		for i := 0; i < n; i++ {
			r := dataset.Record{
				Index: lo + int64(i),
				Image: ibuf[i*d : (i+1)*d : (i+1)*d], // reused for the next chunk (see dataset.Record)
				Text:  tbuf[i*d : (i+1)*d : (i+1)*d],
			}
			if meta == nil {
				r.ID = strconv.FormatInt(sh.Offset+r.Index, 10)
			} else {
				id, idOK, caption, capOK, err := meta.next()
				if err != nil {
					return err
				}
				if !idOK && !capOK && id == "" && caption == "" && meta.done {
					return fmt.Errorf("row-count mismatch: %s ends after %d rows, %s has %d", sh.Files["metadata"], r.Index, sh.Files["image"], sh.Rows)
				}
				r.ID, r.Caption, r.Split = id, caption, meta.split()
				switch {
				case !idOK || id == "":
					r.Err = "missing id"
				case !capOK:
					r.Err = "missing caption"
				case caption == "":
					r.Err = "empty caption"
				}
			}
			if err := emit(r); err != nil {
				return err
			}
		}
	}
	if meta != nil {
		if _, _, _, _, err := meta.next(); err != nil {
			return err
		}
		if !meta.done {
			return fmt.Errorf("row-count mismatch: %s has more rows than %s (%d)", sh.Files["metadata"], sh.Files["image"], sh.Rows)
		}
	}
	return nil
}

func openNpy(ctx context.Context, p string, sh dataset.Shard) (*npy.Reader, func(), error) {
	ra, size, err := storage.OpenReaderAt(ctx, p)
	if err != nil {
		return nil, nil, err
	}
	r, err := npy.NewReader(ra, size)
	if err != nil {
		ra.Close()
		return nil, nil, fmt.Errorf("%s: %w", p, err)
	}
	if h := r.Header(); int64(h.Rows) != sh.Rows || h.Cols != sh.Dim {
		ra.Close()
		return nil, nil, fmt.Errorf("%s changed since the job was planned: now %dx%d, planned %dx%d", p, h.Rows, h.Cols, sh.Rows, sh.Dim)
	}
	return r, func() { ra.Close() }, nil
}

// idCaptions streams the id and caption columns (and the split column, when one is named) of
// a metadata file row by row.
type idCaptions struct {
	file                    string
	rr                      array.RecordReader
	idCol, capCol, splitCol string
	ids, caps, splits       []string
	idOK, capOK             []bool
	pos                     int
	done                    bool
}

func openIDCaptions(ctx context.Context, p string, o dataset.Options) (*idCaptions, error) {
	rr, err := metadata.Open(ctx, p)
	if err != nil {
		return nil, err
	}
	var cols []string
	for _, f := range rr.Schema().Fields() {
		cols = append(cols, f.Name)
	}
	idc, err := dataset.PickColumn(p, cols, o.IDColumn, dataset.IDColumns, "id")
	if err != nil {
		rr.Release()
		return nil, err
	}
	cc, err := dataset.PickColumn(p, cols, o.CaptionColumn, dataset.CaptionColumns, "caption")
	if err != nil {
		rr.Release()
		return nil, err
	}
	m := &idCaptions{file: p, rr: rr, idCol: idc, capCol: cc}
	if o.SplitColumn != "" {
		if m.splitCol, err = dataset.PickColumn(p, cols, o.SplitColumn, nil, "split"); err != nil {
			rr.Release()
			return nil, err
		}
	}
	return m, nil
}

// next returns the next row's id and caption; at the end it sets done and returns zero values.
func (m *idCaptions) next() (string, bool, string, bool, error) {
	for m.pos >= len(m.ids) {
		if m.done {
			return "", false, "", false, nil
		}
		if !m.rr.Next() {
			if err := m.rr.Err(); err != nil {
				return "", false, "", false, fmt.Errorf("%s: %w", m.file, err)
			}
			m.done = true
			return "", false, "", false, nil
		}
		rec := m.rr.RecordBatch()
		var err error
		if m.ids, m.idOK, err = metadata.StringColumn(m.file, rec, m.idCol); err != nil {
			return "", false, "", false, err
		}
		if m.caps, m.capOK, err = metadata.StringColumn(m.file, rec, m.capCol); err != nil {
			return "", false, "", false, err
		}
		if m.splitCol != "" {
			if m.splits, _, err = metadata.StringColumn(m.file, rec, m.splitCol); err != nil {
				return "", false, "", false, err
			}
		}
		m.pos = 0
	}
	i := m.pos
	m.pos++
	return m.ids[i], m.idOK[i], m.caps[i], m.capOK[i], nil
}

// split is the split value of the row next returned last ("" without a split column).
func (m *idCaptions) split() string {
	if m.splitCol == "" {
		return ""
	}
	return m.splits[m.pos-1]
}

func (m *idCaptions) close() { m.rr.Release() }

func (Format) Metadata(ctx context.Context, sh dataset.Shard, o dataset.Options) (array.RecordReader, error) {
	if m := sh.Files["metadata"]; m != "" {
		return metadata.Open(ctx, m)
	}
	// Without metadata a row is known only by its id: its dataset position.
	schema := arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.BinaryTypes.String}}, nil)
	var recs []arrow.RecordBatch
	for lo := int64(0); lo < sh.Rows; lo += metadata.BatchRows {
		hi := min(lo+metadata.BatchRows, sh.Rows)
		b := array.NewStringBuilder(memory.DefaultAllocator)
		for i := lo; i < hi; i++ {
			b.Append(strconv.FormatInt(sh.Offset+i, 10))
		}
		col := b.NewArray()
		recs = append(recs, array.NewRecordBatch(schema, []arrow.Array{col}, hi-lo))
		col.Release()
		b.Release()
	}
	return array.NewRecordReader(schema, recs)
}
