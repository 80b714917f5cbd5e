"""Where the time of cf-train's guard among distractors (--distractors) goes, and whether
the model's gated links (what cf-link writes: the model reads only the rows its gate
says it can change) give the verdict that every row read gives.

    python jury_cost.py DIR MODEL.h5 SEED [bf16]

DIR holds bench/cost.py's files of one split: seq_L.h5, dl.h5 (D_L) and du.h5 (D_U, the
distractors); MODEL.h5 a model cf-train made from them with --seed SEED. bf16: the model
links in bfloat16, as cf-train's guard does where the CPU has it (default float32).
"""

import sys
import time

import numpy as np
import torch

from cftools.cli import Reporter
from cftools.commands.train import _read
from cftools.core.calibration.guard import GUARD_DECODER, guard
from cftools.core.calibration.jury import Contender
from cftools.core.clusformer.gate import recorded_gate
from cftools.core.clusformer.inference import LinkStats, cosine_to_centre, link_array, predict
from cftools.core.clusformer.model import load_model, unit_rows
from cftools.core.clusformer.sequences import split_rows
from cftools.core.neighbours.index import KnnParams, knn
from cftools.formats.features import load_features


def timed(what, fn):
    t = time.perf_counter()
    out = fn()
    print(f"{what}: {time.perf_counter() - t:.1f} s", flush=True)
    return out


def main(folder, model_path, seed, amp):
    model, info = load_model(model_path)
    tr = info["training"]
    _, feats, data = _read(f"{folder}/seq_L.h5", f"{folder}/dl.h5", None, Reporter(True))
    crowd = load_features(f"{folder}/du.h5").features
    _, _, held = split_rows(data, 0.2, seed)
    n_model, n_cos = model.config.seq_len, int(tr["length_selection"]["cosine"]["length"])
    points = np.vstack([feats.features, crowd]).astype(np.float32)
    order = timed(f"exact knn of {points.shape[0]} points, k {max(n_model, n_cos)}",
                  lambda: knn(points, max(n_model, n_cos), params=KnnParams(method="exact"))[0])
    mask = np.ones(order.shape, bool)
    pt = torch.from_numpy(points)
    om, mm = order[:, :n_model], mask[:, :n_model]
    full = timed("model links, every row read", lambda: predict(model, pt, om, mm, amp=amp))
    gate, stats = recorded_gate(tr, GUARD_DECODER), LinkStats()
    gated = timed(f"model links, gated for {GUARD_DECODER} (reach {gate.reach:.3f})",
                  lambda: link_array(om, mm, model.prepare(pt), model=model, unit=unit_rows(pt),
                                     gate=gate, stats=stats, amp=amp))
    print(f"  the model read {stats.model_rows} of {stats.rows} rows; largest difference "
          f"from every row read: {float(np.abs(gated - full).max()):.4f}")
    cos = timed("cosine links", lambda: cosine_to_centre(pt, order[:, :n_cos], mask[:, :n_cos]))
    labels = np.concatenate([data.labels, data.labels.max() + 1 + np.arange(crowd.shape[0])])
    cosine = Contender("cosine", order[:, :n_cos], mask[:, :n_cos], cos, tr["cosine_thresholds"])
    for name, probs in (("every row read", full), ("gated", gated)):
        model_links = Contender("model", om, mm, probs, info["thresholds"])
        v = timed(f"guard, {name}", lambda m=model_links: guard(
            m, cosine, labels, held, seed=seed, distractors=crowd.shape[0]))
        print(f"  model {v.model['pairwise_f']:.4f} / {v.model['bcubed_f']:.4f}, cosine "
              f"{v.cosine['pairwise_f']:.4f} / {v.cosine['bcubed_f']:.4f} (F_P / F_B); the "
              f"model ahead on {v.model_ahead:.0%} of the halves: {v.winner}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]),
         torch.bfloat16 if sys.argv[4:] == ["bf16"] else None)
