"""What becomes of the points a decoder leaves alone (the singleton policy), and the
counts a user wants to see after decoding."""

from __future__ import annotations

import numpy as np

from .graph import relabel

SINGLETON_POLICIES = ("keep", "unassign", "attach")


def apply_singletons(labels: np.ndarray, indices, probabilities, policy: str = "keep",
                     attach_threshold: float | None = None) -> tuple[np.ndarray, dict]:
    """Apply the singleton policy to decoded labels; returns (labels numbered afresh,
    counts). See settle_singletons for the policies; counts: singletons (found),
    attached, unassigned, kept (singletons left as such), unassigned_total."""
    if policy not in SINGLETON_POLICIES:
        raise ValueError(f"unknown singleton policy {policy!r}")
    labels = np.asarray(labels, dtype=np.int64).copy()
    rows = singleton_rows(labels)
    counts = settle_singletons(labels, rows, indices[rows], probabilities[rows], policy,
                               attach_threshold)
    counts["unassigned_total"] = int((labels < 0).sum()) if labels.shape[0] else 0
    return relabel(labels), counts


def singleton_rows(labels: np.ndarray) -> np.ndarray:
    """The points alone in their cluster."""
    assigned = labels >= 0
    sizes = np.bincount(labels[assigned]) if assigned.any() else np.zeros(0, np.int64)
    single = assigned.copy()
    single[assigned] = sizes[labels[assigned]] == 1
    return np.flatnonzero(single)


def settle_singletons(labels: np.ndarray, rows: np.ndarray, neighbours: np.ndarray,
                      weights: np.ndarray, policy: str,
                      attach_threshold: float | None = None) -> dict:
    """The singleton policy, in place, for the singletons ``rows`` of ``labels`` (cluster
    ids are kept): ``neighbours`` (len(rows), k) their link ids, ``weights`` the weights
    of those links as the decoder read them.

    - keep:     every singleton stays a cluster of its own;
    - unassign: singletons get -1;
    - attach:   a singleton joins the cluster of its most probable neighbour that lies in
                a cluster of 2 or more (as decoded, before any attaching) if that link's
                weight is >= attach_threshold; the others stay singletons.
    Returns the counts: singletons, attached, unassigned, kept."""
    if policy not in SINGLETON_POLICIES:
        raise ValueError(f"unknown singleton policy {policy!r}")
    counts = {"singletons": int(rows.size), "attached": 0, "unassigned": 0, "kept": 0}
    if policy == "attach" and rows.size:
        if attach_threshold is None:
            raise ValueError("the attach policy needs an attach threshold")
        assigned = labels >= 0
        sizes = np.bincount(labels[assigned]) if assigned.any() else np.zeros(0, np.int64)
        valid = (neighbours >= 0) & (neighbours != rows[:, None])
        target_lab = labels[np.where(valid, neighbours, 0)]
        in_big = valid & (target_lab >= 0)
        in_big[in_big] = sizes[target_lab[in_big]] >= 2
        masked = np.where(in_big, weights, -np.inf)
        best = masked.argmax(axis=1)
        r = np.arange(rows.size)
        ok = masked[r, best] >= np.float32(attach_threshold)
        labels[rows[ok]] = target_lab[r[ok], best[ok]]
        counts["attached"] = int(ok.sum())
        counts["kept"] = int(rows.size - ok.sum())
    elif policy == "unassign":
        labels[rows] = -1
        counts["unassigned"] = int(rows.size)
    else:
        counts["kept"] = int(rows.size)
    return counts


def cluster_summary(labels: np.ndarray) -> dict:
    """Counts a user wants to see after decoding."""
    assigned = labels >= 0
    sizes = np.bincount(labels[assigned]) if assigned.any() else np.zeros(0, np.int64)
    sizes = sizes[sizes > 0]
    return {
        "n_points": int(labels.shape[0]),
        "n_clusters": int(sizes.size),
        "n_singletons": int((sizes == 1).sum()),
        "n_unassigned": int((~assigned).sum()),
        "largest": int(sizes.max()) if sizes.size else 0,
        "clustered_points": int(sizes[sizes >= 2].sum()),
    }
