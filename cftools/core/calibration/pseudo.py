"""The threshold of the next round's pseudo-labels: stricter than the clusters', chosen
where precision can be measured as D_U would show it.

The clusters a round writes are cut at the threshold that scores best on the mean of
pairwise and BCubed F. A backbone retrained on them learns every stray as its cluster's
identity, and on omniglot-bg's round 1 a cluster holds about a third of strays: removing
them (with D_U's labels, a diagnosis) takes round 2's share of the upper bound's
recognition gain from under a fifth to about half, where no cut by the features finds
them (bench/studies/pseudo-labels). A stricter threshold leaves smaller, purer clusters.

How strict: the guard's crowded jury (calibration.jury; cf-train --distractors) links
D_L's held-out identities among D_L and D_U searched together. Its pairwise precision at a
threshold follows D_U's closely (bench/studies/pseudo-labels), where D_L's held-out rows
linked among themselves would promise far more. The winner's links of that jury are
decoded at the calibrated threshold and on a grid above it, and the threshold with the
best F_0.5 of the held-out pairs (precision weighed twice as much as recall) is kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..decoding.decoders import decode
from ..decoding.weights import link_weights
from .jury import JURY_DECODER, Contender, HeldOut
from .thresholds import local_links

PSEUDO_BETA = 0.5  # F_beta's beta: precision counts twice as much as recall
PSEUDO_STEP = 0.02  # the grid above the calibrated threshold: every multiple of this ...
PSEUDO_TOP = 0.98  # ... up to this (a threshold of probabilities or of cosine)


@dataclass(frozen=True)
class PseudoThreshold:
    """The threshold chosen for pseudo-labels, and what the jury measured there (None:
    nothing was measured, no identity being held out; the threshold is the calibrated one)."""

    decoder: str
    mode: str
    threshold: float
    calibrated: float  # the clusters' own threshold, the grid's start
    precision: float | None = None  # pairwise, pairs touching a held-out point
    recall: float | None = None
    precision_at_calibrated: float | None = None
    recall_at_calibrated: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def threshold_grid(calibrated: float) -> list[float]:
    """The calibrated threshold, then every multiple of PSEUDO_STEP above it up to
    PSEUDO_TOP."""
    first = int(np.floor(calibrated / PSEUDO_STEP + 1e-9)) + 1
    last = int(np.floor(PSEUDO_TOP / PSEUDO_STEP + 1e-9))
    return [float(calibrated)] + [round(k * PSEUDO_STEP, 10) for k in range(first, last + 1)]


def f_beta(precision: float, recall: float, beta: float = PSEUDO_BETA) -> float:
    b2 = beta * beta
    den = b2 * precision + recall
    return 0.0 if den == 0 else float((1 + b2) * precision * recall / den)


def choose_pseudo_threshold(contender: Contender, labels: np.ndarray, held_ids: np.ndarray,
                            *, seed: int = 0, mode: str, calibrated: float
                            ) -> PseudoThreshold:
    """Decode ``contender``'s rows (the jury's: held-out identities among distractors;
    ``labels`` of all points) by JURY_DECODER in link ``mode`` at each threshold of
    threshold_grid(``calibrated``) and keep the one with the best F_0.5 of the held-out
    pairs (ties: the lower threshold). What decode_contender does at each threshold, the
    links among the rows and their weights in ``mode`` made once."""
    jury = HeldOut(labels[contender.order[:, 0]], held_ids)
    idx, probs = local_links(contender.order, contender.mask, contender.weights, labels.shape[0])
    weights = link_weights(idx, probs, mode)
    measured = []
    for t in threshold_grid(calibrated):
        p, r = jury.pair_precision_recall(decode(JURY_DECODER, idx, weights, t, seed=seed))
        measured.append((t, p, r))
    best = max(measured, key=lambda m: (f_beta(m[1], m[2]), -m[0]))
    return PseudoThreshold(JURY_DECODER, mode, best[0], float(calibrated), best[1], best[2],
                           measured[0][1], measured[0][2])
