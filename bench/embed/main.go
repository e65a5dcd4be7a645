// Command embed measures the embedding stage on the ViT-B/32-sized stand-in encoders (random
// weights; the same shapes and FLOPs as CLIP ViT-B/32): raw ONNX Runtime throughput on
// pre-decoded tensors and pre-tokenized captions, the embed stage's end-to-end throughput from
// JPEG bytes (decode, CLIP preprocessing, tokenizing, both encoders), and their ratio.
//
//	go run ./bench/embed [-rows 512] [-batch 32] [-size vit-b-32]
//
// Run `make setup` first (ONNX Runtime library, CLIP vocabulary, test photos).
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"image"
	"image/jpeg"
	_ "image/png"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/embed"
	"github.com/lemon-curation/lemon/embed/imageprep"
	"github.com/lemon-curation/lemon/embed/onnx"
	"github.com/lemon-curation/lemon/embed/standin"
	"github.com/lemon-curation/lemon/embed/tokenizer"
)

// memFormat serves rows from memory, so the benchmark measures embedding, not storage.
type memFormat struct{ rows []dataset.RawRecord }

func (memFormat) Name() string                        { return "mem" }
func (memFormat) Detect(context.Context, string) bool { return false }
func (f memFormat) Plan(context.Context, string, dataset.Options) ([]dataset.Shard, error) {
	return []dataset.Shard{{Rows: int64(len(f.rows))}}, nil
}
func (f memFormat) ReadRaw(_ context.Context, _ dataset.Shard, _ dataset.Options, emit func(dataset.RawRecord) error) error {
	for _, r := range f.rows {
		if err := emit(r); err != nil {
			return err
		}
	}
	return nil
}

func main() {
	rows := flag.Int("rows", 512, "rows per measurement")
	batch := flag.Int("batch", 32, "encoder batch size")
	size := flag.String("size", "vit-b-32", "stand-in size: tiny or vit-b-32")
	photos := flag.String("photos", "third_party/test-photos/skimage", "directory of test photos (scripts/fetch-test-photos.sh)")
	flag.Parse()

	jpegs := loadJPEGs(*photos)
	dir, err := os.MkdirTemp("", "lemon-embed-bench")
	check(err)
	defer os.RemoveAll(dir)
	check(standin.Write(dir, *size, 1))
	cfg := embed.Config{ImageModel: filepath.Join(dir, "image.onnx"), TextModel: filepath.Join(dir, "text.onnx"), BatchSize: *batch}
	e, err := embed.Open(cfg)
	check(err)
	defer e.Close()

	recs := make([]dataset.RawRecord, *rows)
	for i := range recs {
		recs[i] = dataset.RawRecord{Index: int64(i), ID: fmt.Sprint(i), Caption: fmt.Sprintf("a photo of thing number %d on a table", i), Image: jpegs[i%len(jpegs)]}
	}

	// Raw inference: the same encoder calls on tensors prepared beforehand.
	o := onnx.Options{BatchSize: *batch, IntraOpThreads: runtime.GOMAXPROCS(0)} // as embed.Open does
	img, err := onnx.NewImageEncoder(cfg.ImageModel, o)
	check(err)
	txt, err := onnx.NewTextEncoder(cfg.TextModel, o)
	check(err)
	prep := imageprep.DefaultConfig()
	prep.Size = img.Size()
	per := 3 * prep.Size * prep.Size
	pixels := make([]float32, *batch*per)
	for i := 0; i < *batch; i++ {
		check(imageprep.Preprocess(recs[i].Image, prep, pixels[i*per:(i+1)*per]))
	}
	vocab, err := tokenizer.DefaultVocabPath()
	check(err)
	tok, err := tokenizer.Load(vocab)
	check(err)
	caps := make([]string, *batch)
	for i := range caps {
		caps[i] = recs[i].Caption
	}
	tokens := tok.TokenizeBatch(caps, txt.ContextLength())
	img.Encode(pixels, *batch) // warm up
	txt.Encode(tokens, *batch)
	start := time.Now()
	for done := 0; done < *rows; done += *batch {
		_, err := img.Encode(pixels, *batch)
		check(err)
		_, err = txt.Encode(tokens, *batch)
		check(err)
	}
	raw := float64(*rows) / time.Since(start).Seconds()
	img.Close()
	txt.Close()

	// End to end: JPEG bytes and caption strings in, embeddings out.
	f := memFormat{rows: recs}
	start = time.Now()
	n := 0
	check(e.Shard(context.Background(), f, dataset.Shard{Rows: int64(*rows)}, dataset.Options{}, func(r embed.Embedded) error {
		if r.Err != "" {
			return fmt.Errorf("row %s: %s", r.Record.ID, r.Err)
		}
		n++
		return nil
	}))
	e2e := float64(n) / time.Since(start).Seconds()

	host, _ := os.Hostname()
	fmt.Printf("embed stage benchmark, %s stand-in encoders (random weights), batch %d, %d rows, %d cores (%s), ONNX Runtime %s, %s\n\n",
		*size, *batch, *rows, runtime.NumCPU(), host, onnx.RuntimeVersion(), time.Now().Format("2006-01-02"))
	fmt.Printf("| measurement | pairs/s |\n| --- | --- |\n")
	fmt.Printf("| raw ONNX Runtime (image + text encoders, pre-decoded tensors) | %.1f |\n", raw)
	fmt.Printf("| end to end from JPEG bytes (decode, preprocess, tokenize, encode) | %.1f |\n", e2e)
	fmt.Printf("| ratio end-to-end / raw | %.2f |\n", e2e/raw)
}

// loadJPEGs re-encodes the colour test photos as JPEG (quality 90), like a web crawl's images.
func loadJPEGs(dir string) [][]byte {
	var out [][]byte
	for _, name := range []string{"astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg", "hubble_deep_field.jpg", "immunohistochemistry.png", "color.png"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		im, _, err := image.Decode(bytes.NewReader(b))
		if err != nil {
			continue
		}
		var buf bytes.Buffer
		check(jpeg.Encode(&buf, im, &jpeg.Options{Quality: 90}))
		out = append(out, buf.Bytes())
	}
	if len(out) == 0 {
		log.Fatalf("no test photos in %s: run scripts/fetch-test-photos.sh", dir)
	}
	return out
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
