"""The whole round on real images: omniglot-bg (19,280 handwritten characters of 964
classes), several seeds, against the free baseline on the same features and against the
references of recognition.

For each --seeds value this runs, through the commands and with the round's defaults
(every choice made on D_L by the toolkit itself; SEED also seeds the backbone):

    make round DATA=omniglot-bg SEED=s            round 1: backbone on D_L, clusters of D_U
    make round DATA=omniglot-bg SEED=s ROUND=2    backbone on D_L + round 1's pseudo-labels
    make baseline upper-bound report              the step-matched D_L-only backbone and
                                                  the one trained on D_U's true labels

then scores each round's clusters of D_U against the free baseline recomputed on that
round's features (Infomap over directed cosine kNN links, k and the cosine threshold
chosen together on D_L by pairwise F: bench/quality.py's cosine_infomap over a grid of
D_L's own similarities) and, with --agglomerative, average linkage cut on D_L. It prints
the quality table (every seed, mean and spread, our round minus the baseline), the
recognition table (round 2 against the baseline and the upper bound on the test part:
top-1, top-1 E, TAR@FAR=0.01 and the share of the upper bound's gain recovered, every
seed) and each step's wall time (from the files' times: make runs the steps one after
the other), and writes everything to bench/results/omniglot-<time>.json.

    python bench/omniglot.py                       # seeds 0 1 2, rounds 1 and 2
    python bench/omniglot.py --seeds 0 --work /tmp/omni --keep
    OMP_NUM_THREADS=2 python bench/omniglot.py     # the threads are recorded

About 25-30 minutes a seed on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DATA = "omniglot-bg"
# the round's steps in the order make runs them, by the file each writes
ROUND_STEPS = ("backbone.h5", "labelled.h5", "unlabelled.h5", "knn_labelled.h5",
               "seq_labelled.h5", "draft_model.h5", "draft_knn_unlabelled.h5",
               "draft_seq_unlabelled.h5", "draft_links.h5", "draft_clusters.h5",
               "draft_pseudo_clusters.h5", "draft_retrain.h5", "link_labelled.h5",
               "knn_link_labelled.h5",
               "seq_link_labelled.h5", "model.h5", "knn_unlabelled.h5", "seq_unlabelled.h5",
               "links.h5", "clusters.h5", "test.h5", "recognition.json", "eval.json",
               "pseudo_clusters.h5", "retrain.h5", "knn_eval.json", "sweep.json",
               "gallery/index.html")


def step_times(folder: Path, started: float) -> dict:
    """Seconds each step of a round took, from its output's modification time: make runs
    the steps one at a time, so a step took the time since the one finished before it.
    Outputs older than ``started`` were reused from an earlier run (--work): "reused"."""
    done = sorted((p.stat().st_mtime, name) for name in ROUND_STEPS
                  if (p := folder / name).exists())
    out: dict = {name: "reused" for mtime, name in done if mtime < started}
    last = started
    for mtime, name in done:
        if mtime < started:
            continue
        out[name] = round(mtime - last, 1)
        last = mtime
    return out


def make(work: Path, seed: int, *targets: str, extra=()) -> float:
    t0 = time.time()
    cmd = ["make", "-s", *targets, f"DATA={DATA}", f"DATADIR={SHARED / DATA}", f"WORK={work}",
           f"SEED={seed}", "QUIET=-q", *extra]
    log = work.parent / f"{work.name}.{'_'.join(t.replace('=', '') for t in targets)}.log"
    log.parent.mkdir(parents=True, exist_ok=True)  # a --work folder not made yet
    with open(log, "w") as f:
        r = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode:
        sys.exit(f"bench/omniglot.py: {' '.join(cmd)} failed; see {log}")
    return t0


def round_quality(folder: Path, ks) -> dict:
    """The round's clusters of D_U, the free baseline on the same features, the model's
    choices (length, guard) as recorded."""
    import h5py
    import numpy as np
    from quality import cosine_infomap, similarity_grid

    from cftools.formats.features import load_features

    ev = json.loads((folder / "eval.json").read_text())
    fl, fu = load_features(folder / "labelled.h5"), load_features(folder / "unlabelled.h5")
    base = cosine_infomap(fl.features, fl.labels, fu.features, fu.labels, ks,
                          grid=similarity_grid, fine=6)
    with h5py.File(folder / "model.h5", "r") as f:
        training = json.loads(f.attrs["training"])
        seq_len = json.loads(f.attrs["config"])["seq_len"]
    with h5py.File(folder / "links.h5", "r") as f:
        links = str(f.attrs["method"])
        link_len = int(f["indices"].shape[1])
    g = training.get("guard") or {}
    return {"F_P": 100 * ev["pairwise_f"], "F_B": 100 * ev["bcubed_f"],
            "baseline": base, "links": links, "link_length": link_len, "model_length": seq_len,
            "guard": {k: g.get(k) for k in ("winner", "model", "cosine", "model_ahead", "points",
                                         "held_out", "model_length", "cosine_length")},
            "length_selection": training.get("length_selection"),
            "kept_epoch": training.get("kept_epoch"),
            "pseudo_labelled": _pseudo_share(folder), "n_u": int(np.asarray(fu.labels).size)}


def _pseudo_share(folder: Path):
    meta = folder / "retrain.h5"
    if not meta.exists():
        return None
    import h5py

    with h5py.File(meta, "r") as f:
        source = f["source"][:]
    return int((source == 1).sum())


def run_seed(seed: int, work: Path, rounds: int, ks, extra) -> dict:
    out: dict = {"seed": seed, "work": str(work), "rounds": {}, "times": {}}
    for r in range(1, rounds + 1):
        t0 = make(work, seed, "round", f"ROUND={r}", extra=extra)
        out["times"][f"round {r}"] = step_times(work / f"round{r}", t0)
        out["times"][f"round {r}"]["total"] = round(time.time() - t0, 1)
        out["rounds"][r] = round_quality(work / f"round{r}", ks)
        q = out["rounds"][r]
        print(f"seed {seed} round {r}: ours {q['F_P']:.2f} / {q['F_B']:.2f}, baseline "
              f"{q['baseline']['F_P']:.2f} / {q['baseline']['F_B']:.2f} ({q['links']} links, "
              f"L {q['link_length']}); {out['times'][f'round {r}']['total']:.0f} s",
              file=sys.stderr, flush=True)
    if rounds >= 2:
        t0 = make(work, seed, "baseline", "upper-bound", extra=extra)
        out["times"]["references"] = round(time.time() - t0, 1)
        from recognition_table import seed_row

        out["recognition"] = seed_row(work)
    return out


def _mean_sd(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def print_quality(seeds: list[dict], rounds: int) -> None:
    for r in range(1, rounds + 1):
        print(f"\n{DATA}, round {r}: clusters of D_U (every choice made on D_L)\n")
        print("| seed | default round F_P | F_B | links (L) | free baseline F_P | F_B "
              "(k, t) | ours - baseline F_P | F_B |\n|---|---|---|---|---|---|---|---|")
        dp, db = [], []
        for s in seeds:
            q = s["rounds"][r]
            b = q["baseline"]
            dp.append(q["F_P"] - b["F_P"])
            db.append(q["F_B"] - b["F_B"])
            print(f"| {s['seed']} | {q['F_P']:.2f} | {q['F_B']:.2f} | {q['links']} "
                  f"({q['link_length']}) | {b['F_P']:.2f} | {b['F_B']:.2f} ({b['k']}, "
                  f"{b['t']:.3f}) | {dp[-1]:+.2f} | {db[-1]:+.2f} |")
        for key, label in (("F_P", "F_P"), ("F_B", "F_B")):
            ours = _mean_sd([s["rounds"][r][key] for s in seeds])
            base = _mean_sd([s["rounds"][r]["baseline"][key] for s in seeds])
            diff = _mean_sd(dp if key == "F_P" else db)
            print(f"- {label}: default round {ours[0]:.2f} ± {ours[1]:.2f}, free baseline "
                  f"{base[0]:.2f} ± {base[1]:.2f}, difference {diff[0]:+.2f} ± {diff[1]:.2f} "
                  f"over {len(seeds)} seeds")


def print_recognition(seeds: list[dict]) -> None:
    from cftools.commands.eval.report import gain_recovered

    rows = [s for s in seeds if s.get("recognition")]
    if not rows:
        return
    print(f"\n{DATA}: recognition of the test part (%), round 2 against the step-matched "
          "D_L-only baseline and the upper bound (D_U's true labels)\n")
    print("| seed | metric | round 1 | round 2 | baseline | upper bound | share recovered |\n"
          "|---|---|---|---|---|---|---|")
    shares: dict = {"top1": [], "top1_e": [], "tar": []}
    for s in rows:
        rec = s["recognition"]
        for key, label in (("top1", "top-1"), ("top1_e", "top-1 E"), ("tar", "TAR@FAR=0.01")):
            v = {p: (rec[p]["tar"].get("0.01") if key == "tar" else rec[p][key])
                 for p in ("r1", "r2", "base", "upper")}
            share = gain_recovered(v["r2"], v["base"], v["upper"])
            shares[key].append(share)
            cells = ["-" if x is None else f"{100 * x:.1f}" for x in v.values()]
            print(f"| {s['seed']} | {label} | " + " | ".join(cells)
                  + f" | {'-' if share is None else f'{100 * share:.0f}%'} |")
    for key, label in (("top1", "top-1"), ("top1_e", "top-1 E"), ("tar", "TAR@FAR=0.01")):
        m, sd = _mean_sd(shares[key])
        if m is not None:
            print(f"- share recovered, {label}: mean {100 * m:.0f}% (sd {100 * sd:.0f}) over "
                  f"{len([x for x in shares[key] if x is not None])} seeds")


def print_times(seeds: list[dict]) -> None:
    print(f"\n{DATA}: seconds per step (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"{os.cpu_count()} CPUs)\n")
    keys = [k for k in seeds[0]["times"] if k != "references"]
    for k in keys:
        steps = list(seeds[0]["times"][k])
        print(f"| {k} | " + " | ".join(steps) + " |\n|---|" + "---|" * len(steps))
        for s in seeds:
            t = s["times"][k]
            print(f"| seed {s['seed']} | " + " | ".join(
                v if isinstance(v := t.get(x, 0), str) else f"{v:.0f}" for x in steps) + " |")
    refs = [s["times"].get("references") for s in seeds]
    if any(refs):
        print(f"- baseline + upper bound backbones: {', '.join(f'{t:.0f} s' for t in refs if t)}")


def omniglot_rows(seeds=(0, 1, 2), rounds: int = 2, ks=(10, 20, 30, 50, 80), work=None,
                  keep: bool = False, extra=()) -> list[dict]:
    """Every seed's rounds and references, printed as tables; [] where the data is absent."""
    if not (SHARED / DATA / "labelled").is_dir():
        print(f"(skipping {DATA}: {SHARED / DATA} not found)", file=sys.stderr)
        return []
    base = Path(work) if work else Path(tempfile.mkdtemp(prefix="cf-omniglot-"))
    out = []
    try:
        for seed in seeds:
            out.append(run_seed(seed, base / f"s{seed}", rounds, ks, extra))
    finally:
        if not (keep or work):
            shutil.rmtree(base, ignore_errors=True)
    print_quality(out, rounds)
    print_recognition(out)
    print_times(out)
    return out


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=2, choices=(1, 2, 3))
    ap.add_argument("--baseline-ks", nargs="+", type=int, default=[10, 20, 30, 50, 80])
    ap.add_argument("--work", default=None, help="Keep the rounds here (make reuses what "
                    "exists) [default: a temporary folder, removed].")
    ap.add_argument("--keep", action="store_true", help="Keep the temporary folder.")
    ap.add_argument("--make-args", nargs="*", default=[],
                    help="Extra make variables for every round, e.g. TRAIN_EPOCHS=16.")
    ap.add_argument("--json", default=None, help="Where to write the rows [default: "
                    "bench/results/omniglot-<time>.json].")
    args = ap.parse_args(argv)
    t0 = time.time()
    rows = omniglot_rows(args.seeds, args.rounds, args.baseline_ks, args.work, args.keep,
                         args.make_args)
    if not rows:  # the data is absent: nothing to write
        return rows
    out = Path(args.json) if args.json else ROOT / "bench" / "results" / (
        "omniglot-" + datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%M%SZ") + ".json")
    out.write_text(json.dumps({"time": datetime.now(timezone.utc).isoformat(),
                               "cpus": os.cpu_count(),
                               "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                               "load_average": os.getloadavg(), "args": vars(args),
                               "seconds": round(time.time() - t0), "seeds": rows}, indent=1))
    print(f"\nwrote {out}")
    return rows


if __name__ == "__main__":
    main()
