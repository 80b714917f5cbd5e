"""How good a kNN graph is for clustering, measured against the true identities
(cf-eval knn): same-identity neighbours per rank, and the best any decoder could do on
the graph. Centres of unknown truth (-1) are excluded and counted."""

from __future__ import annotations

import numpy as np

from ..decoding.graph import union_find
from ..metrics import as_labels, bcubed_counts, contingency, pairwise_counts


def _neighbours_without_self(block: np.ndarray, rows: np.ndarray, self_first: bool):
    """Drop the point itself from each row of a kNN block (vectorised).

    With ``self_first`` each row holds the point and k-1 neighbours: the first occurrence
    of the point is removed wherever it sits (with duplicate images it may not be first);
    a row lacking it (approximate search) loses its last column instead, so every row keeps
    k-1 ranks. Further occurrences of the point, and ids of -1 (no neighbour), are marked
    invalid."""
    if self_first:
        k = block.shape[1]
        is_self = block == rows[:, None]
        has = is_self.any(axis=1)
        pos = np.where(has, is_self.argmax(axis=1), k - 1)
        cols = np.arange(k - 1)[None, :]
        cols = cols + (cols >= pos[:, None])
        neigh = np.take_along_axis(block, cols, axis=1)
    else:
        neigh = block
    valid = (neigh >= 0) & (neigh != rows[:, None])
    return neigh, valid


def _drop_repeats(neigh: np.ndarray, match: np.ndarray) -> np.ndarray:
    """Keep only the first (best-ranked) match of an id listed twice in a row."""
    # cheap test first: non-matches get distinct negative ids, so only repeated matches tie
    keyed = np.where(match, neigh, -1 - np.arange(neigh.shape[1])[None, :])
    keyed.sort(axis=1)
    rows = np.flatnonzero((keyed[:, 1:] == keyed[:, :-1]).any(axis=1))
    if rows.size == 0:
        return match
    sub = np.where(match[rows], neigh[rows], -1 - np.arange(neigh.shape[1])[None, :])
    srt = np.argsort(sub, axis=1, kind="stable")  # stable: the first occurrence stays first
    ordered = np.take_along_axis(sub, srt, axis=1)
    dup_sorted = np.zeros(ordered.shape, dtype=bool)
    dup_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    dup = np.empty_like(dup_sorted)
    np.put_along_axis(dup, srt, dup_sorted, axis=1)
    match = match.copy()
    match[rows] &= ~dup
    return match


EDGE_FLUSH = 1 << 24  # edges held before they are folded into component labels


class _Components:
    """Connected components of a graph whose edges arrive in batches, in bounded memory:
    once EDGE_FLUSH edges are pending they are joined into each node's root."""

    def __init__(self, n: int):
        self.n = n
        self.comp = np.arange(n, dtype=np.int64)
        self.src: list[np.ndarray] = []
        self.dst: list[np.ndarray] = []
        self.pending = 0

    def add(self, src: np.ndarray, dst: np.ndarray) -> None:
        self.src.append(src)
        self.dst.append(dst)
        self.pending += src.size
        if self.pending >= EDGE_FLUSH:
            self._fold()

    def _fold(self) -> None:
        if not self.pending:
            return
        src, dst = np.concatenate(self.src), np.concatenate(self.dst)
        self.src, self.dst, self.pending = [], [], 0
        self.comp = union_find(self.n, src, dst, parent=self.comp)

    def labels(self) -> np.ndarray:
        self._fold()
        return self.comp


