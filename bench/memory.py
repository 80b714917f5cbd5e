"""Peak memory of the commands against formulas derived from their code.

    python bench/memory.py [--n 1000000] [--dim 128] [--quick] [--json OUT]

Runs the real commands (python -m cftools.commands.X) on a demo set of N points and
reads the peak RSS of each command's own process from os.wait4 (ru_maxrss, as
bench/run.py does). Each command is also run on a small set (--n0 points) whose peak is
the command's fixed cost C (interpreter, numpy/torch/faiss, HDF5 buffers); the formula's
prediction at N is then

    predicted(N) = measured(n0) + f(N) - f(n0)

where f is the part that grows with the data, read off the code (bytes; N points,
d dimensions, k neighbours, L sequence length, B batch rows, E kept links):

  cf-knn exact   8Nd + 14Nk + 12Bk   features + IndexFlatIP copy; result ids/sims (12Nk);
                                     two N x k bool masks of put_self_first; one batch
  cf-knn ivf     8Nd + 8N + 14Nk + T features + the inverted lists' vectors and ids; result
                                     and masks as exact; T = 4d*64*nlist, the training
                                     sample, when N > 64*nlist (else 0: it is a view)
  cf-knn hnsw    8Nd + 8NM + 14Nk    features + faiss's copy; the graph's level-0 links (2M
                                     int32 a point); result and masks as exact
  cf-knn auto    as the method it chose; where it tuned IVF and fell back to exact, the
                 IVF index lives on beside the flat one (+ 4Nd + 8N)
  (approximate methods also search the --recall-sample S queries exactly: at most 16 MiB
  of temporaries, core/neighbours/exact.py, in the fixed cost since it does not grow)
  cf-seq         4Nd + 8N + 40R(k+L) features + labels; knn rows streamed in blocks of
                                     R = min(N, 4 MiB / 8k) rows, ~40 bytes an entry of
                                     sorting temporaries (keys, permutation, gathers)
  cf-link cosine 4Nd + 4BLd          features; one batch of gathered neighbour features
  cf-link model  6Nd + 4BL(d+L+hL+ffn+8w)  features, and their prepared bf16 copy (2Nd;
                                     4Nd in place without bf16); a batch's tokens,
                                     attention and FFN
  cf-merge       12NL + max(W, decoder)  indices + probabilities read whole (8NL + 4NL);
                                     W = 8NL' + 4NL + 24RL, the reciprocal weighing: sorted
                                     ids and probabilities (L' = L rounded up to a power of
                                     two), the weights, block temporaries (R rows)
     peaks       + 24N + 40*R*L      confidences, parents, labels; R = min(N, 131072) rows
                                     per block at ~40 bytes a link of temporaries
     components  + 16N + 25E         CSR graph (8E) + its row-part copies while joined
                                     (8E) + union-find's int32 edge temporaries (~9E)
     intimacy    + 16N + 40E         graph (8E) + A = adj + I and A^T in CSR (~16E each
                                     with int32 indices, float32 data) + edge scores (4E)
     infomap     + 16N + 12E + 160E  graph + sources; Infomap's own network (C++) is not
                                     in our code: its ~160 bytes a kept link were measured
                                     here (1M points, E = 8.1M); the bench prints it again
  cf-eval        80N                 pred and truth as read (8N each), their int64 codes
                                     and np.unique's sorted copies and inverses for pred,
                                     truth and the contingency cell keys (~8 more N x 8)

--knn measures cf-knn alone, every method (exact, ivf, hnsw, auto) at --n points (default
100000, d 32, k 32 with --knn: the sizes of issue 28), against these formulas.

The exact kNN is quadratic in time (N^2 d): it is measured on --exact-n points (default
min(N, 100000)); cf-link's model on --link-n rows (default min(N, 20000)), as both would
take far longer than the rest at 1M on 2 cores. The model is an untrained small-preset
Clusformer (memory does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DECODERS = ("peaks", "components", "intimacy", "infomap")
INFOMAP_BYTES_PER_LINK = 160  # Infomap's own network, measured (see the docstring)
MB = 1 << 20


def run(argv) -> dict:
    """Run one command; wall time and the peak RSS of its own process (bytes)."""
    argv = [str(a) for a in argv]
    with tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(argv[2:5])} failed: {err.read().strip()[-600:]}")
    return {"seconds": wall, "peak": usage.ru_maxrss * 1024}


def cf(module, *args) -> dict:
    return run([sys.executable, "-m", f"cftools.commands.{module}", *args, "-q"])


# ----------------------------------------------------------------------------- formulas


def f_knn_exact(N, d, k, B, **_):
    return 8 * N * d + 14 * N * k + 12 * B * k


def f_knn_ivf(N, d, k, nlist, **_):
    sample = 4 * d * 64 * nlist if N > 64 * nlist else 0  # neighbours.IVF_TRAIN_PER_LIST
    return 8 * N * d + 8 * N + 14 * N * k + sample


def f_knn_hnsw(N, d, k, M, **_):
    return 8 * N * d + 8 * N * M + 14 * N * k


def f_knn_auto(N, d, k, chosen, fell_back=False, nlist=0, B=16384, **_):
    if chosen == "exact":
        return f_knn_exact(N, d, k, B) + ((4 * N * d + 8 * N) if fell_back else 0)
    return f_knn_ivf(N, d, k, nlist)


def f_seq(N, d, k, L, **_):
    r = min(N, (4 << 20) // (8 * k))
    return 4 * N * d + 8 * N + 40 * r * (k + L)


def f_link_cosine(N, d, L, B, **_):
    return 4 * N * d + 4 * B * L * d


def f_link_model(N, d, L, B, h=4, ffn=256, w=128, bf16=True, **_):
    return (6 if bf16 else 4) * N * d + 4 * B * L * (d + L + h * L + ffn + 8 * w)


def f_merge(N, L, E, decoder, **_):
    base = 12 * N * L
    rows = min(N, 131072)
    weighing = 8 * N * (1 << int(np.ceil(np.log2(L)))) + 4 * N * L + 24 * rows * L
    if decoder == "peaks":
        extra = 24 * N + 40 * rows * L
    elif decoder == "components":
        extra = 16 * N + 25 * E
    elif decoder == "intimacy":
        extra = 16 * N + 40 * E
    else:  # infomap
        extra = 16 * N + 12 * E + INFOMAP_BYTES_PER_LINK * E
    return base + max(weighing, extra)


def f_eval(N, **_):
    return 80 * N


# ----------------------------------------------------------------------------- the run


KEPT_LINKS = """
import sys, h5py, numpy as np
e = 0
with h5py.File(sys.argv[1], "r") as f:
    idx, p = f["indices"], f["probabilities"]
    for s in range(0, idx.shape[0], 1 << 16):
        i = idx[s:s + (1 << 16)]
        rows = np.arange(s, s + i.shape[0])[:, None]
        e += int(((i >= 0) & (i != rows) & (p[s:s + (1 << 16)] >= np.float32(sys.argv[2]))).sum())
