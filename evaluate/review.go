package evaluate

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/lemon-curation/lemon/dataset"
	_ "github.com/lemon-curation/lemon/dataset/img2parquet" // raw formats, for thumbnails
	"github.com/lemon-curation/lemon/dataset/metadata"
	_ "github.com/lemon-curation/lemon/dataset/pathcsv"
	_ "github.com/lemon-curation/lemon/dataset/webdataset"
	"github.com/lemon-curation/lemon/internal/cli"
	"github.com/lemon-curation/lemon/rundir"
	"github.com/lemon-curation/lemon/storage"
)

// ReviewOptions configure `lemon report`: a review page for a run without labels.
type ReviewOptions struct {
	RunDir   string
	Output   string // the HTML file to write (default RUN/report.html)
	Suspects int    // how many of the most suspect pairs to show
}

// DefaultReviewSuspects is how many suspects the page shows by default.
const DefaultReviewSuspects = 60

// Review is what the review page shows.
type Review struct {
	RunDir     string
	Manifest   *rundir.Manifest
	Rows       int // scored rows
	Values     map[string][]float64
	Suspects   []Suspect
	Images     string // where thumbnails come from, or why there are none
	Neighbours string // where neighbour captions come from, or why there are none
}

// reviewColumns are the scores' columns whose distributions the page draws, the score first.
var reviewColumns = []string{rundir.ColScore, rundir.ColDmm, rundir.ColSn, rundir.ColSm}

