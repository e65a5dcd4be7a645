package embdir

import (
	"bufio"
	"context"
	"fmt"
	"io"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/internal/npy"
	"github.com/lemon-curation/lemon/storage"
)

// kept/, rejected/ and errors/ of a clip-retrieval input are clip-retrieval folders of their
// rows: shard N's rows of a split go to SPLIT/img_emb/img_emb_N.npy, SPLIT/text_emb/text_emb_N.npy
// and SPLIT/metadata/metadata_N.parquet, in input order, so clip-retrieval's tools, and lemon,
// read them as they read the input.

// SplitMetadataPath is SPLIT/metadata/metadata_N.parquet (Parquet whatever the input's
// metadata was: the score columns are typed).
func (Format) SplitMetadataPath(sh dataset.Shard, outDir string, split dataset.Split) string {
	return storage.Join(outDir, split.String(), "metadata", "metadata_"+sh.Name+".parquet")
}

// sides are the embedding files of a shard: its role in Shard.Files, folder and name prefix.
var sides = []struct{ role, dir string }{{"image", "img_emb"}, {"text", "text_emb"}}

// WriteSplitEmbeddings copies shard sh's image and text embeddings into each split's
// img_emb/ and text_emb/, streaming: float16 inputs stay float16 and little-endian inputs'
// rows are copied byte for byte (a big-endian or Fortran-order input is written little-endian
// in C order, the same values).
func (Format) WriteSplitEmbeddings(ctx context.Context, sh dataset.Shard, _ dataset.Options, outDir string, outcomes []dataset.Outcome) error {
	if int64(len(outcomes)) != sh.Rows {
		return fmt.Errorf("embdir: %d outcomes for the %d rows of shard %s", len(outcomes), sh.Rows, sh.Name)
	}
	for _, side := range sides {
		if err := copySide(ctx, sh, sh.Files[side.role], side.dir, outDir, outcomes); err != nil {
			return err
		}
	}
	return nil
}

func copySide(ctx context.Context, sh dataset.Shard, src, dir, outDir string, outcomes []dataset.Outcome) error {
	r, closeSrc, err := openNpy(ctx, src, sh)
	if err != nil {
		return err
	}
	defer closeSrc()
	to := make([]int, len(outcomes))
	for i, o := range outcomes {
		to[i] = int(o.Split)
	}
	var outs [3]*storage.Writer
	var bws [3]*bufio.Writer
	abort := func() {
		for _, w := range outs {
			if w != nil {
				w.Abort() // does nothing to a committed file
			}
		}
	}
	for s := range outs {
		p := storage.Join(outDir, dataset.Split(s).String(), dir, fmt.Sprintf("%s_%s.npy", dir, sh.Name))
		if outs[s], err = storage.Create(ctx, p); err != nil {
			abort()
			return err
		}
		bws[s] = bufio.NewWriterSize(outs[s], 1<<20)
	}
	if err := npy.SplitRows(r, to, []io.Writer{bws[0], bws[1], bws[2]}); err != nil {
		abort()
		return fmt.Errorf("copying the rows of %s: %w", src, err)
	}
	for s, w := range outs {
		if err := bws[s].Flush(); err != nil {
			abort()
			return fmt.Errorf("writing %s: %w", dataset.Split(s), err)
		}
		if err := w.Commit(); err != nil {
			abort()
			return err
		}
	}
	return nil
}
