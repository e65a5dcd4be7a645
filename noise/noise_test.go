package noise

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/dataset/embdir"
	"github.com/lemon-curation/lemon/dataset/embparquet"
	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/synth"

	"github.com/lemon-curation/lemon/internal/cli"
)

// row is one row as read back: what Read gives plus every metadata column as a string.
type row struct {
	id, caption string
	image, text []float32
	meta        map[string]string
}

func readBack(t *testing.T, dir string) []row {
	t.Helper()
	ctx := context.Background()
	f, err := dataset.Open(ctx, dir, "auto")
	if err != nil {
		t.Fatal(err)
	}
	shards, err := f.Plan(ctx, dir, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var rows []row
	for _, sh := range shards {
		err := f.Read(ctx, sh, dataset.Options{}, func(r dataset.Record) error {
			if r.Err != "" {
				t.Fatalf("%s row %d: %s", sh.Name, r.Index, r.Err)
			}
			rows = append(rows, row{id: r.ID, caption: r.Caption, image: r.Image, text: r.Text, meta: map[string]string{}})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		rr, err := f.Metadata(ctx, sh, dataset.Options{})
		if err != nil {
			t.Fatal(err)
		}
		i := int(sh.Offset)
		for rr.Next() {
			rec := rr.RecordBatch()
			for r := 0; r < int(rec.NumRows()); r++ {
				for _, fl := range rec.Schema().Fields() {
					if strings.HasSuffix(fl.Name, "_embedding") {
						continue
					}
					vals, _, err := metadata.StringColumn(sh.Name, rec, fl.Name)
					if err != nil {
						t.Fatal(err)
					}
					rows[i+r].meta[fl.Name] = vals[r]
				}
			}
			i += int(rec.NumRows())
		}
		if err := rr.Err(); err != nil {
			t.Fatal(err)
		}
		rr.Release()
	}
	return rows
}

// makeRows makes n rows with distinct random embeddings and captions from caption(i).
func makeRows(n, dim int, seed uint64, caption func(i int) string, extra func(i int) map[string]string) []dataset.Row {
	rng := rand.New(rand.NewPCG(seed, 3))
	rows := make([]dataset.Row, n)
	for i := range rows {
		img, txt := make([]float32, dim), make([]float32, dim)
		for j := range img {
			img[j], txt[j] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
		}
		rows[i] = dataset.Row{ID: fmt.Sprintf("r%05d", i), Caption: caption(i), Image: img, Text: txt}
		if extra != nil {
			rows[i].Extra = extra(i)
		}
	}
	return rows
}

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := runMain(args, &out, &errb)
	return out.String() + errb.String(), err
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(t, args...)
	if err != nil {
		t.Fatalf("lemon noise %v: %v\n%s", args, err, out)
	}
	return out
}

// checkCopy checks what every kind guarantees: same rows in the same order with the same ids
// and images; is_error is exactly "caption changed"; original_caption is the input caption;
// a changed row's text embedding is the input embedding of a row that had its new caption
// (in the same split), and an unchanged row's is its own. It returns the errors per split.
func checkCopy(t *testing.T, in, out []row, splitCol string) map[string]int {
	t.Helper()
	return checkCopySplit(t, in, out, splitCol, true)
}

// checkCopySplit is checkCopy; sameSplit says the new caption must come from the row's own
// split (not so for classification, where a class's caption is one for the whole dataset).
func checkCopySplit(t *testing.T, in, out []row, splitCol string, sameSplit bool) map[string]int {
	t.Helper()
	if len(in) != len(out) {
		t.Fatalf("copy has %d rows, input %d", len(out), len(in))
	}
	textOf := map[string][][]float32{} // input caption -> input text embeddings with it
	splitOf := map[string]map[string]bool{}
	for _, r := range in {
		textOf[r.caption] = append(textOf[r.caption], r.text)
	}
	for i, r := range in {
		s := out[i].meta[splitCol]
		if splitOf[r.caption] == nil {
			splitOf[r.caption] = map[string]bool{}
		}
		splitOf[r.caption][s] = true
	}
	errs := map[string]int{}
	for i := range out {
		o, r := out[i], in[i]
		if o.id != r.id || !slices.Equal(o.image, r.image) {
			t.Fatalf("row %d: id or image embedding changed (%s vs %s)", i, o.id, r.id)
		}
		if o.meta[ColOriginalCaption] != r.caption {
			t.Fatalf("row %d: original_caption %q, input caption %q", i, o.meta[ColOriginalCaption], r.caption)
		}
		changed := o.caption != r.caption
		if got := o.meta[ColIsError]; got != fmt.Sprint(changed) {
			t.Fatalf("row %d: is_error %q but caption %q -> %q", i, got, r.caption, o.caption)
		}
		for k, v := range r.meta {
			if k == "caption" || k == ColIsError || k == ColOriginalCaption || k == ColOriginalLabel {
				continue
			}
			if strings.HasPrefix(k, "label") && changed {
				continue
			}
			if o.meta[k] != v {
				t.Fatalf("row %d: column %q changed from %q to %q", i, k, v, o.meta[k])
			}
		}
		if !changed {
			if !slices.Equal(o.text, r.text) {
				t.Fatalf("row %d: unchanged row's text embedding changed", i)
			}
			continue
		}
		errs[o.meta[splitCol]]++
		found := false
		for _, v := range textOf[o.caption] {
			found = found || slices.Equal(v, o.text)
		}
		if !found {
			t.Fatalf("row %d: text embedding did not move with its new caption %q", i, o.caption)
		}
		if sameSplit && !splitOf[o.caption][o.meta[splitCol]] {
			t.Fatalf("row %d (split %s) took caption %q from another split", i, o.meta[splitCol], o.caption)
		}
	}
	return errs
}

func splitSizes(rows []row, col string) map[string]int {
	m := map[string]int{}
	for _, r := range rows {
		m[r.meta[col]]++
	}
	return m
}

func floorP(p float64, n int) int { return int(math.Floor(p*float64(n) + 1e-9)) }

func TestRandomEmbdir(t *testing.T) {
	for _, tc := range []embdir.WriteOptions{
		{MetadataExt: ".parquet"},
		{MetadataExt: ".csv", Dtype: "<f2"},
		{MetadataExt: ".jsonl", IDColumn: "id"},
	} {
		t.Run(tc.MetadataExt+tc.Dtype, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
			rows := makeRows(1003, 8, 1, func(i int) string { return fmt.Sprintf("caption number %d", i) },
				func(i int) map[string]string { return map[string]string{"concept": fmt.Sprint(i % 7)} })
			if err := embdir.Write(ctx, in, synth.Split(rows, 3), tc); err != nil {
				t.Fatal(err)
			}
			summary := mustRun(t, "--input", in, "--output", out, "--kind", "random", "--level", "0.4", "--seed", "7")
			if !strings.Contains(summary, "made an 80/10/10 split") {
				t.Errorf("summary:\n%s", summary)
			}
			inRows, outRows := readBack(t, in), readBack(t, out)
			sizes := splitSizes(outRows, ColSplit)
			if sizes["train"] != 802 || sizes["val"] != 100 || sizes["test"] != 101 {
				t.Fatalf("split sizes %v, want train 802 (floor 0.8N), val 100, test 101", sizes)
			}
			errs := checkCopy(t, inRows, outRows, ColSplit)
			for s, n := range sizes {
				if errs[s] != floorP(0.4, n) {
					t.Errorf("split %s: %d errors, want floor(0.4*%d) = %d", s, errs[s], n, floorP(0.4, n))
				}
			}
			for _, f := range []string{"img_emb/img_emb_2.npy", "text_emb/text_emb_0.npy", "metadata/metadata_1" + tc.MetadataExt, ReportFile} {
				if _, err := os.Stat(filepath.Join(out, f)); err != nil {
					t.Errorf("output lacks %s: %v", f, err)
				}
			}
			if tc.MetadataExt == ".jsonl" {
				b, _ := os.ReadFile(filepath.Join(out, "metadata", "metadata_0.jsonl"))
				first := strings.SplitN(string(b), "\n", 2)[0]
				if !strings.HasPrefix(first, `{"id":"r00000","caption":`) || !strings.Contains(first, `"is_error":`) {
					t.Errorf("jsonl line: %s", first)
				}
			}
		})
	}
}

func TestRandomParquetExistingSplit(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	parts := []string{"a", "b", "c"}
	rows := makeRows(600, 6, 2, func(i int) string { return fmt.Sprintf("a caption %d", i) },
		func(i int) map[string]string { return map[string]string{"part": parts[i*7%3], "is_error": "false"} })
	if err := embparquet.Write(ctx, in, synth.Split(rows, 2)); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "--input", in, "--output", out, "--level", "0.25", "--split-column", "part", "--seed", "3")
	outRows := readBack(t, out)
	if _, ok := outRows[0].meta[ColSplit]; ok {
		t.Errorf("made a split column although --split-column was given")
	}
	errs := checkCopy(t, readBack(t, in), outRows, "part")
	for s, n := range splitSizes(outRows, "part") {
		if errs[s] != floorP(0.25, n) {
			t.Errorf("split %s: %d errors, want %d", s, errs[s], floorP(0.25, n))
		}
	}
}

