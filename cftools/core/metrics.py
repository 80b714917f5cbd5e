"""Clustering and link metrics: pure functions over label (and score) arrays.

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


def as_labels(x, name: str) -> np.ndarray:
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
    pred = as_labels(pred, "pred")
    truth = as_labels(truth, "truth")
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


def pairwise_counts(c: Contingency) -> dict:
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
    return pairwise_counts(contingency(pred, truth))


def capped_pairwise_f(pred, truth, cap: int) -> float:
    """Pairwise F in which every identity weighs as if it had at most ``cap`` points: a
    point of identity j has weight w = min(1, cap / b_j), a pair the product of its two
    weights. Plain pairwise F counts pairs, so one identity of 500 images (125k pairs)
    outweighs 400 identities of 5 (4k pairs) and decides alone where a calibrated threshold
    lands; capped, it weighs like one identity of ``cap``. Where no identity exceeds ``cap``
    this is exactly pairwise F. Unknown truth (-1) is not scored; unassigned predictions
    (-1) are singletons, as everywhere here."""
    pred, truth = as_labels(pred, "pred"), as_labels(truth, "truth")
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


def bcubed_counts(c: Contingency) -> dict:
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
    return bcubed_counts(contingency(pred, truth))


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
    out.update(pairwise_counts(c))
    out.update(bcubed_counts(c))
    out["nmi"] = _nmi(c, nmi_average)
    out["nmi_average"] = nmi_average
    out.update(_counts(c))
    return out


# --------------------------------------------------------------------------- links


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN when
    only one class is present."""
    from scipy.stats import rankdata

    truth = np.asarray(truth).astype(bool)
    pos, neg = int(truth.sum()), int((~truth).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[truth].sum() - pos * (pos + 1) / 2) / (pos * neg))


def link_scores(scores: np.ndarray, truth: np.ndarray, threshold: float) -> dict:
    """Precision, recall, F1 (harmonic) of 'score >= threshold' as a link, and ROC-AUC."""
    truth = np.asarray(truth).astype(bool)
    pred = np.asarray(scores) >= threshold
    tp = int((pred & truth).sum())
    p = tp / max(1, int(pred.sum()))
    r = tp / max(1, int(truth.sum()))
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f, "roc_auc": roc_auc(scores, truth),
            "threshold": float(threshold), "positives": int(truth.sum()), "pairs": int(truth.size)}
