// Command embed measures the embedding stage on the ViT-B/32-sized stand-in encoders (random
// weights; the same shapes and FLOPs as CLIP ViT-B/32): raw ONNX Runtime throughput on
// pre-decoded tensors and pre-tokenized captions, the embed stage's end-to-end throughput from
// JPEG bytes (decode, CLIP preprocessing, tokenizing, both encoders), and their ratio; then the
// same for the int8 encoders that 'lemon quantize' writes from them, their speed-up over
// float32, and the cosine between int8 and float32 embeddings of real photos and captions.
//
//	go run ./bench/embed [-rows 512] [-batch 32] [-size vit-b-32] [-int8=false] [-models DIR] [-sweep] [-nospin]
//
// -models DIR measures your own exported encoders (DIR/image.onnx, DIR/text.onnx, as
// deploy/export writes them) instead of stand-ins: the int8 cosine of a trained CLIP. -sweep
// first measures raw ONNX Runtime over batch sizes and intra-op thread counts. -nospin also
// measures float32 with ONNX Runtime's threads sleeping instead of spinning when out of work.
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
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/embed"
	"github.com/lemon-curation/lemon/embed/imageprep"
	"github.com/lemon-curation/lemon/embed/onnx"
	"github.com/lemon-curation/lemon/embed/quantize"
	"github.com/lemon-curation/lemon/embed/standin"
	"github.com/lemon-curation/lemon/embed/tokenizer"
	"github.com/lemon-curation/lemon/score"
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
	rounds := flag.Int("rounds", 3, "rounds of every measurement, interleaved; the best of each is reported (less noise from other load)")
	size := flag.String("size", "vit-b-32", "stand-in size: tiny or vit-b-32")
	photos := flag.String("photos", "third_party/test-photos/skimage", "directory of test photos (scripts/fetch-test-photos.sh)")
	int8 := flag.Bool("int8", true, "also measure the int8 encoders (lemon quantize) against float32")
	sweep := flag.Bool("sweep", false, "first measure raw ONNX Runtime at batch sizes 8 to 128 and 1 to all intra-op threads (for choosing --batch-size and --threads)")
	noSpin := flag.Bool("nospin", false, "also measure float32 with ONNX Runtime's threads sleeping instead of spinning when out of work (embed.Config.NoSpinning)")
	models := flag.String("models", "", "directory holding image.onnx and text.onnx to measure instead of stand-ins")
	flag.Parse()

	jpegs := loadJPEGs(*photos)
	dir, err := os.MkdirTemp("", "lemon-embed-bench")
	check(err)
	defer os.RemoveAll(dir)
	f32 := pair{filepath.Join(*models, "image.onnx"), filepath.Join(*models, "text.onnx")}
	what := "encoders in " + *models
	if *models == "" {
		check(standin.Write(dir, *size, 1))
		f32 = pair{filepath.Join(dir, "image.onnx"), filepath.Join(dir, "text.onnx")}
		what = *size + " stand-in encoders (random weights)"
	}
	q8 := pair{filepath.Join(dir, "image.int8.onnx"), filepath.Join(dir, "text.int8.onnx")}
	if *int8 {
		for _, p := range [][2]string{{f32.image, q8.image}, {f32.text, q8.text}} {
			_, err := quantize.File(context.Background(), p[0], p[1], quantize.Options{})
			check(err)
		}
	}

	recs := make([]dataset.RawRecord, *rows)
	for i := range recs {
		recs[i] = dataset.RawRecord{Index: int64(i), ID: fmt.Sprint(i), Caption: fmt.Sprintf("a photo of thing number %d on a table", i), Image: jpegs[i%len(jpegs)].jpeg}
	}

	if *sweep {
		sweepRaw(f32, q8, *int8, recs, *rounds)
	}

	// Every measurement is set up first (sessions open, weights prepacked), then all run in
	// turn, round after round, so a burst of other load hits one round of each, not one kind.
	ms := []*measurement{
		{name: "raw ONNX Runtime (image + text encoders, pre-decoded tensors)", run: keepOpen(rawRun(f32, recs, *batch, runtime.GOMAXPROCS(0), false))},
		{name: "end to end from JPEG bytes (decode, preprocess, tokenize, encode)", run: endToEndRun(f32, recs, *batch, false)},
		{name: "decode, preprocess and tokenize alone (all cores, no encoder)", run: decodeRun(recs, *batch)},
	}
	if *int8 {
		ms = append(ms,
			&measurement{name: "raw ONNX Runtime, int8 encoders (lemon quantize)", run: keepOpen(rawRun(q8, recs, *batch, runtime.GOMAXPROCS(0), false))},
			&measurement{name: "end to end from JPEG bytes, int8 encoders", run: endToEndRun(q8, recs, *batch, false)})
	}
	if *noSpin {
		ms = append(ms,
			&measurement{name: "raw ONNX Runtime, threads not spinning", run: keepOpen(rawRun(f32, recs, *batch, runtime.GOMAXPROCS(0), true))},
			&measurement{name: "end to end from JPEG bytes, threads not spinning", run: endToEndRun(f32, recs, *batch, true)})
	}
	for range *rounds {
		for _, m := range ms {
			start, cpu := time.Now(), cpuTime()
			n := m.run()
			m.best = max(m.best, float64(n)/time.Since(start).Seconds())
			perPair := (cpuTime() - cpu).Seconds() * 1000 / float64(n)
			if m.cpu == 0 || perPair < m.cpu {
				m.cpu = perPair
			}
		}
	}

	host, _ := os.Hostname()
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("embed stage benchmark, %s, batch %d, %d rows, best of %d rounds, %d cores (%s, load average %s), ONNX Runtime %s, %s\n\n",
		what, *batch, *rows, *rounds, runtime.NumCPU(), host, strings.Join(strings.Fields(string(load))[:3], " "), onnx.RuntimeVersion(), time.Now().Format("2006-01-02"))
	// CPU time per pair, unlike wall time, hardly moves with other load on the machine: where
	// end to end costs more than raw plus decoding, the difference is overhead (threads spinning
	// or waiting on one another), not other processes.
	fmt.Printf("| measurement | pairs/s | CPU ms per pair (this process, all threads) |\n| --- | --- | --- |\n")
	for _, m := range ms {
		fmt.Printf("| %s | %.1f | %.1f |\n", m.name, m.best, m.cpu)
	}
	raw, e2e, dec := ms[0].best, ms[1].best, ms[2].best
	fmt.Printf("| CPU per pair, end to end / (raw + decoding) | | %.2f |\n", ms[1].cpu/(ms[0].cpu+ms[2].cpu))
	fmt.Printf("| ratio end-to-end / raw | %.2f | |\n", e2e/raw)
	// Decoding and encoding share the cores: even perfectly overlapped, a pair costs
	// 1/raw + 1/dec of the machine's time, so end to end cannot beat dec/(raw+dec) of raw.
	fmt.Printf("| ceiling of that ratio when decoding shares the cores, dec/(raw+dec) | %.2f | |\n", dec/(raw+dec))
	if *noSpin {
		r, e := ms[len(ms)-2], ms[len(ms)-1]
		fmt.Printf("| ratio end-to-end / raw, threads not spinning | %.2f | |\n", e.best/r.best)
		fmt.Printf("| not spinning / spinning, end to end | %.2f | |\n", e.best/e2e)
		fmt.Printf("| CPU per pair, end to end not spinning / (raw + decoding) | | %.2f |\n", e.cpu/(ms[0].cpu+ms[2].cpu))
	}
	if !*int8 {
		return
	}
	raw8, e2e8 := ms[3].best, ms[4].best
	fmt.Printf("| ratio end-to-end / raw, int8 | %.2f | |\n", e2e8/raw8)
	fmt.Printf("| speed-up int8 / float32, raw | %.2f | |\n", raw8/raw)
	fmt.Printf("| speed-up int8 / float32, end to end | %.2f | |\n", e2e8/e2e)

	cs := agreement(f32, q8, jpegs)
	fmt.Printf("\ncosine between embeddings of the same input (%d photos as JPEG with CLIP preprocessing, %d captions):\n\n", len(cs[0].img), len(cs[0].txt))
	fmt.Printf("| comparison | photos, least | photos, mean | captions, least | captions, mean |\n| --- | --- | --- | --- | --- |\n")
	for _, c := range cs {
		li, mi := summary(c.img)
		lt, mt := summary(c.txt)
		fmt.Printf("| %s | %.5f | %.5f | %.5f | %.5f |\n", c.name, li, mi, lt, mt)
	}
}

