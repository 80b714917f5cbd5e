"""Cosine k-nearest neighbours with faiss: exact, IVF and HNSW, on GPU when there is one.

Features are L2-normalised, so cosine similarity is the inner product. Results come as
(indices int64, similarities float32), each row by falling similarity. When the queries
are the base itself, row i starts with i (the centre), also when duplicates of i tie with
it: earlier code assumed faiss returns the point first, which duplicates break.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import CfError

METHODS = ("exact", "ivf", "hnsw")


@dataclass
class KnnParams:
    method: str = "exact"
    nlist: int | None = None  # IVF lists; default ~4 sqrt(N)
    nprobe: int | None = None  # IVF lists searched; default max(16, nlist/64)
    hnsw_m: int = 32
    ef_search: int | None = None  # default max(128, 2k)
    ef_construction: int = 100
    use_gpu: bool = False
    batch_size: int = 16384
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def resolved(self, n_base: int, k: int) -> dict:
        """The parameters actually used for a base of n_base points, for the record."""
        out = {"method": self.method}
        if self.method == "ivf":
            nlist = self.nlist or default_nlist(n_base)
            out.update(nlist=nlist, nprobe=self.nprobe or default_nprobe(nlist))
        elif self.method == "hnsw":
            out.update(hnsw_m=self.hnsw_m, ef_search=self.ef_search or max(128, 2 * k),
                       ef_construction=self.ef_construction)
        return out


def default_nlist(n: int) -> int:
    # ~4 sqrt(N) lists, and at least 39 training points per list (faiss's own minimum)
    return int(max(1, min(4 * math.sqrt(n), n // 39)))


def default_nprobe(nlist: int) -> int:
    # measured on the demo set (100K x 256, k=80, nlist 1264): nprobe 8 -> recall 0.962,
    # 16 -> 0.970, 32 -> 0.976, at 1/14, 1/10 and 1/6 of the exact search time; smaller
    # sets have fewer points per list and need a larger share of them (20K: 16 -> 0.989)
    return int(max(1, min(nlist, max(16, round(nlist / 64)))))


def check_k(k: int, n_base: int, path=None, self_search: bool = True) -> None:
    """Refuse a k the base cannot fill. A self-search wants more than k points (the point
    itself is one of its k, and a row of all n points says nothing); queries searched
    against another set need only k points in it."""
    if k < 1:
        raise CfError(f"k must be at least 1, got {k}", path)
    if self_search and k >= n_base:
        raise CfError(f"k={k} needs more than {k} points to search, but there are only {n_base}",
                      path)
    if not self_search and k > n_base:
        raise CfError(f"k={k} needs at least {k} points to search the queries against, but "
                      f"there are only {n_base}", path)


def build_index(base: np.ndarray, params: KnnParams, k: int):
    """A faiss inner-product index over ``base``, trained where the method needs it."""
    import faiss

    n, d = base.shape
    p = params.resolved(n, k)
    if params.method == "exact":
        index = faiss.IndexFlatIP(d)
    elif params.method == "ivf":
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, p["nlist"], faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = params.seed
        sample = base
        max_train = 256 * p["nlist"]
        if n > max_train:
            rng = np.random.default_rng(params.seed)
            sample = base[np.sort(rng.choice(n, size=max_train, replace=False))]
        index.train(sample)
        index.nprobe = p["nprobe"]
    elif params.method == "hnsw":
        index = faiss.IndexHNSWFlat(d, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = p["ef_search"]
    else:
        raise CfError(f"unknown kNN method {params.method!r} (choose from {', '.join(METHODS)})")
    if params.use_gpu and params.method != "hnsw":  # faiss has no GPU HNSW
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(base)
    return index


def search(index, queries: np.ndarray, k: int, batch_size: int, progress=None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Search in bounded-memory batches; returns (indices int64, similarities float32)."""
    nq = queries.shape[0]
    indices = np.empty((nq, k), dtype=np.int64)
    sims = np.empty((nq, k), dtype=np.float32)
    for start in range(0, nq, batch_size):
        stop = min(nq, start + batch_size)
        s, i = index.search(queries[start:stop], k)
        sims[start:stop] = s
        indices[start:stop] = i
        if progress is not None:
            progress.update(stop - start)
    return indices, sims


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


def knn(base: np.ndarray, k: int, *, queries: np.ndarray | None = None,
        params: KnnParams | None = None, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours by cosine of each query (or each base point) among ``base``.

    Without ``queries`` the base is searched against itself and position 0 of every row
    is the point itself."""
    params = params or KnnParams()
    self_search = queries is None
    check_k(k, base.shape[0], self_search=self_search)
    index = build_index(base, params, k)
    q = base if self_search else queries
    indices, sims = search(index, q, k, params.batch_size, progress)
    if self_search:
        put_self_first(indices, sims)
    return indices, sims


def recall_at_k(approx_indices: np.ndarray, exact_indices: np.ndarray) -> float:
    """Mean share of the exact k neighbours that the approximate search found."""
    k = exact_indices.shape[1]
    hits = 0
    for a, e in zip(approx_indices, exact_indices):
        hits += np.intersect1d(a, e, assume_unique=False).size
    return hits / (k * len(exact_indices))


def sample_recall(base: np.ndarray, queries: np.ndarray | None, indices: np.ndarray, k: int,
                  sample: int, seed: int, self_search: bool) -> tuple[float, int]:
    """recall@k of ``indices`` against exact search on a random sample of the queries."""
    import faiss

    q = base if queries is None else queries
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(q.shape[0], size=min(sample, q.shape[0]), replace=False))
    exact = faiss.IndexFlatIP(base.shape[1])
    exact.add(base)
    _, ex = exact.search(q[rows], k)
    if self_search:
        put_self_first(ex, np.zeros(ex.shape, dtype=np.float32), centres=rows)
    return recall_at_k(indices[rows], ex), len(rows)
