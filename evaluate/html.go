package evaluate

import (
	"fmt"
	"html"
	"math"
	"strings"

	"github.com/lemon-curation/lemon/metrics"
)

// The page is built as text: inline CSS and SVG only, no scripts, fonts or anything fetched,
// so it opens anywhere, offline, and can be mailed as one file.

// Colours: the Okabe-Ito palette, which stays distinct under the common colour-vision deficiencies.
var methodColour = map[string]string{
	"lemon":           "#0072B2",
	"lemon_fix":       "#1d2430",
	"clip_similarity": "#E69F00",
	"clip_logits":     "#F0E442",
	"deep_knn":        "#56B4E9",
	"ablation_s_n":    "#009E73",
	"ablation_s_m":    "#CC79A7",
}

const (
	cleanColour = "#6b7b8c"
	errorColour = "#D55E00"
)

const css = `
*{box-sizing:border-box}
body{margin:0;background:#f5f6f8;color:#1d2430;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:19px;margin:34px 0 10px;padding-bottom:4px;border-bottom:1px solid #d9dde3}
.sub{color:#5b6573;margin:0 0 14px}
.facts{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.fact{background:#fff;border:1px solid #e0e3e8;border-radius:8px;padding:8px 14px;min-width:120px}
.fact b{display:block;font-size:20px}
.fact span{color:#5b6573;font-size:13px}
.warn{background:#fff4e5;border:1px solid #f0c27a;border-radius:8px;padding:8px 14px;margin:10px 0}
table{border-collapse:collapse;background:#fff;border:1px solid #e0e3e8;border-radius:8px;overflow:hidden;width:100%}
th,td{padding:7px 12px;text-align:right;border-bottom:1px solid #eceef2;font-variant-numeric:tabular-nums}
th{background:#eef1f5;font-weight:600;font-size:13px}
th:first-child,td:first-child{text-align:left}
td.na{color:#7a8491;text-align:left;font-style:italic}
td .swatch{display:inline-block;width:12px;height:12px;border-radius:3px;margin-right:7px;vertical-align:-1px}
td small{color:#6b7480;display:block;font-size:12px}
.best{font-weight:700}
.charts{display:flex;flex-wrap:wrap;gap:16px}
.chart{background:#fff;border:1px solid #e0e3e8;border-radius:8px;padding:8px}
.chart h3{font-size:14px;margin:2px 6px 0}
.legend{display:flex;flex-wrap:wrap;gap:14px;margin:8px 0;font-size:13px}
.legend i{display:inline-block;width:18px;height:4px;border-radius:2px;margin-right:6px;vertical-align:3px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:14px}
.card{background:#fff;border:1px solid #e0e3e8;border-radius:8px;overflow:hidden;display:flex;flex-direction:column}
.thumb{height:170px;background:#eef0f3;display:flex;align-items:center;justify-content:center;color:#8a939e;font-size:12px;text-align:center;padding:6px}
.thumb img{max-width:100%;max-height:100%;object-fit:contain}
.card .body{padding:8px 10px 10px}
.nbrs{font-size:12px;color:#4a5260;margin-top:6px}.nbrs ol{margin:4px 0 0;padding-left:18px}
.meta{display:flex;justify-content:space-between;align-items:center;font-size:12px;color:#5b6573}
.badge{border-radius:10px;padding:1px 8px;font-size:12px;font-weight:600;color:#fff}
.badge.err{background:` + errorColour + `}
.badge.ok{background:#2e8b57}
.caption{margin:6px 0 4px;font-size:14px;display:-webkit-box;-webkit-line-clamp:5;-webkit-box-orient:vertical;overflow:hidden;overflow-wrap:anywhere}
.id{font-size:11px;color:#8a939e;overflow-wrap:anywhere}
.notes{color:#4a5563;font-size:13px}
.notes li{margin:3px 0}
code{background:#eef1f5;border-radius:4px;padding:0 4px;font-size:13px}
`

func esc(s string) string { return html.EscapeString(s) }

func fracLabel(f float64) string { return fmt.Sprintf("%.3g%%", 100*f) }

func pct(p *float64) string {
	if p == nil {
		return "–"
	}
	return fmt.Sprintf("%.1f", 100**p)
}