// summary is the least and the mean of cosines.
func summary(cos []float64) (least, mean float64) {
	least = 1
	for _, x := range cos {
		least = min(least, x)
		mean += x
	}
	return least, mean / float64(len(cos))
}

// sweepRaw prints raw ONNX Runtime throughput over batch sizes and intra-op thread counts.
func sweepRaw(f32, q8 pair, int8 bool, recs []dataset.RawRecord, rounds int) {
	fmt.Printf("raw ONNX Runtime by batch size and intra-op threads, best of %d rounds:\n\n| batch | threads | float32 pairs/s | int8 pairs/s |\n| --- | --- | --- | --- |\n", rounds)
	threads := []int{1}
	for t := 2; t <= runtime.NumCPU(); t *= 2 {
		threads = append(threads, t)
	}
	if n := runtime.NumCPU(); threads[len(threads)-1] != n {
		threads = append(threads, n)
	}
	best := func(run func() int, close func()) float64 {
		defer close()
		b := 0.0
		for range rounds {
			start := time.Now()
			n := run()
			b = max(b, float64(n)/time.Since(start).Seconds())
		}
		return b
	}
	for _, b := range []int{8, 16, 32, 64, 128} {
		if b > len(recs) {
			break
		}
		for _, t := range threads {
			f := best(rawRun(f32, recs, b, t, false))
			q := "-"
			if int8 {
				q = fmt.Sprintf("%.1f", best(rawRun(q8, recs, b, t, false)))
			}
			fmt.Printf("| %d | %d | %.1f | %s |\n", b, t, f, q)
		}
	}
	fmt.Println()
}

