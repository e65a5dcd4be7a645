package evaluate

import (
	"context"
	"fmt"
	"math"
	"runtime"

	"github.com/lemon-curation/lemon/score"
	"github.com/lemon-curation/lemon/tune"
)

// fixedParams are the label-free settings eval scores every run with, whatever the run used:
// LEMoN_fix, and the paper's two ablations of it (one neighbour term, taus at 0).
func fixedParams(discrete bool) map[string]score.Params {
	fix := score.Fixed()
	fix.DiscreteText = discrete
	sn, sm := fix, fix
	sn.Gamma, sn.Tau1n, sn.Tau2n, sn.Tau1m, sn.Tau2m = 0, 0, 0, 0, 0
	sm.Beta, sm.Tau1n, sm.Tau2n, sm.Tau1m, sm.Tau2m = 0, 0, 0, 0, 0
	return map[string]score.Params{"lemon_fix": fix, "ablation_s_n": sn, "ablation_s_m": sm}
}

// fixedScores re-scores the validation and test rows (all rows without splits) with
// fixedParams from the run's saved neighbour lists (`lemon score --save-neighbour-lists` with
// k >= 30). The arithmetic is the pipeline's (tune.Lists.Score), so when the run itself used
// LEMoN_fix the lemon_fix column equals the run's lemon_score. Rows outside those splits get NaN
// (no metric reads them). Without lists, lemon_fix is still the run's own score when the run
// used LEMoN_fix; everything else is unavailable, with the reason.
func (r *Report) fixedScores(ctx context.Context, o Options) (map[string][]float64, string, error) {
	t := r.table
	out := map[string][]float64{}
	if r.runParams == nil {
		return out, "the run's parameters are unknown (no manifest.json params)", nil
	}
	params := fixedParams(r.runParams.DiscreteText)
	if *r.runParams == params["lemon_fix"] {
		out["lemon_fix"] = t.score
	}
	if t.id == nil {
		return out, fmt.Sprintf("kept/ and rejected/ have no id column (looked for %v) to join the saved neighbour lists on; name it with --id-column", idColumns), nil
	}
	files, err := listFiles(ctx, o.RunDir, "neighbours", "parquet")
	if err != nil {
		return nil, "", err
	}
	if len(files) == 0 {
		return out, fmt.Sprintf("re-scored from saved neighbour lists: rerun lemon score with --save-neighbour-lists --k %d or more", score.Fixed().K), nil
	}
	// Group 1: the rows metrics read (threshold and evaluated rows); the rest are not loaded.
	rows := make(map[string]tune.ListRow, t.n())
	for i, id := range t.id {
		rows[id] = tune.ListRow{Truth: t.truth[i]}
	}
	for _, idx := range [][]int{t.thrIdx, t.evalIdx} {
		for _, i := range idx {
			rows[t.id[i]] = tune.ListRow{Truth: t.truth[i], Group: 1}
		}
	}
	lists, err := tune.ReadLists(ctx, o.RunDir, r.runParams.Distance, rows, 1, runtime.GOMAXPROCS(0))
	if err != nil {
		return nil, "", fmt.Errorf("reading the saved neighbour lists: %w", err)
	}
	l := lists[0]
	if l.K < score.Fixed().K {
		return out, fmt.Sprintf("the saved neighbour lists hold %d neighbours per row; LEMoN_fix and its ablations use k = %d (rerun lemon score with --save-neighbour-lists --k %d or more)", l.K, score.Fixed().K, score.Fixed().K), nil
	}
	pos := make(map[string]int, t.n())
	for i, id := range t.id {
		pos[id] = i
	}
	for name, p := range params {
		res, err := l.Score(p)
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", name, err)
		}
		col := make([]float64, t.n())
		for i := range col {
			col[i] = math.NaN()
		}
		for j, id := range l.IDs {
			col[pos[id]] = res[j].Score
		}
		out[name] = col
	}
	return out, "", nil
}
