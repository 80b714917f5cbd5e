"""Cosine k-nearest neighbours with faiss: exact, IVF and HNSW, on GPU when there is one.

Features are L2-normalised, so cosine similarity is the inner product. Results come as
(indices int64, similarities float32), each row by falling similarity. When the queries
are the base itself, row i starts with i (the centre), also when duplicates of i tie with
it: earlier code assumed faiss returns the point first, which duplicates break.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import CfError

METHODS = ("auto", "exact", "ivf", "hnsw")

# --method auto: exact search while nq * n_base <= AUTO_EXACT_BELOW ** 2 (for a set searched
# against itself: up to AUTO_EXACT_BELOW points), IVF above. Exact costs ~N^2 d: 50K x 256
# takes ~9 s on 2 CPU cores (100K ~34 s, 584K ~20 min), where IVF's training and tuning
# would cost about as much as they save. cf-knn --exact-below overrides it.
AUTO_EXACT_BELOW = 50_000
RECALL_TARGET = 0.95
# A distance computed while scanning an inverted list costs more than one of exact
# search's (BLAS, blocked over many queries), and the more lists a query visits the more
# (heap updates, scattered lists): about IVF_DISTANCE_COST * sqrt(nprobe) of them, used to
# stop raising nprobe where IVF would cost more than exact. Measured here (one thread,
# d 256, k 80; bench/scale.py --calibrate): 100K, IVF1264: 6, 8, 10, 26 at nprobe 4, 8,
# 16, 32; 1M, IVF4000: ~40 at nprobe 128-163 (where IVF took as long as exact).
IVF_DISTANCE_COST = 4.5
# auto also times the sample: once exact search of the sample takes at least this long
# (seconds; shorter timings are noise), an nprobe whose sample search takes longer than
# exact's is not tried further
TIMING_FLOOR = 0.5
# IVF trains its lists (k-means) on at most this many points per list: 64 of them place a
# centroid as well as 256 for nearest-list search, at a quarter of the k-means cost (at
# 1M points and 4000 lists: ~35 s instead of ~140 s on 2 cores)
IVF_TRAIN_PER_LIST = 64


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
    gpu: int | None = None  # this process's GPU (torchrun: LOCAL_RANK); None: all of them
    gpu_shard: bool = False  # split the index across all GPUs of the host instead
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
        max_train = IVF_TRAIN_PER_LIST * p["nlist"]
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
        index = to_gpu(index, params)
    index.add(base)
    return index


def to_gpu(index, params: KnnParams):
    """The index on the GPU(s): split across every GPU of this host with
    ``params.gpu_shard`` (faiss's IndexShards, for a set larger than one GPU's memory);
    else on this process's GPU ``params.gpu`` (torchrun's LOCAL_RANK), or, in a single
    process (``gpu`` None), a whole copy on every GPU of the host, which share the queries
    (IndexReplicas). Needs a faiss GPU build."""
    import faiss

    if not hasattr(faiss, "StandardGpuResources"):
        raise CfError("this faiss build has no GPU support (install the gpu extra: "
                      "pip install -e .[gpu])")
    if params.gpu_shard or params.gpu is None:
        co = faiss.GpuMultipleClonerOptions()
        co.shard = bool(params.gpu_shard)
        return faiss.index_cpu_to_all_gpus(index, co=co)
    res = faiss.StandardGpuResources()
    gpu_index = faiss.index_cpu_to_gpu(res, params.gpu, index)
    gpu_index.cftools_resources = res  # keep the resources alive as long as the index
    return gpu_index


def set_nprobe(index, nprobe: int, use_gpu: bool = False) -> None:
    """Set IVF's nprobe on a CPU, GPU or multi-GPU index."""
    import faiss

    space = faiss.GpuParameterSpace() if use_gpu and hasattr(faiss, "GpuParameterSpace") \
        else faiss.ParameterSpace()
    space.set_index_parameter(index, "nprobe", int(nprobe))


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


def sample_rows(n: int, sample: int, seed: int) -> np.ndarray:
    """The rows (sorted) whose recall is measured: the same for tuning and for the report."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(sample, n), replace=False))


def exact_of(base: np.ndarray, queries: np.ndarray, k: int, centres: np.ndarray | None = None,
             block: int = 1 << 17) -> np.ndarray:
    """Exact neighbour ids of a few queries (centre first when ``centres`` is given), by
    blocked matrix products and a partial sort per block: no index, so no copy of the
    base, and no per-query heap over every base row (faiss's brute force took 12.6 s for
    300 queries x 1M at k 128 on one core, this ~1 s)."""
    nq = queries.shape[0]
    best_s = np.full((nq, 0), -np.inf, np.float32)
    best_i = np.zeros((nq, 0), np.int64)
    for start in range(0, base.shape[0], block):
        sims = queries @ base[start:start + block].T
        kk = min(k, sims.shape[1])
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        best_s = np.concatenate([best_s, np.take_along_axis(sims, part, 1)], axis=1)
        best_i = np.concatenate([best_i, part + start], axis=1)
        if best_s.shape[1] > k:
            keep = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
            best_s = np.take_along_axis(best_s, keep, 1)
            best_i = np.take_along_axis(best_i, keep, 1)
    ids = np.take_along_axis(best_i, np.argsort(-best_s, axis=1, kind="stable"), 1)
    if centres is not None:
        put_self_first(ids, np.zeros(ids.shape, dtype=np.float32), centres=centres)
    return ids


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


def tune_nprobe(index, queries: np.ndarray, exact_ids: np.ndarray, k: int, *, n_base: int,
                nlist: int, target: float = RECALL_TARGET, centres: np.ndarray | None = None,
                use_gpu: bool = False, exact_seconds: float = 0.0
                ) -> tuple[int | None, float, list]:
    """smallest_nprobe for a faiss IVF ``index`` (left at the nprobe found) on ``queries``,
    up to ``max_nprobe``: the largest nprobe cheaper than exact search by the cost model."""
    def search_at(p: int) -> np.ndarray:
        set_nprobe(index, p, use_gpu)
        _, ids = index.search(queries, k)
        if centres is not None:
            put_self_first(ids, np.zeros(ids.shape, dtype=np.float32), centres=centres)
        return ids

    found, reached, trials = smallest_nprobe(search_at, exact_ids, max_nprobe(n_base, nlist),
                                             target=target, exact_seconds=exact_seconds)
    if found is not None:
        set_nprobe(index, found, use_gpu)
    return found, reached, trials


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
    return recall_hits(approx_indices, exact_indices) / max(1, k * len(exact_indices))


def recall_hits(approx_indices: np.ndarray, exact_indices: np.ndarray) -> int:
    """How many of the exact neighbours the approximate search found, over all rows."""
    hits = 0
    for a, e in zip(approx_indices, exact_indices):
        hits += np.intersect1d(a, e, assume_unique=False).size
    return hits