// keepOpen is run; its sessions stay open for the life of the benchmark.
func keepOpen(run func() int, _ func()) func() int { return run }

// measurement is one kind of run, repeated; run returns the pairs it processed.
type measurement struct {
	name string
	run  func() int
	best float64 // pairs/s
	cpu  float64 // least CPU milliseconds per pair
}

// cpuTime is the CPU time the process has used, user and system, all threads (ONNX Runtime's
// included).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	check(syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pair is an image and a text encoder file.
type pair struct{ image, text string }

// rawRun runs both encoders on tensors prepared beforehand: what ONNX Runtime alone gives.
// close releases the sessions.
func rawRun(p pair, recs []dataset.RawRecord, batch, threads int, noSpin bool) (run func() int, close func()) {
	o := onnx.Options{BatchSize: batch, IntraOpThreads: threads, NoSpinning: noSpin} // embed.Open's default: GOMAXPROCS
	img, err := onnx.NewImageEncoder(p.image, o)
	check(err)
	txt, err := onnx.NewTextEncoder(p.text, o)
	check(err)
	prep := imageprep.DefaultConfig()
	prep.Size = img.Size()
	per := 3 * prep.Size * prep.Size
	pixels := make([]float32, batch*per)
	for i := 0; i < batch; i++ {
		check(imageprep.Preprocess(recs[i].Image, prep, pixels[i*per:(i+1)*per]))
	}
	caps := make([]string, batch)
	for i := range caps {
		caps[i] = recs[i].Caption
	}
	tokens := loadTokenizer().TokenizeBatch(caps, txt.ContextLength())
	img.Encode(pixels, batch) // warm up: the first run allocates and prepacks
	txt.Encode(tokens, batch)
	run = func() int {
		done := 0
		for ; done < len(recs); done += batch {
			_, err := img.Encode(pixels, batch)
			check(err)
			_, err = txt.Encode(tokens, batch)
			check(err)
		}
		return done
	}
	return run, func() { img.Close(); txt.Close() }
}

// endToEndRun runs the embed stage (embed.Embedder.Shard): JPEG bytes and caption strings in,
// embeddings out.
func endToEndRun(p pair, recs []dataset.RawRecord, batch int, noSpin bool) func() int {
	e, err := embed.Open(embed.Config{ImageModel: p.image, TextModel: p.text, BatchSize: batch, NoSpinning: noSpin})
	check(err)
	run := func() int {
		n := 0
		check(e.Shard(context.Background(), memFormat{rows: recs}, dataset.Shard{Rows: int64(len(recs))}, dataset.Options{}, func(r embed.Embedded) error {
			if r.Err != "" {
				return fmt.Errorf("row %s: %s", r.Record.ID, r.Err)
			}
			n++
			return nil
		}))
		return n
	}
	run() // warm up
	return run
}

// decodeRun decodes and preprocesses every image on all cores and tokenizes every caption, as
// the embed stage does, without running an encoder.
func decodeRun(recs []dataset.RawRecord, batch int) func() int {
	tok := loadTokenizer()
	prep := imageprep.DefaultConfig()
	per := 3 * prep.Size * prep.Size
	pixels := make([]float32, batch*per)
	return func() int {
		for lo := 0; lo < len(recs); lo += batch {
			b := recs[lo:min(lo+batch, len(recs))]
			var wg sync.WaitGroup
			next := make(chan int)
			for range runtime.GOMAXPROCS(0) {
				wg.Go(func() {
					for i := range next {
						check(imageprep.Preprocess(b[i].Image, prep, pixels[i*per:(i+1)*per]))
					}
				})
			}
			for i := range b {
				next <- i
			}
			close(next)
			wg.Wait()
			caps := make([]string, len(b))
			for i := range b {
				caps[i] = b[i].Caption
			}
			tok.TokenizeBatch(caps, 77)
		}
		return len(recs)
	}
}

