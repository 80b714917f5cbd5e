"""faiss indexes for cosine kNN: exact, IVF and HNSW, on the GPU when faiss has one.

Features are L2-normalised, so cosine similarity is the inner product. Results come as
(indices int64, similarities float32), each row by falling similarity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import CfError
from .exact import put_self_first

METHODS = ("auto", "exact", "ivf", "hnsw")
# IVF trains its lists (k-means) on at most this many points per list: 16 of them place a
# centroid about as well as 64 for nearest-list search (the recall at a given nprobe
# moves by under 0.01) at a quarter of the k-means cost, which is most of what cf-knn
# --method auto spends where IVF then proves no cheaper than exact search
# (bench/results/code-choices.md)
IVF_TRAIN_PER_LIST = 16


@dataclass
class KnnParams:
    method: str = "exact"
    backend: str = "faiss"  # or torch: exact search by tiled products (tiled.py)
    device: str = "cpu"  # torch backend: its torch device
    precision: str = "auto"  # torch backend: of the products (tiled.PRECISIONS)
    query_block: int | None = None  # torch backend: queries per block [tiled.BLOCKS]
    tile: int | None = None  # torch backend: base rows per tile [tiled.BLOCKS]
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
        out: dict = {"method": self.method}
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
    # a recall above 0.95 on clustered data at a small share of exact search's time;
    # smaller sets have fewer points per list and need a larger share of them
    # (bench/results/code-choices.md)
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
    index: Any  # a faiss index of the method's type
    if params.method == "exact":
        index = faiss.IndexFlatIP(d)
    elif params.method == "ivf":
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, p["nlist"], faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = params.seed
        index.cp.min_points_per_centroid = 1  # fewer than faiss's 39 on purpose (above)
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
    gpu_index.cftools_resources = res  # type: ignore[attr-defined]  # alive with the index
    return gpu_index


def set_nprobe(index, nprobe: int, use_gpu: bool = False) -> None:
    """Set IVF's nprobe on a CPU, GPU or multi-GPU index."""
    import faiss

    space = faiss.GpuParameterSpace() if use_gpu and hasattr(faiss, "GpuParameterSpace") \
        else faiss.ParameterSpace()
    space.set_index_parameter(index, "nprobe", int(nprobe))


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


def knn(base: np.ndarray, k: int, *, queries: np.ndarray | None = None,
        params: KnnParams | None = None, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours by cosine of each query (or each base point) among ``base``.

    Without ``queries`` the base is searched against itself and position 0 of every row
    is the point itself."""
    params = params or KnnParams()
    self_search = queries is None
    check_k(k, base.shape[0], self_search=self_search)
    index = build_index(base, params, k)
    q = base if queries is None else queries
    indices, sims = search(index, q, k, params.batch_size, progress)
    if self_search:
        put_self_first(indices, sims)
    return indices, sims