func TestRandomUsesSplitColumnByDefault(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	// Split "same" has one caption on every row: nothing to swap with, so the walk visits (and
	// skips) all 30 rows.
	rows := makeRows(60, 4, 3, func(i int) string {
		if i%2 == 0 {
			return "the same caption"
		}
		return fmt.Sprintf("caption %d", i)
	}, func(i int) map[string]string { return map[string]string{"split": []string{"same", "diff"}[i%2]} })
	if err := embdir.Write(ctx, in, [][]dataset.Row{rows}, embdir.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	summary := mustRun(t, "--input", in, "--output", out, "--level", "0.5")
	if !strings.Contains(summary, `split from column "split"`) {
		t.Errorf("summary:\n%s", summary)
	}
	errs := checkCopy(t, readBack(t, in), readBack(t, out), "split")
	if errs["same"] != 0 || errs["diff"] != 15 {
		t.Errorf("errors %v, want same 0, diff 15", errs)
	}
	if !strings.Contains(summary, "30 chosen rows had no partner") {
		t.Errorf("summary does not report the skipped rows:\n%s", summary)
	}
}

func TestLevelsZeroAndOne(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	rows := makeRows(50, 4, 4, func(i int) string { return fmt.Sprintf("c%d", i) }, nil)
	if err := embdir.Write(ctx, in, [][]dataset.Row{rows}, embdir.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	inRows := readBack(t, in)
	for _, p := range []string{"0", "1"} {
		out := filepath.Join(dir, "out"+p)
		mustRun(t, "--input", in, "--output", out, "--level", p)
		errs := checkCopy(t, inRows, readBack(t, out), ColSplit)
		total := 0
		for _, n := range errs {
			total += n
		}
		if want := map[string]int{"0": 0, "1": 50}[p]; total != want {
			t.Errorf("level %s: %d errors, want %d", p, total, want)
		}
	}
}

func testLexicon(t *testing.T) *Lexicon {
	t.Helper()
	lex, err := LoadWordNet(context.Background(), "testdata/wordnet")
	if err != nil {
		t.Fatal(err)
	}
	return lex
}

func TestNounsFixture(t *testing.T) {
	lex := testLexicon(t)
	for caption, want := range map[string][]string{
		"Two dogs and a white cat sitting":          {"cat", "dog"}, // "a", "white", "sitting" are stopwords
		"Men eating hot dogs on the street":         {"dog", "hot_dog", "man", "street"},
		"The children's glasses; buses, Skies.":     {"bus", "child", "glasses", "sky"},
		"":                                          {},
		"an abstract composition of shapes":         {},
		"A woman throws a frisbee in a sunny park.": {"frisbee", "park", "woman"},
	} {
		if got := lex.Nouns(caption); !slices.Equal(got, want) {
			t.Errorf("Nouns(%q) = %q, want %q", caption, got, want)
		}
	}
}

var nounWords = []string{"dog", "cat", "man", "woman", "bus", "frisbee", "park", "street"}

func nounCaption(i int) string {
	if i%10 == 9 {
		return fmt.Sprintf("an abstract composition number %d", i) // no nouns
	}
	a, b := nounWords[i%len(nounWords)], nounWords[(i/len(nounWords))%len(nounWords)]
	return fmt.Sprintf("a %s next to the %ss, scene %d", a, b, i)
}

func TestNoun(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	rows := makeRows(500, 6, 5, nounCaption, nil)
	if err := embdir.Write(ctx, in, synth.Split(rows, 2), embdir.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	summary := mustRun(t, "--input", in, "--output", out, "--kind", "noun", "--wordnet", "testdata/wordnet", "--seed", "11")
	if !strings.Contains(summary, "50 rows have no noun") {
		t.Errorf("summary:\n%s", summary)
	}
	lex := testLexicon(t)
	inRows, outRows := readBack(t, in), readBack(t, out)
	errs := checkCopy(t, inRows, outRows, ColSplit)
	skipped := 0
	for i, o := range outRows {
		if o.meta[ColIsError] != "true" {
			continue
		}
		a, b := lex.Nouns(inRows[i].caption), lex.Nouns(o.caption)
		shared := false
		for _, n := range a {
			shared = shared || slices.Contains(b, n)
		}
		if !shared {
			t.Fatalf("row %d: %q took %q, which shares no noun", i, inRows[i].caption, o.caption)
		}
	}
	// Rows without nouns are skipped when chosen; the walk goes on, so the target is met.
	for s, n := range splitSizes(outRows, ColSplit) {
		if errs[s] != floorP(0.4, n) {
			t.Errorf("split %s: %d errors, want %d", s, errs[s], floorP(0.4, n))
		}
	}
	var rep Report
	b, _ := os.ReadFile(filepath.Join(out, ReportFile))
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	for _, s := range rep.Splits {
		skipped += s.Skipped
	}
	if skipped == 0 || rep.Skipped != skipped || rep.RowsWithoutTerms != 50 {
		t.Errorf("report: skipped %d (splits %d), rows without nouns %d; want some skipped, 50 without", rep.Skipped, skipped, rep.RowsWithoutTerms)
	}
}

// TestNounWordNet uses the real WordNet. It skips when WordNet is not installed, unless CI is
// set: CI runs scripts/fetch-wordnet.sh first, so there a missing WordNet is a failure.
func TestNounWordNet(t *testing.T) {
	dir, err := FindWordNet()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set but %v", err)
		}
		t.Skip(err)
	}
	lex, err := LoadWordNet(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if lex.Len() < 100000 {
		t.Fatalf("%s: only %d noun lemmas; WordNet 3.0 has about 117,000", dir, lex.Len())
	}
	for caption, want := range map[string][]string{
		"Two dogs playing with a frisbee in the park":         {"dog", "frisbee", "park"},
		"A man riding a horse on a beach":                     {"beach", "horse", "man"},
		"Children eating hot dogs next to a fire hydrant":     {"child", "dog", "fire_hydrant", "hydrant", "hot_dog"},
		"Women wearing glasses sitting on buses":              {"bus", "glasses", "woman"},
		"a white teddy bear sitting on top of a wooden bench": {"bear", "bench", "teddy", "teddy_bear", "wooden"},
	} {
		got := lex.Nouns(caption)
		for _, w := range want {
			if w == "wooden" || w == "teddy" {
				continue // lexicon-dependent; not what the test is about
			}
			if !slices.Contains(got, w) {
				t.Errorf("Nouns(%q) = %q, lacks %q", caption, got, w)
			}
		}
		for _, bad := range []string{"two", "a", "in", "on", "playing", "riding", "sitting", "white", "top", "wearing"} {
			if slices.Contains(got, bad) {
				t.Errorf("Nouns(%q) = %q, has the stopword %q", caption, got, bad)
			}
		}
	}
	ctx := context.Background()
	tmp := t.TempDir()
	in, out := filepath.Join(tmp, "in"), filepath.Join(tmp, "out")
	rows := makeRows(300, 4, 6, nounCaption, nil)
	if err := embdir.Write(ctx, in, [][]dataset.Row{rows}, embdir.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "--input", in, "--output", out, "--kind", "noun", "--seed", "1") // default lookup
	inRows, outRows := readBack(t, in), readBack(t, out)
	checkCopy(t, inRows, outRows, ColSplit)
	for i, o := range outRows {
		if o.meta[ColIsError] == "true" {
			a, b := lex.Nouns(inRows[i].caption), lex.Nouns(o.caption)
			if !slices.ContainsFunc(a, func(n string) bool { return slices.Contains(b, n) }) {
				t.Fatalf("row %d: %q took %q, which shares no noun", i, inRows[i].caption, o.caption)
			}
		}
	}
}

func TestCat(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	cats := []string{"person", "dog", "car", "truck", "pizza"}
	catOf := func(i int) string {
		a, b := cats[i%5], cats[(i/5)%5]
		switch i % 4 {
		case 0:
			return a + ", " + b
		case 1:
			return a + ";" + b
		case 2:
			return fmt.Sprintf(`["%s", "%s"]`, a, b) // a list column as the metadata reader prints it
		}
		if i%13 == 0 {
			return "" // no category
		}
		return a
	}
	rows := makeRows(400, 4, 7, func(i int) string { return fmt.Sprintf("picture %d", i) },
		func(i int) map[string]string { return map[string]string{"categories": catOf(i)} })
	if err := embparquet.Write(ctx, in, synth.Split(rows, 3)); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "--input", in, "--output", out, "--kind", "cat", "--category-column", "categories", "--level", "0.3")
	inRows, outRows := readBack(t, in), readBack(t, out)
	errs := checkCopy(t, inRows, outRows, ColSplit)
	catsByCaption := map[string][]string{}
	for _, r := range inRows {
		catsByCaption[r.caption] = Categories(r.meta["categories"])
	}
	for i, o := range outRows {
		if o.meta[ColIsError] != "true" {
			continue
		}
		a, b := Categories(inRows[i].meta["categories"]), catsByCaption[o.caption]
		if !slices.ContainsFunc(a, func(c string) bool { return slices.Contains(b, c) }) {
			t.Fatalf("row %d (categories %q) took the caption of a row with %q", i, a, b)
		}
		if o.meta["categories"] != inRows[i].meta["categories"] {
			t.Fatalf("row %d: categories column changed", i)
		}
	}
	for s, n := range splitSizes(outRows, ColSplit) {
		if errs[s] != floorP(0.3, n) {
			t.Errorf("split %s: %d errors, want %d", s, errs[s], floorP(0.3, n))
		}
	}
}

// classRows is a classification dataset: captions are the class prompt, and every row of a
// class has the class prompt's text embedding.
func classRows(n int, classes []string, caption func(class string) string, label bool) []dataset.Row {
	rng := rand.New(rand.NewPCG(9, 9))
	text := map[string][]float32{}
	for _, c := range classes {
		v := make([]float32, 6)
		for j := range v {
			v[j] = float32(rng.NormFloat64())
		}
		text[c] = v
	}
	rows := makeRows(n, 6, 8, func(i int) string { return caption(classes[i%len(classes)]) }, nil)
	for i := range rows {
		c := classes[i%len(classes)]
		rows[i].Text = text[c]
		if label {
			rows[i].Extra = map[string]string{"label": c}
		}
	}
	return rows
}

func TestSymmetric(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	classes := []string{"airplane", "apple", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}
	rows := classRows(1000, classes, func(c string) string {
		if c == "apple" {
			return "A photo of an apple." // an article and a period the prompt does not have
		}
		return "A photo of a " + c
	}, false)
	if err := embdir.Write(ctx, in, synth.Split(rows, 4), embdir.WriteOptions{MetadataExt: ".csv"}); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "--input", in, "--output", out, "--kind", "symmetric", "--seed", "2")
	inRows, outRows := readBack(t, in), readBack(t, out)
	errs := checkCopySplit(t, inRows, outRows, ColSplit, false)
	for s, n := range splitSizes(outRows, ColSplit) {
		if errs[s] != floorP(0.4, n) {
			t.Errorf("split %s: %d errors, want exactly %d", s, errs[s], floorP(0.4, n))
		}
	}
	p := Prompt{prefix: "A photo of a "}
	moved := map[string]int{}
	for i, o := range outRows {
		orig, _ := p.Class(inRows[i].caption)
		if o.meta[ColOriginalLabel] != orig {
			t.Fatalf("row %d: original_label %q, want %q", i, o.meta[ColOriginalLabel], orig)
		}
		if o.meta[ColIsError] == "true" {
			nc, _ := p.Class(o.caption)
			if nc == orig || !slices.Contains(classes, nc) {
				t.Fatalf("row %d: class %q became %q", i, orig, nc)
			}
			moved[nc]++
		}
	}
	// Uniform over the other classes: 400 flips, about 40 into each class.
	for _, c := range classes {
		if moved[c] < 15 || moved[c] > 70 {
			t.Errorf("%d rows flipped into %s; want about 40 (%v)", moved[c], c, moved)
		}
	}
}