// comparison is the cosines between two embeddings of each photo and of each caption.
type comparison struct {
	name     string
	img, txt []float64
}

// agreement embeds every photo and its captions with both encoder pairs, in batches of 8, and
// with the int8 pair one row at a time too (its activation scales span the batch), and compares
// the embeddings.
func agreement(f32, q8 pair, photos []photo) []comparison {
	var recs []dataset.RawRecord
	var firstOfPhoto []bool // each photo's image is compared once
	for i, p := range photos {
		for j, c := range p.captions {
			recs = append(recs, dataset.RawRecord{Index: int64(len(recs)), ID: fmt.Sprint(i, "/", j), Caption: c, Image: p.jpeg})
			firstOfPhoto = append(firstOfPhoto, j == 0)
		}
	}
	embedAll := func(p pair, batch int) []embed.Embedded {
		e, err := embed.Open(embed.Config{ImageModel: p.image, TextModel: p.text, BatchSize: batch})
		check(err)
		defer e.Close()
		var out []embed.Embedded
		check(e.Shard(context.Background(), memFormat{rows: recs}, dataset.Shard{Rows: int64(len(recs))}, dataset.Options{}, func(r embed.Embedded) error {
			if r.Err != "" {
				return fmt.Errorf("row %s: %s", r.Record.ID, r.Err)
			}
			out = append(out, r)
			return nil
		}))
		return out
	}
	compare := func(name string, a, b []embed.Embedded) comparison {
		c := comparison{name: name}
		for i := range a {
			if firstOfPhoto[i] {
				c.img = append(c.img, score.CosineSimilarity(a[i].Image, b[i].Image))
			}
			c.txt = append(c.txt, score.CosineSimilarity(a[i].Text, b[i].Text))
		}
		return c
	}
	f, q, q1 := embedAll(f32, 8), embedAll(q8, 8), embedAll(q8, 1)
	return []comparison{
		compare("int8 vs float32, batch 8", q, f),
		compare("int8 alone (batch 1) vs int8 in a batch of 8", q1, q),
	}
}

func loadTokenizer() *tokenizer.Tokenizer {
	vocab, err := tokenizer.DefaultVocabPath()
	check(err)
	tok, err := tokenizer.Load(vocab)
	check(err)
	return tok
}

// photo is a test photo re-encoded as JPEG, with captions written for it.
type photo struct {
	jpeg     []byte
	captions []string
}

// testPhotos are the colour photos of the corpus, each with a caption that fits it and one that
// does not (as in a noisy crawl).
var testPhotos = []struct {
	file     string
	captions []string
}{
	{"astronaut.png", []string{"an astronaut in a white spacesuit posing in front of an american flag", "a bowl of fresh fruit on a kitchen table"}},
	{"chelsea.png", []string{"a ginger tabby cat looking to the side", "a red sports car parked on the street"}},
	{"coffee.png", []string{"a cup of coffee with latte art on a saucer", "a snowy mountain peak at sunrise"}},
	{"motorcycle_left.png", []string{"a red motorcycle parked in a showroom, side view", "two children playing football in a park"}},
	{"rocket.jpg", []string{"a rocket lifting off from the launch pad in a cloud of smoke", "a plate of spaghetti with tomato sauce"}},
	{"hubble_deep_field.jpg", []string{"hundreds of distant galaxies in the hubble deep field", "a close-up of a dog's nose"}},
	{"ihc.png", []string{"a microscope image of stained tissue cells", "a crowded beach on a summer day"}},
	{"color.png", []string{"a colour test chart", "an old wooden sailing ship at sea"}},
}

// loadJPEGs re-encodes the colour test photos as JPEG (quality 90), like a web crawl's images.
func loadJPEGs(dir string) []photo {
	var out []photo
	for _, tp := range testPhotos {
		b, err := os.ReadFile(filepath.Join(dir, tp.file))
		if err != nil {
			continue
		}
		im, _, err := image.Decode(bytes.NewReader(b))
		if err != nil {
			continue
		}
		var buf bytes.Buffer
		check(jpeg.Encode(&buf, im, &jpeg.Options{Quality: 90}))
		out = append(out, photo{jpeg: buf.Bytes(), captions: tp.captions})
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
