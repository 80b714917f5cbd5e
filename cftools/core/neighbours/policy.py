"""--method auto, the one policy of cf-knn and cf-merge add: exact search while it is
cheap, else an inverted-file index at the smallest nprobe whose recall on a sample of the
queries reaches the target, else exact where no nprobe cheaper than exact search does.
The inverted-file search itself is the caller's (faiss's IVF in cf-knn, InvertedLists in
the add); this module decides and tunes."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .exact import put_self_first, recall_at_k, sample_rows

# --method auto: exact search while nq * n_base <= AUTO_EXACT_BELOW ** 2 (for a set searched
# against itself: up to AUTO_EXACT_BELOW points), IVF above. Exact costs ~N^2 d; below this
# size IVF's training and tuning cost about as much as they save (bench/results/code-choices.md).
# cf-knn --exact-below overrides it.
AUTO_EXACT_BELOW = 50_000


RECALL_TARGET = 0.95


# A distance computed while scanning an inverted list costs more than one of exact
# search's (BLAS, blocked over many queries), and the more lists a query visits the more
# (heap updates, scattered lists): about IVF_DISTANCE_COST * sqrt(nprobe) of them, used to
# stop raising nprobe where IVF would cost more than exact (bench/scale.py --calibrate
# measures it; the figures behind 4.5: bench/results/code-choices.md).
IVF_DISTANCE_COST = 4.5


# auto also times the sample: once exact search of the sample takes at least this long
# (seconds; shorter timings are noise), an nprobe whose sample search takes longer than
# exact's is not tried further
TIMING_FLOOR = 0.5


def auto_uses_exact(n_base: int, n_queries: int, exact_below: int = AUTO_EXACT_BELOW) -> bool:
    """--method auto: whether exact search is cheap enough for this size."""
    return n_base * n_queries <= exact_below ** 2


def ivf_relative_cost(n_base: int, nlist: int, nprobe: int) -> float:
    """IVF's search cost per query over exact search's: the nlist centroid distances plus
    nprobe lists of ~n_base/nlist points each, at IVF_DISTANCE_COST sqrt(nprobe) each."""
    per = IVF_DISTANCE_COST * math.sqrt(nprobe)
    return (nlist + per * nprobe * n_base / nlist) / n_base


def max_nprobe(n_base: int, nlist: int) -> int:
    """The largest nprobe at which IVF still costs less than exact search (0: none)."""
    room = (n_base - nlist) * nlist / (IVF_DISTANCE_COST * n_base)  # bound on nprobe^1.5
    top = int(max(0, min(nlist, math.floor(room ** (2 / 3)) + 1)))
    while top > 0 and ivf_relative_cost(n_base, nlist, top) >= 1:
        top -= 1
    return top


def smallest_nprobe(search_at, exact_ids: np.ndarray, top: int, *,
                    target: float = RECALL_TARGET, exact_seconds: float = 0.0
                    ) -> tuple[int | None, float, list]:
    """The smallest nprobe in 1..``top`` whose recall against ``exact_ids`` reaches
    ``target``, ``search_at(nprobe)`` giving the ids of the same rows: doubling from 1,
    then bisecting. Returns (nprobe, its recall, trials as [nprobe, recall, seconds]);
    nprobe is None when ``top`` misses the target, or when a search takes as long as exact
    search (``exact_seconds``, counted from TIMING_FLOOR up). Serves faiss's IVF in cf-knn
    (tune_nprobe) and cf-merge add's inverted lists alike."""
    trials: list = []
    too_slow = [False]

    def recall(p: int) -> float:
        t = time.perf_counter()
        ids = search_at(p)
        took = time.perf_counter() - t
        if exact_seconds >= TIMING_FLOOR and took >= exact_seconds:
            too_slow[0] = True
        r = recall_at_k(ids, exact_ids)
        trials.append([p, round(r, 4), round(took, 3)])
        return r

    if top < 1:
        return None, 0.0, trials
    lo, hi, p = 0, None, 1
    while hi is None:
        if recall(p) >= target and not too_slow[0]:
            hi = p
        elif p >= top or too_slow[0]:
            return None, trials[-1][1], trials
        else:
            lo, p = p, min(2 * p, top)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if recall(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi, {t[0]: t[1] for t in trials}[hi], trials


def exact_sample(base: np.ndarray, queries: np.ndarray, k: int,
                 centres: np.ndarray | None = None) -> np.ndarray:
    """Exact neighbour ids of the sample queries (centre first where ``centres`` are
    given), by faiss's brute-force search (one BLAS product for the sample, then a heap per
    query): faster than the tiled torch search at a thousand queries, and faiss is loaded
    already where torch's import would cost every cf-knn above the exact size a second
    (bench/results/code-choices.md)."""
    import faiss

    sims, ids = faiss.knn(np.ascontiguousarray(queries, dtype=np.float32),
                          np.ascontiguousarray(base, dtype=np.float32), k,
                          metric=faiss.METRIC_INNER_PRODUCT)
    if centres is not None:
        put_self_first(ids, sims, centres=centres)
    return ids


@dataclass
class Tuning:
    """auto's IVF tuning on a sample of the queries."""

    nprobe: int | None  # None: no nprobe cheaper than exact search reaches the target
    recall: float  # recall@recall_k reached (at nprobe, or at the last trial)
    trials: list  # [nprobe, recall, seconds] per nprobe tried
    rows: np.ndarray  # the sample queries (sorted rows)
    exact_ids: np.ndarray  # their exact neighbours, recall_k columns
    exact_seconds: float  # what the exact search of the sample took


def tune_ivf(search_ids, base: np.ndarray, queries: np.ndarray, k: int, top: int, *,
             sample: int, seed: int, centres: np.ndarray | None = None,
             recall_k: int | None = None, target: float = RECALL_TARGET,
             timed: bool = False) -> Tuning:
    """The smallest nprobe (up to ``top``: max_nprobe) at which an inverted-file search
    ``search_ids(queries, nprobe) -> ids (nq, k)`` finds ``target`` of the exact
    ``recall_k`` nearest neighbours (default k) of ``sample`` random queries. ``centres``
    (one per query): rows start with their centre, as the caller will make them.
    ``timed``: an nprobe whose sample search takes as long as exact search of it ends
    the search (smallest_nprobe)."""
    recall_k = min(k, recall_k or k)
    rows = sample_rows(queries.shape[0], sample, seed)
    sample_centres = None if centres is None else centres[rows]
    t = time.perf_counter()
    exact_ids = exact_sample(base, queries[rows], recall_k, centres=sample_centres)
    exact_seconds = time.perf_counter() - t

    def search_at(p: int) -> np.ndarray:
        ids = search_ids(queries[rows], p)
        if sample_centres is not None:
            put_self_first(ids, np.zeros(ids.shape, np.float32), centres=sample_centres)
        return ids[:, :recall_k]

    found, reached, trials = smallest_nprobe(search_at, exact_ids, top, target=target,
                                             exact_seconds=exact_seconds if timed else 0.0)
    return Tuning(found, reached, trials, rows, exact_ids, exact_seconds)
