"""Adding points in batches against clustering everything at once (issue 14).

For every set: the default round (`make round`, every choice made on D_L) clusters all of
D_U at once; then a random 80% of D_U (--seed) is clustered by the same commands with the
round's model (cf-knn, cf-seq, cf-link --method auto, cf-merge with the round's decoder)
and the remaining 20% is added in 4 batches by `cf-merge add`. Printed and saved per
batch: F_P and F_B of the clustering so far, of the all-at-once clustering on the same
points, the time of each add, how many old points changed cluster (only by recorded
merges, checked) and the merges.

    python bench/incremental.py                       # lfw-dev, CelebA, demo
    python bench/incremental.py --sets lfw-dev-dlib128
    python bench/incremental.py --sets celeba-dlib128 --links model   # the model's links
    python bench/incremental.py --redecode --seed 1   # adds that decode again where new links land

With --redecode every old point whose id changed must be accounted for by the batch's
rows of dataset id_changes (same old id, new id and count): checked per batch.

Writes bench/results/incremental-<set>-<time>.json.
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
from rounds import ROOT, SETS, SHARED
from rounds import the_round as shared_round

from cftools.core.metrics import bcubed_scores, pairwise_scores
from cftools.formats.features import write_features

BIN = ROOT / ".venv" / "bin"


def scores(pred, truth) -> dict:
    return {"F_P": round(100 * pairwise_scores(pred, truth)["pairwise_f"], 3),
            "F_B": round(100 * bcubed_scores(pred, truth)["bcubed_f"], 3)}


def run(*args, quiet=True):
    cmd = [str(BIN / args[0])] + [str(a) for a in args[1:]] + (["-q"] if quiet else [])
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    return time.perf_counter() - t, p.stderr


def the_round(name: str, work: Path, seed: int) -> Path:
    """The default round of the set at ``seed`` (bench/rounds.py, shared with the other
    benchmarks); ``work`` holds this benchmark's own files."""
    work.mkdir(parents=True, exist_ok=True)
    return shared_round(name, seed)


