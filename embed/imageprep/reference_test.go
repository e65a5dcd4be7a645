package imageprep

// Reference tests: compare Preprocess with Pillow running CLIP's transform
// (testdata/reference.py) on the photo corpus built by
// scripts/fetch-test-photos.sh plus synthetic images written here.
//
// Needs a python3 with Pillow and numpy (Debian: python3-pil python3-numpy;
// $LEMON_PYTHON picks one) and the corpus ($LEMON_TEST_PHOTOS, default
// third_party/test-photos). Without them the tests skip, except under CI=true
// where they fail.
//
// Tolerances asserted (uint8 levels of the cropped RGB, before ToTensor; one
// level is 1/255/std ≈ 0.0146 in normalised units):
//   - PNG (all modes), GIF, BMP, TIFF, WebP (lossy, lossless, alpha), and
//     JPEG resize-only (Go-decoded pixels fed to both): bit-exact, 0 levels,
//     so the float32 tensors are bit-identical too.
//   - JPEG end to end: max jpegMaxDiff levels, mean jpegMeanDiff. Chroma
//     upsampling and colour conversion match libjpeg-turbo, but Go's IDCT
//     is not libjpeg's jidctint: decoded pixels differ by up to 3 levels
//     (mean ~0.04), which the resize averages to at most 4 levels
//     (mean <= 0.05) on the corpus.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
)

const (
	jpegMaxDiff  = 6
	jpegMeanDiff = 0.1
)

type refEnv struct {
	python string
	photos string // "" when the corpus is missing
	script string
}

// skipOrFail skips locally but fails in CI, where the reference tests must run.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true, so this is a failure)", msg)
	}
	t.Skip(msg)
}

// findPython returns a python3 that imports PIL and numpy, or "". Cached:
// pyenv shims make each probe slow.
var findPython = sync.OnceValue(func() string {
	for _, p := range []string{os.Getenv("LEMON_PYTHON"), "python3", "/usr/bin/python3"} {
		if p == "" {
			continue
		}
		if err := exec.Command(p, "-c", "import PIL, numpy").Run(); err == nil {
			return p
		}
	}
	return ""
})

func repoRoot(t *testing.T) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s", dir)
		}
	}
}

func referenceEnv(t *testing.T, needPhotos bool) refEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping the Pillow reference checks in -short mode")
	}
	py := findPython()
	if py == "" {
		skipOrFail(t, "reference tests need python3 with PIL and numpy: apt-get install python3-pil python3-numpy (or set LEMON_PYTHON)")
	}
	e := refEnv{python: py, script: filepath.Join("testdata", "reference.py")}
	dir := os.Getenv("LEMON_TEST_PHOTOS")
	if dir == "" {
		dir = filepath.Join(repoRoot(t), "third_party", "test-photos")
	}
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		e.photos = dir
	} else if needPhotos {
		skipOrFail(t, "photo corpus missing at %s: run scripts/fetch-test-photos.sh (or set LEMON_TEST_PHOTOS)", dir)
	}
	return e
}

type refOut struct {
	File  string  `json:"file"`
	Mode  string  `json:"mode"`
	Size  []int   `json:"size"`
	Error *string `json:"error"`
	u8    []byte
	f32   []float32
	dec   []byte
}

// runReference runs reference.py once over files.
func (e refEnv) run(t *testing.T, size int, exifTranspose, decoded bool, files []string) []refOut {
	t.Helper()
	out := t.TempDir()
	args := []string{e.script, "--out", out, "--size", fmt.Sprint(size)}
	if exifTranspose {
		args = append(args, "--exif-transpose")
	}
	if decoded {
		args = append(args, "--decoded")
	}
	cmd := exec.Command(e.python, append(args, files...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("reference.py: %v\n%s", err, stderr.String())
	}
	var res []refOut
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	for i := 0; sc.Scan(); i++ {
		var r refOut
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("reference.py output %q: %v", sc.Text(), err)
		}
		if r.Error == nil {
			r.u8 = mustRead(t, filepath.Join(out, fmt.Sprintf("%d.u8", i)))
			raw := mustRead(t, filepath.Join(out, fmt.Sprintf("%d.f32", i)))
			r.f32 = make([]float32, len(raw)/4)
			for j := range r.f32 {
				r.f32[j] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*j:]))
			}
			if decoded {
				r.dec = mustRead(t, filepath.Join(out, fmt.Sprintf("%d.dec", i)))
			}
		}
		res = append(res, r)
	}
	if len(res) != len(files) {
		t.Fatalf("reference.py returned %d results for %d files\n%s", len(res), len(files), stderr.String())
	}
	return res
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type diffStats struct {
	max     int
	mean    float64
	ndiff   int
	maxNorm float64
}

