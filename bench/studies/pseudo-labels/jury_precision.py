"""Does the crowded jury's precision at a threshold tell D_U's?

A round's link model (model.h5) is judged by cf-train's guard on D_L's held-out identities
linked among D_L and D_U searched together (calibrate.crowded_contenders). Here the
winner's links of that jury are decoded (Infomap, the calibrated link mode) at the
calibrated threshold and at stricter ones, and for each the held-out identities' pairwise
precision and recall are printed (pairs touching a held-out point), beside the same
figures of D_U's own links (the round's links.h5) decoded at the same threshold and
scored with D_U's labels (a diagnosis: the round never reads them).

    python bench/studies/pseudo-labels/jury_precision.py ROUND_DIR SEED [THRESHOLDS...]

The threshold cf-train --pseudo-threshold would choose on that jury (the best F_0.5 of
the held-out pairs) is marked.

ROUND_DIR: a finished round of round.mk (model.h5, labelled.h5, seq_labelled.h5,
unlabelled.h5, links.h5); SEED: the round's seed (cf-train's held-out identities).
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from cftools.core.calibration.guard import recorded_winner
from cftools.core.calibration.jury import HeldOut
from cftools.core.calibration.pseudo import choose_pseudo_threshold
from cftools.core.calibration.thresholds import local_links
from cftools.core.clusformer.calibrate import crowded_contenders
from cftools.core.clusformer.gate import recorded_gate
from cftools.core.clusformer.model import load_model
from cftools.core.clusformer.sequences import SequenceData, split_rows
from cftools.core.decoding.decoders import decode
from cftools.core.decoding.weights import link_weights
from cftools.formats.artifacts import open_artifact
from cftools.formats.features import load_features
from cftools.formats.thresholds import calibrated_mode, resolve_threshold


def pair_precision_recall(pred, truth):
    """Pairwise precision and recall of a clustering of D_U (every pair)."""
    jury = HeldOut(truth, np.unique(truth))
    return jury.pair_precision_recall(pred)


def clusters_at(idx, weights, thresholds, t, seed):
    mode = calibrated_mode(thresholds, "infomap") or "reciprocal"
    return decode("infomap", idx, link_weights(idx, weights, mode), t, seed=seed)


def main(round_dir, seed, *grid):
    seed = int(seed)
    model, info = load_model(f"{round_dir}/model.h5")
    training = info["training"]
    lab = load_features(f"{round_dir}/labelled.h5")
    unl = load_features(f"{round_dir}/unlabelled.h5")
    with open_artifact(f"{round_dir}/seq_labelled.h5", "sequences") as s:
        data = SequenceData(s.read("order"), s.read("mask"), s.read("targets"), lab.labels)
    held_ids = split_rows(data, 0.2, seed)[2]
    cos_t = training["cosine_thresholds"]
    n_cos = int(training["guard"]["cosine_length"])
    m, c, labels = crowded_contenders(model, lab.features, lab.labels, unl.features, held_ids,
                                      (info["thresholds"], cos_t),
                                      (model.config.seq_len, n_cos),
                                      gate=recorded_gate(training, "infomap"))
    winner = m if recorded_winner(training) == "model" else c
    n_points = labels.shape[0]
    idx, w = local_links(winner.order, winner.mask, winner.weights, n_points)
    truth = labels[winner.order[:, 0]]
    jury = HeldOut(truth, held_ids)
    mode = calibrated_mode(winner.thresholds, "infomap") or "reciprocal"
    calibrated = resolve_threshold("infomap", winner.thresholds, mode)
    chosen = choose_pseudo_threshold(winner, labels, held_ids, seed=seed, mode=mode,
                                     calibrated=calibrated)
    with open_artifact(f"{round_dir}/links.h5", "links") as a:
        du_idx, du_w = a.read("indices"), a.read("probabilities")
        du_t = a.json_attr("thresholds", {}) or {}
    print(f"{round_dir}: {winner.name} links; jury: {int(jury.held.sum())} held-out points of "
          f"{held_ids.size} identities among {truth.size} rows; calibrated threshold "
          f"{calibrated:.4f}")
    print("threshold | jury precision, recall | D_U precision, recall (diagnosis)")
    for t in sorted({calibrated, chosen.threshold, *(float(v) for v in grid)}):
        jp, jr = jury.pair_precision_recall(clusters_at(idx, w, winner.thresholds, t, seed))
        dp, dr = pair_precision_recall(clusters_at(du_idx, du_w, du_t, t, seed), unl.labels)
        mark = "  <- F_0.5 on the jury (cf-train --pseudo-threshold)" \
            if t == chosen.threshold else ""
        print(f"{t:.4f} | {jp:.3f}, {jr:.3f} | {dp:.3f}, {dr:.3f}{mark}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(*sys.argv[1:])