// MakeReview reads a complete run's scores and builds its review page; WriteReview writes it.
func MakeReview(ctx context.Context, o ReviewOptions) (*Review, error) {
	m, err := rundir.RequireComplete(ctx, o.RunDir)
	if err != nil {
		return nil, err
	}
	files, err := listFiles(ctx, o.RunDir, rundir.ScoresDir, "parquet")
	if err == nil && len(files) == 0 {
		files, err = listFiles(ctx, o.RunDir, rundir.ScoresDir, "csv")
	}
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no scores/part-*.parquet or .csv files", o.RunDir)
	}
	n := o.Suspects
	if n <= 0 {
		n = DefaultReviewSuspects
	}
	// One pass for the distributions and the n highest scores (ties: first in file order), a
	// second for the captions of the suspects' neighbours only: memory holds the values, not
	// every row's id and caption.
	rv := &Review{RunDir: o.RunDir, Manifest: m, Values: map[string][]float64{}}
	var top []reviewRow
	floor := math.Inf(-1) // the n-th highest score so far, once there are n rows
	cut := func() {
		sort.SliceStable(top, func(a, b int) bool { return top[a].values[0] > top[b].values[0] })
		top = top[:min(n, len(top))]
		if len(top) == n {
			floor = top[n-1].values[0]
		}
	}
	hasNeighbours := true
	for _, p := range files {
		shard, err := partShard(p)
		if err != nil {
			return nil, err
		}
		neighbours, err := eachReviewRow(ctx, p, func(r reviewRow) {
			for i, c := range reviewColumns {
				rv.Values[c] = append(rv.Values[c], r.values[i])
			}
			if r.values[0] > floor { // a tie with the floor comes later than the rows it ties
				r.file, r.shard = p, shard
				top = append(top, r)
				if len(top) >= 2*n {
					cut()
				}
			}
		})
		if err != nil {
			return nil, err
		}
		hasNeighbours = hasNeighbours && neighbours
		cut()
	}
	rv.Rows = len(rv.Values[rundir.ColScore])
	captions := map[string]string{}
	for _, r := range top {
		for _, id := range r.neighbours {
			captions[id] = "(" + id + ": not among this run's scored rows)"
		}
	}
	if len(captions) > 0 {
		_, err := readScores(ctx, files, false, func(r scoresRow) error {
			if _, ok := captions[r.id]; ok {
				captions[r.id] = r.caption
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	shards := make([]int, len(top))
	for k, r := range top {
		s := Suspect{Rank: k + 1, ID: r.id, Caption: r.caption, Score: r.values[0], File: r.file, Row: r.row}
		for _, id := range r.neighbours {
			s.NeighbourCaptions = append(s.NeighbourCaptions, captions[id])
		}
		rv.Suspects = append(rv.Suspects, s)
		shards[k] = r.shard
	}
	rv.Neighbours = "the captions of each row's nearest images, from the scores' image_neighbours"
	if !hasNeighbours {
		rv.Neighbours = "not available: the run was made without --emit-neighbours, so its scores do not name each row's neighbours"
	}
	rv.Images = rawThumbnails(ctx, m, rv.Suspects, shards)
	return rv, nil
}

// reviewRow is one scored row: its values in reviewColumns' order.
type reviewRow struct {
	id, caption string
	values      [4]float64
	neighbours  []string
	file        string
	shard, row  int
}

var partName = regexp.MustCompile(`^part-(\d+)\.`)

// partShard is the input shard a part file holds (part-00003.parquet: 3).
func partShard(p string) (int, error) {
	m := partName.FindStringSubmatch(storage.Base(p))
	if m == nil {
		return 0, fmt.Errorf("%s: not a part file (part-NNNNN.parquet)", p)
	}
	return strconv.Atoi(m[1])
}

// eachReviewRow calls fn for every row of a scores file (Parquet, or CSV with every value a
// string), and says whether the file names neighbours.
func eachReviewRow(ctx context.Context, p string, fn func(reviewRow)) (bool, error) {
	rr, err := metadata.Open(ctx, p)
	if err != nil {
		return false, err
	}
	defer rr.Release()
	neighbours := len(rr.Schema().FieldIndices(rundir.ColImageNeighbours)) > 0
	row := 0
	for rr.Next() {
		rec := rr.RecordBatch()
		ids, _, err := metadata.StringColumn(p, rec, rundir.ColID)
		if err != nil {
			return false, err
		}
		caps, _, err := metadata.StringColumn(p, rec, rundir.ColCaption)
		if err != nil {
			return false, err
		}
		var cols [4][]float64
		for c, name := range reviewColumns {
			if cols[c], err = numberColumn(p, rec, name); err != nil {
				return false, err
			}
		}
		var lists [][]string
		if neighbours {
			if lists, err = neighbourColumn(p, rec); err != nil {
				return false, err
			}
		}
		for i := range ids {
			r := reviewRow{id: ids[i], caption: caps[i], row: row}
			for c := range cols {
				r.values[c] = cols[c][i]
			}
			if lists != nil {
				r.neighbours = lists[i]
			}
			fn(r)
			row++
		}
	}
	if err := rr.Err(); err != nil {
		return false, fmt.Errorf("%s: %w", p, err)
	}
	return neighbours, nil
}

// numberColumn reads a float column, or a string column of numbers (CSV).
func numberColumn(file string, rec arrow.RecordBatch, name string) ([]float64, error) {
	idx := rec.Schema().FieldIndices(name)
	if len(idx) == 0 {
		return nil, fmt.Errorf("%s: no %s column", file, name)
	}
	if s, ok := rec.Column(idx[0]).(*array.String); ok {
		out := make([]float64, s.Len())
		for i := range out {
			v, err := strconv.ParseFloat(s.Value(i), 64)
			if err != nil {
				return nil, fmt.Errorf("%s row %d: %s %q is not a number", file, i, name, s.Value(i))
			}
			out[i] = v
		}
		return out, nil
	}
	return floatColumn(file, rec, name, 0)
}

// rawThumbnails makes the suspects' thumbnails from the run's input when it holds images
// (webdataset tars, Parquet with an image column, a CSV of image paths), reading through the
// input's own format, with the run's column options, only the shards that hold a suspect
// (shards[k] is suspect k's; with shards nil, every shard). It returns what the page says of
// the images. lemon report and lemon eval's gallery both use it.
func rawThumbnails(ctx context.Context, m *rundir.Manifest, suspects []Suspect, shards []int) string {
	f, err := dataset.GetRaw(m.Format)
	if err != nil {
		return fmt.Sprintf("not available: the run's input (%s, %s format) holds embeddings, not images", m.Input, m.Format)
	}
	var o dataset.Options
	if len(m.Columns) > 0 {
		if err := json.Unmarshal(m.Columns, &o); err != nil {
			return fmt.Sprintf("not available: the manifest's columns cannot be read (%v)", err)
		}
	}
	plan, err := f.Plan(ctx, m.Input, o)
	if err != nil {
		return fmt.Sprintf("not available: the run's input cannot be read now (%v)", err)
	}
	want := map[int]map[string][]int{} // shard -> id -> suspects
	for k, s := range suspects {
		in := []int{}
		if shards != nil {
			in = append(in, shards[k])
		} else {
			for i := range plan {
				in = append(in, i)
			}
		}
		for _, sh := range in {
			if want[sh] == nil {
				want[sh] = map[string][]int{}
			}
			want[sh][s.ID] = append(want[sh][s.ID], k)
		}
		suspects[k].thumbNote = "not found in the input"
	}
	for shard, ids := range want {
		if shard >= len(plan) {
			return fmt.Sprintf("not available: the run's input %s has %d shards now, the run read more", m.Input, len(plan))
		}
		err := f.ReadRaw(ctx, plan[shard], o, func(r dataset.RawRecord) error {
			for _, k := range ids[r.ID] {
				if r.Image == nil {
					suspects[k].thumbNote = "no image in this row"
					continue
				}
				suspects[k].thumb, suspects[k].thumbNote = thumbnail(r.Image)
			}
			return nil
		})
		if err != nil {
			return fmt.Sprintf("not available: reading %s: %v", plan[shard].Name, err)
		}
	}
	return fmt.Sprintf("from the run's input %s (%s), decoded and shrunk to %d pixels", m.Input, m.Format, thumbPixels)
}

// WriteReview writes the page to o.Output (default RUN/report.html) and returns its path.
func WriteReview(ctx context.Context, rv *Review, o ReviewOptions) (string, error) {
	p := o.Output
	if p == "" {
		p = storage.Join(o.RunDir, rundir.ReportFile)
	}
	return p, storage.WriteFile(ctx, p, []byte(rv.html()))
}

func (rv *Review) html() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	m := rv.Manifest
	w("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n")
	w("<title>LEMoN review: %s</title>\n<style>%s</style></head><body><main>\n", esc(rv.RunDir), css)
	w("<h1>LEMoN review</h1>\n<p class=\"sub\">Run <code>%s</code> (%s) · input <code>%s</code> (%s)</p>\n", esc(rv.RunDir), esc(m.RunID), esc(m.Input), esc(m.Format))
	thr := "none (nothing rejected)"
	if m.Threshold != nil {
		thr = num(*m.Threshold)
	}
	w("<div class=\"facts\">")
	fact := func(v, label string) { w("<div class=\"fact\"><b>%s</b><span>%s</span></div>", esc(v), esc(label)) }
	c := m.Counts
	fact(fmt.Sprint(c.RowsIn), "rows in")
	fact(fmt.Sprint(c.Kept), "kept")
	fact(fmt.Sprint(c.Rejected), "rejected")
	fact(fmt.Sprint(c.Errors), "errors (not scored)")
	fact(thr, "threshold: rejected when lemon_score ≥ it")
	w("</div>\n")

	w("<h2>Distributions (all %d scored rows)</h2>\n<div class=\"legend\"><span><i style=\"background:%s\"></i>rows</span><span><i style=\"background:#1d2430;height:2px\"></i>the run's threshold</span></div>\n<div class=\"charts\">", rv.Rows, cleanColour)
	for _, col := range reviewColumns {
		var t *float64
		if col == rundir.ColScore {
			t = m.Threshold
		}
		w("<div class=\"chart\"><h3>%s</h3>%s</div>", esc(col), countHistogram(rv.Values[col], col, t))
	}
	w("</div>\n")
	w("<h2>The %d most suspect pairs (highest score)</h2>\n<p class=\"sub\">Neighbours: %s.</p>\n", len(rv.Suspects), esc(rv.Neighbours))
	writeGallery(&b, rv.Suspects, rv.Images, false)
	w("<h2>Notes</h2><ul class=\"notes\">")
	w("<li>score = d<sub>mm</sub> + β·s<sub>n</sub> + γ·s<sub>m</sub>: higher means more likely mislabelled. d<sub>mm</sub> is the image-caption distance; s<sub>n</sub> says how much the captions of a row's nearest images disagree with its own, s<sub>m</sub> how much the images of its nearest captions disagree with its image.</li>")
	w("<li>The parameters are in the run's <code>manifest.json</code>: <code>%s</code>.</li>", esc(string(m.Params)))
	w("</ul></main></body></html>\n")
	return b.String()
}

// countHistogram draws how many rows fall in each bin of s, with the threshold thr as a line.
func countHistogram(s []float64, xlabel string, thr *float64) string {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range s {
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	if len(s) == 0 {
		lo, hi = 0, 1
	}
	if hi == lo {
		lo, hi = lo-0.5, hi+0.5
	}
	var counts [histBins]float64
	for _, v := range s {
		counts[min(max(int((v-lo)/(hi-lo)*histBins), 0), histBins-1)]++
	}
	ymax := 0.0
	for _, v := range counts {
		ymax = math.Max(ymax, v)
	}
	yt := niceTicks(0, math.Max(ymax, 1), 4)
	top := math.Max(ymax, yt[len(yt)-1])
	p := newPlot(340, 230, lo, hi, 0, top)
	p.axes(xlabel, "rows", niceTicks(lo, hi, 5), yt, tickLabel, func(v float64) string { return fmt.Sprintf("%.0f", v) })
	p.bars(counts[:], cleanColour, 0.7)
	p.threshold(thr)
	return p.done()
}

const reviewUsage = `Usage: lemon report --run OUT [--output FILE] [--suspects N]

Writes a review page for a 'lemon score' run, labelled or not: one self-contained HTML file
(OUT/report.html by default) with the distributions of score, d_mm, s_n and s_m, the run's
threshold, and the most suspect pairs, highest score first, each with its caption, a thumbnail
of its image when the run's input holds images (webdataset tars, Parquet with an image column,
a CSV of image paths; read from the input the manifest names, shards that hold a suspect only)
and the captions of its nearest images (a run made with --emit-neighbours). A run that has not
completed is refused. For measuring a run against known errors, see 'lemon eval'.

Flags:
`

// ReviewMain is the `lemon report` command.
func ReviewMain(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lemon report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o ReviewOptions
	fs.StringVar(&o.RunDir, "run", "", "the `lemon score --output` directory (local path or gs://...)")
	fs.StringVar(&o.Output, "output", "", "the HTML file to write (default: RUN/report.html)")
	fs.IntVar(&o.Suspects, "suspects", DefaultReviewSuspects, "how many of the most suspect pairs to show")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), reviewUsage)
		cli.PrintFlags(fs, nil)
	}
	if help, err := cli.Parse(fs, args); help || err != nil {
		return err
	}
	if o.RunDir == "" {
		return cli.Usagef("--run is required (see 'lemon report --help')")
	}
	if o.Suspects < 1 {
		return cli.Usagef("--suspects %d: want at least 1", o.Suspects)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rv, err := MakeReview(ctx, o)
	if err != nil {
		return err
	}
	p, err := WriteReview(ctx, rv, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d scored rows, %d suspects shown; images: %s; neighbours: %s\nwrote %s\n", rv.Rows, len(rv.Suspects), rv.Images, rv.Neighbours, p)
	return nil
}
