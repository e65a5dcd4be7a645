package datacomp

import (
	"archive/zip"
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/internal/npy"
	"github.com/lemon-curation/lemon/storage"
)

// kept/, rejected/ and errors/ of a DataComp input are DataComp shards of their rows: shard
// NAME (its path below the input root, without .parquet) gives SPLIT/NAME.parquet, the
// metadata rows with the scores, beside SPLIT/NAME.npz holding every array of the input's .npz
// (both models' embeddings, whichever was scored) cut to those rows, in input order.

// SplitMetadataPath is SPLIT/NAME.parquet.
func (Format) SplitMetadataPath(sh dataset.Shard, outDir string, split dataset.Split) string {
	return storage.Join(outDir, split.String(), sh.Name+".parquet")
}

// WriteSplitEmbeddings writes SPLIT/NAME.npz for each split: a stored (np.savez) archive, read
// in place when scored again, whatever the input's compression. Arrays keep their precision,
// and a little-endian input's rows are copied byte for byte.
func (Format) WriteSplitEmbeddings(ctx context.Context, sh dataset.Shard, _ dataset.Options, outDir string, outcomes []dataset.Outcome) error {
	if int64(len(outcomes)) != sh.Rows {
		return fmt.Errorf("datacomp: %d outcomes for the %d rows of %s", len(outcomes), sh.Rows, sh.Files["data"])
	}
	z := sh.Files["npz"]
	arch, closeArch, err := openNPZ(ctx, z)
	if err != nil {
		return err
	}
	defer closeArch()
	to := make([]int, len(outcomes))
	for i, o := range outcomes {
		to[i] = int(o.Split)
	}
	var outs [3]*storage.Writer
	var bws [3]*bufio.Writer
	var zws [3]*zip.Writer
	abort := func() {
		for _, w := range outs {
			if w != nil {
				w.Abort() // does nothing to a committed file
			}
		}
	}
	for s := range outs {
		p := storage.Join(outDir, dataset.Split(s).String(), sh.Name+".npz")
		if outs[s], err = storage.Create(ctx, p); err != nil {
			abort()
			return err
		}
		bws[s] = bufio.NewWriterSize(outs[s], 1<<20)
		zws[s] = zip.NewWriter(bws[s])
	}
	for _, name := range arch.Names() {
		r, err := arch.Array(name)
		if err != nil {
			abort()
			return fmt.Errorf("%s: %w", z, err)
		}
		if h := r.Header(); int64(h.Rows) != sh.Rows {
			abort()
			return fmt.Errorf("%s changed since the job was planned: array %s has %d rows, the shard %d", z, name, h.Rows, sh.Rows)
		}
		members := make([]io.Writer, len(zws))
		for s, zw := range zws {
			if members[s], err = zw.CreateHeader(&zip.FileHeader{Name: name + ".npy", Method: zip.Store}); err != nil {
				abort()
				return err
			}
		}
		if err := npy.SplitRows(r, to, members); err != nil {
			abort()
			return fmt.Errorf("copying array %s of %s: %w", name, z, err)
		}
	}
	for s, w := range outs {
		err := zws[s].Close()
		if err == nil {
			err = bws[s].Flush()
		}
		if err != nil {
			abort()
			return fmt.Errorf("writing %s's %s rows: %w", strings.TrimSuffix(z, ".npz"), dataset.Split(s), err)
		}
		if err := w.Commit(); err != nil {
			abort()
			return err
		}
	}
	return nil
}
