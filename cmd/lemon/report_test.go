package main_test

import (
	"context"
	"fmt"
	"image"
	_ "image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/embdir"
	"github.com/lemon-curation/lemon/dataset/img2parquet"
	"github.com/lemon-curation/lemon/dataset/pathcsv"
	"github.com/lemon-curation/lemon/dataset/rawtest/samples"
	"github.com/lemon-curation/lemon/dataset/webdataset"
	"github.com/lemon-curation/lemon/synth"
)

// chromium returns the headless browser the report tests run, skipping the test where there
// is none (never under CI, where scripts/setup.sh installs Debian's chromium).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("CI=true but there is no chromium: scripts/setup.sh installs it (Debian package chromium)")
	}
	t.Skip("no chromium to render the report in (scripts/setup.sh installs Debian's chromium)")
	return ""
}

// renderedImages opens page in headless Chromium and returns how many <img> it holds and how
// many of them the browser decoded (naturalWidth > 0), as a script counts them on load.
func renderedImages(t *testing.T, browser, page string) (int, int) {
	t.Helper()
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	probe := `<script>window.addEventListener("load", () => { const im = [...document.images];
document.body.setAttribute("data-probe", im.length + "/" + im.filter(i => i.complete && i.naturalWidth > 0).length); });</script>`
	probed := filepath.Join(t.TempDir(), "probed.html")
	if err := os.WriteFile(probed, []byte(strings.Replace(string(b), "</body>", probe+"</body>", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(browser, "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir="+t.TempDir(),
		"--virtual-time-budget=10000", "--dump-dom", "file://"+probed).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	m := regexp.MustCompile(`data-probe="(\d+)/(\d+)"`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("the page's probe did not run in chromium; DOM starts:\n%.600s", out)
	}
	n, _ := strconv.Atoi(m[1])
	decoded, _ := strconv.Atoi(m[2])
	return n, decoded
}

// screenshot renders page in headless Chromium to a PNG (kept in the test's temporary folder,
// its path logged) and decodes it.
func screenshot(t *testing.T, browser, page string) image.Image {
	t.Helper()
	png := filepath.Join(t.TempDir(), strings.TrimSuffix(filepath.Base(page), ".html")+".png")
	cmd := exec.Command(browser, "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir="+t.TempDir(), "--hide-scrollbars",
		"--window-size=1280,5000", "--virtual-time-budget=10000", "--screenshot="+png, "file://"+page)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium --screenshot: %v\n%s", err, out)
	}
	f, err := os.Open(png)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, _, err := image.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", png, err)
	}
	t.Logf("screenshot of %s: %s", page, png)
	return img
}

// thumbnailPixels is how many pixels of page's screenshot change when its thumbnails are taken
// out (their src attributes removed): the area the browser painted with them.
func thumbnailPixels(t *testing.T, browser, page string) int {
	t.Helper()
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	bare := filepath.Join(t.TempDir(), "without-thumbnails.html")
	if err := os.WriteFile(bare, []byte(strings.ReplaceAll(string(b), `<img src="`, `<img data-src="`)), 0o644); err != nil {
		t.Fatal(err)
	}
	with, without := screenshot(t, browser, page), screenshot(t, browser, bare)
	if with.Bounds() != without.Bounds() {
		t.Fatalf("screenshots of %v and %v", with.Bounds(), without.Bounds())
	}
	changed := 0
	r := with.Bounds()
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if with.At(x, y) != without.At(x, y) {
				changed++
			}
		}
	}
	return changed
}

