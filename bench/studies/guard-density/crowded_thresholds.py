"""Infomap's threshold for each contender of cf-train's crowded jury, chosen on the
jury's own graph (the held-out identities scored by the jury's mean of pairwise and BCubed
F, D_U's points as others) against the one cf-train calibrated on D_L alone: does a
graph as crowded as D_U move the thresholds where D_U's best lies? Reads no D_U label
(compare with bench/threshold_shift.py's oracle, which does).

    python crowded_thresholds.py SEQ_L.h5 FEATURES_L.h5 FEATURES_U.h5 MODEL.h5 [...]

Per contender: the calibrated threshold and the jury's F_P / F_B there, the best of a
grid (0.02 apart, 0.16 either side) and its F, then the grid's mean F (x 100).
"""

import sys

import numpy as np

from cftools.cli import Reporter
from cftools.commands.train import _distractors, _read
from cftools.core.calibration.guard import GUARD_DECODER
from cftools.core.calibration.jury import HeldOut, mean_f
from cftools.core.calibration.thresholds import local_links
from cftools.core.clusformer.calibrate import crowded_contenders
from cftools.core.clusformer.gate import recorded_gate
from cftools.core.clusformer.model import load_model
from cftools.core.clusformer.sequences import split_rows
from cftools.core.decoding.decoders import decode
from cftools.core.decoding.weights import link_weights
from cftools.formats.thresholds import calibrated_mode, resolve_threshold


def main(seq, feat, dis, *models):
    rep = Reporter(True)
    _, feats, data = _read(seq, feat, None, rep)
    crowd = _distractors(dis, feats, rep)
    for path in models:
        model, info = load_model(path)
        model.eval()
        tr = info["training"]
        g, seed = tr["guard"], tr["train_config"]["seed"]
        held_ids = split_rows(data, tr["train_config"]["val_fraction"], seed)[2]
        m, c, labels = crowded_contenders(
            model, feats.features, data.labels, crowd, held_ids,
            (info["thresholds"], tr["cosine_thresholds"]), (g["model_length"], g["cosine_length"]),
            gate=recorded_gate(tr, GUARD_DECODER))
        jury = HeldOut(labels[m.order[:, 0]], held_ids)
        for con in (m, c):
            mode = calibrated_mode(con.thresholds, "infomap") or "reciprocal"
            t0 = resolve_threshold("infomap", con.thresholds, mode)
            idx, w = local_links(con.order, con.mask, con.weights, labels.shape[0])
            w = link_weights(idx, w, mode)
            grid = set(np.round(np.arange(t0 - 0.16, t0 + 0.161, 0.02), 4).tolist()) | {t0}
            res = [(mean_f(s := jury.scores(decode("infomap", idx, w, float(t), seed=seed))), t, s)
                   for t in sorted(grid) if 0 < t < 1]
            best = max(res, key=lambda r: r[0])
            at0 = next(r for r in res if r[1] == t0)
            print(f"{path} {con.name} ({mode}): calibrated {t0:.3f} -> jury "
                  f"{100 * at0[2]['pairwise_f']:.2f}/{100 * at0[2]['bcubed_f']:.2f}; crowded best "
                  f"{best[1]:.3f} -> {100 * best[2]['pairwise_f']:.2f}/"
                  f"{100 * best[2]['bcubed_f']:.2f}; grid "
                  + " ".join(f"{t:.2f}:{100 * f:.1f}" for f, t, _ in res), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