func (s diffStats) String() string {
	return fmt.Sprintf("max %d levels, mean %.4f, %d values differ, max normalised %.5f", s.max, s.mean, s.ndiff, s.maxNorm)
}

func compare(gotU8 []byte, gotF []float32, want refOut) diffStats {
	var s diffStats
	sum := 0
	for i := range gotU8 {
		d := int(gotU8[i]) - int(want.u8[i])
		if d < 0 {
			d = -d
		}
		if d != 0 {
			s.ndiff++
		}
		sum += d
		s.max = max(s.max, d)
	}
	s.mean = float64(sum) / float64(len(gotU8))
	for i := range gotF {
		s.maxNorm = max(s.maxNorm, math.Abs(float64(gotF[i])-float64(want.f32[i])))
	}
	return s
}

// ours runs the package on a file: the uint8 crop and the tensor.
func ours(data []byte, cfg Config) ([]byte, []float32, error) {
	u8 := make([]byte, 3*cfg.Size*cfg.Size)
	sc := getScratch()
	defer putScratch(sc)
	if err := preprocessRGB(data, cfg, u8, sc); err != nil {
		return nil, nil, err
	}
	f := make([]float32, 3*cfg.Size*cfg.Size)
	if err := Preprocess(data, cfg, f); err != nil {
		return nil, nil, err
	}
	return u8, f, nil
}

// checkAgainst compares every file with the reference; tol(file) gives the
// allowed max and mean level difference.
func checkAgainst(t *testing.T, env refEnv, cfg Config, files []string, tol func(string) (int, float64)) {
	t.Helper()
	refs := env.run(t, cfg.Size, cfg.ApplyEXIFOrientation, false, files)
	for i, f := range files {
		name := filepath.Base(f)
		data := mustRead(t, f)
		gotU8, gotF, err := ours(data, cfg)
		r := refs[i]
		if r.Error != nil || err != nil {
			if r.Error == nil || err == nil {
				t.Errorf("%s: Pillow error %v, ours %v", name, strOrNil(r.Error), err)
			}
			continue
		}
		s := compare(gotU8, gotF, r)
		maxTol, meanTol := tol(f)
		t.Logf("%-32s %-5s %4dx%-4d %s", name, r.Mode, r.Size[0], r.Size[1], s)
		if s.max > maxTol || s.mean > meanTol {
			t.Errorf("%s (Pillow mode %s): %s; allowed max %d, mean %.3f", name, r.Mode, s, maxTol, meanTol)
		}
		if maxTol == 0 && !slices.Equal(gotF, r.f32) {
			t.Errorf("%s: uint8 crops equal but float32 tensors differ", name)
		}
	}
}

