#!/usr/bin/python3
"""Writes reference.json: scikit-learn's answers on deterministic cases, for metrics_test.go.

Usage: /usr/bin/python3 make_reference.py [OUT.json]   (default: reference.json beside this file)
Needs scikit-learn (Debian: apt-get install python3-sklearn). The output is derived data: commit
it, so the Go tests need no Python; TestReferenceIsCurrent reruns this script when it can.

Conventions the Go package documents and this file follows:
- roc_curve's first threshold is left out (scikit-learn 1.2 writes max+1 there, 1.3+ inf; Go: +Inf).
- best F1: the highest threshold among exact ties (F1 compared as fractions); the F1 value
  itself is scikit-learn's f1_score at that threshold.
- reject fraction f of n rows: r = round-half-up(f*n) (Go's math.Round), threshold = r-th
  highest score, every row scoring at least that is rejected.
"""
import json
import math
import os
import sys
from fractions import Fraction

import numpy as np
import sklearn
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)


def cases():
    rng = np.random.RandomState(20250101)
    out = []

    def add(name, scores, truth):
        scores = [float(s) for s in scores]
        truth = [bool(t) for t in truth]
        out.append((name, scores, truth))

    # Random, informative scores.
    n = 200
    t = rng.rand(n) < 0.3
    add("random_n200", rng.randn(n) + 1.2 * t, t)
    # Uninformative scores.
    t = rng.rand(100) < 0.5
    add("random_uninformative_n100", rng.rand(100), t)
    # Many ties: small integer scores, and scores rounded to one decimal.
    t = rng.rand(300) < 0.4
    add("ties_integers_n300", rng.randint(0, 6, 300) + t * rng.randint(0, 3, 300), t)
    t = rng.rand(200) < 0.25
    add("ties_rounded_n200", np.round(rng.rand(200) * 0.6 + 0.4 * t, 1), t)
    # deep_knn-like: multiples of 1/30.
    t = rng.rand(200) < 0.4
    add("ties_fractions_of_k_n200", rng.binomial(30, 0.2 + 0.4 * t) / 30.0, t)
    # Tiny inputs.
    add("tiny_n2_right", [0.1, 0.9], [False, True])
    add("tiny_n2_wrong", [0.9, 0.1], [False, True])
    add("tiny_n2_tie", [0.5, 0.5], [True, False])
    add("tiny_n3", [0.2, 0.7, 0.7], [False, True, False])
    add("tiny_n4", [1.0, 2.0, 3.0, 4.0], [True, False, True, False])
    # Two thresholds with exactly the best F1 (2/3): the higher one, 5, must win.
    add("tiny_n4_best_f1_tie", [5.0, 4.0, 3.0, 2.0], [True, False, False, True])
    add("tiny_n5_ties", [0.3, 0.3, 0.8, 0.1, 0.8], [True, False, True, False, False])
    add("tiny_n5_negative", [-2.0, -1.5, -3.25, 0.0, -1.5], [False, True, False, True, True])
    # All scores equal.
    add("all_equal_n10", [0.25] * 10, [i % 3 == 0 for i in range(10)])
    # Heavy imbalance, both ways.
    t = rng.rand(600) < 0.01
    t[0] = True
    add("imbalance_1pct_n600", rng.randn(600) + 2.0 * t, t)
    t = rng.rand(400) < 0.98
    t[0] = False
    add("imbalance_98pct_n400", rng.randn(400) + 1.0 * t, t)
    # Perfect and inverted separation, large and tiny magnitudes.
    add("perfect_n6", [1, 2, 3, 10, 11, 12], [False, False, False, True, True, True])
    add("inverted_n6", [10, 11, 12, 1, 2, 3], [False, False, False, True, True, True])
    t = rng.rand(60) < 0.5
    add("large_magnitude_n60", (rng.randn(60) + t) * 1e12, t)
    add("tiny_magnitude_n60", (rng.randn(60) + t) * 1e-12, t)
    return out


def one_class_cases():
    return [
        ("one_class_all_clean", [0.1, 0.2, 0.3], [False, False, False]),
        ("one_class_all_errors", [0.1, 0.2, 0.3], [True, True, True]),
    ]


def round_half_up(x):
    r = math.floor(x)
    return r + 1 if x - r >= 0.5 else r


def best_f1(scores, truth):
    pos = sum(truth)
    best, best_t = Fraction(-1), None
    for t in sorted(set(scores), reverse=True):
        tp = sum(1 for s, y in zip(scores, truth) if s >= t and y)
        fp = sum(1 for s, y in zip(scores, truth) if s >= t and not y)
        f = Fraction(2 * tp, tp + fp + pos)
        if f > best:
            best, best_t = f, t
    return best_t


def evaluate(scores, truth):
    y, s = np.array(truth, dtype=int), np.array(scores)
    r = {}
    r["auroc"] = float(roc_auc_score(y, s))
    r["auprc"] = float(average_precision_score(y, s))
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    r["roc_full"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thr_after_first": thr[1:].tolist()}
    fpr, tpr, thr = roc_curve(y, s)
    r["roc_drop_intermediate"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thr_after_first": thr[1:].tolist()}
    p, rc, thr = precision_recall_curve(y, s)
    r["pr"] = {"precision": p.tolist(), "recall": rc.tolist(), "thr": thr.tolist()}
    t = best_f1(scores, truth)
    r["best_f1"] = {"threshold": t, "f1": float(f1_score(y, s >= t))}
    qs = sorted(set([float(np.min(s)), float(np.max(s)), float(np.median(s)),
                     float(np.quantile(s, 0.9)), float(np.max(s)) + 1.0]))
    r["at_thresholds"] = [
        {
            "threshold": q,
            "f1": float(f1_score(y, s >= q, zero_division=0)),
            "precision": float(precision_score(y, s >= q, zero_division=0)),
            "recall": float(recall_score(y, s >= q)),
        }
        for q in qs
    ]
    r["at_fractions"] = []
    for f in [0.0, 0.05, 0.1, 0.4, 0.5, 1.0]:
        k = round_half_up(f * len(scores))
        t = sorted(scores, reverse=True)[k - 1] if k > 0 else None
        pred = s >= t if t is not None else np.zeros(len(s), dtype=bool)
        r["at_fractions"].append({
            "fraction": f,
            "threshold": t,  # null: nothing rejected (Go: +Inf)
            "rejected": int(pred.sum()),
            "precision": float(precision_score(y, pred, zero_division=0)),
            "recall": float(recall_score(y, pred)),
        })
    return r


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference.json")
    doc = {
        "generator": "metrics/testdata/make_reference.py",
        "sklearn_version": sklearn.__version__,
        "numpy_version": np.__version__,
        "cases": [],
    }
    for name, scores, truth in cases():
        doc["cases"].append({"name": name, "scores": scores, "truth": truth, "expected": evaluate(scores, truth)})
    for name, scores, truth in one_class_cases():
        try:
            roc_auc_score(np.array(truth, dtype=int), np.array(scores))
            raise SystemExit(name + ": scikit-learn no longer raises for one class; revisit ErrOneClass")
        except ValueError as e:
            msg = str(e)
        doc["cases"].append({"name": name, "scores": scores, "truth": truth, "expected": {"sklearn_auroc_error": msg}})
    # One case per line: compact, yet a diff shows which case changed.
    cases_json = ",\n".join(json.dumps(c, separators=(",", ":")) for c in doc.pop("cases"))
    head = json.dumps(doc, indent=1)[:-2]
    with open(out, "w") as f:
        f.write(head + ',\n "cases": [\n' + cases_json + "\n ]\n}\n")


if __name__ == "__main__":
    main()
