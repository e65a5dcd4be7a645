// Package embed turns images and captions into CLIP embeddings: it decodes and preprocesses
// images (embed/imageprep), tokenizes captions (embed/tokenizer) and runs the user's ONNX
// encoders (embed/onnx) in batches, decoding the next batch on every core while the current
// one is in the encoder, so decoding never starves the model.
package embed

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/embed/imageprep"
	"github.com/lemon-curation/lemon/embed/onnx"
	"github.com/lemon-curation/lemon/embed/tokenizer"
)

// Config names the encoders and how to run them.
type Config struct {
	ImageModel string `yaml:"image_model" json:"image_model"`
	TextModel  string `yaml:"text_model" json:"text_model"`
	Vocab      string `yaml:"vocab" json:"vocab,omitempty"` // "" = tokenizer.DefaultVocabPath()
	Device     string `yaml:"device" json:"device"`         // cpu or cuda
	BatchSize  int    `yaml:"batch_size" json:"batch_size"`
	Threads    int    `yaml:"threads" json:"threads"` // ONNX Runtime intra-op threads; 0 = all cores
	// NoSpinning: ONNX Runtime's threads sleep instead of spinning when out of work (onnx.Options).
	NoSpinning bool `yaml:"no_spinning" json:"no_spinning,omitempty"`
	// DecodeWorkers decode and preprocess images in parallel; 0 = all cores.
	DecodeWorkers int `yaml:"decode_workers" json:"decode_workers"`
	// ApplyEXIFOrientation rotates JPEGs by their EXIF tag (CLIP's reference does not).
	ApplyEXIFOrientation bool `yaml:"apply_exif_orientation" json:"apply_exif_orientation"`
}

// Enabled reports whether encoders are configured.
func (c Config) Enabled() bool { return c.ImageModel != "" || c.TextModel != "" }

// Embedder holds open encoder sessions. Open it once per worker (a DoFn's Setup).
type Embedder struct {
	cfg  Config
	img  *onnx.ImageEncoder
	txt  *onnx.TextEncoder
	tok  *tokenizer.Tokenizer
	prep imageprep.Config
	dim  int
}

// Open loads both encoders and the tokenizer and checks that they fit together, before any
// data is read.
func Open(cfg Config) (*Embedder, error) {
	if cfg.ImageModel == "" || cfg.TextModel == "" {
		return nil, fmt.Errorf("embedding needs both --image-model and --text-model")
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 64
	}
	if cfg.DecodeWorkers <= 0 {
		cfg.DecodeWorkers = runtime.GOMAXPROCS(0)
	}
	if cfg.Threads <= 0 {
		// ONNX Runtime's own default counts physical cores, which leaves SMT siblings (and
		// small VMs' second CPU) idle.
		cfg.Threads = runtime.GOMAXPROCS(0)
	}
	o := onnx.Options{Device: cfg.Device, IntraOpThreads: cfg.Threads, NoSpinning: cfg.NoSpinning, BatchSize: cfg.BatchSize}
	img, err := onnx.NewImageEncoder(cfg.ImageModel, o)
	if err != nil {
		return nil, err
	}
	txt, err := onnx.NewTextEncoder(cfg.TextModel, o)
	if err != nil {
		img.Close()
		return nil, err
	}
	if img.Dim() != txt.Dim() {
		img.Close()
		txt.Close()
		return nil, fmt.Errorf("embedding dimensions differ: %s gives %d, %s gives %d", cfg.ImageModel, img.Dim(), cfg.TextModel, txt.Dim())
	}
	vocab := cfg.Vocab
	if vocab == "" {
		if vocab, err = tokenizer.DefaultVocabPath(); err != nil {
			img.Close()
			txt.Close()
			return nil, err
		}
	}
	tok, err := tokenizer.Load(vocab)
	if err != nil {
		img.Close()
		txt.Close()
		return nil, err
	}
	prep := imageprep.DefaultConfig()
	prep.Size = img.Size()
	prep.ApplyEXIFOrientation = cfg.ApplyEXIFOrientation
	return &Embedder{cfg: cfg, img: img, txt: txt, tok: tok, prep: prep, dim: img.Dim()}, nil
}

// Dim is the embedding dimension.
func (e *Embedder) Dim() int { return e.dim }

// Close releases the sessions.
func (e *Embedder) Close() {
	e.img.Close()
	e.txt.Close()
}

// Embedded is one row after embedding: vectors as the encoders gave them (not normalised),
// or the reason the row could not be embedded.
type Embedded struct {
	Record dataset.RawRecord
	Image  []float32
	Text   []float32
	Err    string
}

