"""Clustering baselines a user would pick instead of cftools, for bench/run.py.

Each baseline gets its one free parameter from the labelled part D_L only (the value that
maximises pairwise F there) and is then run on the unlabelled part D_U. k-means is
handed the true number of identities of D_U: an oracle no user has, which favours it.
scikit-learn is a bench-only dependency.
"""

from __future__ import annotations

import numpy as np

from cftools.core.metrics import evaluate


def _best_on_labelled(fit, grid, features_l, labels_l):
    """The grid value whose clustering of D_L has the highest pairwise F."""
    best_value, best_f = grid[0], -1.0
    for value in grid:
        f = evaluate(fit(features_l, value), labels_l)["pairwise_f"]
        if f > best_f:
            best_value, best_f = value, f
    return best_value


def _cosine_grid(features: np.ndarray, n: int = 24) -> np.ndarray:
    """Distance thresholds spread over the range of nearest-neighbour distances."""
    rng = np.random.default_rng(0)
    rows = rng.choice(len(features), size=min(2000, len(features)), replace=False)
    sims = features[rows] @ features.T
    sims[np.arange(len(rows)), rows] = -np.inf
    nearest = 1.0 - sims.max(axis=1)
    lo, hi = np.quantile(nearest, [0.02, 0.98])
    return np.linspace(max(lo, 1e-4), hi * 1.5, n)


def kmeans_true_k(features_u: np.ndarray, n_identities: int, seed: int = 0) -> np.ndarray:
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(n_clusters=n_identities, random_state=seed, n_init=3,
                         batch_size=4096)
    return km.fit_predict(features_u)


def dbscan(features_l, labels_l, features_u) -> tuple[np.ndarray, float]:
    from sklearn.cluster import DBSCAN

    def fit(x, eps):
        return DBSCAN(eps=float(eps), min_samples=2, metric="cosine", n_jobs=-1).fit_predict(x)

    eps = _best_on_labelled(fit, _cosine_grid(features_l), features_l, labels_l)
    return fit(features_u, eps), float(eps)


AGGLOMERATIVE_MAX_N = 30_000  # its distance matrix is O(N^2) memory


def agglomerative(features_l, labels_l, features_u) -> tuple[np.ndarray, float]:
    from sklearn.cluster import AgglomerativeClustering

    def fit(x, threshold):
        return AgglomerativeClustering(n_clusters=None, distance_threshold=float(threshold),
                                       metric="cosine", linkage="average").fit_predict(x)

    grid = _cosine_grid(features_l) * 2.5  # average linkage merges at larger distances
    threshold = _best_on_labelled(fit, grid, features_l, labels_l)
    return fit(features_u, threshold), float(threshold)
