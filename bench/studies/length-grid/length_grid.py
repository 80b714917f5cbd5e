"""What cosine's length choice (cf-train, core/calibration/length.py) costs with a smaller
threshold grid, and whether it still picks the same length.

choose_length calibrates Infomap over D_L's cosine links at every candidate length, each
on a coarse grid of thresholds then a fine grid around the best (COARSE_GRID, FINE_GRID).
Here the same choice with other grids, timed, on the labelled side of a round:

    python length_grid.py SEQUENCES.h5 FEATURES.h5 [SEQUENCES.h5 FEATURES.h5 ...]

Reads only the labelled set's labels, as cf-train does.
"""

import sys
import time

import numpy as np
import torch

from cftools.core.calibration import thresholds
from cftools.core.calibration.guard import GUARD_DECODER
from cftools.core.calibration.length import LENGTH_TIE, candidate_lengths
from cftools.core.calibration.thresholds import COSINE_MODES, calibrate_many, local_links
from cftools.core.clusformer.inference import cosine_to_centre
from cftools.formats.artifacts import open_artifact
from cftools.formats.features import load_features

GRIDS = ((16, 6), (16, 0), (8, 4))  # (coarse, fine); the first is cf-train's


def choose(order, mask, cosine, labels, coarse, fine, seed=0):
    lengths = candidate_lengths(order.shape[1])
    jobs = []
    for n in lengths:
        idx, w = local_links(order[:, :n], mask[:, :n], cosine[:, :n], labels.shape[0])
        for mode in COSINE_MODES:
            jobs.append(dict(indices=idx, probabilities=thresholds.link_weights(idx, w, mode),
                             labels=labels[order[:, 0]], decoders=(GUARD_DECODER,),
                             coarse=coarse, fine=fine, seed=seed))
    thresholds._CALIBRATED.clear()  # no memo between grids: each is timed from scratch
    found = calibrate_many(jobs)
    best = {n: max(found[i * len(COSINE_MODES) + j][1][GUARD_DECODER]
                   for j in range(len(COSINE_MODES))) for i, n in enumerate(lengths)}
    top = max(best.values())
    return max(n for n, s in best.items() if s >= top - LENGTH_TIE), best


def main(args):
    for seq_path, feat_path in zip(args[::2], args[1::2]):
        with open_artifact(seq_path, "sequences") as seq:
            order, mask = seq.read("order"), seq.read("mask")
        feats = load_features(feat_path)
        cosine = cosine_to_centre(torch.from_numpy(feats.features), order, mask)
        print(f"{seq_path}: {order.shape[0]} rows, L {order.shape[1]}", flush=True)
        for coarse, fine in GRIDS:
            t = time.perf_counter()
            chosen, best = choose(order, mask, cosine, np.asarray(feats.labels), coarse, fine)
            print(f"  grid {coarse} + {fine}: {time.perf_counter() - t:.1f} s -> L {chosen} ("
                  + ", ".join(f"L {n}: {s:.4f}" for n, s in best.items()) + ")", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
