package webdataset

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/img2parquet/pqsplit"
	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/storage"
)

// WriteSplits writes outDir/kept/NAME.tar, outDir/rejected/NAME.tar and outDir/errors/NAME.tar
// (NAME.tar being the input tar's name; a .tar.gz or .tgz input gives gzip-compressed outputs
// of its own name), each holding the samples routed there, in input order, with every member
// copied byte for byte under its own header (name, mode, owner, times). No member is added: a
// sample's scores go in the Parquet beside the tar, not into the tar.
// outDir/errors/SHARD.reasons.csv (ReasonsFile) says why each error row is there: key and
// reason, for the errors tar's samples in tar order, then for the rows without a sample.
// When the input tar has its Parquet, SHARD.parquet is written beside each output tar with the
// rows of that split's samples (matched by the key column, in the Parquet's order) and the
// columns lemon_d_mm, lemon_s_n, lemon_s_m and lemon_score, or reason for errors. Parquet rows
// whose key is no sample of the tar (img2dataset's failed downloads) are rows of their own, the
// shard's last (their outcomes follow the samples'), always errors: they go to
// errors/SHARD.parquet and the reasons file. All files are written, empty ones included, and
// appear only once complete.
func (f Format) WriteSplits(ctx context.Context, sh dataset.Shard, o dataset.Options, outDir string, outcomes []dataset.Outcome) error {
	in := sh.Files["tar"]
	if int64(len(outcomes)) != sh.Rows {
		return fmt.Errorf("%s: %d outcomes for a shard of %d rows", in, len(outcomes), sh.Rows)
	}
	name := storage.Base(in)
	var outs [3]*tarOut
	abort := func() {
		for _, t := range outs {
			if t != nil {
				t.out.Abort()
			}
		}
	}
	for s := range outs {
		p := storage.Join(outDir, dataset.Split(s).String(), name)
		w, err := storage.Create(ctx, p)
		if err != nil {
			abort()
			return err
		}
		t := &tarOut{out: w, buf: bufio.NewWriterSize(w, 1<<20), p: p}
		var to io.Writer = t.buf
		if gzipped(in) {
			// Images barely compress: a faster level loses little.
			t.zw, _ = gzip.NewWriterLevel(t.buf, gzip.BestSpeed)
			to = t.zw
		}
		t.tw = tar.NewWriter(to)
		outs[s] = t
	}
	// Why each sample in errors/ is there, in tar order.
	var reasons bytes.Buffer
	rw := csv.NewWriter(&reasons)
	rw.Write([]string{"key", "reason"})
	// Each key's outcome, for the Parquet rows: a key's first sample decides.
	byKey := map[string]*dataset.Outcome{}
	n := 0
	err := scan(ctx, in, true, func(s *sample) error {
		if n >= len(outcomes) {
			return fmt.Errorf("%s has more samples than the %d planned: it changed since the job was planned", in, sh.Rows)
		}
		t := outs[outcomes[n].Split]
		for _, m := range s.members {
			if err := t.tw.WriteHeader(m.hdr); err != nil {
				return fmt.Errorf("writing %s: member %q: %w", t.p, m.hdr.Name, err)
			}
			if _, err := t.tw.Write(m.data); err != nil {
				return fmt.Errorf("writing %s: %w", t.p, err)
			}
		}
		if outcomes[n].Split == dataset.Errors {
			rw.Write([]string{s.key, outcomes[n].Reason})
		}
		if _, ok := byKey[s.key]; !ok {
			byKey[s.key] = &outcomes[n]
		}
		n++
		return nil
	})
	var listed []listedRow
	var extra []int // the listed rows that are no sample, each a row of the shard after them
	if err == nil && sh.Files["parquet"] != "" {
		listed, err = readListed(ctx, sh.Files["parquet"], in)
		keys := map[string]bool{}
		for k := range byKey {
			keys[k] = true
		}
		extra = unmatched(listed, keys)
	}
	if err == nil && n+len(extra) != len(outcomes) {
		err = fmt.Errorf("%s has %d samples and %d rows without one, %d planned: it changed since the job was planned", in, n, len(extra), sh.Rows)
	}
	for j, i := range extra {
		if err != nil {
			break
		}
		o := outcomes[n+j]
		if o.Split != dataset.Errors {
			err = fmt.Errorf("internal error: %s: row %d (%q, no sample in the tar) routed to %s, want errors", in, n+j, listed[i].key, o.Split)
		}
		rw.Write([]string{listed[i].key, o.Reason})
	}
	if err != nil {
		abort()
		return err
	}
	for _, t := range outs {
		if err := t.finish(); err != nil {
			abort()
			return fmt.Errorf("writing %s: %w", t.p, err)
		}
	}
	rw.Flush()
	var pw *pqsplit.Writer
	if pq := sh.Files["parquet"]; pq != "" {
		// Each Parquet row's outcome: its sample's, or its own after the samples'.
		route := make([]*dataset.Outcome, len(listed))
		j := 0
		for i, l := range listed {
			if o := byKey[l.key]; l.keyOK && o != nil {
				route[i] = o
			} else {
				route[i] = &outcomes[n+j]
				j++
			}
		}
		if pw, err = splitParquet(ctx, pq, outDir, shardName(in)+".parquet", route); err != nil {
			abort()
			return err
		}
	}
	// Parquet and reasons first: a tar without them would be the worse half-state.
	if pw != nil {
		if err := pw.Commit(); err != nil {
			abort()
			return err
		}
	}
	if err := storage.WriteFile(ctx, storage.Join(outDir, dataset.Errors.String(), ReasonsFile(shardName(in))), reasons.Bytes()); err != nil {
		abort()
		return err
	}
	for i, t := range outs {
		if err := t.out.Commit(); err != nil {
			outs[i] = nil
			abort()
			return err
		}
		outs[i] = nil
	}
	return nil
}

