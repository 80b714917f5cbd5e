"""Scale figures: N x 256 demo features (1M by default) through knn (defaults: --method
auto) + seq + link (small preset) + merge, time and peak memory of each stage against the
formula of its man page's MEMORY section, and the same pipeline predicted for 5.21M
(MS-Celeb-1M's unlabelled set).

    python bench/scale.py [--n 1000000] [--exact-n 200000] [--knn-only] [--json OUT]
    python bench/scale.py --calibrate [--n 100000]    # IVF's cost per distance vs exact

The kNN check of issue 12: cf-knn with its defaults on N clustered points reaches
recall@k >= 0.95 on its sample and is at least 5x faster than --method exact, measured on
a random --exact-n subset of the same points and scaled by (N / n)^2 (exact is N^2 d).

Peak memory: each command's own process (os.wait4's ru_maxrss, as bench/memory.py);
predicted = fixed cost (the same command at --n0 points) + f(N) - f(n0), f from the man
pages (bench/memory.py's formulas). Time at 5.21M: knn auto ~ N^1.5 (nlist ~ sqrt(N), so
each query scans ~sqrt(N) points at a fixed nprobe), seq, link and merge ~ N.

The machine is shared: the load average before each stage is printed and stored.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from memory import MB, cf, f_knn_exact, f_knn_ivf, f_link_model, f_merge, f_seq, kept_links, python

MS1M_N = 5_210_000

SUBSET = """
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    n = f["features"].shape[0]
    rows = np.sort(np.random.default_rng(0).choice(n, size=int(sys.argv[3]), replace=False))
    np.save(sys.argv[2], f["features"][rows])
"""

DEMO_TAIL = """
import sys
from cftools.data.demo import make_demo_features
from cftools.formats.features import write_features
x, y = make_demo_features(int(sys.argv[2]), int(sys.argv[3]), seed=1, tail=float(sys.argv[4]))
write_features(sys.argv[1], x, labels=y)
"""

ATTRS = """
import sys, json, h5py
with h5py.File(sys.argv[1], "r") as f:
    print(json.dumps({k: (v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v)
                      for k, v in f.attrs.items() if k != "cftools_provenance"}))
"""

MODEL_CONFIG = """
import sys, json, h5py
with h5py.File(sys.argv[1], "r") as f:
    print(f.attrs["config"] if isinstance(f.attrs["config"], str) else f.attrs["config"].decode())
