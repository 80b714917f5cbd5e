"""Issue 14: other merge rules (MERGE_SHARE, --merge-links) replayed on the 80% + 4
batches simulation, in-process, cosine links. On PART labelled (D_L) this is how a merge
rule would be chosen by the calibration objective (identity-capped pairwise F); on
unlabelled (D_U) it only measures what that choice would give. One JSON line: per rule
(share, merge links) the final F_P, F_B, capped F and the number of merges. Works in
work/incremental-gap/.

    python bench/studies/incremental-gap/replay.py SET labelled|unlabelled SEED
"""

from __future__ import annotations

import argparse
import json
import subprocess

import h5py
import numpy as np
from runs import BIN, ROOT, first_share, labels_of, round_of

from cftools.core.calibration.objective import calibration_score
from cftools.core.decoding.decoders import DEFAULT_INTIMACY_RATIO
from cftools.core.incremental import local
from cftools.core.incremental.add import add_points
from cftools.core.metrics import bcubed_scores, pairwise_scores
from cftools.formats.features import write_features

# (the share of each old cluster new links must reach, --merge-links); the first is cftools'
GRID = [(0.75, 3), (0.5, 3), (0.5, 2), (0.25, 2), (0.25, 1), (0.0, 2), (0.0, 1)]


def cf(*args):
    subprocess.run([str(BIN / args[0]), *map(str, args[1:]), "-q"], check=True, capture_output=True)


def sc(labels, truth):
    return (round(100 * pairwise_scores(labels, truth)["pairwise_f"], 2),
            round(100 * bcubed_scores(labels, truth)["bcubed_f"], 2),
            round(100 * calibration_score(labels, truth), 2))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("set", help="a set bench/incremental.py ran, e.g. demo")
    ap.add_argument("part", choices=("labelled", "unlabelled"))
    ap.add_argument("seed", type=int)
    a = ap.parse_args(argv)
    name, part, seed = a.set, a.part, a.seed
    r = round_of(name)
    with h5py.File(r / f"{part}.h5") as f:
        x, y = f["features"][()], f["labels"][()]
    perm, n0 = first_share(y.size, seed)
    parts = np.array_split(perm[n0:], 4)
    d = ROOT / "work" / "incremental-gap" / f"replay-{name}-{part}-{seed}"
    d.mkdir(parents=True, exist_ok=True)
    with h5py.File(r / "clusters.h5") as f:
        dec = str(f.attrs["method"])
    write_features(d / "old.h5", x[perm[:n0]], labels=y[perm[:n0]])
    cf("cf-knn", d / "old.h5", "-o", d / "k.h5", "-k", 81)
    cf("cf-seq", d / "k.h5", "--features", d / "old.h5", "-o", d / "s.h5", "-L", 81)
    cf("cf-link", d / "s.h5", "--features", d / "old.h5", "--model", r / "model.h5", "-o", d / "l.h5",
       "--method", "auto")
    cf("cf-merge", d / "l.h5", "-o", d / "c.h5", "--method", dec)
    with h5py.File(d / "l.h5") as f:
        idx0, pr0, lm = f["indices"][()], f["probabilities"][()], str(f.attrs["method"])
    with h5py.File(d / "c.h5") as f:
        lab0, at = f["labels"][()], dict(f.attrs)
    if lm != "cosine":
        raise SystemExit(f"the round's links are {lm}; this replay takes cosine links only")
    mode, th = str(at.get("link_mode", "directed")), float(at["threshold"])
    order = np.r_[perm[:n0], np.concatenate(parts)]
    yy = y[order]
    res = {"set": name, "part": part, "seed": seed, "threshold": th, "mode": mode,
           "base": sc(lab0, y[perm[:n0]])}
    if part == "unlabelled":
        once = labels_of(r / "clusters.h5")
        res["once"] = sc(once[order], yy)
        res["once_base"] = sc(once[perm[:n0]], y[perm[:n0]])
    for share, ml in GRID:
        local.MERGE_SHARE = share  # read by the merge rule at each add
        feats, idx, pr, lab = x[perm[:n0]], idx0, pr0, lab0
        nm = 0
        for p in parts:
            out = add_points(feats, x[p], idx, pr, lab, link_method="cosine", decoder=dec, threshold=th,
                             mode=mode, singletons=str(at.get("singletons", "keep")), merge_links=ml,
                             seed=0, intimacy_ratio=float(at.get("intimacy_ratio", DEFAULT_INTIMACY_RATIO)))
            feats, idx, pr, lab = np.concatenate([feats, x[p]]), out.indices, out.probabilities, out.labels
            nm += len(out.merges)
        res[f"share{share}_links{ml}"] = (*sc(lab, yy), nm)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
