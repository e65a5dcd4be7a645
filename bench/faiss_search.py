#!/usr/bin/python3
"""FAISS side of the lemon neighbour-search benchmark (driven by bench/knn.sh).

Two subcommands, both printing one JSON object on stdout (notes go to stderr):

  search DIR --save FILE.npz [--k 31] [--sample 300] [--seed 0]
      What a user would do with FAISS on a clip-retrieval directory: np.load every
      DIR/img_emb/img_emb_*.npy and DIR/text_emb/text_emb_*.npy (shards in numeric order,
      concatenated), faiss.normalize_L2 both, and run an exact IndexFlatIP self-search with
      k=31 (30 neighbours plus the row itself) for images and for texts.
      Reported separately:
        load_s    np.load + concatenate of both modalities (file reading, not search)
        prep_s    normalize_L2 + IndexFlatIP.add for both modalities (memory-bound, small)
        search_s  the two index.search() calls -- the number bench/knn.sh compares lemon with
        search_cpu_s  process CPU time (all threads) during those calls: / search_s = cores used
      FAISS's own work is the full N x N inner-product matrix per modality (BLAS sgemm, since
      nq > faiss's blas threshold) plus a k=31 heap per row.
      The ids found for --sample random rows are saved to FILE.npz for `check`.

  check DIR --faiss FILE.npz --lemon OUT [--k 30] [--tol 1e-6]
      Compares lemon's --emit-neighbours ids (OUT/scores/part-*.csv, ids are global row
      positions because the dataset has no metadata) with FAISS's for the sampled rows. The
      expected set is FAISS's top-31 minus the row itself (FAISS's first 30 when the row is not
      among its 31, e.g. exact duplicates). A row whose sets differ counts as a "tie" when every
      differing id (in either set) lies within --tol in cosine distance of the k-th neighbour's
      distance (float64 recomputation), since float32 rounding can legitimately order such
      near-ties differently; otherwise it is a "mismatch" (printed to stderr).

Uses the system python (/usr/bin/python3) with Debian's python3-faiss and python3-numpy.
"""
import argparse
import csv
import glob
import json
import os
import re
import sys
import time

import numpy as np


def shard_files(root, side):
    files = glob.glob(os.path.join(root, f"{side}_emb", f"{side}_emb_*.npy"))
    if not files:
        sys.exit(f"faiss_search.py: no {side}_emb/*.npy under {root}")
    return sorted(files, key=lambda p: int(re.search(r"_(\d+)\.npy$", p).group(1)))


def load(root, side):
    parts = [np.load(p) for p in shard_files(root, side)]
    x = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return np.ascontiguousarray(x, dtype=np.float32)


def blas_libraries():
    """BLAS/OpenMP libraries mapped into this process (which sgemm FAISS really used)."""
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                if re.search(r"blas|lapack|mkl|gomp|omp", os.path.basename(path)):
                    libs.add(os.path.realpath(path))
    except OSError:
        pass
    return sorted(libs)


def cmd_search(a):
    import faiss

    t0 = time.perf_counter()
    img, txt = load(a.dir, "img"), load(a.dir, "text")
    load_s = time.perf_counter() - t0
    n, d = img.shape

    t0 = time.perf_counter()
    faiss.normalize_L2(img)
    faiss.normalize_L2(txt)
    idx_img, idx_txt = faiss.IndexFlatIP(d), faiss.IndexFlatIP(d)
    idx_img.add(img)
    idx_txt.add(txt)
    prep_s = time.perf_counter() - t0

    c0, t0 = time.process_time(), time.perf_counter()
    _, ids_img = idx_img.search(img, a.k)
    t1 = time.perf_counter()
    _, ids_txt = idx_txt.search(txt, a.k)
    t2, c2 = time.perf_counter(), time.process_time()

    rng = np.random.default_rng(a.seed)
    rows = np.sort(rng.choice(n, size=min(a.sample, n), replace=False))
    np.savez(a.save, rows=rows, ids_img=ids_img[rows], ids_txt=ids_txt[rows])
    json.dump({
        "n": int(n), "d": int(d), "k": a.k,
        "load_s": load_s, "prep_s": prep_s,
        "search_img_s": t1 - t0, "search_txt_s": t2 - t1, "search_s": t2 - t0,
        "search_cpu_s": c2 - c0,  # all threads; / search_s = cores kept busy
        "threads": faiss.omp_get_max_threads(),
        "faiss_version": getattr(faiss, "__version__", "?"),
        "numpy_version": np.__version__,
        "blas": blas_libraries(),
    }, sys.stdout)
    print()


def read_lemon(out_dir, wanted):
    """id -> (image neighbour ids, text neighbour ids) for the wanted ids, as int positions."""
    csv.field_size_limit(1 << 30)
    found = {}
    files = sorted(glob.glob(os.path.join(out_dir, "scores", "part-*.csv")))
    if not files:
        sys.exit(f"faiss_search.py: no scores/part-*.csv under {out_dir} (run lemon with --scores-format csv)")
    for p in files:
        with open(p, newline="") as f:
            for row in csv.DictReader(f):
                i = int(row["id"])
                if i in wanted:
                    found[i] = ([int(x) for x in row["image_neighbours"].split()],
                                [int(x) for x in row["text_neighbours"].split()])
    return found


def unit64(x):
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def cmd_check(a):
    f = np.load(a.faiss)
    rows = [int(r) for r in f["rows"]]
    lemon = read_lemon(a.lemon, set(rows))
    result = {}
    for col, (name, side, key) in enumerate((("image", "img", "ids_img"), ("text", "text", "ids_txt"))):
        emb = unit64(load(a.dir, side))
        ids_all = f[key]
        match = tie = mismatch = missing = 0
        for r, faiss_ids in zip(rows, ids_all):
            faiss_ids = [int(x) for x in faiss_ids if x >= 0]
            want = [x for x in faiss_ids if x != r][: a.k]
            if r not in lemon:
                missing += 1
                continue
            got = lemon[r][col]
            if set(got) == set(want) and len(got) == a.k:
                match += 1
                continue
            # Float64 cosine distances from row r to every id involved.
            dist = lambda ids: 1.0 - emb[ids] @ emb[r]
            kth = float(np.max(dist(want)))
            differing = sorted(set(got) ^ set(want))
            off = np.abs(dist(differing) - kth) if differing else np.zeros(1)
            if len(got) == a.k and r not in got and float(off.max()) <= a.tol:
                tie += 1
            else:
                mismatch += 1
                print(f"  {name} mismatch row {r}: lemon-only {sorted(set(got) - set(want))} "
                      f"faiss-only {sorted(set(want) - set(got))}, k-th distance {kth:.9f}, "
                      f"max |d - d_k| of differing ids {float(off.max()):.3g}", file=sys.stderr)
        result[name] = {"rows": len(rows), "match": match, "tie": tie,
                        "mismatch": mismatch, "missing": missing}
    result["tol"] = a.tol
    json.dump(result, sys.stdout)
    print()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("search")
    s.add_argument("dir")
    s.add_argument("--save", required=True)
    s.add_argument("--k", type=int, default=31)
    s.add_argument("--sample", type=int, default=300)
    s.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("check")
    c.add_argument("dir")
    c.add_argument("--faiss", required=True)
    c.add_argument("--lemon", required=True)
    c.add_argument("--k", type=int, default=30)
    c.add_argument("--tol", type=float, default=1e-6)
    a = p.parse_args()
    cmd_search(a) if a.cmd == "search" else cmd_check(a)


if __name__ == "__main__":
    main()
