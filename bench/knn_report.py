#!/usr/bin/python3
"""Result collection and Markdown tables for bench/knn.sh (stdlib + numpy only).

  collect RUN_DIR DATA_DIR --kind main|scaling   -> one JSON line on stdout
      Reads what bench/knn.sh left in RUN_DIR: lemon.err (lemon's stderr), time.txt
      (/usr/bin/time -v), walls.txt (every repeat's wall time), and for --kind main also
      faiss.json and check.json.
  render RESULTS.jsonl                           -> Markdown on stdout
  wall TIME_TXT                                  -> the wall seconds in a /usr/bin/time -v file

How lemon's search seconds are obtained
---------------------------------------
transforms/progress.go prints "neighbour search done in S s, G GFLOP/s effective" when the last
search task ends. S runs from the start of the first search task (reading its blocks included)
to the end of the float64 re-ranking; block reading by the readers, scoring and writing are
outside it.

"Effective" GFLOP/s counts the full square, 2 modalities x N x N x D multiply-adds
(4*N*N*D flops), which is what FAISS computes; lemon only computes about half of it (the
upper triangle of block pairs), so its effective rate can exceed the machine's peak, and its
own printed rate is about half the effective one.
"""
import glob
import json
import os
import re
import sys

import numpy as np

PROGRESS = re.compile(r"neighbour search done in ([\d.]+)s, ([\d.]+) GFLOP/s")