func strOrNil(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

func exact(string) (int, float64) { return 0, 0 }

// corpus lists the photo corpus files by class.
func corpus(t *testing.T, env refEnv) (bitExact, jpegs []string) {
	t.Helper()
	var all []string
	for _, sub := range []string{"skimage", "derived"} {
		m, _ := filepath.Glob(filepath.Join(env.photos, sub, "*"))
		all = append(all, m...)
	}
	sort.Strings(all)
	for _, f := range all {
		data := mustRead(t, f)
		_, format, err := image.DecodeConfig(bytes.NewReader(data))
		switch {
		case err != nil && !strings.HasSuffix(f, ".jpg"):
			continue // README.txt etc.
		case format == "jpeg" || strings.HasSuffix(f, ".jpg"):
			jpegs = append(jpegs, f)
		default:
			bitExact = append(bitExact, f)
		}
	}
	if len(bitExact) < 40 || len(jpegs) < 15 {
		t.Fatalf("photo corpus at %s looks incomplete (%d non-JPEG, %d JPEG): rerun scripts/fetch-test-photos.sh",
			env.photos, len(bitExact), len(jpegs))
	}
	return
}

func TestReferenceBitExact(t *testing.T) {
	t.Parallel()
	env := referenceEnv(t, true)
	bitExact, _ := corpus(t, env)
	checkAgainst(t, env, DefaultConfig(), bitExact, exact)
}

func TestReferenceJPEG(t *testing.T) {
	t.Parallel()
	env := referenceEnv(t, true)
	_, jpegs := corpus(t, env)
	checkAgainst(t, env, DefaultConfig(), jpegs, func(string) (int, float64) { return jpegMaxDiff, jpegMeanDiff })
}

// TestReferenceJPEGResizeOnly isolates the resampler from the JPEG decoder:
// the pixels Go decodes are written losslessly to PNG and Pillow processes
// that PNG; the result must equal Preprocess of the JPEG exactly. It also
// logs how far Go's full-resolution decode is from libjpeg-turbo's.
func TestReferenceJPEGResizeOnly(t *testing.T) {
	t.Parallel()
	env := referenceEnv(t, true)
	_, jpegs := corpus(t, env)
	dir := t.TempDir()
	var pngs, srcs []string
	for _, f := range jpegs {
		data := mustRead(t, f)
		sc := getScratch()
		src, err := decode(data, DefaultConfig(), sc)
		if err != nil || src.layout == layoutCMYK { // CMYK: no lossless CMYK writer here
			putScratch(sc)
			continue
		}
		img := materialize(src)
		putScratch(sc)
		p := filepath.Join(dir, strings.TrimSuffix(filepath.Base(f), ".jpg")+".png")
		writePNG(t, p, img)
		pngs = append(pngs, p)
		srcs = append(srcs, f)
	}
	refs := env.run(t, 224, false, false, pngs)
	decRefs := env.run(t, 224, false, true, srcs)
	cfg := DefaultConfig()
	for i, f := range srcs {
		gotU8, gotF, err := ours(mustRead(t, f), cfg)
		if err != nil || refs[i].Error != nil {
			t.Fatalf("%s: ours %v, Pillow %v", f, err, strOrNil(refs[i].Error))
		}
		s := compare(gotU8, gotF, refs[i])
		// Decoder difference at full resolution, for the record.
		dec := decRefs[i].dec
		full := materializeRGB(t, mustRead(t, f))
		var dmax, dsum int
		for j := range full {
			d := int(full[j]) - int(dec[j])
			if d < 0 {
				d = -d
			}
			dmax, dsum = max(dmax, d), dsum+d
		}
		t.Logf("%-28s resize-only: %s | full-res decode vs libjpeg: max %d, mean %.4f", filepath.Base(f), s, dmax, float64(dsum)/float64(len(full)))
		if s.max != 0 || !slices.Equal(gotF, refs[i].f32) {
			t.Errorf("%s: resize of Go-decoded pixels differs from Pillow: %s", filepath.Base(f), s)
		}
	}
}

// TestReferenceEXIF checks ApplyEXIFOrientation against
// ImageOps.exif_transpose, and that the default ignores the tag like CLIP.
// PNGs with an eXIf chunk make it exact; the JPEGs use the JPEG tolerance.
func TestReferenceEXIF(t *testing.T) {
	t.Parallel()
	env := referenceEnv(t, false)
	dir := t.TempDir()
	base := noiseImage(rand.New(rand.NewPCG(7, 7)), 301, 200, false)
	var files []string
	for o := 1; o <= 8; o++ {
		var buf bytes.Buffer
		if err := png.Encode(&buf, base); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, fmt.Sprintf("exif%d.png", o))
		if err := os.WriteFile(p, withPNGExif(buf.Bytes(), o), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	for _, apply := range []bool{false, true} {
		t.Run(fmt.Sprintf("apply=%v", apply), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.ApplyEXIFOrientation = apply
			checkAgainst(t, env, cfg, files, exact)
			if env.photos != "" {
				m, _ := filepath.Glob(filepath.Join(env.photos, "derived", "chelsea_exif*.jpg"))
				if len(m) != 8 {
					t.Fatalf("want 8 chelsea_exif*.jpg in the corpus, have %d", len(m))
				}
				checkAgainst(t, env, cfg, m, func(string) (int, float64) { return jpegMaxDiff, jpegMeanDiff })
			}
		})
	}
}

// TestReferenceSynthetic covers sizes and pixel modes the corpus lacks with
// random-noise PNGs/GIFs (noise is the hardest case for rounding).
func TestReferenceSynthetic(t *testing.T) {
	t.Parallel()
	env := referenceEnv(t, false)
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	var files []string
	add := func(name string, img image.Image) {
		p := filepath.Join(dir, name+".png")
		writePNG(t, p, img)
		files = append(files, p)
	}
	sizes := [][2]int{
		{640, 480}, {480, 640}, {224, 224}, {224, 300}, {300, 224}, {225, 225}, {226, 227},
		{7, 5}, {1, 1}, {3, 400}, {1000, 41}, {2000, 1500}, {449, 297}, {100, 224}, {230, 229},
	}
	for _, sz := range sizes {
		add(fmt.Sprintf("rgb_%dx%d", sz[0], sz[1]), noiseImage(rng, sz[0], sz[1], false))
	}
	add("rgba_noise", noiseImage(rng, 333, 250, true))
	add("rgba_binary_alpha", binaryAlpha(rng, 300, 260))
	add("gray", grayNoise(rng, 512, 383))
	add("gray16", gray16Noise(rng, 260, 300))
	add("rgb16", rgb16Noise(rng, 300, 231, false))
	add("rgba16", rgb16Noise(rng, 240, 300, true))
	add("palette", paletteNoise(rng, 500, 311, 256, false))
	add("palette16_trns", paletteNoise(rng, 97, 301, 16, true))
	add("palette_upscale", paletteNoise(rng, 13, 9, 4, false))

	// Truecolor and grey PNGs with a tRNS chunk: Go decodes them to NRGBA
	// with transparent pixels, Pillow keeps "RGB"/"L" and ignores it.
	addTRNS := func(name string, img image.Image, trns []byte) {
		p := filepath.Join(dir, name+".png")
		var buf bytes.Buffer
		if err := png.Encode(&buf, img); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, withPNGChunk(buf.Bytes(), "tRNS", trns), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	quant := noiseImage(rng, 320, 250, false)
	for i := range quant.Pix {
		if i%4 != 3 {
			quant.Pix[i] &= 0xC0 // few colours, so the tRNS colour is common
		}
	}
	addTRNS("rgb_trns", quant, []byte{0, 0x40, 0, 0x80, 0, 0xC0})
	g := grayNoise(rng, 250, 310)
	for i := range g.Pix {
		g.Pix[i] &= 0xF0
	}
	addTRNS("gray_trns", g, []byte{0, 0x30})

	// GIFs: a frame smaller than the screen with a transparent index, and
	// an identity-grey palette (Pillow opens that as mode "L").
	writeGIF := func(name string, g *gif.GIF) {
		p := filepath.Join(dir, name+".gif")
		var buf bytes.Buffer
		if err := gif.EncodeAll(&buf, g); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	fr := paletteNoise(rng, 200, 150, 64, false)
	fr.Rect = image.Rect(30, 20, 230, 170)
	fr.Palette[5] = color.RGBA{} // transparent entry
	writeGIF("gif_offset_trns", &gif.GIF{Image: []*image.Paletted{fr}, Delay: []int{0},
		Config: image.Config{ColorModel: fr.Palette, Width: 300, Height: 240}})
	grayPal := make(color.Palette, 256)
	for i := range grayPal {
		grayPal[i] = color.RGBA{uint8(i), uint8(i), uint8(i), 255}
	}
	gp := image.NewPaletted(image.Rect(0, 0, 317, 240), grayPal)
	for i := range gp.Pix {
		gp.Pix[i] = uint8(rng.IntN(256))
	}
	writeGIF("gif_gray_identity", &gif.GIF{Image: []*image.Paletted{gp}, Delay: []int{0}})

	checkAgainst(t, env, DefaultConfig(), files, exact)

	// Other output sizes (Size is a Config knob).
	for _, size := range []int{336, 64} {
		cfg := DefaultConfig()
		cfg.Size = size
		checkAgainst(t, env, cfg, files[:6], exact)
	}
}

func noiseImage(rng *rand.Rand, w, h int, alpha bool) *image.NRGBA {
	m := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := range m.Pix {
		m.Pix[i] = uint8(rng.IntN(256))
		if i%4 == 3 && !alpha {
			m.Pix[i] = 255
		}
	}
	// Smooth structure on top of noise: a gradient in the red channel.
	for y := range h {
		for x := range w {
			m.Pix[m.PixOffset(x, y)] = uint8((x*255/max(w-1, 1) + int(m.Pix[m.PixOffset(x, y)])/4) % 256)
		}
	}
	return m
}

func binaryAlpha(rng *rand.Rand, w, h int) *image.NRGBA {
	m := noiseImage(rng, w, h, true)
	for i := 3; i < len(m.Pix); i += 4 {
		m.Pix[i] = []uint8{0, 255, 255, 128}[rng.IntN(4)]
	}
	return m
}

func grayNoise(rng *rand.Rand, w, h int) *image.Gray {
	m := image.NewGray(image.Rect(0, 0, w, h))
	for i := range m.Pix {
		m.Pix[i] = uint8(rng.IntN(256))
	}
	return m
}

func gray16Noise(rng *rand.Rand, w, h int) *image.Gray16 {
	m := image.NewGray16(image.Rect(0, 0, w, h))
	for i := range m.Pix {
		m.Pix[i] = uint8(rng.IntN(256))
	}
	return m
}

func rgb16Noise(rng *rand.Rand, w, h int, alpha bool) image.Image {
	if alpha {
		m := image.NewNRGBA64(image.Rect(0, 0, w, h))
		for i := range m.Pix {
			m.Pix[i] = uint8(rng.IntN(256))
		}
		return m
	}
	m := image.NewRGBA64(image.Rect(0, 0, w, h))
	for i := range m.Pix {
		m.Pix[i] = uint8(rng.IntN(256))
		if i%8 >= 6 {
			m.Pix[i] = 255
		}
	}
	return m
}

func paletteNoise(rng *rand.Rand, w, h, n int, trns bool) *image.Paletted {
	pal := make(color.Palette, n)
	for i := range pal {
		c := color.NRGBA{uint8(rng.IntN(256)), uint8(rng.IntN(256)), uint8(rng.IntN(256)), 255}
		if trns && i%3 == 0 {
			c.A = uint8(rng.IntN(255))
		}
		pal[i] = c
	}
	m := image.NewPaletted(image.Rect(0, 0, w, h), pal)
	for i := range m.Pix {
		m.Pix[i] = uint8(rng.IntN(n))
	}
	return m
}

func writePNG(t *testing.T, p string, img image.Image) {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// withPNGExif inserts an eXIf chunk carrying orientation o after IHDR.
func withPNGExif(p []byte, o int) []byte {
	exif := []byte("MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00")
	binary.BigEndian.PutUint16(exif[18:], uint16(o))
	return withPNGChunk(p, "eXIf", exif)
}

// withPNGChunk inserts a chunk right after IHDR (before any PLTE/IDAT).
func withPNGChunk(p []byte, typ string, data []byte) []byte {
	chunk := binary.BigEndian.AppendUint32(nil, uint32(len(data)))
	chunk = append(chunk, typ...)
	chunk = append(chunk, data...)
	chunk = binary.BigEndian.AppendUint32(chunk, crc32.ChecksumIEEE(chunk[4:]))
	const ihdrEnd = 8 + 8 + 13 + 4
	return slices.Concat(p[:ihdrEnd], chunk, p[ihdrEnd:])
}

// materialize renders a source at full resolution as an image Go can write
// losslessly (gray or RGB).
func materialize(src *source) image.Image {
	nc := src.layout.channels()
	row := make([]byte, src.w*nc)
	if src.layout == layoutL {
		m := image.NewGray(image.Rect(0, 0, src.w, src.h))
		for y := range src.h {
			src.fill(y, 0, src.w, m.Pix[y*m.Stride:])
		}
		return m
	}
	m := image.NewNRGBA(image.Rect(0, 0, src.w, src.h))
	for y := range src.h {
		src.fill(y, 0, src.w, row)
		for x := range src.w {
			copy(m.Pix[y*m.Stride+4*x:], row[nc*x:nc*x+3])
			m.Pix[y*m.Stride+4*x+3] = 255
		}
	}
	return m
}

// materializeRGB decodes data with this package's decoders at full
// resolution, as HWC RGB (for comparing with Pillow's decode).
func materializeRGB(t *testing.T, data []byte) []byte {
	sc := getScratch()
	defer putScratch(sc)
	src, err := decode(data, DefaultConfig(), sc)
	if err != nil {
		t.Fatal(err)
	}
	nc := src.layout.channels()
	row := make([]byte, src.w*nc)
	out := make([]byte, 0, src.w*src.h*3)
	for y := range src.h {
		src.fill(y, 0, src.w, row)
		for x := range src.w {
			if nc == 1 {
				out = append(out, row[x], row[x], row[x])
			} else {
				out = append(out, row[nc*x:nc*x+3]...)
			}
		}
	}
	return out
}
