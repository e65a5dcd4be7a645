"""Independent computation of lemon eval's CLIP Logits and downstream numbers, from a noisy
embdir dataset's own files (npy embeddings, CSV metadata), with numpy, scipy and scikit-learn.
Prints JSON. Usage: protocol_reference.py DATASET TEMPERATURE

CLIP Logits: with t_c the text embedding of caption c among the dataset's distinct captions,
score_i = -log softmax_c(cos(img_i, t_c) / T)[y_i], by scipy's logsumexp in float64. AUROC on
the test split against is_error; F1 on the test split at the threshold that flags round(rate *
n_val) validation rows, rate being the validation split's share of errors.
Downstream: StandardScaler then LogisticRegression (C = 1, multinomial) on the training split's
L2-normalised image embeddings with the noisy captions as labels; accuracy on the test split's
original_caption."""
import csv
import glob
import json
import os
import re
import sys
import warnings

import numpy as np
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

root, T = sys.argv[1], float(sys.argv[2])
shard = lambda p: int(re.search(r"_(\d+)\.", os.path.basename(p)).group(1))
img = np.concatenate([np.load(p) for p in sorted(glob.glob(f"{root}/img_emb/*.npy"), key=shard)]).astype(np.float64)
txt = np.concatenate([np.load(p) for p in sorted(glob.glob(f"{root}/text_emb/*.npy"), key=shard)]).astype(np.float64)
meta = []
for p in sorted(glob.glob(f"{root}/metadata/*.csv"), key=shard):
    with open(p, newline="") as f:
        meta += list(csv.DictReader(f))
assert len(meta) == len(img) == len(txt)
img /= np.linalg.norm(img, axis=1, keepdims=True)
txt /= np.linalg.norm(txt, axis=1, keepdims=True)
key = [m["key"] for m in meta]
cap = [m["caption"] for m in meta]
err = np.array([m["is_error"] == "true" for m in meta])
split = np.array([m["split"] for m in meta])

classes = sorted(set(cap))
first = {}
for i in sorted(range(len(cap)), key=lambda i: key[i]):
    first.setdefault(cap[i], i)
tc = np.stack([txt[first[c]] for c in classes])
z = img @ tc.T / T
y = np.array([classes.index(c) for c in cap])
score = logsumexp(z, axis=1) - z[np.arange(len(y)), y]

test, val = split == "test", split == "val"
rate = err[val].mean()
r = int(round(rate * val.sum()))
thr = np.sort(score[val])[::-1][r - 1]
out = {
    "clip_logits_auroc": roc_auc_score(err[test], score[test]),
    "clip_logits_f1_prevalence": f1_score(err[test], score[test] >= thr),
    "test_rows": int(test.sum()),
}

train = split == "train"
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    kw = dict(C=1.0, solver="newton-cg", tol=1e-9, max_iter=200)
    try:
        clf = LogisticRegression(multi_class="multinomial", **kw)
    except TypeError:
        clf = LogisticRegression(**kw)
    scaler = StandardScaler().fit(img[train])
    clf.fit(scaler.transform(img[train]), np.array(cap)[train])
pred = clf.predict(scaler.transform(img[test]))
out["downstream_all_accuracy"] = float(np.mean(pred == np.array([m["original_caption"] for m in meta])[test]))
json.dump(out, sys.stdout)