print(e)
"""

MAKE_MODEL = """
import sys, torch
from cftools.core.clusformer.model import Clusformer, make_config, save_model
torch.manual_seed(0)
save_model(sys.argv[1], Clusformer(make_config("small", int(sys.argv[2]), int(sys.argv[3]))))
"""


def python(code, *args) -> str:
    """Run a helper in its own process: this one must stay small, because a child's
    ru_maxrss starts at its parent's RSS at fork time (Linux keeps the high-water mark
    of the forked memory image across exec)."""
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], check=True,
                          capture_output=True, text=True).stdout


def kept_links(links: Path, threshold: float) -> int:
    """E: links i -> j (j valid, not i) with p >= threshold."""
    return int(python(KEPT_LINKS, links, threshold))


def pipeline(tmp: Path, n: int, a) -> dict:
    """Every command at n points; returns {name: {"seconds", "peak", "params"}}."""
    d, k, L = a.dim, a.k, a.length
    out: dict = {}
    f = tmp / f"f{n}.h5"
    cf("data", "demo", f, "-n", n, "-d", d, "--seed", 1)
    nlist = a.nlist
    nx = min(n, a.exact_n)
    if nx < n:
        fx = tmp / f"fx{nx}.h5"
        cf("data", "demo", fx, "-n", nx, "-d", d, "--seed", 2)
    else:
        fx = f
    out["cf-knn exact"] = {**cf("knn", fx, "-o", tmp / f"kx{n}.h5", "-k", k, "--method", "exact",
                                "--batch-size", a.batch),
                           "params": dict(N=nx, d=d, k=k, B=a.batch)}
    knn = tmp / f"k{n}.h5"
    out["cf-knn ivf"] = {**cf("knn", f, "-o", knn, "-k", k, "--method", "ivf", "--nlist", nlist,
                              "--nprobe", a.nprobe, "--recall-sample", 200, "--batch-size", a.batch),
                         "params": dict(N=n, d=d, k=k, nlist=nlist)}
    seq = tmp / f"s{n}.h5"
    out["cf-seq"] = {**cf("seq", knn, "--features", f, "-o", seq, "-L", L),
                     "params": dict(N=n, d=d, k=k, L=L)}
    links = tmp / f"l{n}.h5"
    out["cf-link cosine"] = {**cf("link", seq, "--features", f, "--method", "cosine", "-o", links,
                                  "--device", "cpu"), "params": dict(N=n, d=d, L=L, B=256)}
    # the model on fewer rows: its own small pipeline
    nl = min(n, a.link_n)
    fl, kl, sl = tmp / f"fl{nl}.h5", tmp / f"kl{nl}.h5", tmp / f"sl{nl}.h5"
    cf("data", "demo", fl, "-n", nl, "-d", d, "--seed", 3)
    cf("knn", fl, "-o", kl, "-k", k, "--method", "exact")
    cf("seq", kl, "--features", fl, "-o", sl, "-L", L)
    model = tmp / f"m{d}-{L}.h5"
    if not model.exists():
        python(MAKE_MODEL, model, d, L)
    out["cf-link model"] = {**cf("link", sl, "--features", fl, "--model", model, "-o",
                                 tmp / f"lm{nl}.h5", "--device", "cpu"),
                            "params": dict(N=nl, d=d, L=L, B=256)}
    e = kept_links(links, a.threshold)
    for dec in DECODERS:
        clusters = tmp / f"c{n}-{dec}.h5"
        out[f"cf-merge {dec}"] = {**cf("merge", "decode", links, "-o", clusters, "--method", dec,
                                       "--threshold", a.threshold),
                                  "params": dict(N=n, L=L, E=e, decoder=dec)}
    out["cf-eval"] = {**cf("eval", "clusters", tmp / f"c{n}-peaks.h5", "--truth", f),
                      "params": dict(N=n)}
    return out


def knn_attrs(path: Path) -> dict:
    """The method and parameters a knn file records (read in a process of its own)."""
    code = ("import sys, json, h5py; f = h5py.File(sys.argv[1], 'r'); "
            "print(json.dumps({'method': str(f.attrs['method']), "
            "'params': json.loads(f.attrs['params']), "
            "'auto': json.loads(f.attrs['auto']) if 'auto' in f.attrs else None}))")
    return json.loads(python(code, path))


def knn_methods(tmp: Path, n: int, a) -> dict:
    """cf-knn by every method at n points (default options otherwise: --recall-sample
    1000, --batch-size 16384); {name: {"seconds", "peak", "params"}}."""
    d, k = a.dim, a.k
    f = tmp / f"kf{n}.h5"
    cf("data", "demo", f, "-n", n, "-d", d, "--seed", 1)
    out: dict = {}
    for method in ("exact", "ivf", "hnsw", "auto"):
        knn = tmp / f"k{method}{n}.h5"
        res = cf("knn", f, "-o", knn, "-k", k, "--method", method, "--batch-size", a.batch)
        got = knn_attrs(knn)
        params = dict(N=n, d=d, k=k, B=a.batch)
        if method == "ivf":
            params["nlist"] = got["params"]["nlist"]
        elif method == "hnsw":
            params["M"] = got["params"]["hnsw_m"]
        elif method == "auto":
            params.update(chosen=got["method"], nlist=got["params"].get("nlist", 0),
                          fell_back=bool(got["auto"] and got["auto"].get("trials")
                                         and got["method"] == "exact"))
        out[f"cf-knn {method}"] = {**res, "params": params}
        knn.unlink()
    return out


FORMULA = {"cf-knn exact": f_knn_exact, "cf-knn ivf": f_knn_ivf, "cf-knn hnsw": f_knn_hnsw,
           "cf-knn auto": f_knn_auto, "cf-seq": f_seq,
           "cf-link cosine": f_link_cosine, "cf-link model": f_link_model, "cf-eval": f_eval}
for _dec in DECODERS:
    FORMULA[f"cf-merge {_dec}"] = f_merge


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="points [1M]")
    ap.add_argument("--quick", action="store_true", help="100K points")
    ap.add_argument("--n0", type=int, default=5000, help="small run giving the fixed cost")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("-k", type=int, default=48)
    ap.add_argument("-L", "--length", type=int, default=32)
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16384, help="cf-knn --batch-size")
    ap.add_argument("--threshold", type=float, default=0.6, help="cf-merge (cosine links)")
    ap.add_argument("--exact-n", type=int, default=100_000)
    ap.add_argument("--link-n", type=int, default=20_000)
    ap.add_argument("--knn", action="store_true",
                    help="cf-knn alone, every method (default N 100000, d 32, k 32)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--workdir", type=Path, default=None, help="keep files here")
    a = ap.parse_args(argv)
    given = {x.split("=")[0] for x in (argv or sys.argv[1:])}
    if a.knn:  # the sizes of issue 28 unless given
        a.n = a.n if "--n" in given else 100_000
        a.dim = a.dim if "--dim" in given else 32
        a.k = a.k if "-k" in given else 32
    n = 100_000 if a.quick else a.n
    env_threads = os.environ.setdefault("OMP_NUM_THREADS", "2")
    run_at = knn_methods if a.knn else pipeline
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        small = run_at(tmp, a.n0, a)
        big = run_at(tmp, n, a)
        took = time.perf_counter() - t0
    rows = []
    print(f"peak RSS vs formula: N={n}, d={a.dim}, k={a.k}, L={a.length}, "
          f"fixed cost from N0={a.n0}; OMP_NUM_THREADS={env_threads}; {took:.0f} s in all")
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"(this process peaked at {own:.0f} MB: no child can report less, see python())")
    print(f"{'command':<20}{'N':>9}{'fixed MB':>10}{'f(N) MB':>10}{'pred MB':>10}"
          f"{'meas MB':>10}{'meas/pred':>10}{'time s':>8}")
    for name, res in big.items():
        fn = FORMULA[name]
        p0 = dict(small[name]["params"])
        var_n = fn(**res["params"])
        var_0 = fn(**p0)
        fixed = small[name]["peak"]
        pred = fixed + var_n - var_0
        row = {"command": name, "params": res["params"], "fixed": fixed, "f_n": var_n,
               "predicted": pred, "measured": res["peak"], "seconds": res["seconds"]}
        rows.append(row)
        print(f"{name:<20}{res['params']['N']:>9}{fixed / MB:>10.0f}{var_n / MB:>10.0f}"
              f"{pred / MB:>10.0f}{res['peak'] / MB:>10.0f}{res['peak'] / pred:>10.2f}"
              f"{res['seconds']:>8.1f}")
    if a.knn:
        if a.json:
            a.json.write_text(json.dumps({"n": n, "dim": a.dim, "k": a.k, "n0": a.n0,
                                          "omp_num_threads": env_threads, "rows": rows},
                                         indent=2))
        return
    e = big["cf-merge peaks"]["params"]["E"]
    inf = big["cf-merge infomap"]
    e0 = small["cf-merge infomap"]["params"]["E"]
    ours = (f_merge(**inf["params"]) - INFOMAP_BYTES_PER_LINK * e) - \
        (f_merge(**small["cf-merge infomap"]["params"]) - INFOMAP_BYTES_PER_LINK * e0)
    left = inf["peak"] - small["cf-merge infomap"]["peak"] - ours
    print(f"E = {e} kept links at threshold {a.threshold}; Infomap's own structures measured "
          f"at ~{left / max(e - e0, 1):.0f} bytes a kept link (the formula assumes "
          f"{INFOMAP_BYTES_PER_LINK})")
    if a.json:
        a.json.write_text(json.dumps({"n": n, "dim": a.dim, "k": a.k, "L": a.length, "rows": rows},
                                     indent=2))


if __name__ == "__main__":
    main()
