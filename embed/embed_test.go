package embed_test

import (
	"context"
	"runtime"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/rawtest/samples"
	"github.com/lemon-curation/lemon/embed"
	"github.com/lemon-curation/lemon/embed/onnx/onnxtest"
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
