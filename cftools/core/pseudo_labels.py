"""Clusters of D_U + the labelled set D_L -> the next round's training labels.

Rows: D_L's rows of known label, then the D_U rows whose cluster has at least
``min_size`` and at most ``max_size`` points. Labels: D_L's own ids, then
pseudo-identities numbered from max(D_L label) + 1 upward, so they never collide.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PseudoLabels:
    labelled_rows: np.ndarray  # rows of D_L kept (known label)
    unlabelled_rows: np.ndarray  # rows of D_U kept (in a cluster of an accepted size)
    labels: np.ndarray  # D_L's labels, then the pseudo-identities
    offset: int  # the first pseudo-identity
    max_size: int  # the size limit applied (0: none)
    counts: dict  # what was kept and left out


def largest_identity(labels: np.ndarray) -> int:
    """Points of the largest identity among known labels (0 when none is known)."""
    known = labels[labels >= 0]
    return int(np.bincount(np.unique(known, return_inverse=True)[1]).max()) if known.size else 0


def pseudo_labels(pred: np.ndarray, labelled: np.ndarray, *, min_size: int,
                  max_size: int | str) -> PseudoLabels:
    """The retraining rows and labels from cluster labels ``pred`` of D_U (-1 unassigned)
    and D_L's labels (-1 unknown). ``max_size``: a number (0: no limit) or "auto", the
    largest identity of D_L (a cluster bigger than any real identity is most likely
    several merged)."""
    keep_l = np.flatnonzero(labelled >= 0)
    assigned = pred >= 0
    sizes = np.bincount(pred[assigned]) if assigned.any() else np.zeros(0, np.int64)
    big = assigned.copy()
    if max_size == "auto":
        max_size = largest_identity(labelled)
    big[assigned] = sizes[pred[assigned]] >= min_size
    if max_size:
        big[assigned] &= sizes[pred[assigned]] <= max_size
    keep_u = np.flatnonzero(big)
    offset = int(labelled[keep_l].max()) + 1 if keep_l.size else 0
    _, pseudo = np.unique(pred[keep_u], return_inverse=True)
    pseudo = pseudo.astype(np.int64) + offset
    dropped_small = int(((sizes < min_size)[pred[assigned]]).sum()) if assigned.any() else 0
    counts = {
        "n_labelled": int(keep_l.size), "n_pseudo": int(keep_u.size),
        "n_labelled_ids": int(np.unique(labelled[keep_l]).size),
        "n_pseudo_ids": int(pseudo.max() - offset + 1) if pseudo.size else 0,
        "pseudo_label_offset": offset, "min_size": int(min_size),
        "max_size": int(max_size or 0), "dropped_unassigned": int((~assigned).sum()),
        "dropped_small": dropped_small,
        "dropped_large": int(assigned.sum() - keep_u.size - dropped_small),
        "dropped_unlabelled_rows_of_labelled_set": int(labelled.size - keep_l.size),
    }
    return PseudoLabels(keep_l, keep_u, np.concatenate([labelled[keep_l], pseudo]), offset,
                        int(max_size or 0), counts)