func TestAsymmetricLabelColumn(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	// Numeric labels 0..11: the pair flip follows numeric order (11 -> 0, 9 -> 10), not string
	// order. Captions name the class by word, not by the label, as in CIFAR with integer labels.
	var classes []string
	for k := 0; k < 12; k++ {
		classes = append(classes, fmt.Sprint(k))
	}
	rows := classRows(600, classes, func(c string) string { return "a photo of class " + c + " things" }, true)
	if err := embparquet.Write(ctx, in, synth.Split(rows, 2)); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "--input", in, "--output", out, "--kind", "asymmetric", "--label-column", "label", "--level", "0.2")
	inRows, outRows := readBack(t, in), readBack(t, out)
	errs := checkCopySplit(t, inRows, outRows, ColSplit, false)
	for s, n := range splitSizes(outRows, ColSplit) {
		if errs[s] != floorP(0.2, n) {
			t.Errorf("split %s: %d errors, want %d", s, errs[s], floorP(0.2, n))
		}
	}
	for i, o := range outRows {
		old := inRows[i].meta["label"]
		if o.meta[ColOriginalLabel] != old {
			t.Fatalf("row %d: original_label %q, want %q", i, o.meta[ColOriginalLabel], old)
		}
		var k int
		fmt.Sscan(old, &k)
		want := old
		if o.meta[ColIsError] == "true" {
			want = fmt.Sprint((k + 1) % 12)
		}
		if o.meta["label"] != want || o.caption != "a photo of class "+want+" things" {
			t.Fatalf("row %d: label %s -> %s, caption %q; want label %s", i, old, o.meta["label"], o.caption, want)
		}
	}
}

