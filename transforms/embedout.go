package transforms

import (
	"bytes"
	"context"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/embed"
	"github.com/lemon-curation/lemon/internal/npy"
	"github.com/lemon-curation/lemon/rundir"
	"github.com/lemon-curation/lemon/storage"
)

// EmbedOutput says where `lemon embed` writes and how.
type EmbedOutput struct {
	Dir   string
	Dtype string // "<f4" or "<f2"
}

// WriteEmbeddings embeds every shard of a raw dataset and writes it in the clip-retrieval
// layout (img_emb/img_emb_N.npy, text_emb/text_emb_N.npy, metadata/metadata_N.parquet with
// key and caption, embeddings L2-normalised), plus errors/part-N.parquet for rows that could
// not be embedded. Each shard is one element, written by one worker, atomically. It returns
// each shard's counts (Kept = rows embedded).
func WriteEmbeddings(s beam.Scope, in Input, ec embed.Config, out EmbedOutput) beam.PCollection {
	s = s.Scope("WriteEmbeddings")
	shards := beam.Reshuffle(s, beam.CreateList(s, shardIndexes(in)))
	return beam.ParDo(s, &writeEmbeddingsFn{Input: in, Embed: ec, Out: out}, shards)
}

type writeEmbeddingsFn struct {
	Input Input
	Embed embed.Config
	Out   EmbedOutput
	emb   *embed.Embedder
}

func (fn *writeEmbeddingsFn) Setup() error {
	e, err := embed.Open(fn.Embed)
	fn.emb = e
	return err
}

func (fn *writeEmbeddingsFn) Teardown() {
	if fn.emb != nil {
		fn.emb.Close()
	}
}

func (fn *writeEmbeddingsFn) ProcessElement(ctx context.Context, shard int32) (Counts, error) {
	in := fn.Input
	sh := in.Shards[shard]
	f, err := dataset.GetRaw(in.Format)
	if err != nil {
		return Counts{}, err
	}
	var imgs, txts []float32
	var ids, caps, errIDs, errCaps, reasons []string
	var errRows []int64
	meter := embedMeter("", in.Rows())
	meter.Begin()
	defer meter.End()
	err = fn.emb.Shard(ctx, f, sh, in.Options, func(e embed.Embedded) error {
		meter.Add(1)
		reason := rowFault(e.Err, e.Image, e.Text)
		if reason != "" {
			errIDs, errCaps, reasons, errRows = append(errIDs, e.Record.ID), append(errCaps, e.Record.Caption), append(reasons, reason), append(errRows, e.Record.Index)
			return nil
		}
		imgs, txts = append(imgs, e.Image...), append(txts, e.Text...)
		ids, caps = append(ids, e.Record.ID), append(caps, e.Record.Caption)
		return nil
	})
	if err != nil {
		return Counts{}, fmt.Errorf("%s: %w", in.File(shard), err)
	}
	n, d := len(ids), fn.emb.Dim()
	for _, side := range []struct {
		dir  string
		data []float32
	}{{rundir.ImageEmbDir, imgs}, {rundir.TextEmbDir, txts}} {
		var buf bytes.Buffer
		if err := npy.Write(&buf, n, d, side.data, fn.Out.Dtype); err != nil {
			return Counts{}, err
		}
		p := storage.Join(fn.Out.Dir, side.dir, fmt.Sprintf("%s_%d.npy", side.dir, shard))
		if err := storage.WriteFile(ctx, p, buf.Bytes()); err != nil {
			return Counts{}, err
		}
	}
	meta := stringBatch([]string{"key", "caption"}, [][]string{ids, caps}, nil)
	err = metadata.WriteParquet(ctx, storage.Join(fn.Out.Dir, rundir.MetadataDir, fmt.Sprintf("metadata_%d.parquet", shard)), meta.Schema(), meta)
	meta.Release()
	if err != nil {
		return Counts{}, err
	}
	errs := stringBatch([]string{"key", "caption", "reason"}, [][]string{errIDs, errCaps, reasons}, &int64Column{"row", errRows})
	err = metadata.WriteParquet(ctx, storage.Join(fn.Out.Dir, rundir.ErrorsDir, rundir.PartFile(int(shard), "parquet")), errs.Schema(), errs)
	errs.Release()
	if err != nil {
		return Counts{}, err
	}
	logf("lemon: embedded shard %d/%d (%s): %d rows, %d could not be embedded", shard+1, len(in.Shards), in.File(shard), n+len(errIDs), len(errIDs))
	return Counts{RowsIn: sh.Rows, Kept: int64(n), Errors: int64(len(errIDs))}, nil
}

type int64Column struct {
	name string
	v    []int64
}

func stringBatch(names []string, cols [][]string, extra *int64Column) arrow.RecordBatch {
	var fields []arrow.Field
	var arrs []arrow.Array
	for i, name := range names {
		b := array.NewStringBuilder(memory.DefaultAllocator)
		b.AppendValues(cols[i], nil)
		arrs = append(arrs, b.NewArray())
		b.Release()
		fields = append(fields, arrow.Field{Name: name, Type: arrow.BinaryTypes.String})
	}
	if extra != nil {
		b := array.NewInt64Builder(memory.DefaultAllocator)
		b.AppendValues(extra.v, nil)
		arrs = append(arrs, b.NewArray())
		b.Release()
		fields = append(fields, arrow.Field{Name: extra.name, Type: arrow.PrimitiveTypes.Int64})
	}
	n := int64(0)
	if len(cols) > 0 {
		n = int64(len(cols[0]))
	}
	rec := array.NewRecordBatch(arrow.NewSchema(fields, nil), arrs, n)
	for _, a := range arrs {
		a.Release()
	}
	return rec
}

// EmbedManifest is manifest.json of a `lemon embed` run. Its life is a scoring run's (package
// rundir): Running from the launcher, Complete from the job's last stage (WriteEmbedManifest).
type EmbedManifest struct {
	rundir.Header
	Embed    embed.Config      `json:"embed"`
	Dtype    string            `json:"dtype"`
	Counts   map[string]int64  `json:"counts"` // rows_in = embedded + errors
	Versions map[string]string `json:"versions"`
}

// WriteEmbedManifest sums the shards' counts and finishes the embed run in dir: its manifest
// says Complete, with the counts, only after every shard is written.
func WriteEmbedManifest(s beam.Scope, m EmbedManifest, dir string, counts beam.PCollection) {
	s = s.Scope("WriteEmbedManifest")
	total := beam.Combine(s, &sumCountsFn{}, counts)
	beam.ParDo0(s, &writeEmbedManifestFn{Manifest: m, Dir: dir}, total)
}

type writeEmbedManifestFn struct {
	Manifest EmbedManifest
	Dir      string
}

func (fn *writeEmbedManifestFn) ProcessElement(ctx context.Context, c Counts) error {
	if c.RowsIn != c.Kept+c.Errors {
		return fmt.Errorf("internal error: rows_in %d != embedded %d + errors %d", c.RowsIn, c.Kept, c.Errors)
	}
	m := fn.Manifest
	m.Counts = map[string]int64{"rows_in": c.RowsIn, "embedded": c.Kept, "errors": c.Errors}
	return rundir.Finish(ctx, fn.Dir, &m)
}
