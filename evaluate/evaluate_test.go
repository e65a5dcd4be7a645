package evaluate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/lemon-curation/lemon/dataset/metadata"
	"github.com/lemon-curation/lemon/evaluate"
	"github.com/lemon-curation/lemon/metrics"

	"github.com/lemon-curation/lemon/internal/cli"
)

// fixture is a hand-made `lemon score` run with known truth, scores and neighbours.
type fixture struct {
	ids, captions, splits []string
	truth                 []bool
	dmm, sn, sm, score    []float64
	neighbours            [][]string
	threshold             float64
}

const fixtureK = 10

var classes = []string{"cat", "dog", "car", "tree", "boat", "bird"}

func newFixture(n int) *fixture {
	rng := rand.New(rand.NewPCG(7, 11))
	f := &fixture{}
	class := make([]int, n)
	for i := 0; i < n; i++ {
		class[i] = rng.IntN(len(classes))
		isErr := rng.Float64() < 0.3
		// Errors carry another class's caption; captions are class labels, where deep kNN works.
		c := class[i]
		if isErr {
			c = (c + 1 + rng.IntN(len(classes)-1)) % len(classes)
		}
		f.ids = append(f.ids, fmt.Sprintf("r%04d", i))
		f.captions = append(f.captions, "a photo of a "+classes[c])
		f.truth = append(f.truth, isErr)
		f.splits = append(f.splits, []string{"train", "train", "train", "val", "test"}[i%5])
		b := 0.0
		if isErr {
			b = 1
		}
		f.dmm = append(f.dmm, 0.7+0.08*b+0.05*rng.NormFloat64())
		f.sn = append(f.sn, 0.3+0.2*b+0.15*rng.NormFloat64())
		f.sm = append(f.sm, 0.3+0.1*b+0.15*rng.NormFloat64())
		// Quantised, so the score has ties.
		f.score = append(f.score, math.Round((f.dmm[i]+5*f.sn[i]+5*f.sm[i])*20)/20)
	}
	// Image neighbours: rows of the same true class, plus a little noise.
	for i := 0; i < n; i++ {
		var nb []string
		for len(nb) < fixtureK {
			j := rng.IntN(n)
			if j != i && (class[j] == class[i] || rng.Float64() < 0.1) {
				nb = append(nb, f.ids[j])
			}
		}
		f.neighbours = append(f.neighbours, nb)
	}
	s := append([]float64(nil), f.score...)
	at, _ := metrics.PrecisionRecallAtFraction(s, f.truth, 0.2)
	f.threshold = at.Threshold
	return f
}

// deepKNN is the baseline computed straight from the fixture.
func (f *fixture) deepKNN() []float64 {
	cap := map[string]string{}
	for i, id := range f.ids {
		cap[id] = f.captions[i]
	}
	out := make([]float64, len(f.ids))
	for i, nb := range f.neighbours {
		d := 0
		for _, j := range nb {
			if cap[j] != f.captions[i] {
				d++
			}
		}
		out[i] = float64(d) / float64(len(nb))
	}
	return out
}

type runOpts struct {
	neighbours bool
	csvScores  bool
	images     bool
	imageDir   string // write PNG files here and an image_path column of paths relative to it
	shards     int
}

func tinyPNG(i int) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 40, 30))
	c := color.RGBA{uint8(40 * (i % 6)), uint8(255 - 30*(i%8)), 160, 255}
	for y := 0; y < 30; y++ {
		for x := 0; x < 40; x++ {
			img.Set(x, y, c)
		}
	}
	var b bytes.Buffer
	png.Encode(&b, img)
	return b.Bytes()
}

