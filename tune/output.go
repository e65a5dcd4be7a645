package tune

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/lemon-curation/lemon/rundir"
	"github.com/lemon-curation/lemon/score"
	"github.com/lemon-curation/lemon/storage"
)

// num prints a float so that it parses back to the same float64.
func num(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }

func pct(x float64) string { return fmt.Sprintf("%.1f", 100*x) }

// ConfigYAML is the tuned config as `lemon score --config` reads it: the chosen parameters and
// the validation threshold, under comment lines that say where they came from.
func ConfigYAML(rep *Report) []byte {
	var b bytes.Buffer
	c := rep.Chosen
	p := c.Params
	fmt.Fprintf(&b, "# LEMoN_opt hyperparameters chosen by `lemon tune` (lemon %s) on %s.\n", rundir.Version, rep.FinishedAt.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "# Tuned on the run %s (%d scored rows; saved lists of %d neighbours, %s distance).\n", rep.Run, rep.ScoredRows, rep.KMax, rep.RunParams.Distance)
	fmt.Fprintf(&b, "# Objective: validation F1 at each candidate's best threshold; validation = %s %s (%d rows, %d errors).\n",
		rep.SplitColumn, orList(rep.ValSplits), rep.ValRows, rep.ValErrors)
	fmt.Fprintf(&b, "# Validation F1 %s%% (CLIP similarity alone: %s%%).", pct(c.ValF1), pct(rep.CLIP.ValF1))
	if t := c.Test; t != nil {
		fmt.Fprintf(&b, " Test (%s = %q, %d rows): AUROC %s%%, AUPRC %s%%, F1 %s%%.", rep.SplitColumn, rep.TestSplit, t.Rows, pct(t.AUROC), pct(t.AUPRC), pct(t.F1))
	}
	b.WriteString("\n")
	if len(rep.Command) > 0 {
		fmt.Fprintf(&b, "# Command: %s\n", strings.Join(rep.Command, " "))
	}
	b.WriteString("# threshold is the validation-optimal one: `lemon score` rejects rows scoring at least it. It fits\n")
	b.WriteString("# data like the validation split; for other data, drop it and use reject_fraction instead.\n")
	fmt.Fprintf(&b, "k: %d\n", p.K)
	fmt.Fprintf(&b, "distance: %s\n", p.Distance)
	fmt.Fprintf(&b, "discrete_text: %t\n", p.DiscreteText)
	for _, kv := range []struct {
		k string
		v float64
	}{{"beta", p.Beta}, {"gamma", p.Gamma}, {"tau1n", p.Tau1n}, {"tau2n", p.Tau2n}, {"tau1m", p.Tau1m}, {"tau2m", p.Tau2m}, {"threshold", c.Threshold}} {
		fmt.Fprintf(&b, "%s: %s\n", kv.k, num(kv.v))
	}
	return b.Bytes()
}

// tunedConfig is the part of `lemon score`'s config that tune writes: the parameters and the
// threshold, under the same keys (the tests read tune's output with lemon score's own loader).
type tunedConfig struct {
	score.Params `yaml:",inline"`
	Threshold    *float64 `yaml:"threshold"`
}

// checkConfig parses the YAML strictly (unknown keys an error, as `lemon score --config` does)
// and checks that it gives back exactly the chosen parameters.
func checkConfig(y []byte, p score.Params, thr float64) error {
	var c tunedConfig
	if err := yaml.UnmarshalWithOptions(y, &c, yaml.Strict()); err != nil {
		return fmt.Errorf("internal error: the tuned config does not parse: %s", yaml.FormatError(err, false, true))
	}
	if c.Params != p || c.Threshold == nil || *c.Threshold != thr {
		return fmt.Errorf("internal error: the tuned config reads back as %+v threshold %v, want %+v threshold %v", c.Params, c.Threshold, p, thr)
	}
	return nil
}

func writeConfig(ctx context.Context, o Options, rep *Report) error {
	y := ConfigYAML(rep)
	if err := checkConfig(y, rep.Chosen.Params, rep.Chosen.Threshold); err != nil {
		return err
	}
	return storage.WriteFile(ctx, o.Output, y)
}

func writeReport(ctx context.Context, path string, rep *Report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return storage.WriteFile(ctx, path, append(b, '\n'))
}
