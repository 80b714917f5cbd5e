"""Cores: each of the round's clusters keeps only its largest piece under a stricter cut.

A stricter threshold (cf-merge --pseudo, cf-train --pseudo-threshold's) leaves purer
clusters but splits characters into several (a character trained as two classes is taught
apart from itself). Here every cluster of the round's clusters.h5 keeps only the members
of its largest piece in the stricter clustering (pieces of one point: the cluster is
dropped); the other pieces, same-character fragments and strays alike, are left out.
Written as a clusters file for `retrain.sh` (CLUSTERS=), which then applies round.mk's
`cf-merge labels` options. Prints the rows kept, clusters and D_U's majority characters
(a diagnosis with D_U's labels). The cut is the product's, core.pseudo_labels.keep_cores
(this study measured it first with a loop of its own; the two agree to the row on
omniglot-bg's seeds 0-2).

    python bench/studies/pseudo-labels/cores.py ROUND1_DIR STRICT_CLUSTERS.h5 OUT.h5
"""

from __future__ import annotations

import shutil
import sys

import h5py
import numpy as np

from cftools.core.pseudo_labels import keep_cores  # the product's cut (cf-merge labels --cores)


def main(round1, strict_path, out_path):
    with h5py.File(f"{round1}/clusters.h5", "r") as f:
        calibrated = f["labels"][:]
    with h5py.File(strict_path, "r") as f:
        strict = f["labels"][:]
    with h5py.File(f"{round1}/unlabelled.h5", "r") as f:
        truth = f["labels"][:]
    kept = keep_cores(calibrated, strict)
    ids = np.unique(kept[kept >= 0])
    majority = {int(np.bincount(truth[kept == c]).argmax()) for c in ids}
    purity = sum(np.bincount(truth[kept == c]).max() for c in ids) / max((kept >= 0).sum(), 1)
    print(f"{out_path}: {(kept >= 0).sum()} rows in {ids.size} clusters, {len(majority)} "
          f"majority characters, purity {purity:.3f}")
    shutil.copy(f"{round1}/clusters.h5", out_path)  # the round's file, its labels replaced
    with h5py.File(out_path, "r+") as f:
        del f["labels"]
        f.create_dataset("labels", data=kept)


if __name__ == "__main__":
    main(*sys.argv[1:])
