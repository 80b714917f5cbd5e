"""Can cf-train's crowded jury (--distractors) be made cheaper and keep its verdict?

Each variant is scored beside the jury cf-train runs (calibrate.crowded_contenders: the
held-out identities' points and every point in their lists, searched among D_L + D_U,
linked by the model through its gate and by cosine links, decoded by Infomap; D_U's
points each another identity). Reads no D_U label.

- budget: only a random subset of whole held-out identities holding up to 2,500 points
  (calibration_rows, as --calibration-points draws);
- strong: of the held-out rows' neighbours, only those whose link from the row either
  contender could keep: cosine at or above cosine's threshold minus --margin, or the
  model's probability (read on the held-out rows first) at or above its threshold minus
  --margin (2t - 1 under reciprocal weights);
- held-only: every row kept, but the model links only the held-out rows; the others get
  calibrated cosine (sigmoid(a cos + b)), as rows outside the gate's reach do.

    python cheaper_jury.py SEQ_L.h5 FEATURES_L.h5 FEATURES_U.h5 MODEL.h5 [...] [--margin M]
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np
import torch

from cftools.cli import Reporter
from cftools.commands.train import _distractors, _read
from cftools.core.calibration.guard import GUARD_DECODER, guard
from cftools.core.calibration.jury import JURY_DECODER, Contender
from cftools.core.calibration.thresholds import calibration_rows
from cftools.core.clusformer.gate import cosine_logits, recorded_gate
from cftools.core.clusformer.inference import cosine_to_centre, predict
from cftools.core.clusformer.model import load_model, unit_rows
from cftools.core.clusformer.sequences import split_rows
from cftools.core.neighbours.exact import put_self_first
from cftools.core.neighbours.index import KnnParams, build_index, search
from cftools.formats.thresholds import calibrated_mode, resolve_threshold


def _cut(thresholds: dict) -> float:
    """The least weight from one end that can keep a link under the jury's decoder."""
    mode = calibrated_mode(thresholds, JURY_DECODER) or "reciprocal"
    t = resolve_threshold(JURY_DECODER, thresholds, mode)
    return t if mode == "directed" else 2 * t - 1


def _strong(ctx, margin, held, hid, hs):
    """The neighbours of held-out rows with a link from the row either contender could
    keep, ``margin`` below its threshold."""
    tr, g = ctx["tr"], ctx["tr"]["guard"]
    nm, nc = g["model_length"], g["cosine_length"]
    order, sims = put_self_first(hid.copy(), hs.copy(), centres=held)[:2]
    p = predict(ctx["model"], ctx["points_t"], order[:, :nm], np.ones((held.size, nm), bool),
                gate=recorded_gate(tr, GUARD_DECODER))
    keep = np.zeros(order.shape, bool)
    keep[:, :nc] |= sims[:, :nc] >= _cut(tr["cosine_thresholds"]) - margin
    keep[:, :nm] |= p >= _cut(ctx["info"]["thresholds"]) - margin
    return order[keep]


def _verdict(name, ctx, held_ids, near=None, held_only=False):
    model, tr, info, seed = ctx["model"], ctx["tr"], ctx["info"], ctx["seed"]
    g, points, index, labels = tr["guard"], ctx["points"], ctx["index"], ctx["labels"]
    nm, nc = g["model_length"], g["cosine_length"]
    k, exact = max(nm, nc), KnnParams(method="exact")
    gate = recorded_gate(tr, GUARD_DECODER)
    t0 = time.perf_counter()
    held = np.flatnonzero(np.isin(labels[:ctx["n_labelled"]], held_ids))
    hid, hs = search(index, points[held], k, exact.batch_size)
    rows = np.union1d(held, hid if near is None else near(held, hid, hs))
    rest = np.setdiff1d(rows, held, assume_unique=True)
    order = np.empty((rows.size, k), np.int64)
    sims = np.empty((rows.size, k), np.float32)
    for part, (ids, sim) in ((held, (hid, hs)), (rest, search(index, points[rest], k,
                                                             exact.batch_size))):
        at = np.searchsorted(rows, part)
        order[at], sims[at] = ids, sim
    order = put_self_first(order, sims, centres=rows)[0]
    mask = np.ones(order.shape, bool)
    pt = ctx["points_t"]
    probs = predict(model, pt, order[:, :nm], mask[:, :nm], gate=gate)
    if held_only:
        other = ~np.isin(order[:, 0], held)
        probs[other] = 1 / (1 + np.exp(-cosine_logits(model, unit_rows(pt), order[other, :nm])))
    cos = cosine_to_centre(pt, order[:, :nc], mask[:, :nc])
    m = Contender("model", order[:, :nm], mask[:, :nm], probs, info["thresholds"])
    c = Contender("cosine", order[:, :nc], mask[:, :nc], cos, tr["cosine_thresholds"])
    v = guard(m, c, labels, held_ids, seed=seed,
              distractors=int((order[:, 0] >= ctx["n_labelled"]).sum()))
    lead = 50 * (v.model["pairwise_f"] + v.model["bcubed_f"]
                 - v.cosine["pairwise_f"] - v.cosine["bcubed_f"])
    print(f"  {name}: {held_ids.size} identities, {held.size} held-out points, {rows.size} rows "
          f"({v.distractors} of D_U), {time.perf_counter() - t0:.1f} s; model "
          f"{100 * v.model['pairwise_f']:.2f} / {100 * v.model['bcubed_f']:.2f}, cosine "
          f"{100 * v.cosine['pairwise_f']:.2f} / {100 * v.cosine['bcubed_f']:.2f}, lead "
          f"{lead:+.2f}, model ahead on {v.model_ahead:.1%}: {v.winner}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sequences")
    ap.add_argument("labelled")
    ap.add_argument("unlabelled")
    ap.add_argument("models", nargs="+")
    ap.add_argument("--margin", type=float, default=0.1)
    ap.add_argument("--budget", type=int, default=2500)
    a = ap.parse_args()
    rep = Reporter(True)
    _, feats, data = _read(a.sequences, a.labelled, None, rep)
    crowd = _distractors(a.unlabelled, feats, rep)
    points = np.vstack([feats.features, crowd]).astype(np.float32)
    n_l = feats.features.shape[0]
    labels = np.concatenate([data.labels.astype(np.int64),
                             data.labels.max() + 1 + np.arange(crowd.shape[0])])
    for path in a.models:
        model, info = load_model(path)
        model.eval()
        tr = info["training"]
        seed = tr["train_config"]["seed"]
        g = tr["guard"]
        ctx = dict(model=model, tr=tr, info=info, seed=seed, points=points, n_labelled=n_l,
                   points_t=torch.from_numpy(points), labels=labels,
                   index=build_index(points, KnnParams(method="exact"),
                                     max(g["model_length"], g["cosine_length"])))
        held_ids = split_rows(data, tr["train_config"]["val_fraction"], seed)[2]
        print(f"{path} (seed {seed}; cf-train's guard: model ahead on {g['model_ahead']:.1%})",
              flush=True)
        _verdict("cf-train's jury", ctx, held_ids)
        held_l = data.labels[np.isin(data.labels, held_ids)]
        _verdict(f"budget {a.budget}", ctx,
                 np.unique(held_l[calibration_rows(held_l, a.budget, seed)]))
        _verdict(f"strong links (margin {a.margin})", ctx, held_ids,
                 near=functools.partial(_strong, ctx, a.margin))
        _verdict("model on held-out rows only", ctx, held_ids, held_only=True)


if __name__ == "__main__":
    main()
