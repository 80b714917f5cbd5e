"""The guard's jury for one trained model, taken apart: its lead (model links minus cosine
links, each at cf-train's length and thresholds, on the held-out identities) as the graph
holds fewer of the training identities' rows, and under several Infomap seeds.

    python jury_density.py MODEL.h5 SEQ_LABELLED.h5 LABELLED.h5 --seed S

--seed is the seed the model was trained with (it fixes the held-out identities). Reads
D_L only. A row of the training identities left out is dropped with its links, so the
held-out rows' lists get shorter: a sparser graph, not a new kNN of a smaller set.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from cftools.cli import Reporter
from cftools.commands.train import _read
from cftools.core.calibration.jury import Contender, HeldOut, decode_contender, mean_f, resample_lead
from cftools.core.calibration.thresholds import calibration_rows
from cftools.core.clusformer.inference import cosine_to_centre, predict
from cftools.core.clusformer.model import load_model
from cftools.core.clusformer.sequences import split_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("sequences")
    ap.add_argument("features")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    ap.add_argument("--decode-seeds", type=int, default=2)
    a = ap.parse_args()
    _, feats, data = _read(a.sequences, a.features, None, Reporter(True))
    model, info = load_model(a.model)
    training = info["training"]
    g = training["guard"]
    ml, cl = g["model_length"], g["cosine_length"]
    centre = data.labels[data.order[:, 0]]
    _, val_rows, held_ids = split_rows(data, training["train_config"]["val_fraction"], a.seed)
    rows = np.union1d(calibration_rows(centre, training["train_config"]["calibration_points"],
                                       a.seed), val_rows)
    order, mask = data.order[rows], data.mask[rows]
    ft = torch.from_numpy(feats.features)
    weights = {"model": (ml, predict(model, ft, order[:, :ml], mask[:, :ml]),
                         info["thresholds"]),
               "cosine": (cl, cosine_to_centre(ft, order[:, :cl], mask[:, :cl]),
                          training["cosine_thresholds"])}
    n = data.labels.shape[0]
    labels = centre[rows]
    held = np.isin(labels, held_ids)
    train_ids = np.unique(labels[~held])
    print(f"{a.model} (seed {a.seed}): cf-train's guard: model ahead on "
          f"{g['model_ahead']:.0%} of the halves, winner {g['winner']}")
    for f in a.fractions:
        keep_ids = np.random.default_rng([a.seed, 99]).permutation(train_ids)[
            :int(round(f * train_ids.size))]
        r = np.flatnonzero(held | np.isin(labels, keep_ids))
        kept = np.zeros(n, dtype=bool)
        kept[order[r, 0]] = True
        jury = HeldOut(labels[r], held_ids)
        for s in range(a.decode_seeds):
            pred = {}
            for name, (length, w, t) in weights.items():
                o = order[r, :length]
                c = Contender(name, o, mask[r, :length] & kept[o], w[r], t)
                pred[name] = decode_contender(c, n, s)
            sm, sc = jury.scores(pred["model"]), jury.scores(pred["cosine"])
            ahead = resample_lead(jury, pred["model"], pred["cosine"], resamples=200,
                                  seed=a.seed)
            print(f"  training identities {f:.2f} ({r.size} rows), Infomap seed {s}: lead "
                  f"{100 * (mean_f(sm) - mean_f(sc)):+.2f} (F_P "
                  f"{100 * (sm['pairwise_f'] - sc['pairwise_f']):+.2f}, F_B "
                  f"{100 * (sm['bcubed_f'] - sc['bcubed_f']):+.2f}), ahead on {ahead:.0%}",
                  flush=True)


if __name__ == "__main__":
    main()
