"""The default round against the honest baselines on real faces, several training seeds.

For every shared face set with a standard split (../shared/data/{lfw-dev,celeba}-dlib128:
features.npy, labels.npy, labelled_idx.npy, unlabelled_idx.npy) this runs

- the default round, `make round DATA=... SEED=s` through the commands (every choice made
  on D_L by the toolkit itself), for each --seeds value, scored on D_U;
- Infomap over directed cosine kNN links with k and the threshold chosen on D_L by plain
  pairwise F (the baseline the field publishes, given its best shot: k from --baseline-ks);
- average-linkage agglomerative clustering, its cosine cut chosen on D_L.

It prints one table per set (every seed, then mean and spread) and writes the rows to
bench/results/quality-<time>.json.

    python bench/quality.py                      # both sets, seeds 0 1 2
    python bench/quality.py --sets celeba-dlib128 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from cftools.core.decoding.decoders import decode_infomap
from cftools.core.metrics import bcubed_scores, pairwise_scores
from cftools.core.neighbours.index import knn

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SETS = ("lfw-dev-dlib128", "celeba-dlib128")


def load_split(name):
    d = SHARED / name
    x, y = np.load(d / "features.npy"), np.load(d / "labels.npy")
    li, ui = np.load(d / "labelled_idx.npy"), np.load(d / "unlabelled_idx.npy")
    return (x[li], y[li]), (x[ui], y[ui])


def scores(pred, truth) -> dict:
    return {"F_P": 100 * pairwise_scores(pred, truth)["pairwise_f"],
            "F_B": 100 * bcubed_scores(pred, truth)["bcubed_f"]}


def similarity_grid(similarities, n: int = 21):
    """Cosine thresholds for features of any kind: ``n`` quantiles (0 to 99.5%) of D_L's
    own neighbour similarities at the k tried, so the grid covers where the links are
    (searched coarse to fine by cosine_infomap)."""
    return np.quantile(similarities[:, 1:], np.linspace(0.0, 0.995, n))


def face_grid(similarities):
    """The cosine thresholds tried on the face sets: 0.90 to 0.98 by 0.005 (all of them)."""
    return np.arange(0.90, 0.9825, 0.005)


def _best_threshold(score, grid, fine: int) -> tuple[float, float]:
    """(best F, its threshold) over ``grid``. With ``fine`` = 0 every threshold is tried
    (the first best of the grid's order wins); with ``fine`` > 0 the grid is scanned from
    the highest threshold down and the scan stops once two thresholds in a row score under
    80% of the best so far (lower ones only merge more, and cost the most), then ``fine``
    more thresholds between the best one's neighbours are tried."""
    if not fine:
        found = [(score(float(t)), float(t)) for t in grid]
        return max(found, key=lambda ft: ft[0])
    grid = np.unique(grid)[::-1]
    scanned: list[float] = []
    for t in grid:
        scanned.append(score(float(t)))
        if len(scanned) >= 3 and max(scanned[-2:]) < 0.8 * max(scanned):
            break
    b = int(np.argmax(scanned))
    best = (scanned[b], float(grid[b]))
    lo, hi = grid[min(b + 1, len(scanned) - 1)], grid[max(b - 1, 0)]
    for t in np.linspace(lo, hi, fine + 2)[1:-1]:
        best = max(best, (score(float(t)), float(t)))
    return best


def cosine_infomap(xl, yl, xu, yu, ks, grid=face_grid, fine: int = 0) -> dict:
    """The field's baseline given its best shot: Infomap over directed cosine kNN links,
    k from ``ks`` and the threshold from ``grid`` (a function of D_L's kNN similarities at
    that k; with ``fine``, searched coarse to fine) chosen together by plain pairwise F
    on D_L (what a user tuning the free baseline would do)."""
    best = None
    for k in ks:
        il, sl = knn(xl, k + 1)
        f, t = _best_threshold(
            lambda t, il=il, sl=sl: pairwise_scores(decode_infomap(il, sl, t), yl)["pairwise_f"],
            grid(sl), fine)
        if best is None or f > best[0]:
            best = (f, k, t)
    f, k, t = best
    iu, su = knn(xu, k + 1)
    return {"method": f"Infomap over cosine (k {k}, t {t:.3f} chosen on D_L)", "k": k, "t": t,
            "F_P_DL": 100 * f, **scores(decode_infomap(iu, su, t), yu)}


def average_linkage(xl, yl, xu, yu) -> dict:
    from baselines import agglomerative

    pred, thr = agglomerative(xl, yl, xu)
    return {"method": f"average linkage (cut {thr:.3f} chosen on D_L)", **scores(pred, yu)}


def default_round(name, seed, work: Path, quiet: bool) -> dict:
    (xl, yl), (xu, yu) = load_split(name)
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    for part, (x, y) in (("labelled", (xl, yl)), ("unlabelled", (xu, yu))):
        np.save(data / f"{part}.npy", x)
        np.save(data / f"{part}_labels.npy", y)
    t0 = time.perf_counter()
    cmd = ["make", "-s", "round", f"DATA={name}", f"DATADIR={data}", f"WORK={work / 'w'}",
           f"SEED={seed}"] + (["QUIET=-q"] if quiet else [])
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    r = work / "w" / "round1"
    ev = json.loads((r / "eval.json").read_text())
    import h5py

    with h5py.File(r / "model.h5", "r") as f:
        training = json.loads(f.attrs["training"])
    with h5py.File(r / "links.h5", "r") as f:
        link_method = str(f.attrs["method"])
    val = training.get("validation", {})
    return {"method": "cftools default round", "seed": seed,
            "F_P": 100 * ev["pairwise_f"], "F_B": 100 * ev["bcubed_f"],
            "length": training.get("length_selection", {}).get("length"),
            "kept_epoch": training.get("kept_epoch"), "links": link_method,
            "guard": training.get("guard", {}).get("winner"),
            "guard_model_ahead": training.get("guard", {}).get("model_ahead"),
            "auc_model": val.get("model", {}).get("roc_auc"),
            "auc_cosine": val.get("cosine", {}).get("roc_auc"),
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--baseline-ks", nargs="+", type=int, default=[10, 20, 30, 50, 80])
    ap.add_argument("--no-agglomerative", action="store_true")
    ap.add_argument("--json", default=None, help="Where to write the rows [default: "
                    "bench/results/quality-<time>.json].")
    args = ap.parse_args(argv)
    rows = quality_rows(args.sets, args.seeds, args.baseline_ks, not args.no_agglomerative)
    out = Path(args.json) if args.json else ROOT / "bench" / "results" / (
        "quality-" + datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%M%SZ") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"time": datetime.now(timezone.utc).isoformat(),
                               "cpus": os.cpu_count(),
                               # training's float reductions, hence the model and the
                               # guard's verdict, differ with the thread count
                               "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                               "args": vars(args), "rows": rows}, indent=1))
    print(f"\nwrote {out}")


def quality_rows(sets=SETS, seeds=(0, 1, 2), baseline_ks=(10, 20, 30, 50, 80),
                 agglomerative=True) -> list[dict]:
    """Every set's baselines and default rounds (one per seed), printed as tables."""
    rows = []
    for name in sets:
        if not (SHARED / name / "features.npy").exists():
            print(f"(skipping {name}: {SHARED / name} not found)", file=sys.stderr)
            continue
        (xl, yl), (xu, yu) = load_split(name)
        base = [cosine_infomap(xl, yl, xu, yu, baseline_ks)]
        if agglomerative:
            base.append(average_linkage(xl, yl, xu, yu))
        ours = []
        for seed in seeds:
            with tempfile.TemporaryDirectory(prefix=f"cfq-{name}-") as tmp:
                ours.append(default_round(name, seed, Path(tmp), True))
            print(f"{name} seed {seed}: {json.dumps(ours[-1])}", file=sys.stderr, flush=True)
        for r in base + ours:
            rows.append({"data": name, **r})
        print_table(name, base, ours)
    return rows


def print_table(name, base, ours):
    print(f"\n{name} (D_U; every choice made on D_L)")
    print("| method | F_P | F_B |\n|---|---|---|")
    for r in base:
        print(f"| {r['method']} | {r['F_P']:.2f} | {r['F_B']:.2f} |")
    for r in ours:
        print(f"| default round, seed {r['seed']} (L {r['length']}, {r['links']} links, "
              f"AUC {r['auc_model']:.4f} vs cosine {r['auc_cosine']:.4f}) | {r['F_P']:.2f} | "
              f"{r['F_B']:.2f} |")
    if ours:
        fp, fb = np.array([r["F_P"] for r in ours]), np.array([r["F_B"] for r in ours])
        print(f"| default round, mean ± sd over {len(ours)} seeds | {fp.mean():.2f} ± "
              f"{fp.std():.2f} | {fb.mean():.2f} ± {fb.std():.2f} |")
        b = base[0]
        print(f"| mean minus {b['method'].split(' (')[0]} | {fp.mean() - b['F_P']:+.2f} | "
              f"{fb.mean() - b['F_B']:+.2f} |")


if __name__ == "__main__":
    main()
