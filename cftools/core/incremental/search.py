"""The new points' neighbours among old + new: one search, by the auto policy of cf-knn
(neighbours.policy) over inverted lists searched by matrix products."""

from __future__ import annotations

import numpy as np

from ..neighbours.exact import put_self_first
from ..neighbours.index import KnnParams, build_index, search
from ..neighbours.inverted_lists import InvertedLists
from ..neighbours.policy import (
    AUTO_EXACT_BELOW,
    RECALL_TARGET,
    auto_uses_exact,
    max_nprobe,
    tune_ivf,
)


def search_new(base: np.ndarray, queries: np.ndarray, k: int, *, method: str = "auto",
               exact_below: int = AUTO_EXACT_BELOW, recall_target: float = RECALL_TARGET,
               sample: int = 100, seed: int = 0, batch_size: int = 16384, progress=None,
               recall_k: int | None = None):
    """(indices, similarities, info): the k nearest of each query among ``base`` (which
    holds the queries at its end). auto: exact while queries x base is small, else
    inverted lists at the smallest nprobe whose recall@recall_k (the first ``recall_k``
    columns, default k: the ones that make sequences; the rest only find the old rows a
    new point enters) on a sample of the queries reaches ``recall_target``; exact where no
    nprobe cheaper than exact search reaches it."""
    recall_k = min(k, recall_k or k)
    n, nq = base.shape[0], queries.shape[0]
    centres = np.arange(n - nq, n)
    info: dict = {"requested": method}
    chosen = method
    if method == "auto":
        chosen = "exact" if auto_uses_exact(n, nq, exact_below) else "ivf"
    if chosen == "ivf":
        lists = InvertedLists(base, seed=seed)
        tuning = tune_ivf(lambda q, p: lists.search(q, k, p)[0], base, queries, k,
                          max_nprobe(n, lists.nlist), sample=sample, seed=seed,
                          centres=centres, recall_k=recall_k, target=recall_target)
        info.update(nlist=lists.nlist, trials=[t[:2] for t in tuning.trials], recall_k=recall_k)
        if tuning.nprobe is None:
            chosen = "exact"
        else:
            info.update(nprobe=int(tuning.nprobe), recall_at_k=float(tuning.recall),
                        recall_sample=len(tuning.rows))
            indices, sims = lists.search(queries, k, tuning.nprobe)
            if progress is not None:
                progress.update(nq)
    if chosen == "exact":
        index = build_index(base, KnnParams(method="exact", batch_size=batch_size), k)
        indices, sims = search(index, queries, k, batch_size, progress)
        del index
    info["method"] = chosen
    put_self_first(indices, sims, centres=centres)
    return indices, sims, info