func num(x float64) string {
	if math.IsInf(x, 0) || math.IsNaN(x) {
		return "–"
	}
	return fmt.Sprintf("%.4g", x)
}

func (r *Report) html() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	c := r.Counts
	w("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n")
	w("<title>LEMoN evaluation: %s</title>\n<style>%s</style></head><body><main>\n", esc(r.RunDir), css)
	w("<h1>LEMoN label-error detection: evaluation</h1>\n")
	w("<p class=\"sub\">Run <code>%s</code> · truth column <code>%s</code> · metrics on %s · F1 threshold from %s</p>\n",
		esc(r.RunDir), esc(r.TruthColumn), esc(r.EvaluatedOn), esc(r.F1ThresholdFrom))
	w("<div class=\"facts\">")
	fact := func(v, label string) { w("<div class=\"fact\"><b>%s</b><span>%s</span></div>", esc(v), esc(label)) }
	fact(fmt.Sprint(c.Scored), "scored rows")
	fact(fmt.Sprintf("%d (%.1f%%)", c.Errors, 100*float64(c.Errors)/float64(c.Scored)), "label errors")
	fact(fmt.Sprint(c.EvaluatedRows), "rows evaluated")
	if r.SplitColumn != "" {
		fact(fmt.Sprint(c.ValidationRows), "validation rows")
		if c.OtherSplitRows > 0 {
			fact(fmt.Sprint(c.OtherSplitRows), "rows in other splits (unused)")
		}
	}
	fact(fmt.Sprintf("%d / %d", c.Kept, c.Rejected), "kept / rejected by the run")
	if c.Unscored > 0 {
		fact(fmt.Sprint(c.Unscored), "unscored (bad input)")
	}
	w("</div>\n")
	for _, warn := range r.Warnings {
		w("<div class=\"warn\">%s</div>\n", esc(warn))
	}

	r.htmlTable(&b)
	r.htmlDownstream(&b)
	r.htmlCurves(&b)
	r.htmlHistograms(&b)
	r.htmlGallery(&b)

	w("<h2>Notes</h2><ul class=\"notes\">")
	w("<li>Positive class: label error (<code>%s</code> true). Higher scores mean more suspect for every method, including CLIP similarity (it is the image-caption distance d<sub>mm</sub>).</li>", esc(r.TruthColumn))
	w("<li>AUROC counts tied scores as half; AUPRC is average precision (step-wise, no interpolation), both as scikit-learn computes them.</li>")
	w("<li>F1: the threshold maximising F1 on %s (highest threshold among ties), applied to %s; a row is flagged when its score is at least the threshold.</li>", esc(r.F1ThresholdFrom), esc(r.EvaluatedOn))
	w("<li>Reject fraction %.3g: the round(%.3g·n) highest-scoring of the evaluated rows are rejected (all rows tied with the last one too), as <code>lemon score --reject-fraction</code> does.</li>", r.RejectFraction, r.RejectFraction)
	if r.NoiseRate != nil {
		w("<li>F1 prev.: the prevalence-matched threshold flags the noise rate's share (%.4g; %s) of %s, highest scores first, without using their labels (the LEMoN paper's F1 for LEMoN_fix), applied to %s.</li>", *r.NoiseRate, esc(r.NoiseRateFrom), esc(r.F1ThresholdFrom), esc(r.EvaluatedOn))
	} else {
		w("<li>F1 prev. (the prevalence-matched threshold) needs the noise rate, which is %s.</li>", esc(r.NoiseRateFrom))
	}
	w("<li>Deep kNN: the share of a row's %d nearest image neighbours (from the run's scores/) whose label differs from the row's own; the label is the caption on classification data and a cluster of caption embeddings (%d k-means clusters) on captioning data.</li>", r.DeepKNNK, r.CaptionClusters)
	w("<li>CLIP Logits: -log of the softmax, over the dataset's distinct captions, of cos(image, caption) / %g, at the row's own caption.</li>", r.LogitTemperature)
	w("<li>LEMoN_fix and the two ablations are re-scored from the run's saved neighbour lists with k = 30 and fixed weights, whatever the run used.</li>")
	if rf := r.RunFilter; true {
		thr := "unknown"
		if rf.Threshold != nil {
			thr = num(*rf.Threshold)
		}
		w("<li>The run's own filter (rejected/ versus kept/, all scored rows): %d rejected at lemon_score ≥ %s; precision %.1f%%, recall %.1f%%.</li>",
			rf.Rejected, esc(thr), 100*rf.Precision, 100*rf.Recall)
	}
	w("</ul></main></body></html>\n")
	return b.String()
}