// TestReportWebdataset: lemon report on a webdataset run writes one self-contained page whose
// most suspect pairs show thumbnails (decoded by a real browser, headless Chromium), captions
// and their nearest images' captions, with the four distributions and the threshold; it
// refuses a run that is not complete.
func TestReportWebdataset(t *testing.T) {
	requireEmbedding(t)
	browser := chromium(t)
	ctx := context.Background()
	dir := t.TempDir()
	enc := tinyEncoders(t, dir)
	raw := filepath.Join(dir, "raw")
	a, b := samples.Make("a", 24, 1), samples.Make("b", 20, 2)
	for i, s := range append(a, b...) {
		s.Extra["is_error"] = fmt.Sprint(i%4 == 0) // a truth column in the sibling Parquet, for lemon eval
	}
	if err := webdataset.Write(ctx, raw, [][]samples.Sample{a, b}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	run(t, false, "score", "--input", raw, "--output", out, "--image-model", filepath.Join(enc, "image.onnx"),
		"--text-model", filepath.Join(enc, "text.onnx"), "--k", "5", "--emit-neighbours", "--batch-size", "8")
	log := run(t, false, "report", "--run", out, "--suspects", "12")
	page := filepath.Join(out, "report.html")
	if !strings.Contains(log, "wrote "+page) {
		t.Fatalf("lemon report did not say it wrote %s:\n%s", page, log)
	}
	pb, _ := os.ReadFile(page)
	html := string(pb)
	for _, want := range []string{"<h3>score</h3>", "<h3>d_mm</h3>", "<h3>s_n</h3>", "<h3>s_m</h3>", "the run's threshold", "captions of its nearest images", `stroke-dasharray="5 3"`} {
		if !strings.Contains(html, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(html, "src=\"http") || strings.Contains(html, "src=\"file:") {
		t.Error("the page loads images from elsewhere: it should be self-contained")
	}
	if n, decoded := renderedImages(t, browser, page); n != 12 || decoded != 12 {
		t.Errorf("chromium decoded %d of %d thumbnails; want all 12 suspects' images", decoded, n)
	}
	// And they are painted: the screenshot differs from the page's without thumbnails in at

	px := thumbnailPixels(t, browser, page)
	t.Logf("the thumbnails change %d pixels of the screenshot", px)
	if px < 12*20*20 {
		t.Errorf("the thumbnails change %d pixels of the page's screenshot; want at least %d", px, 12*20*20)
	}

	// lemon eval's gallery shows the same thumbnails, from the tars.
	rep := filepath.Join(dir, "rep")
	run(t, false, "eval", "--run", out, "--output", rep)
	if n, decoded := renderedImages(t, browser, filepath.Join(rep, "report.html")); n == 0 || decoded != n {
		t.Errorf("lemon eval's page: chromium decoded %d of %d thumbnails; want every suspect's image", decoded, n)
	}

	// An unfinished run is refused.
	m := filepath.Join(out, "manifest.json")
	mb, _ := os.ReadFile(m)
	os.WriteFile(m, []byte(strings.Replace(string(mb), `"status": "complete"`, `"status": "running"`, 1)), 0o644)
	if msg := run(t, true, "report", "--run", out); !strings.Contains(msg, "has not finished") {
		t.Errorf("report on a running run:\n%s", msg)
	}
}

// TestReportEmbeddingsOnly: for an input of embeddings the page shows no thumbnails and says
// why, and without --emit-neighbours it says the neighbours' captions are missing.
func TestReportEmbeddingsOnly(t *testing.T) {
	o := synth.Defaults()
	o.Rows, o.Dim = 120, 16
	rows, err := synth.Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	in := writeDir(t, [][]dataset.Row{rows}, embdir.WriteOptions{})
	out := filepath.Join(t.TempDir(), "out")
	run(t, false, "score", "--input", in, "--output", out, "--k", "10", "--scores-format", "csv")
	page := filepath.Join(t.TempDir(), "review.html")
	run(t, false, "report", "--run", out, "--output", page)
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	html := string(b)
	for _, want := range []string{"holds embeddings, not images", "made without --emit-neighbours", "<h3>s_m</h3>"} {
		if !strings.Contains(html, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(html, "<img") {
		t.Error("an embeddings-only run's page has images")
	}
}

// TestReportThumbnailsFromEveryRawFormat: the page's thumbnails come from a CSV of image paths
// and from a Hugging Face image Parquet too, each decoded by headless Chromium.
func TestReportThumbnailsFromEveryRawFormat(t *testing.T) {
	requireEmbedding(t)
	browser := chromium(t)
	ctx := context.Background()
	dir := t.TempDir()
	enc := tinyEncoders(t, dir)
	shards := [][]samples.Sample{samples.Make("a", 16, 1), samples.Make("b", 14, 2)}
	for name, write := range map[string]func(string) error{
		"pathcsv": func(p string) error { return pathcsv.Write(ctx, p, shards) },
		"img2parquet": func(p string) error {
			return img2parquet.WriteHuggingFace(ctx, filepath.Join(p, "data", "train-00000-of-00001.parquet"), append(shards[0], shards[1]...))
		},
	} {
		t.Run(name, func(t *testing.T) {
			raw := filepath.Join(dir, name)
			if err := write(raw); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, name+"-out")
			run(t, false, "score", "--input", raw, "--output", out, "--image-model", filepath.Join(enc, "image.onnx"),
				"--text-model", filepath.Join(enc, "text.onnx"), "--k", "5", "--batch-size", "8")
			log := run(t, false, "report", "--run", out, "--suspects", "8")
			if !strings.Contains(log, "("+name+")") {
				t.Errorf("the report's images do not come from the %s input:\n%s", name, log)
			}
			if n, decoded := renderedImages(t, browser, filepath.Join(out, "report.html")); n != 8 || decoded != 8 {
				t.Errorf("chromium decoded %d of %d thumbnails; want all 8 suspects' images", decoded, n)
			}
		})
	}
}