func TestDeterministicAcrossShardings(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	rows := makeRows(300, 4, 10, nounCaption, nil)
	var outs [][]row
	for k, shards := range [][][]dataset.Row{{rows}, synth.Split(rows, 3), synth.Split(rows, 7)} {
		in := filepath.Join(dir, fmt.Sprint("in", k))
		if err := embdir.Write(ctx, in, shards, embdir.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, seed := range []string{"5", "5", "6"} {
			out := filepath.Join(dir, fmt.Sprint("out", k, "-", len(outs)))
			mustRun(t, "--input", in, "--output", out, "--kind", "noun", "--wordnet", "testdata/wordnet", "--seed", seed)
			outs = append(outs, readBack(t, out))
		}
	}
	same := func(a, b []row) bool {
		for i := range a {
			if a[i].caption != b[i].caption || a[i].meta[ColSplit] != b[i].meta[ColSplit] || !slices.Equal(a[i].text, b[i].text) {
				return false
			}
		}
		return true
	}
	for k := 0; k < len(outs); k += 3 {
		if !same(outs[0], outs[k]) || !same(outs[0], outs[k+1]) {
			t.Errorf("seed 5 with sharding %d differs from sharding 0", k/3)
		}
		if same(outs[0], outs[k+2]) {
			t.Errorf("seed 6 gave the same noise as seed 5")
		}
	}
}

func TestErrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	rows := makeRows(20, 4, 11, func(i int) string { return fmt.Sprintf("c%d", i) }, nil)
	if err := embdir.Write(ctx, in, [][]dataset.Row{rows}, embdir.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	for _, tc := range []struct {
		args  []string
		usage bool
		want  string
	}{
		{[]string{"--kind", "gaussian"}, true, `unknown --kind "gaussian"`},
		{[]string{"--level", "1.5"}, true, "outside [0, 1]"},
		{[]string{"--level", "-0.1"}, true, "outside [0, 1]"},
		{[]string{"--level", "NaN"}, true, "outside [0, 1]"},
		{[]string{"--kind", "cat"}, true, "needs --category-column"},
		{[]string{"--kind", "random", "--category-column", "x"}, true, "applies to --kind cat only"},
		{[]string{"--kind", "symmetric", "--prompt", "no placeholder"}, true, "exactly one {}"},
		{[]string{"--kind", "cat", "--category-column", "coco_cats"}, false, `no category column "coco_cats"`},
		{[]string{"--kind", "asymmetric", "--label-column", "label"}, false, `no label column "label"`},
		{[]string{"--split-column", "fold"}, false, `no split column "fold"`},
		{[]string{"--kind", "symmetric"}, false, `is not of the form "A photo of a {}"`},
		{[]string{"--kind", "noun", "--wordnet", filepath.Join(dir, "nowhere")}, false, "run scripts/fetch-wordnet.sh"},
	} {
		got, err := run(t, append([]string{"--input", in, "--output", out}, tc.args...)...)
		var ue cli.UsageError
		if err == nil || !strings.Contains(err.Error(), tc.want) || errors.As(err, &ue) != tc.usage {
			t.Errorf("%v: err %v (usage error: %v), want %q (usage error: %v)\n%s", tc.args, err, errors.As(err, &ue), tc.want, tc.usage, got)
		}
	}
	if _, err := run(t, "--input", in, "--output", in); err == nil || !strings.Contains(err.Error(), "is the input") {
		t.Errorf("output = input: %v", err)
	}
	mustRun(t, "--input", in, "--output", out)
	if _, err := run(t, "--input", in, "--output", out); err == nil || !strings.Contains(err.Error(), "already holds") {
		t.Errorf("second run into the same output: %v", err)
	}
	one := filepath.Join(dir, "one")
	oneRows := classRows(10, []string{"cat"}, func(c string) string { return "A photo of a " + c }, false)
	if err := embdir.Write(ctx, one, [][]dataset.Row{oneRows}, embdir.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "--input", one, "--output", filepath.Join(dir, "o1"), "--kind", "asymmetric"); err == nil || !strings.Contains(err.Error(), "at least 2 classes") {
		t.Errorf("one class: %v", err)
	}
	if out, err := run(t, "-h"); err != nil || !strings.Contains(out, "Usage: lemon noise") {
		t.Errorf("-h: %v\n%s", err, out)
	}
}

func TestPromptClass(t *testing.T) {
	p, err := ParsePrompt("A photo of a {}")
	if err != nil {
		t.Fatal(err)
	}
	for caption, want := range map[string]string{
		"A photo of a cat":          "cat",
		"a photo of a pickup truck": "pickup truck",
		"A photo of an apple.":      "apple",
		"  A PHOTO OF A Dog ":       "Dog",
		"A photo of a ":             "",
		"A drawing of a cat":        "",
	} {
		got, ok := p.Class(caption)
		if got != want || ok != (want != "") {
			t.Errorf("Class(%q) = %q, %v; want %q", caption, got, ok, want)
		}
	}
	p2, _ := ParsePrompt("itap of a {}.")
	if got, ok := p2.Class("itap of a cat."); !ok || got != "cat" {
		t.Errorf("suffix prompt: %q %v", got, ok)
	}
}

func TestCategories(t *testing.T) {
	for v, want := range map[string][]string{
		"dog":                  {"dog"},
		"dog, person;car ,dog": {"car", "dog", "person"},
		`["person", "dog"]`:    {"dog", "person"},
		"[1, 2]":               {"1", "2"},
		"  ":                   {},
	} {
		if got := Categories(v); !slices.Equal(got, want) {
			t.Errorf("Categories(%q) = %q, want %q", v, got, want)
		}
	}
}

// termCorpus is a split of n rows with distinct captions whose category lists follow a skewed
// vocabulary, as COCO's do: "c0" is on most rows, the highest-numbered terms on a few.
func termCorpus(n int, seed uint64) (captions []string, terms [][]string) {
	rng := rand.New(rand.NewPCG(seed, 77))
	const vocab = 12
	for i := 0; i < n; i++ {
		set := map[string]bool{}
		for t := 0; t < vocab; t++ {
			if rng.Float64() < 0.7/float64(t+1) {
				set[fmt.Sprintf("c%02d", t)] = true
			}
		}
		if i%17 == 0 {
			set = map[string]bool{} // some rows have no category
		}
		var ts []string
		for t := range set {
			ts = append(ts, t)
		}
		slices.Sort(ts)
		captions = append(captions, fmt.Sprintf("caption %d", i))
		terms = append(terms, ts)
	}
	return captions, terms
}

// authorsDonorProbs is the distribution of row a's donor under the authors' rule, worked out
// from their code (calc_noise_by_integer_matching in MLforHealth/LEMoN's noise_captioning.py):
// a term t of row a with probability 1/|T_a|, then a row of index[t] other than a, uniformly.
// With distinct captions every such swap is an error, so this is also the distribution given
// that the row changed, which is what sharedPicker draws from. p[j] is row j's probability; the
// rest (to 1) is the chance of no donor (a term no other row has).
func authorsDonorProbs(a int, terms [][]string) []float64 {
	index := map[string][]int{}
	for j, ts := range terms {
		for _, t := range ts {
			index[t] = append(index[t], j)
		}
	}
	p := make([]float64, len(terms))
	for _, t := range terms[a] {
		if len(index[t]) < 2 {
			continue
		}
		for _, j := range index[t] {
			if j != a {
				p[j] += 1 / float64(len(terms[a])) / float64(len(index[t])-1)
			}
		}
	}
	return p
}

// rarest is the term of ts that the fewest rows have (ties: the first in order).
func rarest(ts []string, count map[string]int) string {
	best := ""
	for _, t := range ts {
		if best == "" || count[t] < count[best] {
			best = t
		}
	}
	return best
}

// TestSharedPickerMatchesAuthorsRule checks the statistics of noun/cat donors against the
// authors' rule, worked out exactly. Per chosen row, donors are grouped by the terms they share
// with it, and each group's observed share must be within 5 standard errors of its probability
// under the authors' rule. Over a whole run of decide, the share of changed rows whose donor
// shares the row's rarest term (the statistic the issue measured) must match the authors'
// expectation; it must also be far from the old rule's (any row sharing any term, uniformly),
// so this test tells the two rules apart.
func TestSharedPickerMatchesAuthorsRule(t *testing.T) {
	const n = 600
	captions, terms := termCorpus(n, 1)
	rows := make([]int, n)
	for i := range rows {
		rows[i] = i
	}
	count := map[string]int{}
	for _, ts := range terms {
		for _, tm := range ts {
			count[tm]++
		}
	}
	within := func(what string, got, want float64, draws int) {
		t.Helper()
		se := math.Sqrt(want * (1 - want) / float64(draws))
		if math.Abs(got-want) > 5*se+1e-9 {
			t.Errorf("%s: observed %.4f, authors' rule %.4f (5 s.e. = %.4f)", what, got, want, 5*se)
		}
	}

	// Per row: donors grouped by the set of terms they share with the row.
	rng := rand.New(rand.NewPCG(3, 4))
	pick := sharedPicker(rng, rows, captions, terms)
	tested := 0
	for a := 0; a < n && tested < 8; a++ {
		if len(terms[a]) < 2 {
			continue // one term: term-first and any-term agree; not a telling case
		}
		tested++
		p := authorsDonorProbs(a, terms)
		noDonor := 1.0
		group := func(j int) string {
			var g []string
			for _, tm := range terms[a] {
				if slices.Contains(terms[j], tm) {
					g = append(g, tm)
				}
			}
			return strings.Join(g, "+")
		}
		want := map[string]float64{}
		for j, pj := range p {
			if pj > 0 {
				want[group(j)] += pj
				noDonor -= pj
			}
		}
		const draws = 20000
		got := map[string]int{}
		for k := 0; k < draws; k++ {
			j := pick(a)
			if j < 0 {
				got["none"]++
				continue
			}
			if j == a || captions[j] == captions[a] {
				t.Fatalf("row %d: picked itself or a same-caption row %d", a, j)
			}
			got[group(j)]++
		}
		want["none"] = math.Max(noDonor, 0)
		for g, w := range want {
			within(fmt.Sprintf("row %d (terms %q), donors sharing %q", a, terms[a], g), float64(got[g])/draws, w, draws)
		}
		for g := range got {
			if _, ok := want[g]; !ok {
				t.Errorf("row %d: donor group %q is impossible under the authors' rule", a, g)
			}
		}
	}
	if tested < 8 {
		t.Fatalf("only %d rows with two or more terms", tested)
	}

	// Whole runs: the share of changed rows whose donor has the row's rarest term.
	var gotShare, authorsShare, oldShare float64
	changed := 0
	for seed := uint64(1); seed <= 5; seed++ {
		c := &corpus{captions: captions, ok: make([]bool, n), split: make([]string, n), terms: terms}
		for i := range c.ok {
			c.ok[i], c.split[i] = true, "train"
		}
		d, err := decide("cat", 0.4, seed, c)
		if err != nil {
			t.Fatal(err)
		}
		for a, j := range d.donor {
			if j < 0 {
				continue
			}
			changed++
			r := rarest(terms[a], count)
			if slices.Contains(terms[j], r) {
				gotShare++
			}
			// Expected under the authors' rule, given that row a changed.
			p := authorsDonorProbs(a, terms)
			var mass, hit float64
			for k, pk := range p {
				mass += pk
				if pk > 0 && slices.Contains(terms[k], r) {
					hit += pk
				}
			}
			authorsShare += hit / mass
			// Under the old rule: uniform over every row sharing any term with row a.
			var union, withR float64
			for k := range terms {
				if k != a && slices.ContainsFunc(terms[a], func(tm string) bool { return slices.Contains(terms[k], tm) }) {
					union++
					if slices.Contains(terms[k], r) {
						withR++
					}
				}
			}
			oldShare += withR / union
		}
	}
	if changed < 900 {
		t.Fatalf("only %d rows changed over 5 runs", changed)
	}
	gotShare, authorsShare, oldShare = gotShare/float64(changed), authorsShare/float64(changed), oldShare/float64(changed)
	t.Logf("donor shares the row's rarest term: %.3f observed, %.3f authors' rule, %.3f old rule (%d changed rows)", gotShare, authorsShare, oldShare, changed)
	within("rarest-term share over whole runs", gotShare, authorsShare, changed)
	if se := math.Sqrt(authorsShare * (1 - authorsShare) / float64(changed)); math.Abs(oldShare-authorsShare) < 10*se {
		t.Errorf("the corpus does not tell the rules apart: old rule %.3f, authors' %.3f", oldShare, authorsShare)
	}
}

// TestSharedPickerNoDonor: a row whose only term no other row has, or whose term's other rows
// all have its caption, gets no donor; rows without terms get none either.
func TestSharedPickerNoDonor(t *testing.T) {
	captions := []string{"a", "a", "b", "c"}
	terms := [][]string{{"x"}, {"x"}, {"y"}, nil}
	pick := sharedPicker(rand.New(rand.NewPCG(1, 2)), []int{0, 1, 2, 3}, captions, terms)
	for a := range captions {
		if got := pick(a); got != -1 {
			t.Errorf("row %d: picked %d, want no donor", a, got)
		}
	}
}

// writeNpy writes a .npy by hand, for layouts embdir.Write does not make: big-endian float32,
// or Fortran (column-major) order.
func writeNpy(t *testing.T, path string, m [][]float32, bigEndian, fortran bool) {
	t.Helper()
	descr, fo := "<f4", "False"
	var order binary.ByteOrder = binary.LittleEndian
	if bigEndian {
		descr, order = ">f4", binary.BigEndian
	}
	if fortran {
		fo = "True"
	}
	rows, cols := len(m), len(m[0])
	h := fmt.Sprintf("{'descr': '%s', 'fortran_order': %s, 'shape': (%d, %d), }", descr, fo, rows, cols)
	for (10+len(h)+1)%64 != 0 {
		h += " "
	}
	h += "\n"
	var b bytes.Buffer
	b.WriteString("\x93NUMPY\x01\x00")
	binary.Write(&b, binary.LittleEndian, uint16(len(h)))
	b.WriteString(h)
	put := func(v float32) { binary.Write(&b, order, math.Float32bits(v)) }
	if fortran {
		for c := 0; c < cols; c++ {
			for r := 0; r < rows; r++ {
				put(m[r][c])
			}
		}
	} else {
		for _, row := range m {
			for _, v := range row {
				put(v)
			}
		}
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLayouts: text embeddings in big-endian and Fortran-order .npy files come out in the same
// layout (header byte for byte), image files are copied byte for byte, and a JSON Lines label
// that is a number stays a number.
func TestLayouts(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	classes := []string{"0", "1", "2", "3"}
	rows := classRows(40, classes, func(c string) string { return "A photo of a " + c }, false)
	shards := synth.Split(rows, 2)
	if err := embdir.Write(ctx, in, shards, embdir.WriteOptions{MetadataExt: "none"}); err != nil {
		t.Fatal(err)
	}
	for n, sh := range shards {
		var m [][]float32
		var meta strings.Builder
		for _, r := range sh {
			m = append(m, r.Text)
			fmt.Fprintf(&meta, "{\"key\":%q,\"caption\":%q,\"label\":%s,\"extra\":{\"a\":[1,2]}}\n\n", r.ID, r.Caption, strings.TrimPrefix(r.Caption, "A photo of a "))
		}
		writeNpy(t, filepath.Join(in, "text_emb", fmt.Sprintf("text_emb_%d.npy", n)), m, n == 0, n == 1)
		if err := os.MkdirAll(filepath.Join(in, "metadata"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(in, "metadata", fmt.Sprintf("metadata_%d.jsonl", n)), []byte(meta.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mustRun(t, "--input", in, "--output", out, "--kind", "asymmetric", "--label-column", "label", "--level", "0.5")
	inRows, outRows := readBack(t, in), readBack(t, out)
	errs := checkCopySplit(t, inRows, outRows, ColSplit, false)
	total := 0
	for _, n := range errs {
		total += n
	}
	if total == 0 {
		t.Fatal("no errors injected")
	}
	for n := range shards {
		for _, f := range []string{fmt.Sprintf("text_emb/text_emb_%d.npy", n), fmt.Sprintf("img_emb/img_emb_%d.npy", n)} {
			a, _ := os.ReadFile(filepath.Join(in, f))
			b, _ := os.ReadFile(filepath.Join(out, f))
			if len(a) != len(b) || !bytes.Equal(a[:128], b[:128]) {
				t.Errorf("%s: header or size changed", f)
			}
			if strings.HasPrefix(f, "img") && !bytes.Equal(a, b) {
				t.Errorf("%s: image embeddings changed", f)
			}
		}
	}
	b, _ := os.ReadFile(filepath.Join(out, "metadata", "metadata_0.jsonl"))
	for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		o := outRows[i]
		want := fmt.Sprintf(`"label":%s,"extra":{"a":[1,2]},"is_error":"%s"`, o.meta["label"], o.meta[ColIsError])
		if !strings.Contains(line, want) {
			t.Fatalf("jsonl line %d: %s\nwant it to contain %s", i, line, want)
		}
	}
}
