"""Diagnosis, reads D_U's labels (never a way to choose): cosine Infomap's best threshold
and best score, in directed mode at one length, on D_L's identities subsampled (a sparser
graph), on all of D_L, and on D_U.

    python cosine_density.py SEQ_LABELLED.h5 LABELLED.h5 SEQ_UNLABELLED.h5 UNLABELLED.h5 -L 31

Each threshold of the grid is scored by the mean of pairwise and BCubed F, in percent.
"""

from __future__ import annotations

import argparse

import h5py
import numpy as np
import torch

from cftools.core.calibration.thresholds import local_links
from cftools.core.clusformer.inference import cosine_to_centre
from cftools.core.decoding.decoders import decode
from cftools.core.decoding.weights import link_weights
from cftools.core.metrics import bcubed_scores, pairwise_scores


def _load(sequences: str, features: str, length: int):
    with h5py.File(sequences) as s, h5py.File(features) as f:
        return (s["order"][:, :length].astype(np.int64), s["mask"][:, :length].astype(bool),
                f["features"][:], f["labels"][:])


def _sweep(name: str, order, mask, feats, labels, grid) -> None:
    cos = cosine_to_centre(torch.from_numpy(feats), order, mask)
    idx, w = local_links(order, mask, cos, labels.shape[0])
    w = link_weights(idx, w, "directed")
    truth = labels[order[:, 0]]
    found = []
    for t in grid:
        pred = decode("infomap", idx, w, float(t), seed=0)
        found.append((float(t), 100 * pairwise_scores(pred, truth)["pairwise_f"],
                      100 * bcubed_scores(pred, truth)["bcubed_f"]))
    t, p, b = max(found, key=lambda r: r[1] + r[2])
    print(f"{name} ({order.shape[0]} rows): best t {t:.2f}, F_P {p:.2f} F_B {b:.2f}; by t: "
          + " ".join(f"{t:.2f} {(p + b) / 2:.2f}" for t, p, b in found), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("seq_labelled")
    ap.add_argument("labelled")
    ap.add_argument("seq_unlabelled")
    ap.add_argument("unlabelled")
    ap.add_argument("-L", "--length", type=int, default=31)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5])
    a = ap.parse_args()
    grid = np.round(np.arange(0.42, 0.565, 0.01), 2)
    order, mask, feats, labels = _load(a.seq_labelled, a.labelled, a.length)
    centre = labels[order[:, 0]]
    ids = np.unique(centre)
    for f in a.fractions:
        keep = np.random.default_rng(1).permutation(ids)[:int(f * ids.size)]
        r = np.flatnonzero(np.isin(centre, keep))
        kept = np.zeros(labels.shape[0], dtype=bool)
        kept[order[r, 0]] = True
        _sweep(f"D_L, {f:.2f} of its identities", order[r], mask[r] & kept[order[r]], feats,
               labels, grid)
    _sweep("D_L", order, mask, feats, labels, grid)
    _sweep("D_U", *_load(a.seq_unlabelled, a.unlabelled, a.length), grid)


if __name__ == "__main__":
    main()