func (r *Report) htmlTable(b *strings.Builder) {
	w := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	w("<h2>Detection metrics</h2>\n<table><thead><tr><th>Method</th><th>AUROC (%%)</th><th>AUPRC (%%)</th><th>F1 (%%)</th><th>F1 threshold</th><th>F1 prev. (%%)</th><th>Precision, top %s rejected (%%)</th><th>Recall, top %s rejected (%%)</th></tr></thead><tbody>\n",
		fracLabel(r.RejectFraction), fracLabel(r.RejectFraction))
	// The best value of each column is bold.
	best := map[string]float64{}
	get := map[string]func(m *Method) *float64{
		"auroc": func(m *Method) *float64 { return m.AUROC }, "auprc": func(m *Method) *float64 { return m.AUPRC },
		"f1": func(m *Method) *float64 { return m.F1 }, "f1p": func(m *Method) *float64 { return m.F1Prevalence },
		"p": func(m *Method) *float64 { return m.PrecisionAtReject },
		"r": func(m *Method) *float64 { return m.RecallAtReject },
	}
	for k, g := range get {
		best[k] = math.Inf(-1)
		for _, m := range r.Methods {
			if v := g(m); v != nil && *v > best[k] {
				best[k] = *v
			}
		}
	}
	cell := func(m *Method, k string) string {
		v := get[k](m)
		cls := ""
		if v != nil && *v == best[k] {
			cls = " class=\"best\""
		}
		return fmt.Sprintf("<td%s>%s</td>", cls, pct(v))
	}
	for _, name := range r.MethodOrder {
		m := r.Methods[name]
		note := ""
		if m.Note != "" {
			note = "<small>Note: " + esc(m.Note) + "</small>"
		}
		w("<tr><td><span class=\"swatch\" style=\"background:%s\"></span>%s<small>%s</small>%s</td>", methodColour[name], esc(m.Label), esc(m.Source), note)
		if !m.Available {
			w("<td class=\"na\" colspan=\"7\">not available: %s</td></tr>\n", esc(m.Reason))
			continue
		}
		thr := "–"
		if m.F1Threshold != nil {
			thr = num(*m.F1Threshold)
		}
		w("%s%s%s<td>%s</td>%s%s%s</tr>\n", cell(m, "auroc"), cell(m, "auprc"), cell(m, "f1"), esc(thr), cell(m, "f1p"), cell(m, "p"), cell(m, "r"))
	}
	w("</tbody></table>\n")
}

// htmlDownstream is the downstream experiment's table, when it ran.
func (r *Report) htmlDownstream(b *strings.Builder) {
	d := r.Downstream
	if d == nil {
		return
	}
	w := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	w("<h2>Downstream classifier</h2>\n<p class=\"sub\">%s, trained on split <code>%s</code> (%d rows) with the noisy labels; accuracy on the clean labels (<code>%s</code>) of split <code>%s</code> (%d rows).</p>\n",
		esc(d.Classifier), esc(d.TrainSplit), d.TrainRows, esc(d.CleanLabelColumn), esc(d.TestSplit), d.TestRows)
	w("<table><thead><tr><th>Training rows</th><th>Rows</th><th>Wrong labels</th><th>Test accuracy (%%)</th></tr></thead><tbody>\n")
	for _, s := range d.TrainSets {
		note := ""
		if why := s.Reason + s.Note; why != "" {
			note = "<small>" + esc(why) + "</small>"
		}
		w("<tr><td>%s%s</td><td>%d</td><td>%d</td><td>%s</td></tr>\n", esc(s.Label), note, s.Rows, s.LabelErrors, pct(s.Accuracy))
	}
	w("</tbody></table>\n")
}

// plot maps data coordinates to an SVG drawing area.
type plot struct {
	b                        strings.Builder
	w, h                     float64
	left, right, top, bottom float64
	x0, x1, y0, y1           float64
}

