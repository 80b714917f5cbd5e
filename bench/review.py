"""A simulated reviewer: F_P and F_B of D_U after 0, 25, 50, 100 and 200 answers, asking
cf-eval review's questions in its order against questions drawn at random from the same
pool (issue 26).

For every set and seed: the default round (bench/rounds.py: `make round`, every choice
made on D_L) clusters D_U. Where the features are fixed (lfw-dev, CelebA: dlib-128),
p(same) is fitted on D_L (`cf-eval review --calibrate`: D_L's links, made as the round
made D_U's, clustered by the round's decoder, its questions answered from D_L's labels).
Where the round's backbone was trained on D_L (the demo: images), D_L's links are those
of the training set, cleaner than any unseen identity's, so p(same) comes from the links'
own spread (no --calibrate); --calibrate yes|no forces either. No choice reads D_U's
labels. Then, in rounds of 25: review the current clustering (the
questions the answers so far decide left out), answer the first 25 from D_U's truth (the
two points each question names: same identity or not), honour every answer so far as
`cf-merge --corrections` does (the round's decoding, then the answers enforced), score.
The random reviewer draws its 25 from the same pool, unranked (seeded). Questions about
a point of unknown identity are skipped by both.

    python bench/review.py                                  # lfw-dev, CelebA, demo; seeds 0-2
    python bench/review.py --sets lfw-dev-dlib128 --seeds 0
    python bench/review.py --collect bench/results/review-*-seed*.json   # table, plot again

Writes bench/results/review-<set>-seed<S>-<time>.json, prints a markdown table, and draws
bench/results/review-<time>.png (F_B and F_P against answers, per set).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
from rounds import ROOT, SETS, available, the_round

from cftools.core.corrections import constraints_from
from cftools.core.decoding.constrained import enforce, link_edges
from cftools.core.decoding.setting import DecoderSetting
from cftools.core.decoding.weights import link_weights
from cftools.core.metrics import bcubed_scores, pairwise_scores
from cftools.core.review import candidates, fit_calibration, review
from cftools.formats.corrections import Answer

BUDGET = (25, 50, 100, 200)
STEP = 25


def scores(pred, truth) -> dict:
    return {"F_P": round(100 * pairwise_scores(pred, truth)["pairwise_f"], 3),
            "F_B": round(100 * bcubed_scores(pred, truth)["bcubed_f"], 3)}


def read(path, *names):
    with h5py.File(path, "r") as f:
        return [f[n][()] for n in names] + [dict(f.attrs)]


def calibration(r: Path, work: Path, attrs: dict, mode: str, seed: int):
    """p(same) fitted on D_L, as cf-eval review --calibrate fits it."""
    links_l = work / "links_labelled.h5"
    if not links_l.exists():
        with h5py.File(r / "links.h5") as f:
            method = str(f.attrs["method"])
        subprocess.run([str(ROOT / ".venv" / "bin" / "cf-link"), str(r / "seq_labelled.h5"),
                        "--features", str(r / "labelled.h5"), "--model", str(r / "model.h5"),
                        "-o", str(links_l), "--method", method, "-q"], check=True)
    idx, p, _ = read(links_l, "indices", "probabilities")
    (truth,) = read(r / "labelled.h5", "labels")[:1]
    w = link_weights(idx, p, mode)
    setting = DecoderSetting.recorded(attrs, mode)
    labels, _ = setting.decode(idx, w, seed)
    pool, scale = candidates(labels, idx, w, setting.threshold)
    return fit_calibration(pool, truth, setting.threshold, scale, "D_L")


def reviewer(labels0, idx, w, threshold, truth, cal, *, ranked: bool, seed: int,
             objective: str):
    """Scores after each budget of answers, and what was asked."""
    rng = np.random.default_rng(seed)
    edges = link_edges(idx, w)
    answers: list[Answer] = []
    labels, cons = labels0, None
    out = {0: scores(labels0, truth)}
    asked = {"join": [0, 0], "member": [0, 0], "cut": [0, 0]}  # [answered same, different]
    pools = []
    while len(answers) < max(BUDGET):
        pool, _ = review(labels, idx, w, threshold, calibration=cal, answered=cons,
                         objective=objective)
        pool = [q for q in pool if truth[q.a[0]] >= 0 and truth[q.b[0]] >= 0]
        pools.append(len(pool))
        if not ranked:
            pool = [pool[i] for i in rng.permutation(len(pool))]
        for q in pool[:STEP]:
            same = bool(truth[q.a[0]] == truth[q.b[0]])
            asked[q.rule][0 if same else 1] += 1
            answers.append(Answer(len(answers) + 1, "same" if same else "different",
                                  (q.a[0],), (q.b[0],)))
        cons = constraints_from(answers, labels0.size)
        labels = enforce(labels0, cons, edges).labels
        if len(answers) in BUDGET:
            out[len(answers)] = scores(labels, truth)
        if not pool:
            break
    return out, asked, pools


def one(name: str, seed: int, objective: str, calibrate: str) -> dict:
    r = the_round(name, seed)
    work = ROOT / "work" / "review" / f"{name}-seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    labels0, attrs = read(r / "clusters.h5", "labels")
    idx, p, l_attrs = read(r / "links.h5", "indices", "probabilities")
    (truth, _) = read(r / "unlabelled.h5", "labels")
    threshold, mode = float(attrs["threshold"]), str(attrs["link_mode"])
    t0 = time.perf_counter()
    calibrated = calibrate == "yes" or (calibrate == "auto" and name != "demo")
    w = link_weights(idx, p, mode)
    cal = calibration(r, work, attrs, mode, seed) if calibrated else None
    res = {"set": name, "seed": seed, "points": int(labels0.size), "decoder": attrs["method"],
           "link_method": l_attrs["method"], "threshold": threshold, "link_mode": mode,
           "objective": objective, "calibration": cal.to_json() if cal else "links"}
    for order in ("ranked", "random"):
        curve, asked, pools = reviewer(labels0, idx, w, threshold, truth, cal,
                                       ranked=order == "ranked", seed=seed, objective=objective)
        res[order] = {"scores": curve, "asked": asked, "pool_sizes": pools}
        print(f"{name} seed {seed} {order}: {curve}", file=sys.stderr)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def gain(res: dict, order: str, k: int, metric: str) -> float:
    s = res[order]["scores"]
    return s[k][metric] - s[0][metric]


def table(results: list[dict]) -> str:
    lines = ["| set | seed | F_P / F_B at 0 | reviewer | 25 | 50 | 100 | 200 | gain at 100 "
             "F_P / F_B | ranked / random per answer (F_B, 100) |", "|---|---|---|---|---|---|---|"
             "---|---|---|"]
    for res in results:
        base = res["ranked"]["scores"][0]
        for order in ("ranked", "random"):
            s = res[order]["scores"]
            cells = " | ".join(f"{s[k]['F_P']:.2f} / {s[k]['F_B']:.2f}" if k in s else "-"
                               for k in BUDGET)
            g = f"{gain(res, order, 100, 'F_P'):+.2f} / {gain(res, order, 100, 'F_B'):+.2f}"
            ratio = ""
            if order == "ranked":
                rb = gain(res, "random", 100, "F_B")
                ratio = "random <= 0" if rb <= 0 else f"{gain(res, order, 100, 'F_B') / rb:.1f}x"
            lines.append(f"| {res['set']} | {res['seed']} | {base['F_P']:.2f} / {base['F_B']:.2f}"
                         f" | {order} | {cells} | {g} | {ratio} |")
    return "\n".join(lines)


def plot(results: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = sorted({r["set"] for r in results})
    fig, axes = plt.subplots(2, len(sets), figsize=(4.5 * len(sets), 6.5), squeeze=False)
    for j, name in enumerate(sets):
        for i, metric in enumerate(("F_B", "F_P")):
            ax = axes[i][j]
            for res in (r for r in results if r["set"] == name):
                for order, style in (("ranked", "-o"), ("random", ":x")):
                    s = res[order]["scores"]
                    ks = sorted(int(k) for k in s)
                    ax.plot(ks, [s[k][metric] for k in ks], style, markersize=3,
                            label=f"{order}, seed {res['seed']}")
            ax.set_title(f"{name}: {metric}")
            ax.set_xlabel("answers")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--objective", choices=("bcubed", "pairs"), default="bcubed",
                    help="What an answer decides: cf-eval review --objective.")
    ap.add_argument("--calibrate", choices=("auto", "yes", "no"), default="auto",
                    help="Fit p(same) on D_L (auto: where the features were not learned on "
                         "D_L, i.e. not on the demo's images).")
    ap.add_argument("--collect", nargs="+", default=None, metavar="JSON",
                    help="Print the table and draw the plot of results written before.")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    results = []
    for path in args.collect or []:
        res = json.loads(Path(path).read_text())
        for order in ("ranked", "random"):
            res[order]["scores"] = {int(k): v for k, v in res[order]["scores"].items()}
        results.append(res)
    results.sort(key=lambda r: (r["set"], r["seed"]))
    for name in [] if args.collect else args.sets:
        if not available(name):
            print(f"(skipping {name}: no data)", file=sys.stderr)
            continue
        for seed in args.seeds:
            res = one(name, seed, args.objective, args.calibrate)
            res.update(time=stamp, cpus=os.cpu_count(), args=vars(args))
            out = ROOT / "bench" / "results" / f"review-{name}-seed{seed}-{stamp}.json"
            out.write_text(json.dumps(res, indent=1))
            results.append(res)
    print(table(results))
    if results:
        png = ROOT / "bench" / "results" / f"review-{stamp}.png"
        plot(results, png)
        print(f"wrote {png}")


if __name__ == "__main__":
    main()