def go_duration(s):
    """Seconds in a Go duration string such as 47s, 1m23s, 1h2m3s, 350ms."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    total = 0.0
    for num, unit in re.findall(r"([\d.]+)(ms|us|µs|ns|h|m|s)", s):
        total += float(num) * units[unit]
    return total


def shard_rows(data_dir):
    files = glob.glob(os.path.join(data_dir, "img_emb", "img_emb_*.npy"))
    files.sort(key=lambda p: int(re.search(r"_(\d+)\.npy$", p).group(1)))
    shapes = [np.load(p, mmap_mode="r").shape for p in files]
    return [s[0] for s in shapes], shapes[0][1]


def lemon_search(err_path):
    lines = [m for m in map(PROGRESS.search, open(err_path, errors="replace")) if m]
    if not lines:
        return {"search_s": None, "printed_gflops": None}
    secs, gflops = lines[-1].groups()
    return {"search_s": float(secs), "printed_gflops": float(gflops)}


def gnu_time(path):
    text = open(path, errors="replace").read()
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    status = re.search(r"Exit status: (\d+)", text)
    user = re.search(r"User time \(seconds\): ([\d.]+)", text)
    system = re.search(r"System time \(seconds\): ([\d.]+)", text)
    h, m, s = wall.groups()
    return {"wall_s": int(h or 0) * 3600 + int(m) * 60 + float(s),
            "cpu_s": float(user.group(1)) + float(system.group(1)),
            "rss_kib": int(rss.group(1)),
            "exit": int(status.group(1)) if status else None}


def collect(run_dir, data_dir, kind):
    manifest = os.path.join(run_dir, "out", "manifest.json")
    block_rows, sketch = 8192, None
    if os.path.exists(manifest):
        search = json.load(open(manifest))["search"]
        block_rows, sketch = search["block_rows"], search.get("sketch")
    rows, dim = shard_rows(data_dir)
    r = {"kind": kind, "n": sum(rows), "d": dim, "shards": len(rows), "block_rows": block_rows, "sketch": sketch}
    r["lemon"] = dict(gnu_time(os.path.join(run_dir, "time.txt")),
                      **lemon_search(os.path.join(run_dir, "lemon.err")))
    walls = os.path.join(run_dir, "walls.txt")
    if os.path.exists(walls):
        r["lemon"]["walls"] = [float(l.split()[0]) for l in open(walls) if l.strip()]
    if kind == "main":
        r["faiss"] = json.load(open(os.path.join(run_dir, "faiss.json")))
        r["check"] = json.load(open(os.path.join(run_dir, "check.json")))
    json.dump(r, sys.stdout)
    print()


def f(x, digits=2):
    return "n/a" if x is None else f"{x:.{digits}f}"


def gib(kib):
    return kib / 2 ** 20


def render(path):
    results = [json.loads(l) for l in open(path) if l.strip()]
    main = [r for r in results if r["kind"] == "main"]
    scaling = [r for r in results if r["kind"] == "scaling"]
    if main:
        print("### Exact kNN self-search: lemon vs FAISS IndexFlatIP (k=30, both modalities)\n")
        print("| N | D | FAISS search s (img+txt) | FAISS eff. GFLOP/s | lemon search s | lemon eff. GFLOP/s "
              "| lemon whole run s | lemon whole run / FAISS search | lemon search / FAISS search |")
        print("|" + "---:|" * 9)
        for r in main:
            n, d, fa, le = r["n"], r["d"], r["faiss"], r["lemon"]
            flops, ls = 4.0 * n * n * d, le["search_s"]
            mark = ""
            print(f"| {n} | {d} | {f(fa['search_s'])} | {f(flops / fa['search_s'] / 1e9, 1)} "
                  f"| {mark}{f(ls)} | {mark}{f(flops / ls / 1e9, 1) if ls else 'n/a'} | {f(le['wall_s'])} "
                  f"| {f(le['wall_s'] / fa['search_s'])} | {mark}{f(ls / fa['search_s']) if ls else 'n/a'} |")
        print("\n| N | D | FAISS load s | FAISS threads | FAISS cores busy in search | lemon cores busy (whole run) "
              "| lemon peak RSS GiB | lemon sketch: tiles skipped / checked | image exact/tie/mismatch | text exact/tie/mismatch |")
        print("|" + "---:|" * 10)
        for r in main:
            fa, le, c = r["faiss"], r["lemon"], r["check"]
            ex = lambda m: f"{m['match']}/{m['tie']}/{m['mismatch']} of {m['rows']}" + (
                f" ({m['missing']} missing)" if m["missing"] else "")
            sk = r.get("sketch") or {}
            skipped = "n/a" if not sk.get("tiles_checked") else f"{sk['tiles_skipped'] / sk['tiles_checked']:.2f}"
            print(f"| {r['n']} | {r['d']} | {f(fa['load_s'])} | {fa['threads']} "
                  f"| {f(fa['search_cpu_s'] / fa['search_s'])} | {f(le['cpu_s'] / le['wall_s'])} "
                  f"| {f(gib(le['rss_kib']))} | {skipped} | {ex(c['image'])} | {ex(c['text'])} |")
        if any(len(r["lemon"].get("walls", [])) > 1 for r in main):
            print("\nlemon's figures are from the run with the median wall time; every run's whole-run wall "
                  "time (s): " + "; ".join(f"N={r['n']} D={r['d']}: " + ", ".join(f(w) for w in r["lemon"].get("walls", []))
                                          for r in main) + ".")
        fa = main[0]["faiss"]
        print(f"\nFAISS {fa['faiss_version']} (Debian python3-faiss), numpy {fa['numpy_version']}, "
              "BLAS/OpenMP libraries loaded: " + (", ".join(os.path.basename(b) for b in fa["blas"]) or "unknown") + ". "
              "FAISS search s = the two `IndexFlatIP.search` calls (k=31), loading and normalising excluded. "
              "lemon whole run = the `lemon score` process (read, search, score, write). "
              "lemon search s = from the start of the search task to the end of re-ranking, from its "
              "progress line (see bench/knn_report.py). "
              "Effective GFLOP/s = 4*N*N*D / seconds for both (the full N x N product, both modalities). "
              "lemon computes at most half of it (a self-join computes each pair once), and its sketch "
              "(knn/sketch.go) skips the tiles it proves hold no neighbour, so lemon's effective rate can "
              "exceed the machine's peak: the kernel's own speed is in the table of this machine's limits "
              "below. Its selection stage multiplies bfloat16-rounded rows (AVX512_BF16) and re-ranks the "
              "candidates in float64, so its neighbour lists are exact. "
              "Sketch: tiles skipped / tiles checked, from the run's manifest. "
              "Cores busy = CPU seconds / wall seconds (OpenBLAS threads spin, so FAISS's can overstate work). "
              "exact/tie/mismatch: random rows whose 30-neighbour id sets equal FAISS's / differ only by ids "
              f"within {main[0]['check'].get('tol', 1e-6):g} cosine distance of the 30th neighbour (float32 near-ties, e.g. duplicated captions) "
              "/ differ otherwise.\n")
    if scaling:
        scaling.sort(key=lambda r: r["n"])
        base = next((r for r in scaling if r["n"] == 10000), scaling[0])
        print(f"### lemon scaling at D={scaling[0]['d']} (whole `lemon score` run)\n")
        print("| N | input GiB (N*D*4*2) | wall s | search s | CPU s | cores busy | peak RSS GiB "
              f"| RSS / (3*input + 1 GiB) | time / time({base['n'] // 1000}k) | (N/{base['n'] // 1000}k)^2 |")
        print("|" + "---:|" * 10)
        for r in scaling:
            n, d, le = r["n"], r["d"], r["lemon"]
            inp = n * d * 4 * 2
            mark = ""
            print(f"| {n} | {f(inp / 2 ** 30, 3)} | {f(le['wall_s'])} | {mark}{f(le['search_s'])} "
                  f"| {f(le['cpu_s'], 1)} | {f(le['cpu_s'] / le['wall_s'])} | {f(gib(le['rss_kib']))} | {f(le['rss_kib'] * 1024 / (3 * inp + 2 ** 30))} "
                  f"| {f(le['wall_s'] / base['lemon']['wall_s'])} | {f((n / base['n']) ** 2)} |")
        print("\nSame `lemon score` command as above. time / time(10k) uses wall time; when cores busy is "
              "well below the core count the machine was shared and CPU s is the steadier figure. "
              "3*input + 1 GiB is the memory budget the ratio is taken against.\n")


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "collect" and len(sys.argv) == 6 and sys.argv[4] == "--kind":
        collect(sys.argv[2], sys.argv[3], sys.argv[5])
    elif len(sys.argv) == 3 and sys.argv[1] == "wall":
        print(gnu_time(sys.argv[2])["wall_s"])
    elif len(sys.argv) == 3 and sys.argv[1] == "render":
        render(sys.argv[2])
    else:
        sys.exit(__doc__.split("\n\n")[0] + "\n" + __doc__.split("\n\n")[1])


if __name__ == "__main__":
    main()
