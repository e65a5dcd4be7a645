"""Summarises bench/classification/run.sh's runs as Markdown tables, mean ± std over seeds.
Reads lines "DATASET|KIND|SEED|RUNDIR" on stdin; each RUNDIR holds fix-report/ and opt-report/
(lemon eval's metrics.json)."""
import json
import statistics
import sys
from collections import defaultdict

runs = defaultdict(list)  # (dataset, kind) -> run dirs
for line in sys.stdin:
    if line.strip():
        ds, kind, _seed, d = line.strip().split("|", 3)
        runs[(ds, kind)].append(d)


def ms(xs):
    xs = [100 * x for x in xs]
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.1f} ± {sd:.1f}"


def metrics(d, report):
    return json.load(open(f"{d}/{report}/metrics.json"))


def cell(dirs, report, method, key):
    ms_ = [metrics(d, report)["methods"][method] for d in dirs]
    if not all(m["available"] and m.get(key) is not None for m in ms_):
        return "n/a"
    return ms([m[key] for m in ms_])


rows = [  # label, report, method, with the prevalence-matched F1
    ("CLIP similarity", "fix-report", "clip_similarity", True),
    ("CLIP Logits (T = 0.01)", "fix-report", "clip_logits", True),
    ("Deep kNN (k = 10)", "fix-report", "deep_knn", True),
    ("d_mm + β·s_n (τ = 0)", "fix-report", "ablation_s_n", True),
    ("d_mm + γ·s_m (τ = 0)", "fix-report", "ablation_s_m", True),
    ("LEMoN_fix", "fix-report", "lemon_fix", True),
    ("LEMoN_opt (lemon tune)", "opt-report", "lemon", False),
]
print("Label-error detection (AUROC / AUPRC / F1 at the validation-optimal threshold / F1 at the prevalence-matched threshold):\n")
print("| Dataset | Noise | Method | AUROC | AUPRC | F1 | F1 (prev.) |")
print("|---|---|---|---:|---:|---:|---:|")
for (ds, kind), dirs in runs.items():
    for label, report, method, prev in rows:
        f1p = cell(dirs, report, method, "f1_prevalence") if prev else "–"
        print(f"| {ds} | {kind} | {label} | {cell(dirs, report, method, 'auroc')} | "
              f"{cell(dirs, report, method, 'auprc')} | {cell(dirs, report, method, 'f1')} | {f1p} |")

print("\nDownstream: logistic regression on the training split's image embeddings with the noisy labels, "
      "test accuracy (%) on the clean labels, and in brackets the training rows used (mean). LEMoN_fix "
      "and LEMoN_opt (the tuned weights) each reject the noise level's share of all rows "
      "(--reject-fraction); CLIP similarity keeps as many training rows as LEMoN_fix:\n")
print("| Dataset | Noise | all rows | LEMoN_fix keeps | LEMoN_opt keeps | CLIP similarity keeps | clean rows (oracle) |")
print("|---|---|---:|---:|---:|---:|---:|")
for (ds, kind), dirs in runs.items():
    def acc(report, name):
        vals, rows = [], []
        for d in dirs:
            sets = {s["name"]: s for s in metrics(d, report)["downstream"]["train_sets"]}
            if sets[name]["accuracy"] is None:
                return "n/a"
            vals.append(sets[name]["accuracy"])
            rows.append(sets[name]["train_rows"])
        return f"{ms(vals)} ({statistics.mean(rows):.0f})"
    print(f"| {ds} | {kind} | {acc('fix-report', 'all')} | {acc('fix-report', 'lemon')} | {acc('opt-report', 'lemon')} | "
          f"{acc('fix-report', 'clip_similarity')} | {acc('fix-report', 'clean')} |")