func newPlot(w, h, x0, x1, y0, y1 float64) *plot {
	p := &plot{w: w, h: h, left: 52, right: 14, top: 12, bottom: 44, x0: x0, x1: x1, y0: y0, y1: y1}
	fmt.Fprintf(&p.b, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" font-family="system-ui,sans-serif" font-size="11">`, w, h, w, h)
	return p
}

func (p *plot) X(v float64) float64 {
	if p.x1 == p.x0 {
		return p.left
	}
	return p.left + (v-p.x0)/(p.x1-p.x0)*(p.w-p.left-p.right)
}

func (p *plot) Y(v float64) float64 {
	if p.y1 == p.y0 {
		return p.h - p.bottom
	}
	return p.h - p.bottom - (v-p.y0)/(p.y1-p.y0)*(p.h-p.top-p.bottom)
}

// axes draws the frame, grid lines at the ticks, tick labels and axis titles.
func (p *plot) axes(xlabel, ylabel string, xt, yt []float64, fx, fy func(float64) string) {
	b := &p.b
	for _, v := range xt {
		x := p.X(v)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e6e9ee"/>`, x, p.Y(p.y0), x, p.Y(p.y1))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#4a5563">%s</text>`, x, p.h-p.bottom+15, esc(fx(v)))
	}
	for _, v := range yt {
		y := p.Y(v)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e6e9ee"/>`, p.X(p.x0), y, p.X(p.x1), y)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#4a5563">%s</text>`, p.left-6, y+4, esc(fy(v)))
	}
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#9aa3ad"/>`, p.left, p.top, p.w-p.left-p.right, p.h-p.top-p.bottom)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#1d2430" font-size="12">%s</text>`, p.left+(p.w-p.left-p.right)/2, p.h-8, esc(xlabel))
	fmt.Fprintf(b, `<text transform="translate(13 %.1f) rotate(-90)" text-anchor="middle" fill="#1d2430" font-size="12">%s</text>`, p.top+(p.h-p.top-p.bottom)/2, esc(ylabel))
}

