// Package datacomp reads DataComp's metadata shards: NNNNNNNN.parquet (uid, url, text,
// original_width, original_height, clip_b32_similarity_score, clip_l14_similarity_score,
// face_bboxes, sha256) beside NNNNNNNN.npz holding the row-aligned float16 embeddings b32_img,
// b32_txt (ViT-B/32) and l14_img, l14_txt (ViT-L/14). Options.EmbeddingModel picks the pair
// (b32 by default). Ids are the uid column, captions the text column (IDColumn and
// CaptionColumn name others).
//
// The path may be one shard's .parquet, or a folder with shards at any depth. Every .parquet
// needs its .npz and every .npz its .parquet; other files are noted as not read. Plan reads
// the Parquet footers and the two arrays' .npy headers; a stored .npz member (np.savez) is read
// in place, in ranges, so only the chosen model's arrays are fetched, while a deflated one
// (np.savez_compressed) is decompressed when its shard is read.
//
// A run's kept/, rejected/ and errors/ are DataComp shards again (splits.go), and ParseUID and
// MergeUIDRuns write the kept and rejected uids as DataComp subset files (uids.go).
package datacomp

import (
	"context"
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/internal/npy"
	"github.com/lemon-curation/lemon/storage"
)

func init() { dataset.Register(Format{}) }

// Format is DataComp's Parquet + npz metadata shards.
type Format struct{}

func (Format) Name() string { return "datacomp" }

// Models are the embedding models a DataComp .npz holds arrays of, the default first.
var Models = []string{"b32", "l14"}

// Default id and caption columns.
var (
	IDColumns      = []string{"uid"}
	CaptionColumns = []string{"text"}
)

// arrays are the image and text array names of the model o picks.
func arrays(o dataset.Options) (string, string, error) {
	m := o.EmbeddingModel
	if m == "" {
		m = Models[0]
	}
	for _, ok := range Models {
		if m == ok {
			return m + "_img", m + "_txt", nil
		}
	}
	return "", "", fmt.Errorf("--embedding-model %q: want one of %s", m, strings.Join(Models, ", "))
}

// npzOf is where the .npz beside the .parquet at p is.
func npzOf(p string) string { return strings.TrimSuffix(p, dataset.Ext(p, ".parquet")) + ".npz" }

// Detect wants Parquet whose first file has its .npz beside it.
func (Format) Detect(ctx context.Context, p string) bool {
	fs, err := dataset.ShardFilesUnder(ctx, p, ".parquet")
	return err == nil && len(fs) > 0 && storage.Exists(ctx, npzOf(fs[0]))
}

func (f Format) Plan(ctx context.Context, p string, o dataset.Options) ([]dataset.Shard, error) {
	imgName, txtName, err := arrays(o)
	if err != nil {
		return nil, err
	}
	pqs, err := dataset.ShardFilesUnder(ctx, p, ".parquet")
	if err != nil {
		return nil, err
	}
	if len(pqs) == 0 {
		return nil, fmt.Errorf("%s: no .parquet files (want DataComp shards: NNNNNNNN.parquet with NNNNNNNN.npz beside it)", p)
	}
	read := map[string]bool{}
	for _, pq := range pqs {
		read[pq], read[npzOf(pq)] = true, true
	}
	if dataset.Ext(p, ".parquet") == "" {
		npzs, err := dataset.ShardFilesUnder(ctx, p, ".npz")
		if err != nil {
			return nil, err
		}
		for _, z := range npzs {
			if !read[z] {
				return nil, fmt.Errorf("%s has no .parquet beside it: its rows have no uid or text", z)
			}
		}
		if err := dataset.NoteUnreadUnder(ctx, f.Name(), p, func(file string) bool { return read[file] }); err != nil {
			return nil, err
		}
	}
	shards, err := dataset.PlanShards(ctx, pqs, func(ctx context.Context, pq string) (dataset.Shard, error) {
		z := npzOf(pq)
		sh := dataset.Shard{Format: f.Name(), Files: map[string]string{"data": pq, "npz": z},
			Name: strings.TrimSuffix(dataset.RelPath(p, pq), dataset.Ext(pq, ".parquet"))}
		if !storage.Exists(ctx, z) {
			return sh, fmt.Errorf("%s has no %s beside it: DataComp keeps a shard's embeddings there", pq, storage.Base(z))
		}
		pf, err := metadata.OpenParquet(ctx, pq)
		if err != nil {
			return sh, err
		}
		sh.Rows = pf.Rows()
		cols, err := pf.Columns()
		pf.Close()
		if err != nil {
			return sh, err
		}
		if _, _, err := pickColumns(pq, cols, o); err != nil {
			return sh, err
		}
		arch, closeArch, err := openNPZ(ctx, z)
		if err != nil {
			return sh, err
		}
		defer closeArch()
		var hs [2]npy.Header
		for i, name := range []string{imgName, txtName} {
			if hs[i], err = arch.Header(name); err != nil {
				return sh, fmt.Errorf("%s: %w", z, err)
			}
			if int64(hs[i].Rows) != sh.Rows {
				return sh, fmt.Errorf("row-count mismatch: %s has %d rows, array %s of %s has %d", pq, sh.Rows, name, z, hs[i].Rows)
			}
		}
		if hs[0].Cols != hs[1].Cols {
			return sh, fmt.Errorf("dimension mismatch: array %s of %s has dimension %d, %s has %d", imgName, z, hs[0].Cols, txtName, hs[1].Cols)
		}
		sh.Dim = hs[0].Cols
		return sh, nil
	})
	if err != nil {
		return nil, err
	}
	for _, sh := range shards[1:] {
		if sh.Dim != shards[0].Dim {
			return nil, fmt.Errorf("dimension mismatch: %s has dimension %d, but %s has %d", sh.Files["npz"], sh.Dim, shards[0].Files["npz"], shards[0].Dim)
		}
	}
	return shards, nil
}

