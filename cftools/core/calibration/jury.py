"""The jury: which links cluster unseen identities better, asked where they are crowded.

Held-out identities of D_L (never trained on) are the only labelled points a model has
not learnt, but they are few: a fifth of D_L's identities. Decoded among themselves, each
point has few look-alikes around it, and short neighbour lists and raw cosine look better
there than they are in D_U, which holds all its identities at once (on omniglot-bg: 66
held-out characters against D_U's 473; bench/results/code-choices.md). So the jury
decodes every contender's links of ALL the calibration rows of D_L together, each
contender at its own length, threshold and link mode, and scores only the held-out
identities: a held-out point that joins a cluster of another identity, held out or
trained on, costs precision, as it would in D_U. The other identities are distractors.

A contender's score is the mean of pairwise F (over the pairs that touch a held-out
point) and BCubed F (over the held-out points). ``resample_lead`` says how often one
contender leads another on random halves of the held-out identities: a few dozen
identities are a noisy jury.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .thresholds import decode_with, local_links

JURY_DECODER = "infomap"  # the decoder the jury (the guard, the model's length) decodes with


@dataclass(frozen=True)
class Contender:
    """One way of linking D_L's calibration rows: the rows' sequences at the contender's
    length, its link weights there and the thresholds calibrated for them."""

    name: str
    order: np.ndarray  # (rows, L) int64, centre first
    mask: np.ndarray  # (rows, L) bool
    weights: np.ndarray  # (rows, L) float32: model probabilities or cosine
    thresholds: dict  # decoder thresholds and link modes (calibration.thresholds)


class HeldOut:
    """The held-out identities among decoded rows, and the cluster counts the jury needs:
    scores for all of them or for any subset of them, without decoding again."""

    def __init__(self, truth: np.ndarray, held_ids: np.ndarray):
        self.truth = np.asarray(truth, dtype=np.int64)
        self.held_ids = np.unique(np.asarray(held_ids, dtype=np.int64))
        self.held = np.isin(self.truth, self.held_ids)
        self.values, self.tcode = np.unique(self.truth, return_inverse=True)
        self.id_sizes = np.bincount(self.tcode)

    def counts(self, pred: np.ndarray) -> Decoded:
        """The clusters ``pred`` as any subset of the held-out identities is scored from:
        each row's cluster code and each cluster's size (the unassigned rows, -1, each a
        singleton), and the cells (cluster, identity) with their sizes."""
        pred = np.asarray(pred, dtype=np.int64).copy()
        loose = pred < 0  # unassigned: each its own singleton
        pred[loose] = pred.max(initial=-1) + 1 + np.arange(int(loose.sum()))
        _, pcode = np.unique(pred, return_inverse=True)
        cells, cell_of, cell_n = np.unique(pcode * self.id_sizes.size + self.tcode,
                                           return_inverse=True, return_counts=True)
        return Decoded(pcode, np.bincount(pcode), cells % self.id_sizes.size, cell_n, cell_of)

    def scored(self, ids: np.ndarray) -> np.ndarray:
        """(identities,) bool: which identity codes are among ``ids``."""
        return np.isin(self.values, np.asarray(ids, dtype=np.int64))

    def scores(self, pred: np.ndarray, ids: np.ndarray | None = None) -> dict:
        """{"pairwise_f", "bcubed_f"} of the held-out identities ``ids`` (default: all)."""
        return _scores(self, self.counts(pred), self.held_ids if ids is None else ids)

    def pair_precision_recall(self, pred: np.ndarray) -> tuple[float, float]:
        """Pairwise precision and recall of all the held-out identities: pairs that touch
        a held-out point."""
        return _pair_precision_recall(self, self.counts(pred), self.scored(self.held_ids))


@dataclass(frozen=True)
class Decoded:
    """HeldOut.counts: one decoding's clusters, ready to score any set of identities."""

    pcode: np.ndarray  # (rows,) each row's cluster code
    sizes: np.ndarray  # (clusters,) each cluster's size
    cell_id: np.ndarray  # (cells,) the identity code of each (cluster, identity) cell
    cell_n: np.ndarray  # (cells,) its size
    cell_of: np.ndarray  # (rows,) each row's cell


def _pair_precision_recall(h: HeldOut, d: Decoded, id_scored: np.ndarray
                           ) -> tuple[float, float]:
    """Pairwise precision and recall of the identities ``id_scored`` (by identity code):
    true positives within them; predicted pairs touching one of their points (with
    another of them, or with anything else)."""
    tp = _pairs(d.cell_n[id_scored[d.cell_id]])
    scored_in = np.bincount(d.pcode, weights=id_scored[h.tcode], minlength=d.sizes.size)
    predicted = _pairs(d.sizes) - _pairs(d.sizes - scored_in)
    true = _pairs(h.id_sizes[id_scored])
    return (tp / predicted if predicted else 1.0), (tp / true if true else 1.0)


def _scores(h: HeldOut, d: Decoded, ids: np.ndarray) -> dict:
    id_scored = h.scored(ids)
    scored = id_scored[h.tcode]
    p, r = _pair_precision_recall(h, d, id_scored)
    rows = np.flatnonzero(scored)
    same = d.cell_n[d.cell_of[rows]]
    bp = float(np.mean(same / d.sizes[d.pcode[rows]])) if rows.size else 1.0
    br = float(np.mean(same / h.id_sizes[h.tcode[rows]])) if rows.size else 1.0
    return {"pairwise_f": _f(p, r), "bcubed_f": _f(bp, br)}


def _pairs(n) -> float:
    n = np.asarray(n, dtype=np.float64)
    return float((n * (n - 1) / 2).sum())


def _f(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else float(2 * p * r / (p + r))


def mean_f(scores: dict) -> float:
    """The jury's one number: the mean of pairwise and BCubed F."""
    return (scores["pairwise_f"] + scores["bcubed_f"]) / 2


def decode_contender(c: Contender, n_points: int, seed: int = 0) -> np.ndarray:
    """Clusters of all the contender's rows (labels per row), by JURY_DECODER at the
    contender's calibrated threshold and link mode."""
    idx, w = local_links(c.order, c.mask, c.weights, n_points)
    return decode_with(idx, w, c.thresholds, JURY_DECODER, seed=seed)


def resample_lead(jury: HeldOut, pred_a: np.ndarray, pred_b: np.ndarray, *, resamples: int,
                  seed: int = 0) -> float:
    """The share of ``resamples`` random halves of the held-out identities on which
    ``pred_a`` scores above ``pred_b`` (0 when there are fewer than two identities)."""
    ids = jury.held_ids
    if ids.size < 2 or resamples < 1:
        return 0.0
    a, b = jury.counts(pred_a), jury.counts(pred_b)
    rng = np.random.default_rng([seed, 11])
    ahead = 0
    for _ in range(resamples):
        half = rng.choice(ids, ids.size // 2, replace=False)
        ahead += mean_f(_scores(jury, a, half)) > mean_f(_scores(jury, b, half))
    return float(ahead / resamples)