"""

CALIBRATE = """
import sys, time, numpy as np, faiss
from cftools.data.demo import make_demo_features
n, d, k = int(sys.argv[1]), 256, 80
x, _ = make_demo_features(n, d, seed=1)
q = x[:5000]
t = time.perf_counter(); fl = faiss.IndexFlatIP(d); fl.add(x); fl.search(q, k); te = time.perf_counter() - t
nlist = int(min(4 * n ** .5, n // 39))
iv = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
iv.train(x[np.random.default_rng(0).choice(n, min(n, 64 * nlist), replace=False)]); iv.add(x)
print(f"exact: 5000 queries over {n}: {te:.2f} s; IVF{nlist}:")
for p in (4, 8, 16, 32):
    iv.nprobe = p
    t = time.perf_counter(); iv.search(q, k); ti = time.perf_counter() - t
    share = (nlist + p * n / nlist) / n
    print(f"  nprobe {p:>3}: {ti:.2f} s, {te / ti:.1f}x faster, {1 / share:.0f}x fewer "
          f"distances: one scanned distance costs {ti / te / share:.1f} exact ones")
"""


def fmt(v, div=1) -> str:
    """A figure of the table, or "-" where there is none."""
    return f"{v / div:.0f}" if v is not None else "-"


def attrs(path) -> dict:
    return json.loads(python(ATTRS, path))


def stage(name, module, *args, **params) -> dict:
    load = os.getloadavg()[0]
    print(f"[{time.strftime('%H:%M:%S')}] {name} (load {load:.1f}) ...", file=sys.stderr,
          flush=True)
    res = cf(module, *args)
    res.update(load=load, params=params)
    print(f"    {res['seconds']:.1f} s, peak {res['peak'] / MB:.0f} MB", file=sys.stderr,
          flush=True)
    return res


def pipeline(tmp: Path, n: int, a, model: Path | None, knn_only: bool, exact_n: int) -> dict:
    d, k = a.dim, a.k
    out: dict = {}
    f = tmp / f"f{n}.h5"
    if a.demo_tail is None:
        out["cf-data demo"] = stage("cf-data demo", "data", "demo", f, "-n", n, "-d", d,
                                    "--seed", 1, N=n, d=d)
    else:  # the demo generator with other identity sizes (P(s) ~ s^-tail)
        python(DEMO_TAIL, f, n, d, a.demo_tail)
    if exact_n:
        sub = tmp / f"sub{exact_n}.npy"
        python(SUBSET, f, sub, exact_n)
        out["cf-knn exact (subset)"] = stage(
            "cf-knn exact (subset)", "knn", sub, "-o", tmp / f"kx{exact_n}.h5", "-k", k,
            "--method", "exact", N=exact_n, d=d, k=k, B=16384)
    knn = tmp / f"k{n}.h5"
    res = stage("cf-knn (defaults: auto)", "knn", f, "-o", knn, "-k", k, N=n, d=d, k=k, B=16384)
    info = attrs(knn)
    res["knn"] = {key: info.get(key) for key in ("method", "params", "auto", "recall_at_k",
                                                 "recall_sample")}
    print(f"    {res['knn']}", file=sys.stderr, flush=True)
    if info.get("method") == "ivf":
        res["params"]["nlist"] = json.loads(info["params"])["nlist"]
    out["cf-knn auto"] = res
    if knn_only:
        return out
    seq = tmp / f"s{n}.h5"
    out["cf-seq"] = stage("cf-seq", "seq", knn, "--features", f, "-o", seq, "-L", a.length,
                          N=n, d=d, k=k, L=a.length)
    links = tmp / f"l{n}.h5"
    cfg = json.loads(python(MODEL_CONFIG, model))
    out["cf-link"] = stage("cf-link (small preset)", "link", seq, "--features", f, "--model",
                           model, "-o", links, N=n, d=d, L=a.length, B=256,
                           h=cfg.get("heads", 4), ffn=cfg.get("ffn", 256), w=cfg.get("width", 128))
    clusters = tmp / f"c{n}.h5"
    res = stage("cf-merge", "merge", links, "-o", clusters, N=n, L=a.length)
    out["cf-merge"] = res
    return out


def train_model(tmp: Path, a) -> Path:
    """A small-preset Clusformer for d and L (trained briefly on a labelled demo set)."""
    ft, kt, st, m = (tmp / f"train_{x}.h5" for x in ("f", "k", "s", "m"))
    cf("data", "demo", ft, "-n", a.train_n, "-d", a.dim, "--seed", 7)
    cf("knn", ft, "-o", kt, "-k", a.k)
    cf("seq", kt, "--features", ft, "-o", st, "-L", a.length)
    res = cf("train", st, "--features", ft, "-o", m, "--preset", "small", "--epochs",
             a.train_epochs)
    print(f"model: small preset trained {a.train_epochs} epoch(s) on {a.train_n} points in "
          f"{res['seconds']:.0f} s", file=sys.stderr)
    return m


def merge_formula(p, E, decoder):
    return f_merge(N=p["N"], L=p["L"], E=E, decoder=decoder)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--n0", type=int, default=5000, help="small run giving each fixed cost")
    ap.add_argument("--exact-n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("-k", type=int, default=80)
    ap.add_argument("-L", "--length", type=int, default=64)
    ap.add_argument("--train-n", type=int, default=20_000)
    ap.add_argument("--train-epochs", type=int, default=1)
    ap.add_argument("--knn-only", action="store_true", help="only the kNN check")
    ap.add_argument("--demo-tail", type=float, default=None,
                    help="identity sizes P(s) ~ s^-T (cf-data demo: 2, mean size ~4; 1: mean "
                         "~48, near MS-Celeb-1M's ~68 a part)")
    ap.add_argument("--calibrate", action="store_true",
                    help="measure IVF's cost per scanned distance (neighbours.IVF_DISTANCE_COST)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    a = ap.parse_args(argv)
    threads = os.environ.setdefault("OMP_NUM_THREADS", "1")
    if a.calibrate:
        print(python(CALIBRATE, a.n))
        return
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        tmp = Path(tmp)
        model = None if a.knn_only else train_model(tmp, a)
        small = pipeline(tmp, a.n0, a, model, a.knn_only, exact_n=0)
        big = pipeline(tmp, a.n, a, model, a.knn_only, exact_n=a.exact_n)
        E = None
        if not a.knn_only:
            th = json.loads(attrs(tmp / f"l{a.n}.h5").get("thresholds", "{}"))
            dec_attrs = attrs(tmp / f"c{a.n}.h5")
            decoder = dec_attrs.get("method", "infomap")
            thr = float(dec_attrs.get("threshold", th.get("infomap", th.get("link", 0.5))))
            E = kept_links(tmp / f"l{a.n}.h5", thr)
            E0 = kept_links(tmp / f"l{a.n0}.h5", thr)
    took = time.perf_counter() - t0

    # the kNN check
    kx, ka = big.get("cf-knn exact (subset)"), big["cf-knn auto"]
    check = {}
    if kx:
        exact_scaled = kx["seconds"] * (a.n / a.exact_n) ** 2
        recall = ka["knn"]["recall_at_k"]
        check = {"exact_subset_n": a.exact_n, "exact_subset_seconds": kx["seconds"],
                 "exact_scaled_seconds": exact_scaled, "auto_seconds": ka["seconds"],
                 "speedup": exact_scaled / ka["seconds"], "recall_at_k": recall,
                 "method": ka["knn"]["method"], "params": ka["knn"]["params"],
                 "passes": bool(recall is not None and recall >= 0.95
                                and exact_scaled / ka["seconds"] >= 5)}

    formulas = {"cf-knn auto": (lambda p: f_knn_ivf(**p) if "nlist" in p else f_knn_exact(**p)),
                "cf-knn exact (subset)": lambda p: f_knn_exact(**p),
                "cf-seq": lambda p: f_seq(**p),
                "cf-link": lambda p: f_link_model(**p),
                "cf-merge": None}
    rows = []
    print(f"\nN={a.n} x {a.dim}, k={a.k}, L={a.length}, OMP_NUM_THREADS={threads}, "
          f"{took:.0f} s in all; fixed costs from N0={a.n0}")
    print(f"{'stage':<24}{'time s':>9}{'load':>6}{'peak MB':>9}{'pred MB':>9}"
          f"{'5.21M s':>10}{'5.21M MB':>10}")
    for name, res in big.items():
        p = res["params"]
        fn = formulas.get(name)
        pred = pred_5m = None
        if name == "cf-merge" and E is not None:
            fn_n = merge_formula(p, E, decoder)
            fn_0 = merge_formula(small[name]["params"], E0, decoder)
            pred = small[name]["peak"] + fn_n - fn_0
            e5 = E * MS1M_N / a.n
            pred_5m = small[name]["peak"] + merge_formula({**p, "N": MS1M_N}, e5, decoder) - fn_0
        elif fn is not None:
            p0 = dict(small[name]["params"]) if name in small else dict(p, N=a.n0)
            if "nlist" in p and "nlist" not in p0:
                p0["nlist"] = max(1, int(min(4 * a.n0 ** .5, a.n0 // 39)))
            fixed = small.get(name, small["cf-knn auto"])["peak"]
            pred = fixed + fn(p) - fn(p0)
            p5 = dict(p, N=MS1M_N)
            if "nlist" in p5:
                p5["nlist"] = int(4 * MS1M_N ** .5)
            pred_5m = fixed + fn(p5) - fn(p0)
        scale = (MS1M_N / a.n) ** (1.5 if name == "cf-knn auto" and "nlist" in p else 1)
        t5 = None if "subset" in name else res["seconds"] * scale
        rows.append({"stage": name, **{k: v for k, v in res.items() if k != "params"},
                     "params": p, "predicted_peak": pred, "seconds_5_21M": t5,
                     "peak_5_21M": pred_5m})
        print(f"{name:<24}{res['seconds']:>9.1f}{res['load']:>6.1f}{res['peak'] / MB:>9.0f}"
              f"{fmt(pred, MB):>9}{fmt(t5):>10}{fmt(pred_5m, MB):>10}")
    if check:
        tail = f" (demo tail {a.demo_tail})" if a.demo_tail else ""
        print(f"\nkNN check{tail}: defaults ({check['method']}) {check['auto_seconds']:.0f} s at "
              f"recall@{a.k} {check['recall_at_k']}; exact {check['exact_subset_seconds']:.0f} s "
              f"at {a.exact_n} -> {check['exact_scaled_seconds']:.0f} s scaled to {a.n}: "
              f"{check['speedup']:.1f}x faster ({'passes' if check['passes'] else 'FAILS'} "
              ">= 0.95 and >= 5x)")
    if a.json:
        a.json.write_text(json.dumps({"n": a.n, "dim": a.dim, "k": a.k, "L": a.length,
                                      "threads": threads, "seconds": took, "knn_check": check,
                                      "rows": rows, "kept_links": E}, indent=2, default=str))


if __name__ == "__main__":
    main()
