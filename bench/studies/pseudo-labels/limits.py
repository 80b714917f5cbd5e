"""What limits round 1's pseudo-labels, diagnosed with D_U's labels (never used by the round).

For a retraining set made by `cf-merge labels` from a round's clusters of D_U:
- purity (share of pseudo rows in their cluster's majority character) and pairwise
  precision and recall of the pseudo-labels (recall against every same-character pair of D_U);
- fragments: for each pseudo-cluster, whether the cluster whose mean direction is nearest
  is of the same majority character (what a merge by mean cosine would join);
- strays: each member's cosine to its cluster's mean direction, for majority and stray
  members, and the purity left after cutting members below a cosine;
- with --oracle OUT: the same retraining set without the stray members (each pseudo-cluster
  keeps its majority character's rows), to train the backbone that perfect purity would give.

    python bench/studies/pseudo-labels/limits.py ROUND1_DIR RETRAIN.h5 [--oracle OUT.h5]

ROUND1_DIR holds unlabelled.h5 (D_U's features, with their labels) as round.mk writes it.
"""

from __future__ import annotations

import argparse

import h5py
import numpy as np


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def pair_counts(groups, truth):
    """(same-character pairs, all pairs) inside the groups."""
    same = every = 0
    for g in np.unique(groups):
        counts = np.bincount(truth[groups == g])
        same += int((counts * (counts - 1)).sum())
        every += int(counts.sum() * (counts.sum() - 1))
    return same, every


def describe(name, keep, groups, truth, majority_member, all_pairs):
    same, every = pair_counts(groups[keep], truth[keep])
    print(f"  {name:34s} rows {keep.sum():5d}  purity {majority_member[keep].mean():.3f}  "
          f"pair precision {same / max(every, 1):.3f}  pair recall {same / all_pairs:.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("round1")
    ap.add_argument("retrain")
    ap.add_argument("--oracle", default=None)
    args = ap.parse_args()
    with h5py.File(f"{args.round1}/unlabelled.h5", "r") as f:
        truth_all = f["labels"][:]
        feats_all = unit(f["features"][:].astype(np.float64))
    with h5py.File(args.retrain, "r") as f:
        source, rows, labels = f["source"][:], f["source_rows"][:], f["labels"][:]
    pseudo = source == 1
    r, groups = rows[pseudo], labels[pseudo]
    truth, feats = truth_all[r], feats_all[r]
    ids, inv = np.unique(groups, return_inverse=True)
    majority = np.array([np.bincount(truth[inv == i]).argmax() for i in range(len(ids))])
    majority_member = truth == majority[inv]
    sizes = np.unique(truth_all, return_counts=True)[1]
    all_pairs = int((sizes * (sizes - 1)).sum())
    print(f"{args.retrain}: {pseudo.sum()} pseudo rows of {len(truth_all)}, {len(ids)} clusters, "
          f"{len(np.unique(majority))} majority characters of {len(sizes)}")
    describe("as made", np.ones(len(r), bool), inv, truth, majority_member, all_pairs)
    describe("strays removed (oracle)", majority_member, inv, truth, majority_member, all_pairs)

    means = np.zeros((len(ids), feats.shape[1]))
    np.add.at(means, inv, feats)
    means = unit(means)
    between = means @ means.T
    np.fill_diagonal(between, -np.inf)
    nearest = between.argmax(1)
    same_char = majority[nearest] == majority
    print(f"  nearest cluster by mean cosine is of the same character: {same_char.mean():.3f} "
          f"of clusters")
    upper = np.triu_indices(len(ids), 1)
    pair_cos, pair_same = between[upper], majority[upper[0]] == majority[upper[1]]
    for t in (0.75, 0.8, 0.85, 0.9):
        above = pair_cos >= t
        print(f"  cluster pairs with mean cosine >= {t}: {int((above & pair_same).sum())} of one "
              f"character, {int((above & ~pair_same).sum())} of two")

    to_mean = (feats * means[inv]).sum(1)
    q = (0.25, 0.5, 0.75)
    print(f"  cosine to the cluster's mean, quartiles: majority members "
          f"{np.quantile(to_mean[majority_member], q).round(3)}, strays "
          f"{np.quantile(to_mean[~majority_member], q).round(3)}")
    for t in (0.8, 0.85, 0.9):
        describe(f"members with cosine to mean >= {t}", to_mean >= t, inv, truth,
                 majority_member, all_pairs)

    if args.oracle:
        with h5py.File(args.retrain, "r") as f, h5py.File(args.oracle, "w") as out:
            keep = np.ones(len(source), bool)
            keep[np.flatnonzero(pseudo)[~majority_member]] = False
            for k, v in f.attrs.items():
                out.attrs[k] = v
            for k in f:
                out.create_dataset(k, data=f[k][:][keep])
        print(f"  wrote {args.oracle}: {int(keep.sum())} rows")


if __name__ == "__main__":
    main()
