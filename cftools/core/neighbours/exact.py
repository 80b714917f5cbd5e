"""Exact neighbours of a few queries, the centre put first in every row, and recall.

When the queries are the base itself, row i starts with i (the centre), also when
duplicates of i tie with it: earlier code assumed faiss returns the point first, which
duplicates break.
"""

from __future__ import annotations

import numpy as np

# Temporaries of one step of exact_of: a block of similarities (4 bytes an entry), its
# negation for argpartition (4) and argpartition's int64 positions (8): 16 bytes for each
# (query, base row) pair of the step. The step is sized to EXACT_STEP_BYTES whatever the
# queries and d: a fixed block of 131072 base rows held 16 x S x 131072 bytes (2 GB for
# the 1000 queries of cf-knn's recall sample), 10x the rest of cf-knn at 100K points.
EXACT_STEP_BYTES = 16 << 20
BYTES_PER_PAIR = 16
MIN_BASE_BLOCK = 1024  # base rows per step at least: smaller GEMMs run far below peak


def exact_blocks(nq: int, n_base: int, k: int) -> tuple[int, int]:
    """(queries, base rows) per step of exact_of: their product times BYTES_PER_PAIR
    within EXACT_STEP_BYTES, with at least MIN_BASE_BLOCK (and k) base rows a step."""
    base_rows = max(MIN_BASE_BLOCK, k)
    queries = max(1, min(nq, EXACT_STEP_BYTES // (BYTES_PER_PAIR * base_rows)))
    base_rows = max(base_rows, EXACT_STEP_BYTES // (BYTES_PER_PAIR * queries))
    return queries, min(n_base, base_rows)


def sample_rows(n: int, sample: int, seed: int) -> np.ndarray:
    """The rows (sorted) whose recall is measured: the same for tuning and for the report."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(sample, n), replace=False))


def exact_of(base: np.ndarray, queries: np.ndarray, k: int, centres: np.ndarray | None = None,
             block: int | None = None) -> np.ndarray:
    """Exact neighbour ids of a few queries (centre first when ``centres`` is given), by
    blocked matrix products and a partial sort per block: no index, so no copy of the
    base, and no per-query heap over every base row (an order of magnitude faster than
    faiss's brute force for a few hundred queries: bench/results/code-choices.md). The
    queries and the base go in steps of at most EXACT_STEP_BYTES of temporaries
    (``block``: base rows a step, else exact_blocks')."""
    q_step, b_step = exact_blocks(queries.shape[0], base.shape[0], k)
    block = block or b_step
    if queries.shape[0] > q_step:
        parts = [exact_of(base, queries[s:s + q_step], k, block=block)
                 for s in range(0, queries.shape[0], q_step)]
        ids = np.concatenate(parts)
        if centres is not None:
            put_self_first(ids, np.zeros(ids.shape, dtype=np.float32), centres=centres)
        return ids
    nq = queries.shape[0]
    best_s = np.full((nq, 0), -np.inf, np.float32)
    best_i = np.zeros((nq, 0), np.int64)
    for start in range(0, base.shape[0], block):
        sims = queries @ base[start:start + block].T
        kk = min(k, sims.shape[1])
        # a copy of the k columns: a view would keep the step's whole int64 result alive
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk].copy()
        best_s = np.concatenate([best_s, np.take_along_axis(sims, part, 1)], axis=1)
        best_i = np.concatenate([best_i, part + start], axis=1)
        del sims, part  # freed before the next step's product is made
        if best_s.shape[1] > k:
            keep = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
            best_s = np.take_along_axis(best_s, keep, 1)
            best_i = np.take_along_axis(best_i, keep, 1)
    ids = np.take_along_axis(best_i, np.argsort(-best_s, axis=1, kind="stable"), 1)
    if centres is not None:
        put_self_first(ids, np.zeros(ids.shape, dtype=np.float32), centres=centres)
    return ids


def put_self_first(indices: np.ndarray, sims: np.ndarray, centres: np.ndarray | None = None,
                   self_sim: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Make row r start with its centre (``centres[r]``, default r): move it to the front
    if found, else insert it and drop the last neighbour. Works in place; the centre's
    similarity is its own (1 for unit vectors), the rest keep their falling order."""
    n, k = indices.shape
    rows = np.arange(n) if centres is None else np.asarray(centres)
    if self_sim is None:
        self_sim = np.ones(n, dtype=np.float32)
    hit = indices == rows[:, None]
    found = hit.any(axis=1)
    pos = np.where(found, hit.argmax(axis=1), k - 1)  # where the centre is, or the slot dropped
    need = np.flatnonzero(pos != 0)
    if need.size:
        # shift positions [0, pos) right by one, then put the centre at 0
        cols = np.arange(k)
        sub_pos = pos[need][:, None]
        src = np.where(cols[None, :] <= sub_pos, cols[None, :] - 1, cols[None, :])
        src[:, 0] = 0
        shifted_i = np.take_along_axis(indices[need], src, axis=1)
        shifted_s = np.take_along_axis(sims[need], src, axis=1)
        shifted_i[:, 0] = rows[need]
        shifted_s[:, 0] = self_sim[need]
        indices[need] = shifted_i
        sims[need] = shifted_s
    missing = indices < 0  # faiss pads with -1 when it finds fewer than k (approximate search)
    if missing.any():
        sims[missing] = -np.inf
    return indices, sims


def recall_at_k(approx_indices: np.ndarray, exact_indices: np.ndarray) -> float:
    """Mean share of the exact k neighbours that the approximate search found."""
    k = exact_indices.shape[1]
    return recall_hits(approx_indices, exact_indices) / max(1, k * len(exact_indices))


def recall_hits(approx_indices: np.ndarray, exact_indices: np.ndarray) -> int:
    """How many of the exact neighbours the approximate search found, over all rows."""
    hits = 0
    for a, e in zip(approx_indices, exact_indices):
        hits += np.intersect1d(a, e, assume_unique=False).size
    return hits
