"""Labelled sequences in memory, and what an epoch of training reads from them: the split
of the centres by identity, the rows an epoch draws, the positions that count; and when
epochs stop."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import CfError
from ..calibration.objective import best_f1_threshold
from .grammar import TARGET_UNKNOWN

# An epoch reads at most EPOCH_BUDGET centres, stratified by identity (capped_epoch_rows),
# so that its cost does not grow with the labelled set; training stops once the held-out
# ROC-AUC has not risen for PATIENCE epochs (plateaued; the figures behind both:
# bench/results/code-choices.md).
EPOCH_BUDGET = 8192
PATIENCE = 2
# Each epoch's held-out ROC-AUC is read on whole held-out identities up to this many rows
# (tens of thousands of links): the kept epoch's thresholds then read every held-out row
EPOCH_VAL_ROWS = 2048
# A smaller rise of the held-out ROC-AUC is noise, not progress: epochs scored on a few
# thousand held-out rows swing by this much from one epoch to the next
AUC_RISE = 5e-4
HARD_MARGIN = 0.02  # a pair this close to cosine's cut is nearly decided wrongly


@dataclass
class SequenceData:
    """Sequences of D_L in memory, with each centre's label (for the identity split)."""

    order: np.ndarray  # (N, L) int64
    mask: np.ndarray  # (N, L) bool
    targets: np.ndarray  # (N, L) int8
    labels: np.ndarray  # (P,) int64: labels of all points, -1 unknown


def split_rows(data: SequenceData, val_fraction: float, seed: int):
    """(train_rows, val_rows, val_identities): rows split by their centre's identity."""
    centre_lab = data.labels[data.order[:, 0]]
    ids, sizes = np.unique(centre_lab[centre_lab >= 0], return_counts=True)
    if ids.size == 0:
        raise CfError("no centre has a known label: nothing to train on")
    n_val = int(round(val_fraction * ids.size))
    if val_fraction > 0 and ids.size >= 2:
        n_val = min(max(1, n_val), ids.size - 1)
    else:
        n_val = 0
    val_ids = np.sort(np.random.default_rng(seed).permutation(ids)[:n_val])
    if 0 < n_val < ids.size - 1:
        val_ids = with_a_large_identity(val_ids, ids, sizes)
    known = centre_lab >= 0
    is_val = np.isin(centre_lab, val_ids)
    return np.flatnonzero(known & ~is_val), np.flatnonzero(known & is_val), val_ids


def with_a_large_identity(val_ids: np.ndarray, ids: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """``val_ids`` with the largest identity (``sizes``: rows of each of ``ids``) added when
    none of them is at least half its size. The guard and the calibration judge the model
    on the held-out identities, and short link lists split a large identity that cosine's
    longer ones keep whole: a jury without one accepted such a model on lfw-dev
    (bench/results/issue24-cost.md, stop 44). The unlabelled set's largest identities are
    at least as large as the labelled set's."""
    largest = int(np.argmax(sizes))
    if sizes[np.isin(ids, val_ids)].max() * 2 >= sizes[largest]:
        return val_ids
    return np.union1d(val_ids, ids[largest])


def capped_epoch_rows(centre_labels: np.ndarray, cap: int | None, rng,
                      budget: int | None = None, before: np.ndarray | None = None) -> np.ndarray:
    """Positions (into ``centre_labels``) of the centres one epoch trains on, in the order
    it reads them. Every identity gives at most ``cap`` of its centres, drawn afresh each
    epoch, so that a few identities of hundreds of images do not make up most of what the
    model sees (long-tailed sets: one identity may hold a sixth of the labelled faces).

    ``budget``: at most that many centres, stratified by identity: every identity's first
    drawn centre comes before any identity's second, and so on (ties in random order), so
    an epoch costs the same whatever the size of the labelled set, and spreads over as many
    identities as it can. The count is the same every epoch: min(budget, sum over
    identities of min(size, cap)). ``before`` (bool per centre): those centres first, every
    identity's first of them before any identity's second, then the others likewise."""
    n = centre_labels.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = rng.permutation(n)
    lab = centre_labels[order]
    by_id = np.argsort(lab, kind="stable")  # a random order within each identity
    sorted_lab = lab[by_id]
    first = np.r_[True, sorted_lab[1:] != sorted_lab[:-1]]
    rank = np.arange(n) - np.maximum.accumulate(np.where(first, np.arange(n), 0))
    keep = rank < cap if cap is not None else np.ones(n, dtype=bool)
    rows, rank = order[by_id[keep]], rank[keep]
    if budget is not None and rows.size > budget:
        key = rank + rng.random(rank.size)
        if before is not None:  # these rows before any other, stratified among themselves
            b = before[rows].astype(np.int64)
            seen = np.cumsum(b) - b  # rows of ``before`` ahead of this one (same identity)
            kept_lab = sorted_lab[keep]
            starts = np.r_[True, kept_lab[1:] != kept_lab[:-1]]
            rank_b = seen - np.maximum.accumulate(np.where(starts, seen, 0))
            key = np.where(b == 1, rank_b, n + 1 + rank) + rng.random(rank.size)
        take = np.argsort(key, kind="stable")[:budget]
        rows = rows[take]
    return rows[rng.permutation(rows.size)]


def hard_rows(cosine: np.ndarray, use: np.ndarray, truth: np.ndarray,
              cut: float | None = None, margin: float = HARD_MARGIN) -> np.ndarray:
    """Rows (bool per row) where cosine cut at ``cut`` (default: where cosine's links of
    these rows score their best F1) decides a scored pair wrongly, or nearly: within
    ``margin`` of the cut. These are the rows the model can change (the others it reads
    only as calibrated cosine), and what a budgeted epoch reads first."""
    if cut is None:
        cut = best_f1_threshold(cosine[use], truth[use])
    wrong_or_near = use & (((cosine >= cut) != truth) | (np.abs(cosine - cut) < margin))
    return wrong_or_near.any(axis=1)


def plateaued(aucs: list[float], patience: int | None, at_least: int = 0) -> bool:
    """Whether training has stopped rising: ``aucs`` are the held-out ROC-AUC of the
    untrained model (epoch 0) and of every epoch since; the last ``patience`` of them did
    not rise AUC_RISE above the best before them. Never with no patience, nor before
    ``at_least`` epochs: at the peak of the learning rate the AUC still swings both ways."""
    if not patience or len(aucs) <= max(patience, at_least):
        return False
    return max(aucs[-patience:]) < max(aucs[:-patience]) + AUC_RISE


def training_view(data: SequenceData, rows: np.ndarray, val_ids: np.ndarray):
    """order/mask/targets of the training rows with held-out identities masked out."""
    order = data.order[rows]
    mask = data.mask[rows].copy()
    targets = data.targets[rows].copy()
    if val_ids.size:
        hidden = np.isin(data.labels[order], val_ids)
        hidden[:, 0] = False
        mask &= ~hidden
        targets[hidden] = TARGET_UNKNOWN
    return order, mask, targets


def scored_positions(mask: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Positions that count in loss and metrics: real neighbours, known target, not the centre."""
    use = mask & (targets != TARGET_UNKNOWN)
    use[:, 0] = False
    return use


def truncated(data: SequenceData, length: int) -> SequenceData:
    """The first ``length`` positions of every sequence: the centre and its nearest
    neighbours (sequences run by falling similarity)."""
    order, mask, targets = (np.ascontiguousarray(a[:, :length])
                            for a in (data.order, data.mask, data.targets))
    return SequenceData(order, mask, targets, data.labels)
