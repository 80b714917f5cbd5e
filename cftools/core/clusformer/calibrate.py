"""What cf-train calibrates on the labelled sequences besides training: cosine's own
sequence length, and the decoders' thresholds for a trained model's links and for
cosine links, each on the whole labelled set linked as D_U will be."""

from __future__ import annotations

import numpy as np
import torch

from ...formats.thresholds import LINK_MODES
from ..calibration.length import choose_length
from ..calibration.thresholds import COSINE_MODES, calibration_rows, decoder_thresholds
from .inference import cosine_to_centre, predict
from .sequences import SequenceData


def calibrate_decoders(data: SequenceData, model, features_t, amp, log, *,
                       max_points: int = 100_000, seed: int = 0,
                       known: tuple[np.ndarray, np.ndarray] | None = None
                       ) -> tuple[dict, dict, tuple[np.ndarray, np.ndarray]]:
    """(model thresholds, cosine thresholds, (rows, the model's probabilities on them)) of
    the decoders (cf-merge), each calibrated on the whole labelled set linked as D_U will
    be: once by the trained model, once by raw cosine (what cf-link's cosine links carry).
    Above ``max_points`` rows, a random subset of identities holding up to that many is
    used. ``known``: (rows, the same model's probabilities on them), not predicted again
    (the held-out rows, already linked by validation)."""
    centre_labels = data.labels[data.order[:, 0]]
    rows = calibration_rows(centre_labels, max_points, seed)
    if rows.size < centre_labels.size:
        log(f"calibrating the decoders on {rows.size} of {centre_labels.size} rows "
            f"(--calibration-points {max_points})")
    order, mask = data.order[rows], data.mask[rows]
    probs = np.empty(order.shape, dtype=np.float32)
    todo = np.ones(rows.size, dtype=bool)
    if known is not None and known[0].size:
        at = np.searchsorted(rows, known[0]).clip(max=rows.size - 1)
        found = rows[at] == known[0]
        probs[at[found]] = known[1][found]
        todo[at[found]] = False
    probs[todo] = predict(model, features_t, order[todo], mask[todo], amp=amp)
    found_t = decoder_thresholds(order, mask, {
        "model": (probs, LINK_MODES), "cosine": (cosine_to_centre(features_t, order, mask),
                                                 COSINE_MODES)},
        data.labels, seed=seed, log=log)
    return found_t["model"], found_t["cosine"], (rows, probs)


def choose_data_length(data: SequenceData, features: np.ndarray, max_points: int, seed: int,
                       log) -> dict:
    """The sequence length (calibration.length) chosen on these labelled sequences, from
    their cosine links."""
    rows = calibration_rows(data.labels[data.order[:, 0]], max_points, seed)
    order, mask = data.order[rows], data.mask[rows]
    cosine = cosine_to_centre(torch.from_numpy(features), order, mask)
    return choose_length(order, mask, cosine, data.labels, seed=seed, log=log)
