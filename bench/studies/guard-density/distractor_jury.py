"""The guard's jury with the unlabelled points as distractors: would it predict D_U?

cf-train's jury decodes D_L's held-out identities among all of D_L, a graph as crowded
as D_L. Here D_L and D_U are searched together (exact cosine kNN), every row is linked by
the model and by cosine links (each at cf-train's length and thresholds), all rows are
decoded together by Infomap, and the held-out identities are scored two ways:
- labelled only: the clusters' labelled points alone (a D_U point neither helps nor
  hurts; held-out identities merged with others through D_U points count against);
- D_U as others: a D_U point in a held-out identity's cluster counts against it (true
  where the two parts share no identity, as in the demo and omniglot-bg).
Neither reads D_U's labels.

    python distractor_jury.py LABELLED.h5 UNLABELLED.h5 MODEL.h5 [MODEL.h5 ...]
"""

from __future__ import annotations

import argparse

import faiss
import h5py
import numpy as np
import torch

from cftools.core.calibration.jury import Contender, HeldOut, decode_contender, mean_f, resample_lead
from cftools.core.clusformer.inference import cosine_to_centre, predict
from cftools.core.clusformer.model import load_model
from cftools.core.clusformer.sequences import SequenceData, split_rows


def _search(x: np.ndarray, k: int) -> np.ndarray:
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(unit)
    order = index.search(unit, k)[1].astype(np.int64)
    # the centre first, as cf-seq writes it (exact duplicates may have swapped it)
    rows = np.arange(x.shape[0])
    at = np.argmax(order == rows[:, None], axis=1)
    has = (order == rows[:, None]).any(axis=1)
    order[has, at[has]] = order[has, 0]
    order[:, 0] = rows
    return order


def _line(name: str, sm: dict, sc: dict, ahead: float) -> str:
    return (f"{name}: model {100 * sm['pairwise_f']:.2f} / {100 * sm['bcubed_f']:.2f}, cosine "
            f"{100 * sc['pairwise_f']:.2f} / {100 * sc['bcubed_f']:.2f}, lead "
            f"{100 * (mean_f(sm) - mean_f(sc)):+.2f}, model ahead on {ahead:.0%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("labelled")
    ap.add_argument("unlabelled")
    ap.add_argument("models", nargs="+")
    a = ap.parse_args()
    with h5py.File(a.labelled) as fl, h5py.File(a.unlabelled) as fu:
        xl, yl, xu = fl["features"][:], fl["labels"][:].astype(np.int64), fu["features"][:]
    nl = xl.shape[0]
    x = np.vstack([xl, xu]).astype(np.float32)
    n = x.shape[0]
    models = [load_model(m) for m in a.models]
    longest = max(max(i["training"]["guard"]["model_length"],
                      i["training"]["guard"]["cosine_length"]) for _, i in models)
    order = _search(x, longest)
    mask = np.ones(order.shape, dtype=bool)
    ft = torch.from_numpy(x)
    others = np.r_[yl, yl.max() + 1 + np.arange(n - nl)]  # every D_U point its own identity
    print(f"{a.labelled}: {nl} rows, {a.unlabelled}: {n - nl} rows, searched together")
    for path, (model, info) in zip(a.models, models):
        tr = info["training"]
        g, seed = tr["guard"], tr["train_config"]["seed"]
        data = SequenceData(order[:nl], mask[:nl], np.zeros(order[:nl].shape, np.int8), yl)
        held_ids = split_rows(data, tr["train_config"]["val_fraction"], seed)[2]
        ml, cl = g["model_length"], g["cosine_length"]
        pred = {}
        for name, length, w, t in (
                ("model", ml, predict(model, ft, order[:, :ml], mask[:, :ml]),
                 info["thresholds"]),
                ("cosine", cl, cosine_to_centre(ft, order[:, :cl], mask[:, :cl]),
                 tr["cosine_thresholds"])):
            pred[name] = decode_contender(Contender(name, order[:, :length],
                                                    mask[:, :length], w, t), n, seed)
        print(f"{path} (seed {seed}; cf-train's guard: model ahead on {g['model_ahead']:.0%})")
        for name, jury, pm, pc in (
                ("  labelled only", HeldOut(yl, held_ids), pred["model"][:nl],
                 pred["cosine"][:nl]),
                ("  D_U as others", HeldOut(others, held_ids), pred["model"], pred["cosine"])):
            ahead = resample_lead(jury, pm, pc, resamples=200, seed=seed)
            print(_line(name, jury.scores(pm), jury.scores(pc), ahead), flush=True)


if __name__ == "__main__":
    main()