// line draws a polyline, dropping points less than half a pixel from the last one kept, so a
// curve over millions of rows stays a few hundred points without visibly changing.
func (p *plot) line(xs, ys []float64, colour string, width float64, dash string) {
	var pts strings.Builder
	lx, ly := math.Inf(1), math.Inf(1)
	for i := range xs {
		x, y := p.X(xs[i]), p.Y(ys[i])
		if i != len(xs)-1 && math.Hypot(x-lx, y-ly) < 0.5 {
			continue
		}
		fmt.Fprintf(&pts, "%.1f,%.1f ", x, y)
		lx, ly = x, y
	}
	extra := ""
	if dash != "" {
		extra = fmt.Sprintf(` stroke-dasharray="%s"`, dash)
	}
	fmt.Fprintf(&p.b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="%g" stroke-linejoin="round"%s/>`, strings.TrimSpace(pts.String()), colour, width, extra)
}

func (p *plot) done() string { return p.b.String() + "</svg>" }

func unitTicks() []float64 { return []float64{0, 0.2, 0.4, 0.6, 0.8, 1} }

func f1dec(v float64) string { return fmt.Sprintf("%.1f", v) }

// niceTicks returns about n round tick values covering [lo, hi].
func niceTicks(lo, hi float64, n int) []float64 {
	if hi <= lo {
		return []float64{lo}
	}
	raw := (hi - lo) / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var out []float64
	for v := math.Ceil(lo/step) * step; v <= hi+step*1e-9; v += step {
		t := math.Round(v/step) * step
		if t == 0 {
			t = 0 // not -0
		}
		out = append(out, t)
	}
	return out
}

func tickLabel(v float64) string { return fmt.Sprintf("%.4g", v) }

func (r *Report) evalRows() ([]bool, []int) {
	t := r.table
	return pickBool(t.truth, t.evalIdx), t.evalIdx
}

func (r *Report) htmlCurves(b *strings.Builder) {
	truth, idx := r.evalRows()
	roc := newPlot(400, 360, 0, 1, 0, 1)
	roc.axes("False positive rate", "True positive rate", unitTicks(), unitTicks(), f1dec, f1dec)
	roc.line([]float64{0, 1}, []float64{0, 1}, "#b0b7c0", 1, "4 4")
	pr := newPlot(400, 360, 0, 1, 0, 1)
	pr.axes("Recall", "Precision", unitTicks(), unitTicks(), f1dec, f1dec)
	prev := float64(r.Counts.EvaluatedErrs) / float64(r.Counts.EvaluatedRows)
	pr.line([]float64{0, 1}, []float64{prev, prev}, "#b0b7c0", 1, "4 4")
	var legend strings.Builder
	// Draw LEMoN last so it lies on top.
	order := append([]string{}, r.MethodOrder...)
	for i, n := range order {
		if n == "lemon" {
			order = append(append(order[:i:i], order[i+1:]...), "lemon")
			break
		}
	}
	for _, name := range order {
		m := r.Methods[name]
		if !m.Available {
			continue
		}
		s := pick(m.scores, idx)
		width := 1.8
		if name == "lemon" {
			width = 2.6
		}
		if fpr, tpr, _, err := metrics.ROCCurve(s, truth, true); err == nil {
			roc.line(fpr, tpr, methodColour[name], width, "")
		}
		if p, rc, _, err := metrics.PRCurve(s, truth); err == nil {
			pr.line(rc, p, methodColour[name], width, "")
		}
	}
	for _, name := range r.MethodOrder {
		m := r.Methods[name]
		if !m.Available {
			fmt.Fprintf(&legend, `<span style="color:#8a939e"><i style="background:#d0d5db"></i>%s (not available)</span>`, esc(m.Label))
			continue
		}
		fmt.Fprintf(&legend, `<span><i style="background:%s"></i>%s · AUROC %s · AUPRC %s</span>`, methodColour[name], esc(m.Label), pct(m.AUROC), pct(m.AUPRC))
	}
	fmt.Fprintf(b, "<h2>ROC and precision-recall curves (%s)</h2>\n<div class=\"legend\">%s<span><i style=\"background:#b0b7c0\"></i>chance</span></div>\n", esc(r.EvaluatedOn), legend.String())
	fmt.Fprintf(b, "<div class=\"charts\"><div class=\"chart\"><h3>ROC</h3>%s</div><div class=\"chart\"><h3>Precision-recall</h3>%s</div></div>\n", roc.done(), pr.done())
}

const histBins = 40

func (r *Report) htmlHistograms(b *strings.Builder) {
	truth, idx := r.evalRows()
	fmt.Fprintf(b, "<h2>Score distributions (%s)</h2>\n<div class=\"legend\"><span><i style=\"background:%s\"></i>clean</span><span><i style=\"background:%s\"></i>label error</span><span><i style=\"background:#1d2430;height:2px\"></i>F1 threshold</span></div>\n<div class=\"charts\">",
		esc(r.EvaluatedOn), cleanColour, errorColour)
	for _, name := range r.MethodOrder {
		m := r.Methods[name]
		if !m.Available {
			fmt.Fprintf(b, "<div class=\"chart\" style=\"width:358px\"><h3>%s</h3><p class=\"notes\" style=\"padding:0 6px\">Not available: %s</p></div>", esc(m.Label), esc(m.Reason))
			continue
		}
		s := pick(m.scores, idx)
		fmt.Fprintf(b, "<div class=\"chart\"><h3>%s</h3>%s</div>", esc(m.Label), histogram(s, truth, m.F1Threshold))
	}
	b.WriteString("</div>\n")
}

// histogram draws the share of clean rows and of error rows per score bin, so both classes are
// visible however imbalanced they are.
func histogram(s []float64, truth []bool, thr *float64) string {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range s {
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	if hi == lo {
		lo, hi = lo-0.5, hi+0.5
	}
	var counts [2][histBins]float64
	var totals [2]float64
	for i, v := range s {
		k := int((v - lo) / (hi - lo) * histBins)
		k = min(max(k, 0), histBins-1)
		c := 0
		if truth[i] {
			c = 1
		}
		counts[c][k]++
		totals[c]++
	}
	ymax := 0.0
	for c := range counts {
		for k := range counts[c] {
			if totals[c] > 0 {
				counts[c][k] /= totals[c]
			}
			ymax = math.Max(ymax, counts[c][k])
		}
	}
	yt := niceTicks(0, ymax, 4)
	top := math.Max(ymax, yt[len(yt)-1])
	p := newPlot(340, 230, lo, hi, 0, top)
	p.axes("score", "share of class", niceTicks(lo, hi, 5), yt, tickLabel, func(v float64) string { return fmt.Sprintf("%.0f%%", 100*v) })
	for c, colour := range []string{cleanColour, errorColour} {
		p.bars(counts[c][:], colour, 0.55)
	}
	p.threshold(thr)
	return p.done()
}

// bars draws a histogram's bins, spread evenly over the plot's x range, skipping empty ones.
func (p *plot) bars(counts []float64, colour string, opacity float64) {
	bw := (p.x1 - p.x0) / float64(len(counts))
	for k, v := range counts {
		if v == 0 {
			continue
		}
		x0, x1 := p.X(p.x0+float64(k)*bw), p.X(p.x0+float64(k+1)*bw)
		fmt.Fprintf(&p.b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" fill-opacity="%g"/>`, x0, p.Y(v), math.Max(x1-x0-0.5, 0.5), p.Y(p.y0)-p.Y(v), colour, opacity)
	}
}