type batch struct {
	recs   []dataset.RawRecord
	errs   []string
	pixels []float32
	tokens []int64
	ok     []int // indexes of recs that preprocessed
	out    []Embedded
	err    error
}

// MaxCaptionBytes is how much of a caption is kept: CLIP reads 77 tokens, which text spells in
// a few hundred bytes (a token is a word piece, a digit or a punctuation run, 1 to about 30
// bytes), while tokenizing a 100 MB caption took 6 GB. Only text whose first 76 tokens span more
// than this (long runs of spaces, or one "word" this long) tokenizes differently when cut.
const MaxCaptionBytes = 8 << 10

// CapCaption is caption cut to at most MaxCaptionBytes, at a character boundary, in memory of
// its own (so the rest of a long caption can be freed).
func CapCaption(caption string) string {
	if len(caption) <= MaxCaptionBytes {
		return caption
	}
	n := MaxCaptionBytes
	for n > 0 && !utf8.RuneStart(caption[n]) {
		n--
	}
	return strings.Clone(caption[:n])
}

// Shard embeds every row of a raw shard and calls emit for each, in input order, from the
// calling goroutine (so emit may be a Beam emitter). Reading, preprocessing and inference run
// concurrently. Captions are cut by CapCaption as they are read: the tokenizer, and everything
// downstream of the record (scores, lemon embed's metadata), see the cut caption.
func (e *Embedder) Shard(ctx context.Context, f dataset.RawFormat, sh dataset.Shard, o dataset.Options, emit func(Embedded) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	read := make(chan *batch, 1)
	prepped := make(chan *batch, 1)
	done := make(chan *batch, 1)
	var readErr error
	go func() {
		defer close(read)
		cur := &batch{}
		readErr = f.ReadRaw(ctx, sh, o, func(r dataset.RawRecord) error {
			r.Caption = CapCaption(r.Caption)
			cur.recs = append(cur.recs, r)
			if len(cur.recs) == e.cfg.BatchSize {
				select {
				case read <- cur:
				case <-ctx.Done():
					return ctx.Err()
				}
				cur = &batch{}
			}
			return nil
		})
		if readErr == nil && len(cur.recs) > 0 {
			select {
			case read <- cur:
			case <-ctx.Done():
			}
		}
	}()
	go func() {
		defer close(prepped)
		for b := range read {
			e.preprocess(b)
			select {
			case prepped <- b:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		defer close(done)
		for b := range prepped {
			e.infer(b)
			select {
			case done <- b:
			case <-ctx.Done():
				return
			}
		}
	}()
	for b := range done {
		if b.err != nil {
			return b.err
		}
		for _, r := range b.out {
			if err := emit(r); err != nil {
				return err
			}
		}
	}
	return readErr
}

// preprocess decodes the batch's images on all decode workers and tokenizes its captions.
func (e *Embedder) preprocess(b *batch) {
	n := len(b.recs)
	s := e.prep.Size
	per := 3 * s * s
	pixels := make([]float32, n*per)
	b.errs = make([]string, n)
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < e.cfg.DecodeWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				r := b.recs[i]
				if r.Err != "" {
					b.errs[i] = r.Err
					continue
				}
				if err := imageprep.Preprocess(r.Image, e.prep, pixels[i*per:(i+1)*per]); err != nil {
					b.errs[i] = "image: " + err.Error()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	var captions []string
	for i := range b.recs {
		if b.errs[i] == "" {
			b.ok = append(b.ok, i)
			captions = append(captions, b.recs[i].Caption)
		}
	}
	// Pack the good rows' pixels together for the encoder.
	b.pixels = pixels[:0]
	for j, i := range b.ok {
		if j != i {
			copy(pixels[j*per:(j+1)*per], pixels[i*per:(i+1)*per])
		}
	}
	b.pixels = pixels[:len(b.ok)*per]
	b.tokens = e.tok.TokenizeBatch(captions, e.txt.ContextLength())
}

// infer runs both encoders on the batch's good rows.
func (e *Embedder) infer(b *batch) {
	b.out = make([]Embedded, len(b.recs))
	for i, r := range b.recs {
		b.out[i] = Embedded{Record: r, Err: b.errs[i]}
	}
	n := len(b.ok)
	if n == 0 {
		return
	}
	imgs, err := e.img.Encode(b.pixels, n)
	if err != nil {
		b.err = fmt.Errorf("image encoder: %w", err)
		return
	}
	txts, err := e.txt.Encode(b.tokens, n)
	if err != nil {
		b.err = fmt.Errorf("text encoder: %w", err)
		return
	}
	d := e.dim
	for j, i := range b.ok {
		b.out[i].Image = imgs[j*d : (j+1)*d]
		b.out[i].Text = txts[j*d : (j+1)*d]
	}
}
