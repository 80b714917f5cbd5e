"""The peaks and intimacy rules of an add read at the level of points, not of the local
graph's cluster nodes.

Both decoders read quantities of a point's whole row: peaks a point's confidence (the mean
signed weight of all its links), intimacy the share of kept neighbours two points have in
common. On the local graph an old cluster is one node whose links are sums over its
members, so neither quantity means there what it means for a point: a new image whose
exact duplicate sits in a cluster of 300 got a node confidence above the cluster node's
and stayed a peak of its own (peaks), or shared few neighbours with a node of 300
(intimacy), and became a singleton beside its own twin. Here both are read from the
rows of the links after the add, for the new points and the old points they link to:

- peaks: each new point's parent is its most probable neighbour of confidence >= its own
  (less the tolerance) when that link is kept, as the decoder picks it; an old point whose
  rebuilt row now makes a new point its parent brings that new point to its cluster;
- intimacy: a kept link touching a new point stays when its node intimacy, from the two
  points' own kept neighbours, reaches the ratio.

The local graph's components over what remains then group new points with old clusters.
"""

from __future__ import annotations

import numpy as np

from .links import edge_weights


def row_weights(indices, probs, rows: np.ndarray, mode: str):
    """(ids, weights, valid) of the given rows: neighbours that exist and are not the row's
    own point, weighed under ``mode``."""
    ids = indices[rows]
    valid = (ids >= 0) & (ids != rows[:, None])
    w = np.zeros(ids.shape, np.float32)
    src = np.broadcast_to(rows[:, None], ids.shape)[valid]
    w[valid] = edge_weights(indices, probs, src, ids[valid], mode)
    return ids, w, valid


def confidence(w: np.ndarray, valid: np.ndarray, threshold: float) -> np.ndarray:
    """c = mean over valid links of (w if w >= t else -w), 0 without links."""
    t = np.float32(threshold)
    signed = np.where(valid, np.where(w >= t, w, -w), 0).astype(np.float64)
    count = valid.sum(axis=1)
    return np.divide(signed.sum(axis=1), count, out=np.zeros(count.shape), where=count > 0)


def peaks_edges(indices, probs, relinked: np.ndarray, n0: int, *, threshold: float,
                tolerance: float, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(src, dst) point edges of the peaks rule that touch new points: every new point to
    its parents, every relinked old row to the new points that became its parents."""
    n = indices.shape[0]
    new = np.arange(n0, n)
    rows = np.unique(np.r_[new, relinked])
    ids, w, valid = row_weights(indices, probs, rows, mode)
    # the confidence of every point these rows link to
    others = np.setdiff1d(np.unique(ids[valid]), rows)
    o_ids, o_w, o_valid = row_weights(indices, probs, others, mode)
    pts = np.r_[rows, others]
    conf_of = np.r_[confidence(w, valid, threshold), confidence(o_w, o_valid, threshold)]
    order = np.argsort(pts)
    pts, conf_of = pts[order], conf_of[order]
    c_row = conf_of[np.searchsorted(pts, rows)]
    c_nb = np.where(valid, conf_of[np.searchsorted(pts, np.where(valid, ids, pts[0]))], -np.inf)
    cand = valid & (c_nb >= c_row[:, None] - tolerance)
    masked = np.where(cand, w, -np.inf)
    best = masked.max(axis=1, keepdims=True)
    join = cand & (masked == best) & (best >= np.float32(threshold))
    r, c = np.nonzero(join)
    src, dst = rows[r], ids[r, c]
    keep = (src >= n0) | (dst >= n0)  # an old row's own old parent is the old clustering's
    return src[keep], dst[keep]


def intimacy_kept(indices, probs, src: np.ndarray, dst: np.ndarray, *, threshold: float,
                  ratio: float, mode: str) -> np.ndarray:
    """Which kept links src -> dst reach the node intimacy ``ratio``:
    |N(i) & N(j)| / max(|N(i)|, |N(j)|), N(i) = i and its kept neighbours."""
    if not src.size:
        return np.zeros(0, bool)
    pts = np.unique(np.r_[src, dst])
    ids, w, valid = row_weights(indices, probs, pts, mode)
    kept = valid & (w >= np.float32(threshold))
    hood = np.where(kept, ids, -1)
    hood = np.concatenate([pts[:, None], hood], axis=1)  # N(i) includes i
    size = kept.sum(axis=1) + 1
    a, b = np.searchsorted(pts, src), np.searchsorted(pts, dst)
    out = np.empty(src.size, bool)
    step = max(1, (1 << 22) // max(1, hood.shape[1] ** 2))
    for s in range(0, src.size, step):
        ha, hb = hood[a[s:s + step]], hood[b[s:s + step]]
        common = ((ha[:, :, None] == hb[:, None, :]) & (ha[:, :, None] >= 0)).sum(axis=(1, 2))
        out[s:s + step] = common / np.maximum(size[a[s:s + step]], size[b[s:s + step]]) \
            >= np.float32(ratio)
    return out
