"""Clustering and kNN metrics: pure functions over integer label arrays.

Conventions shared by every function here (scikit-learn style: ``f(pred, truth)``):

- ``pred[i]`` is the predicted cluster of point i; ``-1`` means *unassigned*. Each
  unassigned point is scored as a singleton (a cluster of its own) and counted.
- ``truth[i]`` is the true identity of point i; ``-1`` means *unknown*. Points of unknown
  truth are excluded from scoring (removed from both labelings before anything is
  counted, cluster sizes included) and counted.
- Labels are arbitrary integers: every score is invariant to renaming clusters or
  identities.

Everything is computed from the sparse contingency table (the nonzero counts n_ij of
points in predicted cluster i and true identity j, found by one ``np.unique`` over
combined codes), so the cost is O(N log N) time and O(N) memory: 5M points take seconds.

Notation used in the docstrings: N scored points, a_i = size of predicted cluster i,
b_j = size of true identity j, n_ij = points in both, C(n) = n (n - 1) / 2 the number of
unordered pairs among n points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NMI_AVERAGES = ("arithmetic", "geometric", "min", "max")


# --------------------------------------------------------------------------- contingency


@dataclass(frozen=True)
class Contingency:
    """Sparse contingency table of a prediction against the truth (scored points only)."""

    rows: np.ndarray  # predicted-cluster code of each nonzero cell, sorted ascending
    cols: np.ndarray  # true-identity code of each nonzero cell
    counts: np.ndarray  # n_ij of each nonzero cell (int64)
    pred_sizes: np.ndarray  # a_i, indexed by predicted code
    true_sizes: np.ndarray  # b_j, indexed by true code
    n_excluded: int  # points dropped because their truth is -1
    n_unassigned: int  # scored points whose prediction is -1 (scored as singletons)

    @property
    def n(self) -> int:
        return int(self.pred_sizes.sum())


def _as_labels(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integer labels, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < -1:
        raise ValueError(f"{name} must be >= 0, or -1")
    return arr


def _pred_codes(pred: np.ndarray) -> tuple[np.ndarray, int]:
    """Codes 0..n_clusters-1 with every -1 turned into a new singleton code."""
    unassigned = pred == -1
    codes = np.empty(pred.shape[0], dtype=np.int64)
    uniq, inv = np.unique(pred[~unassigned], return_inverse=True)
    codes[~unassigned] = inv
    n_un = int(unassigned.sum())
    codes[unassigned] = uniq.size + np.arange(n_un, dtype=np.int64)
    return codes, n_un


def contingency(pred, truth) -> Contingency:
    """Build the sparse contingency table, applying the -1 conventions of this module.

    Raises ValueError when the arrays differ in length or no point has a known truth."""
    pred = _as_labels(pred, "pred")
    truth = _as_labels(truth, "truth")
    if pred.shape != truth.shape:
        raise ValueError(f"pred has {pred.shape[0]} labels but truth has {truth.shape[0]}")
    known = truth != -1
    n_excluded = int(truth.size - known.sum())
    if not known.any():
        raise ValueError("no point has a known truth label (all truth labels are -1)")
    if n_excluded:
        pred, truth = pred[known], truth[known]
    pcode, n_un = _pred_codes(pred)
    _, tcode = np.unique(truth, return_inverse=True)
    n_t = int(tcode.max()) + 1
    # one code per (cluster, identity) cell; fits int64 for any N that fits memory
    cells, counts = np.unique(pcode * n_t + tcode, return_counts=True)
    return Contingency(
        rows=cells // n_t,
        cols=cells % n_t,
        counts=counts.astype(np.int64),
        pred_sizes=np.bincount(pcode).astype(np.int64),
        true_sizes=np.bincount(tcode, minlength=n_t).astype(np.int64),
        n_excluded=n_excluded,
        n_unassigned=n_un,
    )


def _pairs(n: np.ndarray) -> float:
    """Sum of C(n) over an array of counts (exact in int64, returned as float)."""
    n = n.astype(np.int64, copy=False)
    return float((n * (n - 1) // 2).sum())


def _harmonic(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2.0 * p * r / (p + r)


# --------------------------------------------------------------------------- pairwise


def _pairwise(c: Contingency) -> dict:
    tp = _pairs(c.counts)
    pred_pairs = _pairs(c.pred_sizes)
    true_pairs = _pairs(c.true_sizes)
    # no claimed pairs -> no wrong claim; no pairs to find -> none missed
    p = tp / pred_pairs if pred_pairs else 1.0
    r = tp / true_pairs if true_pairs else 1.0
    return {
        "pairwise_precision": p,
        "pairwise_recall": r,
        "pairwise_f": _harmonic(p, r),
        "fmi": float(np.sqrt(p * r)),
        "true_positive_pairs": int(tp),
        "predicted_pairs": int(pred_pairs),
        "true_pairs": int(true_pairs),
    }


def pairwise_scores(pred, truth) -> dict:
    """Pairwise precision, recall, F (harmonic mean) and Fowlkes-Mallows (geometric mean).

    Over unordered pairs of scored points::

        TP = sum_ij C(n_ij)   pairs placed together that share an identity
        P  = TP / sum_i C(a_i)    (precision; 1.0 when no pair is placed together)
        R  = TP / sum_j C(b_j)    (recall;    1.0 when no two points share an identity)
        F  = 2 P R / (P + R)      the field's "pairwise F" (F_P); 0.0 when P + R = 0
        FMI = sqrt(P R)           Fowlkes-Mallows index

    F and FMI are different numbers (equal only when P = R): some papers reported one
    under the other's name. With the degenerate conventions above a perfect clustering
    scores 1.0 even when every cluster is a singleton; sklearn's
    ``fowlkes_mallows_score`` returns 0.0 whenever TP = 0 and otherwise agrees with FMI.

    Returns a dict with pairwise_precision, pairwise_recall, pairwise_f, fmi and the three
    pair counts true_positive_pairs, predicted_pairs, true_pairs.
    """
    return _pairwise(contingency(pred, truth))


def capped_pairwise_f(pred, truth, cap: int = 30) -> float:
    """Pairwise F in which every identity weighs as if it had at most ``cap`` points: a
    point of identity j has weight w = min(1, cap / b_j), a pair the product of its two
    weights. Plain pairwise F counts pairs, so one identity of 500 images (125k pairs)
    outweighs 400 identities of 5 (4k pairs) and decides alone where a calibrated threshold
    lands; capped, it weighs like one identity of ``cap``. Where no identity exceeds ``cap``
    this is exactly pairwise F. Unknown truth (-1) is not scored; unassigned predictions
    (-1) are singletons, as everywhere here."""
    pred, truth = _as_labels(pred, "pred"), _as_labels(truth, "truth")
    keep = truth >= 0
    pred, truth = pred[keep], truth[keep]
    if truth.size == 0:
        return 1.0
    pred_codes, _ = _pred_codes(pred)
    _, t = np.unique(truth, return_inverse=True)
    w = np.minimum(1.0, cap / np.bincount(t)[t])

    def pairs(codes) -> float:
        _, inv = np.unique(codes, return_inverse=True)
        total, squares = np.bincount(inv, weights=w), np.bincount(inv, weights=w * w)
        return float(((total * total - squares) / 2).sum())

    both = pairs(pred_codes * (t.max() + 1) + t)
    claimed, existing = pairs(pred_codes), pairs(t)
    p = both / claimed if claimed > 1e-12 else 1.0
    r = both / existing if existing > 1e-12 else 1.0
    return _harmonic(p, r)


# --------------------------------------------------------------------------- BCubed


def _bcubed(c: Contingency) -> dict:
    n = c.n
    sq = c.counts.astype(np.float64) ** 2
    p = float((sq / c.pred_sizes[c.rows]).sum() / n)
    r = float((sq / c.true_sizes[c.cols]).sum() / n)
    return {"bcubed_precision": p, "bcubed_recall": r, "bcubed_f": _harmonic(p, r)}


def bcubed_scores(pred, truth) -> dict:
    """BCubed precision, recall and F (Bagga & Baldwin 1998; Amigo et al. 2009).

    For a point x in predicted cluster i with identity j: precision(x) = n_ij / a_i (share
    of its cluster, itself included, that shares its identity) and recall(x) = n_ij / b_j
    (share of its identity, itself included, placed in its cluster). P and R are the means
    over the N scored points, F = 2 P R / (P + R)::

        P = (1/N) sum_ij n_ij^2 / a_i      R = (1/N) sum_ij n_ij^2 / b_j

    Returns a dict with bcubed_precision, bcubed_recall, bcubed_f.
    """
    return _bcubed(contingency(pred, truth))


# --------------------------------------------------------------------------- NMI


def _entropy(sizes: np.ndarray, n: int) -> float:
    p = sizes[sizes > 0].astype(np.float64) / n
    return float(-(p * np.log(p)).sum())


def _nmi(c: Contingency, average: str) -> float:
    if average not in NMI_AVERAGES:
        raise ValueError(f"unknown NMI average {average!r}; expected one of {', '.join(NMI_AVERAGES)}")
    n = c.n
    nij = c.counts.astype(np.float64)
    mi = float((nij / n * (np.log(nij) + np.log(n) - np.log(c.pred_sizes[c.rows].astype(np.float64))
                           - np.log(c.true_sizes[c.cols].astype(np.float64)))).sum())
    mi = max(mi, 0.0)  # rounding can leave a tiny negative
    hp, ht = _entropy(c.pred_sizes, n), _entropy(c.true_sizes, n)
    norm = {"arithmetic": (hp + ht) / 2, "geometric": float(np.sqrt(hp * ht)),
            "min": min(hp, ht), "max": max(hp, ht)}[average]
    if norm == 0.0:
        # both single-cluster labelings agree perfectly; otherwise MI is 0 anyway
        return 1.0 if hp == 0.0 and ht == 0.0 else 0.0
    return float(min(mi / norm, 1.0))


def nmi(pred, truth, average: str = "arithmetic") -> float:
    """Normalised mutual information, NMI = I(P; T) / mean(H(P), H(T)).

    With natural logs, I = sum_ij (n_ij/N) log(N n_ij / (a_i b_j)), H(P) = -sum_i (a_i/N)
    log(a_i/N), H(T) likewise over b_j. ``average`` names the mean of the entropies:
    'arithmetic' (scikit-learn's default, equal to V-measure), 'geometric', 'min', 'max'.
    When the mean is 0: 1.0 if both labelings put every point in one cluster, else 0.0
    (as scikit-learn). Unassigned points are singletons, so they raise H(P).
    """
    return _nmi(contingency(pred, truth), average)


# --------------------------------------------------------------------------- counts


def _counts(c: Contingency) -> dict:
    a = c.pred_sizes
    # cells are sorted by predicted code, so each cluster's cells are one run
    starts = np.flatnonzero(np.r_[True, c.rows[1:] != c.rows[:-1]])
    majority = np.maximum.reduceat(c.counts, starts)  # largest identity count per cluster
    big = a >= 2
    in_big = int(a[big].sum())
    noise = int((a[big] - majority[big]).sum())
    return {
        "n_points": c.n,
        "n_excluded": c.n_excluded,
        "n_unassigned": c.n_unassigned,
        "n_clusters": int(a.size),
        "n_singletons": int((a == 1).sum()),
        "n_true_clusters": int((c.true_sizes > 0).sum()),
        "n_true_singletons": int((c.true_sizes == 1).sum()),
        "n_clustered_points": in_big,
        "noise_points": noise,
        "noise_ratio": noise / in_big if in_big else 0.0,
    }


def cluster_counts(pred, truth) -> dict:
    """Counts over the scored points, and the noise ratio of Clusformer (Table 4).

    - n_points: scored points (truth known); n_excluded: points with truth -1, not scored
    - n_unassigned: scored points with pred -1 (each scored as its own singleton)
    - n_clusters: predicted clusters, singletons and unassigned points included
    - n_singletons: predicted clusters of size 1 (unassigned points included)
    - n_true_clusters, n_true_singletons: the same for the true identities
    - n_clustered_points: scored points in predicted clusters of size >= 2
    - noise_points: of those, the points whose identity differs from the majority
      identity of their cluster, i.e. sum over clusters with a_i >= 2 of a_i - max_j n_ij
      (ties between identities do not change it)
    - noise_ratio = noise_points / n_clustered_points (0.0 when no cluster has 2 points)

    Sizes are counted after excluding points of unknown truth.
    """
    return _counts(contingency(pred, truth))


def noise_ratio(pred, truth) -> float:
    """Share of points in predicted clusters of size >= 2 that differ from their cluster's
    majority identity (see :func:`cluster_counts`)."""
    return cluster_counts(pred, truth)["noise_ratio"]


# --------------------------------------------------------------------------- all at once


def evaluate(pred, truth, nmi_average: str = "arithmetic") -> dict:
    """Every clustering metric of this module in one dict of plain floats/ints (JSON-ready):
    the keys of :func:`pairwise_scores`, :func:`bcubed_scores` and :func:`cluster_counts`,
    plus ``nmi`` and ``nmi_average`` (the averaging used). One contingency table is built."""
    c = contingency(pred, truth)
    out = {}
    out.update(_pairwise(c))
    out.update(_bcubed(c))
    out["nmi"] = _nmi(c, nmi_average)
    out["nmi_average"] = nmi_average
    out.update(_counts(c))
    return out


# --------------------------------------------------------------------------- kNN quality


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
    once EDGE_FLUSH edges are pending they are folded into a label per node."""

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
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        if not self.pending:
            return
        # edges between current components; a node's label is a node of its component
        s = self.comp[np.concatenate(self.src)]
        d = self.comp[np.concatenate(self.dst)]
        self.src, self.dst, self.pending = [], [], 0
        graph = coo_matrix((np.ones(s.size, dtype=np.int8), (s, d)), shape=(self.n, self.n)).tocsr()
        _, lab = connected_components(graph, directed=True, connection="weak")
        self.comp = lab[self.comp]

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
      as clusters (scipy.sparse.csgraph): the best a decoder restricted to this kNN can do
      without a single wrong merge. Pairwise precision is 1 by construction, so F =
      2R/(1+R). upper_bcubed_recall, upper_bcubed_f likewise; upper_n_clusters: the
      number of those components among the scored points; n_true_clusters: identities.

    ``indices`` may be an h5py dataset: it is read in ``block_rows`` rows at a time, and
    same-identity edges are folded into component labels every EDGE_FLUSH edges, so memory
    stays O(N + block) whatever k.
    """
    if not (hasattr(indices, "shape") and hasattr(indices, "dtype")):
        indices = np.asarray(indices)  # an h5py dataset stays on disk, read block by block
    truth = _as_labels(truth, "truth")
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

    known = truth != -1
    n_known = int(known.sum())
    if n_known == 0:
        raise ValueError("no point has a known truth label (all truth labels are -1)")
    _, tcode_known = np.unique(truth[known], return_inverse=True)
    tcode = np.full(n, -1, dtype=np.int64)
    tcode[known] = tcode_known
    class_size = np.bincount(tcode_known)
    mates = np.where(known, class_size[np.maximum(tcode, 0)] - 1, 0)

    same_count = np.zeros(kk, dtype=np.int64)
    recall_sum = np.zeros(kk, dtype=np.float64)
    n_self_not_first = 0
    components = _Components(n)
    step = block_rows or max(1, (1 << 22) // max(1, k))  # ~4M entries per block
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

    n_with_mates = int((mates > 0).sum())
    same_at = same_count / n_known
    precision_at = np.cumsum(same_count) / (n_known * np.arange(1, kk + 1))
    recall_at = recall_sum / n_with_mates if n_with_mates else np.ones(kk)

    comp = components.labels()
    # components hold one identity each; score them like any clustering
    c = contingency(comp[known], truth[known])
    pw, b3 = _pairwise(c), _bcubed(c)
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