// pickColumns returns the id and caption columns of a shard's Parquet, and checks the split
// column when one is named.
func pickColumns(file string, cols []string, o dataset.Options) (string, string, error) {
	id, err := dataset.PickColumn(file, cols, o.IDColumn, IDColumns, "id")
	if err != nil {
		return "", "", err
	}
	caption, err := dataset.PickColumn(file, cols, o.CaptionColumn, CaptionColumns, "caption")
	if err != nil {
		return "", "", err
	}
	if o.SplitColumn != "" {
		if _, err := dataset.PickColumn(file, cols, o.SplitColumn, nil, "split"); err != nil {
			return "", "", err
		}
	}
	return id, caption, nil
}

func openNPZ(ctx context.Context, p string) (*npy.NPZ, func(), error) {
	ra, size, err := storage.OpenReaderAt(ctx, p)
	if err != nil {
		return nil, nil, err
	}
	z, err := npy.OpenNPZ(ra, size)
	if err != nil {
		ra.Close()
		return nil, nil, fmt.Errorf("%s: %w", p, err)
	}
	return z, func() { ra.Close() }, nil
}

// chunkRows is how many rows Read takes from the arrays at a time.
const chunkRows = 1024

func (Format) Read(ctx context.Context, sh dataset.Shard, o dataset.Options, emit func(dataset.Record) error) error {
	pq, z := sh.Files["data"], sh.Files["npz"]
	imgName, txtName, err := arrays(o)
	if err != nil {
		return err
	}
	arch, closeArch, err := openNPZ(ctx, z)
	if err != nil {
		return err
	}
	defer closeArch()
	var rs [2]*npy.Reader
	for i, name := range []string{imgName, txtName} {
		if rs[i], err = arch.Array(name); err != nil {
			return fmt.Errorf("%s: %w", z, err)
		}
		if h := rs[i].Header(); int64(h.Rows) != sh.Rows || h.Cols != sh.Dim {
			return fmt.Errorf("%s changed since the job was planned: array %s is now %dx%d, planned %dx%d", z, name, h.Rows, h.Cols, sh.Rows, sh.Dim)
		}
	}
	pf, err := metadata.OpenParquet(ctx, pq)
	if err != nil {
		return err
	}
	cols, err := pf.Columns()
	if err != nil {
		pf.Close()
		return err
	}
	idCol, capCol, err := pickColumns(pq, cols, o)
	if err != nil {
		pf.Close()
		return err
	}
	want := []string{idCol, capCol}
	if o.SplitColumn != "" && o.SplitColumn != idCol && o.SplitColumn != capCol {
		want = append(want, o.SplitColumn)
	}
	rr, err := pf.Records(ctx, want) // closes pf when released
	if err != nil {
		pf.Close()
		return err
	}
	defer rr.Release()
	d := sh.Dim
	img, txt := make([]float32, chunkRows*d), make([]float32, chunkRows*d)
	var index int64
	for rr.Next() {
		rec := rr.RecordBatch()
		ids, idOK, err := metadata.StringColumn(pq, rec, idCol)
		if err != nil {
			return err
		}
		caps, capOK, err := metadata.StringColumn(pq, rec, capCol)
		if err != nil {
			return err
		}
		var splits []string
		if o.SplitColumn != "" {
			if splits, _, err = metadata.StringColumn(pq, rec, o.SplitColumn); err != nil {
				return err
			}
		}
		for lo := 0; lo < len(ids); lo += chunkRows {
			n := min(chunkRows, len(ids)-lo)
			if index+int64(n) > sh.Rows {
				return fmt.Errorf("%s has more rows than the %d planned: it changed since the job was planned", pq, sh.Rows)
			}
			for i, buf := range [][]float32{img, txt} {
				if err := rs[i].ReadRows(int(index), int(index)+n, buf[:n*d]); err != nil {
					return fmt.Errorf("%s array %s rows %d-%d: %w", z, []string{imgName, txtName}[i], index, index+int64(n), err)
				}
			}
			for i := 0; i < n; i++ {
				j := lo + i
				r := dataset.Record{
					Index:   index,
					ID:      ids[j],
					Caption: caps[j],
					Image:   img[i*d : (i+1)*d : (i+1)*d], // reused for the next chunk (see dataset.Record)
					Text:    txt[i*d : (i+1)*d : (i+1)*d],
				}
				if splits != nil {
					r.Split = splits[j]
				}
				switch {
				case !idOK[j] || ids[j] == "":
					r.Err = "missing id"
				case !capOK[j]:
					r.Err = "missing caption"
				case caps[j] == "":
					r.Err = "empty caption"
				}
				if err := emit(r); err != nil {
					return err
				}
				index++
			}
		}
	}
	if err := rr.Err(); err != nil {
		return fmt.Errorf("%s: %w", pq, err)
	}
	if index != sh.Rows {
		return fmt.Errorf("%s has %d rows, %d planned: it changed since the job was planned", pq, index, sh.Rows)
	}
	return nil
}

// Metadata is the shard's Parquet, every column: what kept/ and rejected/ carry.
func (Format) Metadata(ctx context.Context, sh dataset.Shard, o dataset.Options) (array.RecordReader, error) {
	return metadata.Open(ctx, sh.Files["data"])
}