// write lays the fixture out as `lemon score --output dir` does.
func (f *fixture) write(t *testing.T, dir string, o runOpts) {
	t.Helper()
	ctx := context.Background()
	mem := memory.DefaultAllocator
	n := len(f.ids)
	per := (n + o.shards - 1) / o.shards
	for sh := 0; sh < o.shards; sh++ {
		lo, hi := sh*per, min((sh+1)*per, n)
		name := fmt.Sprintf("part-%05d", sh)
		// Shard 0 stores the truth as booleans, the others as assorted strings.
		truthType := arrow.DataType(arrow.BinaryTypes.String)
		if sh == 0 {
			truthType = arrow.FixedWidthTypes.Boolean
		}
		fields := []arrow.Field{
			{Name: "key", Type: arrow.BinaryTypes.String}, {Name: "caption", Type: arrow.BinaryTypes.String},
			{Name: "is_error", Type: truthType}, {Name: "split", Type: arrow.BinaryTypes.String},
		}
		if o.images {
			fields = append(fields, arrow.Field{Name: "jpg", Type: arrow.BinaryTypes.Binary})
		}
		if o.imageDir != "" {
			fields = append(fields, arrow.Field{Name: "image_path", Type: arrow.BinaryTypes.String})
		}
		for _, c := range []string{"lemon_d_mm", "lemon_s_n", "lemon_s_m", "lemon_score"} {
			fields = append(fields, arrow.Field{Name: c, Type: arrow.PrimitiveTypes.Float64})
		}
		schema := arrow.NewSchema(fields, nil)
		for _, part := range []struct {
			dir      string
			rejected bool
		}{{"kept", false}, {"rejected", true}} {
			b := array.NewRecordBuilder(mem, schema)
			for i := lo; i < hi; i++ {
				if (f.score[i] >= f.threshold) != part.rejected {
					continue
				}
				b.Field(0).(*array.StringBuilder).Append(f.ids[i])
				b.Field(1).(*array.StringBuilder).Append(f.captions[i])
				if sh == 0 {
					b.Field(2).(*array.BooleanBuilder).Append(f.truth[i])
				} else {
					forms := [][2]string{{"true", "false"}, {"1", "0"}, {"YES", "no"}, {"True", "FALSE"}}[i%4]
					v := forms[1]
					if f.truth[i] {
						v = forms[0]
					}
					b.Field(2).(*array.StringBuilder).Append(v)
				}
				b.Field(3).(*array.StringBuilder).Append(f.splits[i])
				c := 4
				if o.images {
					b.Field(c).(*array.BinaryBuilder).Append(tinyPNG(i))
					c++
				}
				if o.imageDir != "" {
					// Every other file is missing, to show the placeholder.
					rel := fmt.Sprintf("img/%04d.png", i)
					if i%2 == 0 {
						os.MkdirAll(filepath.Join(o.imageDir, "img"), 0o755)
						os.WriteFile(filepath.Join(o.imageDir, rel), tinyPNG(i), 0o644)
					}
					b.Field(c).(*array.StringBuilder).Append(rel)
					c++
				}
				for k, x := range []float64{f.dmm[i], f.sn[i], f.sm[i], f.score[i]} {
					b.Field(c + k).(*array.Float64Builder).Append(x)
				}
			}
			rec := b.NewRecordBatch()
			if err := metadata.WriteParquet(ctx, filepath.Join(dir, part.dir, name+".parquet"), schema, rec); err != nil {
				t.Fatal(err)
			}
			rec.Release()
			b.Release()
		}
		// errors/: one unscored row per shard.
		es := arrow.NewSchema([]arrow.Field{{Name: "key", Type: arrow.BinaryTypes.String}, {Name: "reason", Type: arrow.BinaryTypes.String}}, nil)
		eb := array.NewRecordBuilder(mem, es)
		eb.Field(0).(*array.StringBuilder).Append(fmt.Sprintf("bad%d", sh))
		eb.Field(1).(*array.StringBuilder).Append("zero image embedding")
		erec := eb.NewRecordBatch()
		if err := metadata.WriteParquet(ctx, filepath.Join(dir, "errors", name+".parquet"), es, erec); err != nil {
			t.Fatal(err)
		}
		erec.Release()
		eb.Release()
		f.writeScores(t, filepath.Join(dir, "scores", name), lo, hi, o)
	}
	input := dir
	if o.imageDir != "" {
		input = o.imageDir
	}
	m := fmt.Sprintf(`{"tool":"lemon","status":"complete","input":%q,"params":{"k":%d,"beta":5},"threshold":%v,"counts":{"rows_in":%d}}`, input, fixtureK, f.threshold, n)
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(m), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) writeScores(t *testing.T, base string, lo, hi int, o runOpts) {
	t.Helper()
	if o.csvScores {
		var b strings.Builder
		b.WriteString("id,caption,d_mm,s_n,s_m,score,flagged")
		if o.neighbours {
			b.WriteString(",image_neighbours,text_neighbours")
		}
		b.WriteString("\n")
		for i := lo; i < hi; i++ {
			fmt.Fprintf(&b, "%s,%s,%v,%v,%v,%v,%v", f.ids[i], f.captions[i], f.dmm[i], f.sn[i], f.sm[i], f.score[i], f.score[i] >= f.threshold)
			if o.neighbours {
				fmt.Fprintf(&b, ",%s,%s", strings.Join(f.neighbours[i], " "), strings.Join(f.neighbours[i], " "))
			}
			b.WriteString("\n")
		}
		os.MkdirAll(filepath.Dir(base), 0o755)
		if err := os.WriteFile(base+".csv", []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	fields := []arrow.Field{
		{Name: "id", Type: arrow.BinaryTypes.String}, {Name: "caption", Type: arrow.BinaryTypes.String},
		{Name: "d_mm", Type: arrow.PrimitiveTypes.Float64}, {Name: "s_n", Type: arrow.PrimitiveTypes.Float64},
		{Name: "s_m", Type: arrow.PrimitiveTypes.Float64}, {Name: "score", Type: arrow.PrimitiveTypes.Float64},
		{Name: "flagged", Type: arrow.FixedWidthTypes.Boolean},
	}
	if o.neighbours {
		fields = append(fields, arrow.Field{Name: "image_neighbours", Type: arrow.ListOf(arrow.BinaryTypes.String)},
			arrow.Field{Name: "text_neighbours", Type: arrow.ListOf(arrow.BinaryTypes.String)})
	}
	schema := arrow.NewSchema(fields, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for i := lo; i < hi; i++ {
		b.Field(0).(*array.StringBuilder).Append(f.ids[i])
		b.Field(1).(*array.StringBuilder).Append(f.captions[i])
		for k, x := range []float64{f.dmm[i], f.sn[i], f.sm[i], f.score[i]} {
			b.Field(2 + k).(*array.Float64Builder).Append(x)
		}
		b.Field(6).(*array.BooleanBuilder).Append(f.score[i] >= f.threshold)
		if o.neighbours {
			for k := 0; k < 2; k++ {
				lb := b.Field(7 + k).(*array.ListBuilder)
				lb.Append(true)
				lb.ValueBuilder().(*array.StringBuilder).AppendValues(f.neighbours[i], nil)
			}
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	if err := metadata.WriteParquet(context.Background(), base+".parquet", schema, rec); err != nil {
		t.Fatal(err)
	}
}

func pick[T any](x []T, keep func(i int) bool) []T {
	var out []T
	for i := range x {
		if keep(i) {
			out = append(out, x[i])
		}
	}
	return out
}

type methodJSON struct {
	Available           bool
	Reason              string
	AUROC, AUPRC, F1    *float64
	F1Prevalence        *float64 `json:"f1_prevalence"`
	PrevalenceThreshold *float64 `json:"prevalence_threshold"`
	F1Threshold         *float64 `json:"f1_threshold"`
	F1ThresholdFrom     string   `json:"f1_threshold_from"`
	PrecisionAtReject   *float64 `json:"precision_at_reject_fraction"`
	RecallAtReject      *float64 `json:"recall_at_reject_fraction"`
	Rejected            int
}

type reportJSON struct {
	Methods         map[string]methodJSON
	F1ThresholdFrom string `json:"f1_threshold_from"`
	Counts          map[string]int
	RunFilter       struct{ Rejected int } `json:"run_filter"`
	MostSuspect     []struct {
		ID      string
		Score   float64
		IsError bool `json:"is_error"`
	} `json:"most_suspect"`
}

func readJSON(t *testing.T, dir string) (reportJSON, map[string]any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r reportJSON
	var raw map[string]any
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(b, &raw)
	return r, raw
}

// expect computes one method's numbers straight from the fixture's arrays.
func expect(t *testing.T, scores []float64, truth []bool, evalRow, thrRow func(int) bool, fraction float64) methodJSON {
	t.Helper()
	es, et := pick(scores, evalRow), pick(truth, evalRow)
	ts, tt := pick(scores, thrRow), pick(truth, thrRow)
	auroc, err1 := metrics.AUROC(es, et)
	auprc, err2 := metrics.AUPRC(es, et)
	thr, _, err3 := metrics.BestF1Threshold(ts, tt)
	f1, err4 := metrics.F1At(es, et, thr)
	at, err5 := metrics.PrecisionRecallAtFraction(es, et, fraction)
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		t.Fatal(err)
	}
	return methodJSON{Available: true, AUROC: &auroc, AUPRC: &auprc, F1: &f1, F1Threshold: &thr,
		PrecisionAtReject: &at.Precision, RecallAtReject: &at.Recall, Rejected: at.Rejected}
}

func same(a, b *float64) bool { return a != nil && b != nil && *a == *b }

func checkMethod(t *testing.T, name string, got, want methodJSON) {
	t.Helper()
	if !got.Available {
		t.Fatalf("%s: unavailable: %s", name, got.Reason)
	}
	for _, c := range []struct {
		what      string
		got, want *float64
	}{{"auroc", got.AUROC, want.AUROC}, {"auprc", got.AUPRC, want.AUPRC}, {"f1", got.F1, want.F1},
		{"f1_threshold", got.F1Threshold, want.F1Threshold}, {"precision", got.PrecisionAtReject, want.PrecisionAtReject},
		{"recall", got.RecallAtReject, want.RecallAtReject}} {
		if !same(c.got, c.want) {
			t.Errorf("%s %s = %v, computed directly %v", name, c.what, deref(c.got), deref(c.want))
		}
	}
	if got.Rejected != want.Rejected {
		t.Errorf("%s rejected = %d, want %d", name, got.Rejected, want.Rejected)
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestRunWithSplits(t *testing.T) {
	f := newFixture(400)
	run, rep := t.TempDir(), t.TempDir()
	f.write(t, run, runOpts{neighbours: true, images: true, shards: 3})
	r, err := evaluate.Run(context.Background(), evaluate.Options{RunDir: run, OutDir: rep, TruthColumn: "is_error", SplitColumn: "split", RejectFraction: 0.15})
	if err != nil {
		t.Fatal(err)
	}
	got, raw := readJSON(t, rep)
	test := func(i int) bool { return f.splits[i] == "test" }
	val := func(i int) bool { return f.splits[i] == "val" }
	cols := map[string][]float64{"lemon": f.score, "clip_similarity": f.dmm, "deep_knn": f.deepKNN()}
	for name, s := range cols {
		checkMethod(t, name, got.Methods[name], expect(t, s, f.truth, test, val, 0.15))
		if !strings.Contains(got.Methods[name].F1ThresholdFrom, "validation") {
			t.Errorf("%s: f1_threshold_from %q", name, got.Methods[name].F1ThresholdFrom)
		}
	}
	// The JSON's shape: methods.<name>.{auroc, auprc, f1} for every method; numbers for those
	// the fixture can serve, null with a reason for the rest (no lists, no input embeddings).
	methods := raw["methods"].(map[string]any)
	if len(methods) != len(evaluate.MethodNames) {
		t.Errorf("methods: %v", methods)
	}
	for _, name := range evaluate.MethodNames {
		m := methods[name].(map[string]any)
		_, computed := cols[name]
		for _, k := range []string{"auroc", "auprc", "f1"} {
			if _, ok := m[k].(float64); ok != computed {
				t.Errorf("methods.%s.%s = %v", name, k, m[k])
			}
		}
		if !computed && m["reason"] == "" {
			t.Errorf("methods.%s: unavailable without a reason", name)
		}
	}
	if !strings.Contains(got.Methods["lemon_fix"].Reason, "--save-neighbour-lists") {
		t.Errorf("lemon_fix: reason %q should ask for saved neighbour lists", got.Methods["lemon_fix"].Reason)
	}
	nTest, nVal := len(pick(f.ids, test)), len(pick(f.ids, val))
	if got.Counts["test_rows"] != nTest || got.Counts["validation_rows"] != nVal || got.Counts["scored"] != 400 ||
		got.Counts["unscored"] != 3 || got.Counts["other_split_rows"] != 400-nTest-nVal {
		t.Errorf("counts %v; want test %d, val %d", got.Counts, nTest, nVal)
	}
	if got.RunFilter.Rejected != got.Counts["rejected"] || got.Counts["rejected"] == 0 {
		t.Errorf("run filter %+v, counts %v", got.RunFilter, got.Counts)
	}
	// The gallery is the top scores, over every split.
	if len(got.MostSuspect) != evaluate.GallerySize {
		t.Fatalf("%d suspects", len(got.MostSuspect))
	}
	top := append([]float64(nil), f.score...)
	sortDesc(top)
	for k, s := range got.MostSuspect {
		if s.Score != top[k] {
			t.Errorf("suspect %d scores %v, want %v", k, s.Score, top[k])
		}
	}
	page := readHTML(t, rep)
	checkPage(t, page)
	if n := strings.Count(page, `src="data:image/jpeg;base64,`); n != evaluate.GallerySize {
		t.Errorf("%d thumbnails, want %d", n, evaluate.GallerySize)
	}
	if r.Counts.EvaluatedRows != nTest {
		t.Errorf("evaluated %d rows, want %d", r.Counts.EvaluatedRows, nTest)
	}
	if keep := os.Getenv("LEMON_EVAL_KEEP_REPORT"); keep != "" {
		// For looking at the page: LEMON_EVAL_KEEP_REPORT=/tmp/x go test -run TestRunWithSplits
		os.WriteFile(keep, []byte(page), 0o644)
	}
}

func sortDesc(x []float64) {
	for i := 1; i < len(x); i++ {
		for j := i; j > 0 && x[j] > x[j-1]; j-- {
			x[j], x[j-1] = x[j-1], x[j]
		}
	}
}

func readHTML(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkPage: one self-contained page with the plots and the table.
func checkPage(t *testing.T, page string) {
	t.Helper()
	for _, want := range []string{"<!DOCTYPE html>", "<style>", "<table>", "AUROC", "AUPRC", "F1",
		"LEMoN", "CLIP similarity", "Deep kNN", "polyline", "<h3>ROC</h3>", "<h3>Precision-recall</h3>", "most suspect pairs"} {
		if !strings.Contains(page, want) {
			t.Errorf("report.html lacks %q", want)
		}
	}
	// 2 curve plots + 1 histogram per available method.
	if n := strings.Count(page, "<svg"); n < 3 {
		t.Errorf("report.html has %d SVG plots", n)
	}
	if n := strings.Count(page, "<rect"); n < 20 {
		t.Errorf("report.html has %d histogram bars", n)
	}
	for _, bad := range []string{"<script", "<link", `src="http`, "@import", "url(http"} {
		if strings.Contains(page, bad) {
			t.Errorf("report.html is not self-contained: it has %q", bad)
		}
	}
}

func TestRunWithoutSplitsOrNeighbours(t *testing.T) {
	f := newFixture(300)
	run, rep := t.TempDir(), t.TempDir()
	f.write(t, run, runOpts{shards: 2})
	if _, err := evaluate.Run(context.Background(), evaluate.Options{RunDir: run, OutDir: rep, RejectFraction: 0.1}); err != nil {
		t.Fatal(err)
	}
	got, raw := readJSON(t, rep)
	all := func(int) bool { return true }
	for name, s := range map[string][]float64{"lemon": f.score, "clip_similarity": f.dmm} {
		checkMethod(t, name, got.Methods[name], expect(t, s, f.truth, all, all, 0.1))
		if got.Methods[name].F1ThresholdFrom != "all rows" {
			t.Errorf("%s: f1_threshold_from %q, want \"all rows\"", name, got.Methods[name].F1ThresholdFrom)
		}
	}
	if got.F1ThresholdFrom != "all rows" {
		t.Errorf("f1_threshold_from %q", got.F1ThresholdFrom)
	}
	dk := got.Methods["deep_knn"]
	if dk.Available || !strings.Contains(dk.Reason, "--emit-neighbours") {
		t.Errorf("deep_knn: %+v, want unavailable for want of --emit-neighbours", dk)
	}
	m := raw["methods"].(map[string]any)["deep_knn"].(map[string]any)
	for _, k := range []string{"auroc", "auprc", "f1"} {
		if v, ok := m[k]; !ok || v != nil {
			t.Errorf("deep_knn.%s = %v, want null", k, v)
		}
	}
	page := readHTML(t, rep)
	checkPage(t, page)
	if !strings.Contains(page, "Images: not available") || strings.Contains(page, "data:image") {
		t.Error("report.html should say images are not available")
	}
	if !strings.Contains(page, "--emit-neighbours") {
		t.Error("report.html should say why deep kNN is missing")
	}
}

func TestCSVScoresNeighbours(t *testing.T) {
	f := newFixture(200)
	run, rep := t.TempDir(), t.TempDir()
	f.write(t, run, runOpts{neighbours: true, csvScores: true, shards: 2})
	if _, err := evaluate.Run(context.Background(), evaluate.Options{RunDir: run, OutDir: rep, RejectFraction: 0.1}); err != nil {
		t.Fatal(err)
	}
	got, _ := readJSON(t, rep)
	all := func(int) bool { return true }
	checkMethod(t, "deep_knn", got.Methods["deep_knn"], expect(t, f.deepKNN(), f.truth, all, all, 0.1))
}

// TestImagePaths: thumbnails from a column of image paths relative to the run's input.
func TestImagePaths(t *testing.T) {
	f := newFixture(120)
	run, rep, input := t.TempDir(), t.TempDir(), t.TempDir()
	f.write(t, run, runOpts{imageDir: input, shards: 1})
	r, err := evaluate.Run(context.Background(), evaluate.Options{RunDir: run, OutDir: rep})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.Images, `"image_path"`) {
		t.Errorf("images: %s", r.Images)
	}
	page := readHTML(t, rep)
	thumbs, missing := strings.Count(page, `src="data:image/jpeg;base64,`), strings.Count(page, "image file not found")
	if thumbs == 0 || missing == 0 || thumbs+missing != evaluate.GallerySize {
		t.Errorf("%d thumbnails and %d missing images, want both and %d in all", thumbs, missing, evaluate.GallerySize)
	}
}

func TestBadInput(t *testing.T) {
	f := newFixture(100)
	run := t.TempDir()
	f.write(t, run, runOpts{shards: 1})
	ctx := context.Background()
	// A run still running (or killed) has all its files but a manifest that says so.
	unfinished := t.TempDir()
	f.write(t, unfinished, runOpts{shards: 1})
	m := `{"tool":"lemon","status":"running","run_id":"r1","started_at":"2026-12-02T10:00:00Z"}`
	if err := os.WriteFile(filepath.Join(unfinished, "manifest.json"), []byte(m), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		o    evaluate.Options
		want string
	}{
		{"no truth column", evaluate.Options{TruthColumn: "label"}, `no truth column "label"`},
		{"no split column", evaluate.Options{SplitColumn: "fold"}, `no column "fold"`},
		{"no such split", evaluate.Options{SplitColumn: "split", TestSplit: "holdout"}, `"holdout"`},
		{"truth not boolean", evaluate.Options{TruthColumn: "caption"}, "row 0 (0-based)"},
		{"not a run", evaluate.Options{RunDir: t.TempDir()}, "holds no finished lemon score run"},
		{"an unfinished run", evaluate.Options{RunDir: unfinished}, "has not finished"},
		{"bad fraction", evaluate.Options{RejectFraction: 2}, "outside [0, 1]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := c.o
			if o.RunDir == "" {
				o.RunDir = run
			}
			o.OutDir = t.TempDir()
			_, err := evaluate.Run(ctx, o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want it to mention %q", err, c.want)
			}
		})
	}
	// The truth error names the file and the row.
	_, err := evaluate.Run(ctx, evaluate.Options{RunDir: run, OutDir: t.TempDir(), TruthColumn: "caption"})
	if err == nil || !strings.Contains(err.Error(), "part-00000.parquet row") || !strings.Contains(err.Error(), "a photo of a") {
		t.Errorf("err = %v, want file, row and value", err)
	}
}

func TestMainCommand(t *testing.T) {
	f := newFixture(150)
	run, rep := t.TempDir(), t.TempDir()
	f.write(t, run, runOpts{neighbours: true, shards: 1})
	if err := evaluate.Main([]string{"--run", run, "--truth-column", "is_error", "--split-column", "split", "--reject-fraction", "0.2", "--output", rep}); err != nil {
		t.Fatal(err)
	}
	got, _ := readJSON(t, rep)
	if !got.Methods["lemon"].Available {
		t.Error("lemon unavailable")
	}
	if err := evaluate.Main([]string{"-h"}); err != nil {
		t.Errorf("-h: %v", err)
	}
	var ue cli.UsageError
	if err := evaluate.Main([]string{"--output", rep}); !errors.As(err, &ue) {
		t.Errorf("missing --run: err = %v, want a UsageError", err)
	}
	if err := evaluate.Main([]string{"--run", run, "--output", rep, "extra"}); !errors.As(err, &ue) {
		t.Errorf("stray argument: err = %v, want a UsageError", err)
	}
}

// TestPrevalenceMatchedF1: with a noise rate (given, or the validation split's level in the
// input's noise.json) every method also reports F1 at the threshold that flags that share of the
// validation rows, and without one the field is null.
func TestPrevalenceMatchedF1(t *testing.T) {
	f := newFixture(500)
	run := t.TempDir()
	f.write(t, run, runOpts{neighbours: true, shards: 2})
	test := func(i int) bool { return f.splits[i] == "test" }
	val := func(i int) bool { return f.splits[i] == "val" }
	check := func(rep string, rate float64) {
		t.Helper()
		got, _ := readJSON(t, rep)
		for name, s := range map[string][]float64{"lemon": f.score, "clip_similarity": f.dmm, "deep_knn": f.deepKNN()} {
			thr := metrics.ThresholdAtFraction(pick(s, val), rate)
			want, err := metrics.F1At(pick(s, test), pick(f.truth, test), thr)
			if err != nil {
				t.Fatal(err)
			}
			m := got.Methods[name]
			if m.F1Prevalence == nil || *m.F1Prevalence != want || m.PrevalenceThreshold == nil || *m.PrevalenceThreshold != thr {
				t.Errorf("%s at rate %v: f1_prevalence %v at %v, want %v at %v", name, rate, deref(m.F1Prevalence), deref(m.PrevalenceThreshold), want, thr)
			}
		}
	}
	rate := 0.35
	rep := t.TempDir()
	if _, err := evaluate.Run(context.Background(), evaluate.Options{RunDir: run, OutDir: rep, SplitColumn: "split", NoiseRate: &rate}); err != nil {
		t.Fatal(err)
	}
	check(rep, rate)

	// No rate known: null.
	rep = t.TempDir()
	if _, err := evaluate.Run(context.Background(), evaluate.Options{RunDir: run, OutDir: rep, SplitColumn: "split"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := readJSON(t, rep); got.Methods["lemon"].F1Prevalence != nil {
		t.Errorf("no noise rate, yet f1_prevalence %v", *got.Methods["lemon"].F1Prevalence)
	}

	// noise.json in the input (here the run directory, the fixture manifest's input): the
	// validation split's level, not the overall one.
	nj := `{"rows": 500, "bad_rows": 0, "errors": 200, "achieved_level": 0.4, "splits": [{"name": "train", "rows": 300, "errors": 120}, {"name": "val", "rows": 100, "errors": 30}, {"name": "test", "rows": 100, "errors": 50}]}`
	if err := os.WriteFile(filepath.Join(run, "noise.json"), []byte(nj), 0o644); err != nil {
		t.Fatal(err)
	}
	rep = t.TempDir()
	r, err := evaluate.Run(context.Background(), evaluate.Options{RunDir: run, OutDir: rep, SplitColumn: "split"})
	if err != nil {
		t.Fatal(err)
	}
	if r.NoiseRate == nil || *r.NoiseRate != 0.3 || !strings.Contains(r.NoiseRateFrom, `validation split "val"`) {
		t.Errorf("noise rate %v from %q, want 0.3 from the validation split", deref(r.NoiseRate), r.NoiseRateFrom)
	}
	check(rep, 0.3)
}
