"""Benchmark the cf-merge decoders: time and peak memory at 1M and 5M points x 64 links.

With --demo, the links are real instead: the cosine kNN (`cf-knn`, its defaults) of
`cf-data demo -n N -d 256 --seed 1` at k 80, made once per N under --work and kept, and
each decoder runs at the directed cosine threshold calibrated for it on a demo D_L (the
thresholds of --thresholds-from, a model file; bench/gpu-model.h5 by default: a small
model trained on 20K demo points, whose cf-train calibrated every decoder on cosine
links too). That is how Infomap's time grows with N on this CPU (issue 25):

    python bench/merge.py --demo --sizes 125000,250000,500000,1000000 \
        --decoders infomap,propagation --json > bench/results/merge-demo-<date>.json

Otherwise the links are SYNTHESISED from labels, not computed from features (a faiss kNN of 5M points
would take hours on a laptop CPU and measures faiss, not the decoders):

- identity sizes are drawn as in the demo set (power law, exponent 2, at most 300);
- row i holds i itself (p = 1) then k-1 neighbours. Each slot is, with probability
  0.9 * min(1, (size_i - 1) / (k - 1)), a random member of i's identity (p = 1 - 0.6 u^3:
  mostly near 1; 6% below 0.5), else a random point of the whole set (p = 0.52 u^16:
  mostly near 0; 0.25% above 0.5: the false links a decoder must survive);
- points are shuffled, so identities are not contiguous ranges of ids.

Each (N, decoder) runs in a fresh child process, which makes the links in row blocks,
weighs them as cf-merge does by default (reciprocal: (p_ij + p_ji) / 2; --directed skips
it), then decodes them at threshold 0.5 and reports wall time (weighing + decoding, and the
weighing alone) and ru_maxrss (peak resident memory, links included; "extra" = peak minus
the resident size after making the links).

The F_P column only shows that a decoder ran sensibly; it is not a quality figure. The
synthetic links are mostly one-way (a random member of a large identity seldom lists i
back), unlike a real kNN, so reciprocal weights halve most same-identity links to about
0.5, right at the fixed threshold, and peaks and intimacy fragment (1M: F_P 0.57 and 0.51
reciprocal; Infomap, which follows the flow, 0.995).
The parent prints one table and, with --json, the rows on stdout.

    python bench/merge.py --quick                 # N = 100K (a minute)
    python bench/merge.py                         # N = 1M and 5M, k = 64
    python bench/merge.py --sizes 1000000 --decoders components,peaks --k 64
    python bench/merge.py --infomap-max 1000000   # Infomap only up to this N (default)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cftools.core.decoding.decoders import DECODERS, decode
from cftools.core.decoding.weights import link_weights
from cftools.data.demo import identity_sizes

THRESHOLD = 0.5


def synth_links(n: int, k: int, seed: int = 0, block: int = 1 << 15):
    """(indices (n, k) int64, probabilities (n, k) float32, labels (n,) int64)."""
    rng = np.random.default_rng(seed)
    sizes = identity_sizes(rng, n, 300, 2.0)
    sorted_labels = np.repeat(np.arange(sizes.size), sizes)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    perm = rng.permutation(n)  # point perm[r] is the r-th point in identity order
    labels = np.empty(n, dtype=np.int64)
    labels[perm] = sorted_labels
    indices = np.empty((n, k), dtype=np.int64)
    probs = np.empty((n, k), dtype=np.float32)
    for a in range(0, n, block):
        b = min(n, a + block)
        lab = sorted_labels[a:b]
        m = sizes[lab]
        q = 0.9 * np.minimum(1.0, (m - 1) / (k - 1))
        same = rng.random((b - a, k - 1)) < q[:, None]
        member = starts[lab][:, None] + (rng.random((b - a, k - 1)) * m[:, None]).astype(np.int64)
        other = rng.integers(0, n, (b - a, k - 1))
        nb_sorted = np.where(same, member, other)
        u = rng.random((b - a, k - 1), dtype=np.float32)
        p = np.where(same, 1 - 0.6 * u ** 3, 0.52 * u ** 16).astype(np.float32)
        order = np.argsort(-p, axis=1)  # falling, as links rows are
        rows = perm[a:b]
        indices[rows, 0] = rows
        probs[rows, 0] = 1.0
        indices[rows, 1:] = perm[np.take_along_axis(nb_sorted, order, axis=1)]
        probs[rows, 1:] = np.take_along_axis(p, order, axis=1)
    return indices, probs, labels


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def demo_links(n: int, k: int, work: Path) -> Path:
    """The demo set of n points and its cosine kNN (cf-knn's defaults), made once."""
    work.mkdir(parents=True, exist_ok=True)
    feats, knn = work / f"demo_{n}.h5", work / f"knn_{n}_{k}.h5"
    bindir = Path(sys.executable).parent
    if not feats.exists():
        subprocess.run([bindir / "cf-data", "demo", feats, "-n", str(n), "-d", "256", "--seed",
                        "1", "-q"], check=True)
    if not knn.exists():
        t = time.perf_counter()
        subprocess.run([bindir / "cf-knn", feats, "-o", knn, "-k", str(k), "-q"], check=True)
        print(f"{n:>9} cf-knn {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    return knn


def _load_demo(path: Path):
    import h5py

    with h5py.File(path, "r") as f:
        indices, sims = f["indices"][()], f["similarities"][()]
    with h5py.File(str(path).replace("knn_", "demo_").rsplit("_", 1)[0] + ".h5", "r") as f:
        labels = f["labels"][()]
    return indices, sims, labels


def _child(n, k, method, seed, mode, queue, links=None, threshold=THRESHOLD):
    try:
        t0 = time.perf_counter()
        if links is None:
            indices, probs, labels = synth_links(n, k, seed)
        else:
            indices, probs, labels = _load_demo(links)
        t_make = time.perf_counter() - t0
        base = _current_rss_mb()
        links_mb = indices.nbytes / 2**20 + probs.nbytes / 2**20
        t1 = time.perf_counter()
        probs = link_weights(indices, probs, mode)  # the input is dropped, as in cf-merge
        t_weigh = time.perf_counter() - t1
        kept = int(((probs >= threshold) & (indices >= 0)).sum() - n)  # self links aside
        out = decode(method, indices, probs, threshold, max_size=None)
        t_dec = time.perf_counter() - t1
        peak = _rss_mb()
        row = {"n": n, "k": k, "method": method, "link_mode": mode, "seconds": round(t_dec, 2),
               "links": "synthetic" if links is None else "demo cosine kNN",
               "threshold": round(float(threshold), 4), "kept_links": kept,
               "weigh_seconds": round(t_weigh, 2),
               "make_seconds": round(t_make, 1), "links_mb": round(links_mb),
               "rss_after_links_mb": round(base), "peak_rss_mb": round(peak),
               "extra_mb": round(peak - base), "clusters": int(out.max()) + 1}
        try:
            from cftools.core.metrics import evaluate

            e = evaluate(out, labels)
            row.update(pairwise_f=round(e["pairwise_f"], 4), bcubed_f=round(e["bcubed_f"], 4))
        except ImportError:
            pass
        queue.put(row)
    except MemoryError:
        queue.put({"n": n, "k": k, "method": method, "error": "MemoryError"})


def run_one(n, k, method, seed, timeout, mode="reciprocal", links=None, threshold=THRESHOLD):
    ctx = mp.get_context("spawn")  # a fresh process: its ru_maxrss is its own
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(n, k, method, seed, mode, queue, links, threshold))
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return {"n": n, "k": k, "method": method, "error": f"timed out after {timeout} s"}
    if proc.exitcode != 0 and queue.empty():
        return {"n": n, "k": k, "method": method, "error": f"exit code {proc.exitcode} "
                "(killed for memory?)"}
    return queue.get()


def cosine_thresholds(model: Path) -> dict:
    """{decoder: its directed threshold on cosine links} from a model file's calibration."""
    import h5py

    with h5py.File(model, "r") as f:
        found = json.loads(f.attrs.get("training", "{}")).get("cosine_thresholds")
    if not found:
        raise SystemExit(f"{model} holds no calibrated cosine thresholds")
    return {d: float(found[f"directed_{d}"]) for d in DECODERS if f"directed_{d}" in found}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N = 100K only")
    ap.add_argument("--sizes", default=None, help="comma-separated N (default 1M,5M)")
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--decoders", default=",".join(DECODERS))
    ap.add_argument("--infomap-max", type=int, default=1_000_000,
                    help="skip Infomap above this N (it is far slower than the rest)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--directed", action="store_true",
                    help="decode p_ij as given (cf-merge --directed)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--demo", action="store_true",
                    help="links: the cosine kNN of demo features (k --k, default 80 then)")
    ap.add_argument("--work", type=Path, default=Path("work/bench-merge"),
                    help="--demo: where the demo sets and their kNN are kept")
    ap.add_argument("--thresholds-from", type=Path,
                    default=Path(__file__).resolve().parent / "gpu-model.h5",
                    help="--demo: the model file whose directed cosine thresholds are used")
    args = ap.parse_args(argv)
    sizes = [100_000] if args.quick else [int(s) for s in (args.sizes or "1000000,5000000").split(",")]
    if args.demo:
        args.directed = True
        if args.k == 64:
            args.k = 80
        thresholds = cosine_thresholds(args.thresholds_from)
    rows = []
    for n in sizes:
        for method in args.decoders.split(","):
            if method == "infomap" and n > args.infomap_max:
                rows.append({"n": n, "k": args.k, "method": method,
                             "error": f"skipped (N > --infomap-max {args.infomap_max})"})
                print(f"{n:>9} {method:11s} skipped", file=sys.stderr)
                continue
            links, threshold = None, THRESHOLD
            if args.demo:
                links, threshold = demo_links(n, args.k, args.work), thresholds[method]
            row = run_one(n, args.k, method, args.seed, args.timeout,
                          "directed" if args.directed else "reciprocal", links, threshold)
            rows.append(row)
            if "error" in row:
                print(f"{n:>9} {method:11s} {row['error']}", file=sys.stderr, flush=True)
            else:
                print(f"{n:>9} {method:11s} {row['seconds']:8.1f} s (weighing "
                      f"{row['weigh_seconds']:.1f} s)  peak {row['peak_rss_mb']:6d} MB"
                      f"  (links {row['links_mb']} MB, extra {row['extra_mb']} MB)  "
                      f"F_P {row.get('pairwise_f', float('nan')):.4f}  clusters {row['clusters']}",
                      file=sys.stderr, flush=True)
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()


if __name__ == "__main__":
    main()
