"""The distractor jury on the held-out identities' neighbourhood only: the same verdict
for a fraction of the cost?

distractor_jury.py searches, links and decodes every point of D_L + D_U. Only the
clusters of the held-out rows are scored, so here the rows are the held-out rows and
every point in their lists (the identities trained on and D_U's points alike), each row
searched among all of D_L + D_U; links to points outside these rows are dropped (as the
jury's decode does), and every D_U point is its own identity (D_U as others). Reads no
D_U label. Prints the rows kept, each part's time, and the verdict beside the whole
jury's (--whole: computed here too; otherwise read it in distractor-jury-*.log).

    python near_jury.py LABELLED.h5 UNLABELLED.h5 MODEL.h5 [MODEL.h5 ...] [--whole]
        [--max-held N]

--max-held N: only a random subset of the held-out identities holding up to N points is
judged (as cf-train does with CROWD_HELD_POINTS).
"""

from __future__ import annotations

import argparse
import time

import faiss
import h5py
import numpy as np
import torch

from cftools.core.calibration.jury import Contender, HeldOut, decode_contender, mean_f, resample_lead
from cftools.core.calibration.thresholds import calibration_rows
from cftools.core.clusformer.inference import cosine_to_centre, predict
from cftools.core.clusformer.model import load_model
from cftools.core.clusformer.sequences import SequenceData, split_rows


def _search(index, x: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Each row's k nearest among the index's points, the row itself first."""
    order = index.search(x[rows], k)[1].astype(np.int64)
    found = order == rows[:, None]
    at, has = np.argmax(found, axis=1), found.any(axis=1)
    order[has, at[has]] = order[has, 0]  # exact duplicates may have swapped the centre
    order[:, 0] = rows
    return order


def _verdict(name, model, info, x, ft, index, rows, others, held_ids, seed, k):
    tr, g = info["training"], info["training"]["guard"]
    ml, cl = g["model_length"], g["cosine_length"]
    t0 = time.perf_counter()
    order = _search(index, x, rows, k)
    mask = np.ones(order.shape, dtype=bool)
    t1 = time.perf_counter()
    links = {"model": (ml, predict(model, ft, order[:, :ml], mask[:, :ml]), info["thresholds"]),
             "cosine": (cl, cosine_to_centre(ft, order[:, :cl], mask[:, :cl]),
                        tr["cosine_thresholds"])}
    t2 = time.perf_counter()
    pred = {c: decode_contender(Contender(c, order[:, :n], mask[:, :n], w, t), x.shape[0], seed)
            for c, (n, w, t) in links.items()}
    jury = HeldOut(others[rows], held_ids)
    sm, sc = jury.scores(pred["model"]), jury.scores(pred["cosine"])
    ahead = resample_lead(jury, pred["model"], pred["cosine"], resamples=200, seed=seed)
    t3 = time.perf_counter()
    print(f"  {name}: {rows.size} rows; search {t1 - t0:.1f} s, links {t2 - t1:.1f} s, "
          f"decode and score {t3 - t2:.1f} s; model {100 * sm['pairwise_f']:.2f} / "
          f"{100 * sm['bcubed_f']:.2f}, cosine {100 * sc['pairwise_f']:.2f} / "
          f"{100 * sc['bcubed_f']:.2f}, lead {100 * (mean_f(sm) - mean_f(sc)):+.2f}, model "
          f"ahead on {ahead:.0%}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("labelled")
    ap.add_argument("unlabelled")
    ap.add_argument("models", nargs="+")
    ap.add_argument("--whole", action="store_true", help="the whole jury too, for comparison")
    ap.add_argument("--max-held", type=int, default=None,
                    help="judge a random subset of held-out identities of up to N points")
    a = ap.parse_args()
    with h5py.File(a.labelled) as fl, h5py.File(a.unlabelled) as fu:
        xl, yl, xu = fl["features"][:], fl["labels"][:].astype(np.int64), fu["features"][:]
    nl = xl.shape[0]
    x = np.vstack([xl, xu]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    ft = torch.from_numpy(x)
    others = np.r_[yl, yl.max() + 1 + np.arange(x.shape[0] - nl)]
    print(f"{a.labelled}: {nl} rows, {a.unlabelled}: {x.shape[0] - nl} rows")
    for path in a.models:
        model, info = load_model(path)
        tr = info["training"]
        g, seed = tr["guard"], tr["train_config"]["seed"]
        k = max(g["model_length"], g["cosine_length"])
        dummy = np.zeros((nl, 1), np.int64)
        data = SequenceData(np.arange(nl)[:, None], np.ones((nl, 1), bool), dummy, yl)
        held_ids = split_rows(data, tr["train_config"]["val_fraction"], seed)[2]
        held = np.flatnonzero(np.isin(yl, held_ids))
        if a.max_held is not None:
            held = held[calibration_rows(yl[held], a.max_held, seed)]
            held_ids = np.unique(yl[held])
        t = time.perf_counter()
        near = np.union1d(held, _search(index, x, held, k))
        print(f"{path} (seed {seed}; cf-train's guard: model ahead on {g['model_ahead']:.0%}); "
              f"{held.size} held-out rows, their lists searched in "
              f"{time.perf_counter() - t:.1f} s", flush=True)
        _verdict("near", model, info, x, ft, index, near, others, held_ids, seed, k)
        if a.whole:
            _verdict("whole", model, info, x, ft, index, np.arange(x.shape[0]), others,
                     held_ids, seed, k)


if __name__ == "__main__":
    main()
