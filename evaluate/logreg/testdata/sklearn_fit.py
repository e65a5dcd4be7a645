"""Fits scikit-learn's LogisticRegression on a case written by logreg_test.go and prints the
coefficients, intercepts and class probabilities as JSON: the reference the Go fit must match.
Usage: sklearn_fit.py CASE.json"""
import json
import sys
import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression

case = json.load(open(sys.argv[1]))
x = np.array(case["x"], dtype=np.float64).reshape(len(case["y"]), case["dim"])
y = np.array(case["y"])
# newton-cg, not the default lbfgs: lbfgs stops on a relative change of the objective well
# before the gradient is small, which would make the reference the less exact of the two.
kw = dict(C=case["c"], solver="newton-cg", tol=1e-9, max_iter=200)
with warnings.catch_warnings():
    # multi_class is deprecated in newer releases, where multinomial is the default; newton-cg
    # may warn that it did not reach tol=1e-9, which is tighter than needed here.
    warnings.simplefilter("ignore")
    try:
        clf = LogisticRegression(multi_class="multinomial", **kw)
    except TypeError:
        clf = LogisticRegression(**kw)
    clf.fit(x, y)
xt = np.array(case["x_test"], dtype=np.float64).reshape(-1, case["dim"])
json.dump({
    "version": __import__("sklearn").__version__,
    "w": clf.coef_.ravel().tolist(),
    "b": clf.intercept_.tolist(),
    "proba": clf.predict_proba(xt).ravel().tolist(),
    "predict": clf.predict(xt).tolist(),
}, sys.stdout)
