package embed_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/rawtest/samples"
	"github.com/lemon-curation/lemon/embed"
	"github.com/lemon-curation/lemon/embed/onnx/onnxtest"
	"github.com/lemon-curation/lemon/embed/quantize"
)

func TestCapCaption(t *testing.T) {
	short := strings.Repeat("a", embed.MaxCaptionBytes)
	if got := embed.CapCaption(short); got != short {
		t.Fatalf("a caption of exactly MaxCaptionBytes was cut to %d bytes", len(got))
	}
	// "é" is two bytes: after an "x", byte MaxCaptionBytes is the second byte of one.
	long := "x" + strings.Repeat("é", embed.MaxCaptionBytes)
	got := embed.CapCaption(long)
	if len(got) != embed.MaxCaptionBytes-1 || !utf8.ValidString(got) || !strings.HasPrefix(long, got) {
		t.Fatalf("cut to %d bytes (valid UTF-8 %v), want the first %d", len(got), utf8.ValidString(got), embed.MaxCaptionBytes-1)
	}
	even := strings.Repeat("é", embed.MaxCaptionBytes)
	if got := embed.CapCaption(even); len(got) != embed.MaxCaptionBytes || !utf8.ValidString(got) {
		t.Fatalf("cut to %d bytes, want %d", len(got), embed.MaxCaptionBytes)
	}
}

// rows is a raw format of fixed records, for feeding Shard.
type rows []dataset.RawRecord

func (rows) Name() string                                                           { return "rows" }
func (rows) Detect(context.Context, string) bool                                    { return false }
func (rows) Plan(context.Context, string, dataset.Options) ([]dataset.Shard, error) { return nil, nil }
func (r rows) ReadRaw(_ context.Context, _ dataset.Shard, _ dataset.Options, emit func(dataset.RawRecord) error) error {
	for _, rec := range r {
		if err := emit(rec); err != nil {
			return err
		}
	}
	return nil
}

// A 64 MB one-word caption once went whole into the tokenizer (a 100 MB one took 6 GB). Now it
// is cut first: the row embeds as its first MaxCaptionBytes do, without the memory.
func TestHugeCaptionIsCutBeforeTokenizing(t *testing.T) {
	img, txt := onnxtest.TinyEncoders(t)
	e, err := embed.Open(embed.Config{ImageModel: img, TextModel: txt, BatchSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	png := samples.PNG(8, 8, 1)
	huge := strings.Repeat("a", 64<<20)
	in := rows{
		{Index: 0, ID: "huge", Caption: huge, Image: png},
		{Index: 1, ID: "cut", Caption: huge[:embed.MaxCaptionBytes], Image: png},
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var out []embed.Embedded
	err = e.Shard(context.Background(), in, dataset.Shard{Rows: 2}, dataset.Options{}, func(r embed.Embedded) error {
		r.Text = slices.Clone(r.Text)
		out = append(out, r)
		return nil
	})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[0].Err != "" || out[1].Err != "" {
		t.Fatalf("embedded %+v", out)
	}
	if len(out[0].Record.Caption) != embed.MaxCaptionBytes {
		t.Errorf("the record's caption has %d bytes, want the cut %d", len(out[0].Record.Caption), embed.MaxCaptionBytes)
	}
	if !slices.Equal(out[0].Text, out[1].Text) {
		t.Error("the huge caption's text embedding differs from that of its first MaxCaptionBytes")
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
		t.Errorf("embedding allocated %d MB, more than the caption itself", alloc>>20)
	}
}

// Embeddings are byte-identical whatever the decode workers and encoder threads, for float32
// encoders and for the int8 ones lemon quantize writes (integer products are exact, and each
// row's float arithmetic does not depend on how the work is split).
func TestWorkerCountsDoNotChangeEmbeddings(t *testing.T) {
	img, txt := onnxtest.TinyEncoders(t)
	dir := t.TempDir()
	img8, txt8 := filepath.Join(dir, "image.int8.onnx"), filepath.Join(dir, "text.int8.onnx")
	for _, p := range [][2]string{{img, img8}, {txt, txt8}} {
		if _, err := quantize.File(context.Background(), p[0], p[1], quantize.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	var in rows
	for i := range 23 {
		pic := samples.JPEG(40+7*i, 300-5*i, i)
		if i%3 == 0 {
			pic = samples.PNG(250, 90+i, i)
		}
		in = append(in, dataset.RawRecord{Index: int64(i), ID: fmt.Sprint(i), Caption: fmt.Sprintf("photo %d of a thing", i), Image: pic})
	}
	embedAll := func(img, txt string, decoders, threads int) []embed.Embedded {
		e, err := embed.Open(embed.Config{ImageModel: img, TextModel: txt, BatchSize: 8, DecodeWorkers: decoders, Threads: threads})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		var out []embed.Embedded
		err = e.Shard(context.Background(), in, dataset.Shard{Rows: int64(len(in))}, dataset.Options{}, func(r embed.Embedded) error {
			if r.Err != "" {
				return fmt.Errorf("row %s: %s", r.Record.ID, r.Err)
			}
			out = append(out, r)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	for _, m := range []struct{ name, img, txt string }{{"float32", img, txt}, {"int8", img8, txt8}} {
		want := embedAll(m.img, m.txt, 1, 1)
		for _, c := range [][2]int{{3, 1}, {1, 2}, {4, 2}} {
			got := embedAll(m.img, m.txt, c[0], c[1])
			for i := range want {
				if !slices.Equal(got[i].Image, want[i].Image) || !slices.Equal(got[i].Text, want[i].Text) {
					t.Errorf("%s, %d decode workers and %d threads: row %d differs from 1 and 1", m.name, c[0], c[1], i)
				}
			}
		}
	}
}