type tarOut struct {
	out *storage.Writer
	buf *bufio.Writer
	zw  *gzip.Writer // nil for a plain tar
	tw  *tar.Writer
	p   string
}

// finish completes the tar (and its gzip stream) in the buffer and flushes it to the file.
func (t *tarOut) finish() error {
	if err := t.tw.Close(); err != nil {
		return err
	}
	if t.zw != nil {
		if err := t.zw.Close(); err != nil {
			return err
		}
	}
	return t.buf.Flush()
}

// ReasonsFile is the name of the file in errors/ that says, for the shard of that name, why each
// sample of its errors tar is there: a CSV of key and reason, in the tar's order.
func ReasonsFile(shard string) string { return shard + ".reasons.csv" }

// splitParquet routes the rows of the Parquet beside a tar, row i where route[i] says; the
// caller commits or aborts the writer.
func splitParquet(ctx context.Context, pq, outDir, name string, route []*dataset.Outcome) (*pqsplit.Writer, error) {
	pf, err := metadata.OpenParquet(ctx, pq)
	if err != nil {
		return nil, err
	}
	rr, err := pf.Records(ctx, nil)
	if err != nil {
		pf.Close()
		return nil, err
	}
	defer rr.Release()
	var paths [3]string
	for s := range paths {
		paths[s] = storage.Join(outDir, dataset.Split(s).String(), name)
	}
	pw, err := pqsplit.Create(ctx, paths, rr.Schema(), pqsplit.Options{})
	if err != nil {
		return nil, err
	}
	if err := routeRows(ctx, pq, rr, pw, route); err != nil {
		pw.Abort()
		return nil, err
	}
	return pw, nil
}

func routeRows(ctx context.Context, pq string, rr array.RecordReader, pw *pqsplit.Writer, route []*dataset.Outcome) error {
	var n int
	for rr.Next() {
		rec := rr.RecordBatch()
		k := int(rec.NumRows())
		if n+k > len(route) {
			return fmt.Errorf("%s has more rows than the %d read before: it changed while being read", pq, len(route))
		}
		if err := pw.Write(ctx, rec, route[n:n+k]); err != nil {
			return err
		}
		n += k
	}
	if err := rr.Err(); err != nil {
		return fmt.Errorf("%s: %w", pq, err)
	}
	if n != len(route) {
		return fmt.Errorf("%s has %d rows, %d read before: it changed while being read", pq, n, len(route))
	}
	return nil
}