// threshold draws the reject threshold as a dashed vertical line, when there is one in range.
func (p *plot) threshold(thr *float64) {
	if thr != nil && *thr >= p.x0 && *thr <= p.x1 {
		x := p.X(*thr)
		fmt.Fprintf(&p.b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#1d2430" stroke-width="1.5" stroke-dasharray="5 3"/>`, x, p.Y(p.y0), x, p.Y(p.y1))
	}
}

func (r *Report) htmlGallery(b *strings.Builder) {
	fmt.Fprintf(b, "<h2>The %d most suspect pairs (highest lemon_score, all %d scored rows)</h2>\n", len(r.Suspects), r.Counts.Scored)
	writeGallery(b, r.Suspects, r.Images, true)
}

// writeGallery draws suspects as cards: thumbnail (when images says where they come from),
// rank and score, the truth badge (withTruth), caption, id, and the captions of the row's
// nearest image neighbours when known. lemon eval's and lemon report's pages share it.
func writeGallery(b *strings.Builder, suspects []Suspect, images string, withTruth bool) {
	hasThumbs := images != "" && !strings.HasPrefix(images, "not ")
	fmt.Fprintf(b, "<p class=\"sub\">Images: %s.</p>\n<div class=\"gallery\">", esc(images))
	for _, s := range suspects {
		b.WriteString("<div class=\"card\">")
		if hasThumbs {
			if s.thumb != "" {
				fmt.Fprintf(b, "<div class=\"thumb\"><img src=\"%s\" alt=\"%s\"></div>", s.thumb, esc(s.Caption))
			} else {
				fmt.Fprintf(b, "<div class=\"thumb\">%s</div>", esc(s.thumbNote))
			}
		}
		badge := ""
		if withTruth {
			badge = `<span class="badge ok">clean</span>`
			if s.IsError {
				badge = `<span class="badge err">label error</span>`
			}
		}
		fmt.Fprintf(b, "<div class=\"body\"><div class=\"meta\"><span>#%d · score <b>%s</b></span>%s</div>", s.Rank, num(s.Score), badge)
		caption := s.Caption
		if caption == "" {
			caption = "(no caption)"
		}
		fmt.Fprintf(b, "<div class=\"caption\" title=\"%s\">%s</div>", esc(s.Caption), esc(caption))
		var id []string
		if s.ID != "" {
			id = append(id, "id "+s.ID)
		}
		if s.Split != "" {
			id = append(id, "split "+s.Split)
		}
		fmt.Fprintf(b, "<div class=\"id\">%s</div>", esc(strings.Join(id, " · ")))
		if len(s.NeighbourCaptions) > 0 {
			b.WriteString("<details class=\"nbrs\"><summary>captions of its nearest images</summary><ol>")
			for _, c := range s.NeighbourCaptions {
				fmt.Fprintf(b, "<li>%s</li>", esc(c))
			}
			b.WriteString("</ol></details>")
		}
		b.WriteString("</div></div>")
	}
	b.WriteString("</div>\n")
}