def labels_of(path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f["labels"][()]


def one_set(name: str, seed: int, batches: int, share: float, merge_links: int,
            k: int, length: int, links: str = "auto", cosine_quantile: float | None = None,
            relink: str | None = None, redecode: bool = False) -> dict:
    work = ROOT / "work" / "incremental" / name
    r = the_round(name, work, 0)
    with h5py.File(r / "unlabelled.h5", "r") as f:
        x, y = f["features"][()], f["labels"][()]
    with h5py.File(r / "clusters.h5", "r") as f:
        decoder = str(f.attrs["method"])
    with h5py.File(r / "links.h5", "r") as f:
        link_method = str(f.attrs["method"])
    once = labels_of(r / "clusters.h5")
    if links != "auto":  # the same round with its links forced (e.g. the model's)
        if not (r / f"links-{links}.h5").exists():
            run("cf-link", r / "seq_unlabelled.h5", "--features", r / "unlabelled.h5",
                "--model", r / "model.h5", "-o", r / f"links-{links}.h5", "--method", links)
        run("cf-merge", r / f"links-{links}.h5", "-o", r / f"clusters-{links}.h5", "--method",
            decoder)
        once = labels_of(r / f"clusters-{links}.h5")
        link_method = links
    n = x.shape[0]
    perm = np.random.default_rng(seed).permutation(n)
    n0 = int(round((1 - share) * n))
    parts = np.array_split(perm[n0:], batches)
    inc = work / (f"inc-seed{seed}" + ("" if links == "auto" else f"-{links}")
                  + ("" if cosine_quantile is None else f"-q{cosine_quantile}")
                  + ("" if relink is None else f"-{relink}") + ("-redecode" if redecode else ""))
    inc.mkdir(parents=True, exist_ok=True)
    for p in inc.glob("*"):
        p.unlink()
    write_features(inc / "old.h5", x[perm[:n0]], labels=y[perm[:n0]])
    model = r / "model.h5"
    timing = {}
    timing["knn"], _ = run("cf-knn", inc / "old.h5", "-o", inc / "knn.h5", "-k", k)
    timing["seq"], _ = run("cf-seq", inc / "knn.h5", "--features", inc / "old.h5", "-o",
                           inc / "seq.h5", "-L", length)
    timing["link"], _ = run("cf-link", inc / "seq.h5", "--features", inc / "old.h5", "--model",
                            model, "-o", inc / "links0.h5", "--method", links)
    timing["merge"], _ = run("cf-merge", inc / "links0.h5", "-o", inc / "clusters0.h5",
                             "--method", decoder)
    order = perm[:n0]
    rows = [{"batch": 0, "n": int(n0), "seconds": round(sum(timing.values()), 2),
             "stages": {s: round(v, 2) for s, v in timing.items()},
             **{f"inc_{m}": v for m, v in scores(labels_of(inc / "clusters0.h5"), y[order]).items()},
             **{f"once_{m}": v for m, v in scores(once[order], y[order]).items()}}]
    print(f"{name}: all of D_U at once ({n} points, {decoder}, {link_method} links): "
          f"{scores(once, y)}", file=sys.stderr)
    print(f"{name}: batch 0 ({n0} points): {rows[0]}", file=sys.stderr)
    feats, links, clusters = inc / "old.h5", inc / "links0.h5", inc / "clusters0.h5"
    for b, part in enumerate(parts, 1):
        np.save(inc / f"new{b}.npy", x[part])
        before = labels_of(clusters)
        out = [inc / f"clusters{b}.h5", inc / f"links{b}.h5", inc / f"features{b}.h5"]
        secs, err = run("cf-merge", "add", clusters, "--new", inc / f"new{b}.npy", "--links",
                        links, "--features", feats, "--model", model, "-o", out[0],
                        "--links-out", out[1], "--features-out", out[2], "--merge-links",
                        merge_links, *([] if cosine_quantile is None else
                                       ["--cosine-quantile", cosine_quantile]),
                        *([] if relink is None else ["--relink", relink]),
                        *(["--redecode"] if redecode else []), quiet=False)
        clusters, links, feats = out
        order = np.concatenate([order, part])
        now = labels_of(clusters)
        with h5py.File(clusters, "r") as f:
            merges = f["merges"][()]
            entry = json.loads(f.attrs["batches"])[-1]
            id_changes = f["id_changes"][()] if "id_changes" in f else np.zeros((0, 5))
        mine = merges[merges[:, 0] == b]
        # old points change cluster only by the recorded merges
        expect = before.copy()
        for kept, gone in ((int(m[1]), int(m[2])) for m in mine):  # in the order applied
            expect[expect == gone] = kept
        changed = int((now[:before.size] != before).sum())
        unexplained = int((now[:before.size] != expect).sum())
        unrecorded = unrecorded_changes(before, now[:before.size], id_changes, b)
        row = {"batch": b, "n": int(part.size), "seconds": round(secs, 2),
               "stages": entry.get("seconds"), "merges": int(mine.shape[0]),
               "old_points_changed": changed, "old_points_changed_unrecorded": unexplained,
               "id_changes_unrecorded": unrecorded,
               "region_points": entry.get("region_points"),
               "joined_existing": entry["joined_existing"], "new_clusters": entry["new_clusters"],
               "relinked_old_rows": entry["relinked_old_rows"],
               "entered_old_rows": entry["entered_old_rows"],
               **{f"inc_{m}": v for m, v in scores(now, y[order]).items()},
               **{f"once_{m}": v for m, v in scores(once[order], y[order]).items()}}
        rows.append(row)
        print(f"{name}: batch {b}: {row}", file=sys.stderr)
    final = rows[-1]
    result = {"set": name, "seed": seed, "points": int(n), "decoder": decoder,
              "link_method": link_method, "merge_links": merge_links, "k": k, "L": length,
              "once": scores(once, y), "rows": rows,
              "final_gap": {"F_P": round(final["inc_F_P"] - final["once_F_P"], 3),
                            "F_B": round(final["inc_F_B"] - final["once_F_B"], 3)},
              # the gap that clustering 80% alone already has on those points (batch 0),
              # and what the adds changed beyond it: the step's own share of the gap
              "base_gap": {m: round(rows[0][f"inc_{m}"] - rows[0][f"once_{m}"], 3)
                           for m in ("F_P", "F_B")},
              "adds_drift": {m: round((final[f"inc_{m}"] - rows[0][f"inc_{m}"])
                                      - (final[f"once_{m}"] - rows[0][f"once_{m}"]), 3)
                             for m in ("F_P", "F_B")}}
    return result


def unrecorded_changes(before, now, id_changes, batch: int) -> int:
    """Old points whose id changed that the batch's id_changes rows do not account for
    (each (old id, new id) pair's count must match)."""
    moved = before != now
    pairs, counts = np.unique(np.stack([before[moved], now[moved]], 1), axis=0,
                              return_counts=True)
    seen = {(int(o), int(n)): int(c) for o, n, c in zip(pairs[:, 0], pairs[:, 1], counts)}
    rows = id_changes[id_changes[:, 0] == batch]
    told = {(int(r[2]), int(r[3])): int(r[4]) for r in rows}
    return int(sum(c for key, c in seen.items() if told.get(key) != c)
               + sum(c for key, c in told.items() if key not in seen))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--share", type=float, default=0.2, help="Share of D_U added in batches.")
    ap.add_argument("--merge-links", type=int, default=3)
    ap.add_argument("-k", type=int, default=81, help="The round's K.")
    ap.add_argument("-L", type=int, default=81, help="The round's L.")
    ap.add_argument("--links", choices=("auto", "model", "cosine"), default="auto",
                    help="cf-link --method for both sides (auto: the guard's choice, as the "
                         "round; model: the model's links even where the guard chose cosine).")
    ap.add_argument("--cosine-quantile", type=float, default=None,
                    help="cf-merge add --cosine-quantile (model links; default: its own).")
    ap.add_argument("--relink", choices=("mirror", "model"), default=None,
                    help="cf-merge add --relink (model links; default: its own).")
    ap.add_argument("--redecode", action="store_true",
                    help="cf-merge add --redecode: decode again where the new links land.")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    for name in args.sets:
        if name != "demo" and not (SHARED / name / "features.npy").exists():
            print(f"(skipping {name}: {SHARED / name} not found)", file=sys.stderr)
            continue
        res = one_set(name, args.seed, args.batches, args.share, args.merge_links, args.k,
                      args.L, args.links, args.cosine_quantile, args.relink, args.redecode)
        print(f"\n{name}: all at once F_P {res['once']['F_P']:.2f} F_B {res['once']['F_B']:.2f}")
        print("| batch | points | add s | F_P inc | F_P once | F_B inc | F_B once | merges | "
              "old changed | unrecorded |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in res["rows"]:
            print(f"| {r['batch']} | {r['n']} | {r['seconds']} | {r['inc_F_P']:.2f} | "
                  f"{r['once_F_P']:.2f} | {r['inc_F_B']:.2f} | {r['once_F_B']:.2f} | "
                  f"{r.get('merges', '')} | {r.get('old_points_changed', '')} | "
                  f"{r.get('id_changes_unrecorded', '')} |")
        print(f"final gap (incremental - at once): F_P {res['final_gap']['F_P']:+.2f}, "
              f"F_B {res['final_gap']['F_B']:+.2f}; of which the 80% clustering alone "
              f"(batch 0) {res['base_gap']['F_P']:+.2f}, {res['base_gap']['F_B']:+.2f} and "
              f"the 4 adds {res['adds_drift']['F_P']:+.2f}, {res['adds_drift']['F_B']:+.2f}")
        tag = ("" if args.links == "auto" else f"-{args.links}-links") + \
            ("" if args.cosine_quantile is None else f"-q{args.cosine_quantile}") + \
            ("" if args.relink is None else f"-{args.relink}") + \
            ("-redecode" if args.redecode else "")
        out = ROOT / "bench" / "results" / f"incremental-{name}{tag}-{stamp}.json"
        res.update(time=stamp, cpus=os.cpu_count(), args=vars(args))
        out.write_text(json.dumps(res, indent=1))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