def knn_quality(indices, truth, self_first: bool = True, block_rows: int | None = None) -> dict:
    """How good a kNN graph is for clustering, measured against the true identities.

    ``indices`` is (N, k): row i lists the neighbours of point i by falling similarity, ids
    in [0, N) or -1 for "no neighbour". With ``self_first`` the point itself is among them
    (normally first) and is removed, leaving K = k-1 ranks; otherwise K = k. Centres whose
    truth is -1 are excluded; a neighbour counts as a *match* when it is a valid id, not the
    point itself, and has the centre's (known) identity. m_i = b_j - 1 is the number of
    mates of point i (other points of its identity). An id repeated in a row counts once,
    at its first rank.

    Returns a dict of plain floats/ints/lists:

    - ranks: K; n_points: scored centres; n_excluded: centres with truth -1;
      n_self_not_first (self_first only): rows whose first id is not the point itself
    - same_at_rank[r-1]: share of scored centres whose r-th neighbour is a match
    - precision_at_rank[r-1]: share of matches among the first r neighbours, over all
      scored centres (mean of same_at_rank[:r])
    - recall_at_rank[r-1]: mean over centres with m_i >= 1 of (matches among the first r)
      / m_i; neighbour_recall = recall_at_rank[K-1]; n_with_mates: how many such centres
    - upper_pairwise_recall, upper_pairwise_f: keep exactly the kNN edges that join two
      points of the same identity (in either direction) and take the connected components
      as clusters (union-find): the best a decoder restricted to this kNN can do
      without a single wrong merge. Pairwise precision is 1 by construction, so F =
      2R/(1+R). upper_bcubed_recall, upper_bcubed_f likewise; upper_n_clusters: the
      number of those components among the scored points; n_true_clusters: identities.

    ``indices`` may be an h5py dataset: it is read in ``block_rows`` rows at a time, and
    same-identity edges are joined into components every EDGE_FLUSH edges, so memory
    stays O(N + block) whatever k.
    """
    indices, truth, kk = _checked(indices, truth, self_first)
    n, k = indices.shape
    known = truth != -1
    n_known = int(known.sum())
    _, tcode_known = np.unique(truth[known], return_inverse=True)
    tcode = np.full(n, -1, dtype=np.int64)
    tcode[known] = tcode_known
    class_size = np.bincount(tcode_known)
    mates = np.where(known, class_size[np.maximum(tcode, 0)] - 1, 0)
    same_count, recall_sum, n_self_not_first, comp = _scan(
        indices, tcode, mates, kk, self_first, block_rows or max(1, (1 << 22) // max(1, k)))

    n_with_mates = int((mates > 0).sum())
    same_at = same_count / n_known
    precision_at = np.cumsum(same_count) / (n_known * np.arange(1, kk + 1))
    recall_at = recall_sum / n_with_mates if n_with_mates else np.ones(kk)

    # components hold one identity each; score them like any clustering
    c = contingency(comp[known], truth[known])
    pw, b3 = pairwise_counts(c), bcubed_counts(c)
    out = {
        "ranks": kk,
        "n_points": n_known,
        "n_excluded": n - n_known,
        "same_at_rank": [float(x) for x in same_at],
        "precision_at_rank": [float(x) for x in precision_at],
        "recall_at_rank": [float(x) for x in recall_at],
        "neighbour_recall": float(recall_at[-1]),
        "n_with_mates": n_with_mates,
        "upper_pairwise_recall": pw["pairwise_recall"],
        "upper_pairwise_f": pw["pairwise_f"],
        "upper_pairwise_precision": pw["pairwise_precision"],
        "upper_bcubed_recall": b3["bcubed_recall"],
        "upper_bcubed_f": b3["bcubed_f"],
        "upper_n_clusters": int(c.pred_sizes.size),
        "n_true_clusters": int(class_size.size),
    }
    if self_first:
        out["n_self_not_first"] = n_self_not_first
    return out


def _checked(indices, truth, self_first: bool):
    """(indices, truth as labels, ranks K) after checking shapes and dtypes."""
    if not (hasattr(indices, "shape") and hasattr(indices, "dtype")):
        indices = np.asarray(indices)  # an h5py dataset stays on disk, read block by block
    truth = as_labels(truth, "truth")
    if len(indices.shape) != 2:
        raise ValueError(f"indices must be 2-D (N x k), got shape {indices.shape}")
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices must be integers, got dtype {indices.dtype}")
    n, k = indices.shape
    if truth.shape[0] != n:
        raise ValueError(f"indices has {n} rows but truth has {truth.shape[0]} labels")
    kk = k - 1 if self_first else k
    if kk < 1:
        raise ValueError("no neighbours besides the point itself (k = 1)")
    if not (truth != -1).any():
        raise ValueError("no point has a known truth label (all truth labels are -1)")
    return indices, truth, kk


def _scan(indices, tcode, mates, kk: int, self_first: bool, step: int):
    """One pass over the rows, ``step`` at a time: (matches per rank, recall sums per rank,
    rows not starting with their point, component of every point over same-identity
    edges)."""
    n = indices.shape[0]
    same_count = np.zeros(kk, dtype=np.int64)
    recall_sum = np.zeros(kk, dtype=np.float64)
    n_self_not_first = 0
    components = _Components(n)
    for start in range(0, n, step):
        stop = min(n, start + step)
        rows = np.arange(start, stop, dtype=np.int64)
        block = np.asarray(indices[start:stop], dtype=np.int64)
        if block.min() < -1 or block.max() >= n:
            bad = start + int(np.flatnonzero(((block < -1) | (block >= n)).any(axis=1))[0])
            raise ValueError(f"neighbour ids must lie in [0, {n}) or be -1 (row {bad} does not)")
        if self_first:
            n_self_not_first += int((block[:, 0] != rows).sum())
        neigh, valid = _neighbours_without_self(block, rows, self_first)
        centre = tcode[start:stop]
        match = valid & (tcode[np.where(valid, neigh, 0)] == centre[:, None]) & (centre[:, None] >= 0)
        match = _drop_repeats(neigh, match)
        same_count += match.sum(axis=0)
        m = mates[start:stop]
        has = m > 0
        if has.any():
            cum = np.cumsum(match[has], axis=1, dtype=np.int64)
            recall_sum += (cum / m[has][:, None]).sum(axis=0)
        r, c = np.nonzero(match)
        components.add(rows[r], neigh[r, c])
    return same_count, recall_sum, n_self_not_first, components.labels()
