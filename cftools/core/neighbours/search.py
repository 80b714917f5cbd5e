"""cf-knn's search: the backend and method chosen (auto: policy.py), the index built and
searched in batches (faiss) or the base multiplied tile by tile (torch: tiled.py), each
row's centre put first, and recall measured against exact search on a sample for every
approximate method. Under torchrun each rank searches its share of the queries (``sh``);
rank 0's auto choice holds everywhere."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from ...errors import CfError
from . import index as ix
from .exact import exact_of, put_self_first, recall_hits, sample_rows
from .policy import auto_uses_exact, ivf_relative_cost, max_nprobe, tune_ivf
from .tiled import TiledSearch

BACKENDS = ("auto", "torch", "faiss")


def plan_method(requested: str, n_base: int, n_queries: int, exact_below: int,
                backend: str = "faiss") -> str:
    """The method to build for ``requested``: auto is exact while cheap, else IVF; the
    torch backend searches exactly at every size."""
    if requested != "auto":
        return requested
    if backend == "torch":
        return "exact"
    return "exact" if auto_uses_exact(n_base, n_queries, exact_below) else "ivf"


def _cuda_possible() -> bool:
    """False where no NVIDIA driver is present, so that a CPU host need not import torch
    (a second or two of cf-knn's start-up) to learn that it has no CUDA."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidiactl")


def plan_backend(requested: str, method: str, device: str) -> tuple[str, bool]:
    """(backend, on the GPU) for --backend ``requested``, --method and --device: auto is
    torch on CUDA where faiss has no GPU build (torch searches exactly: only for --method
    auto or exact), else faiss, on the GPU where its build has one."""
    from ..runtime.device import faiss_gpu_count, faiss_use_gpu, torch_device

    if requested not in BACKENDS:
        raise CfError(f"unknown backend {requested!r} (choose from {', '.join(BACKENDS)})")
    if requested == "torch":
        if method not in ("auto", "exact"):
            raise CfError(f"--backend torch searches exactly; --method {method} needs "
                          "--backend faiss")
        return "torch", torch_device(device).type == "cuda"
    if requested == "auto" and method in ("auto", "exact") and device != "cpu" \
            and _cuda_possible() and faiss_gpu_count() == 0:
        import torch

        if torch.cuda.is_available():
            return "torch", True
    return "faiss", faiss_use_gpu(device)


def check_params(params: ix.KnnParams, n_base: int, k: int) -> dict:
    """The parameters as they will be used, refused where faiss cannot use them."""
    resolved = params.resolved(n_base, k)
    if params.method == "ivf" and resolved["nlist"] > n_base:
        raise CfError(f"--nlist {resolved['nlist']} is more inverted lists than the {n_base} "
                      "points to train them on; lower --nlist (or use --method exact)")
    return resolved


@dataclass
class KnnResult:
    indices: np.ndarray  # (rows of this rank, k) int64
    similarities: np.ndarray  # (rows of this rank, k) float32
    method: str  # the method that ran
    params: dict  # its parameters as used (KnnParams.resolved)
    auto: dict | None = None  # --method auto: exact_below, recall_target, chosen, trials
    recall: float | None = None  # approximate methods: recall@k on the sample
    recall_sample: int = 0
    missing: int = 0  # neighbour slots no index filled (all ranks)
    seconds: dict = field(default_factory=dict)


def find_neighbours(base: np.ndarray, queries: np.ndarray | None, k: int, params: ix.KnnParams,
                    *, requested: str, exact_below: int, recall_target: float,
                    recall_sample: int, sh, log, progress) -> KnnResult:
    """The k nearest neighbours of this rank's share of ``queries`` (None: ``base``
    searched against itself, each row's centre first). ``params.method`` is the method to
    build: plan_method's choice for ``requested``; auto may fall back to exact."""
    if params.backend == "torch":
        return _torch_neighbours(base, queries, k, params, requested=requested, sh=sh, log=log,
                                 progress=progress)
    self_search = queries is None
    all_queries = base if queries is None else queries
    nq, n = all_queries.shape[0], base.shape[0]
    chosen = params.method
    resolved = params.resolved(n, k)
    t = time.perf_counter()
    index = ix.build_index(base, params, k)
    tuning = None
    auto = None
    if requested == "auto":
        auto = {"exact_below": exact_below, "recall_target": recall_target, "chosen": chosen}
        if chosen == "exact":
            log(f"cf-knn: auto: {nq} x {n} points, at most {exact_below}^2: exact search "
                "(cheap at this size)")
        elif params.nprobe is None:
            index, tuning, resolved = _tune_auto(index, base, all_queries, k, params, resolved,
                                                 auto, recall_target, recall_sample, sh, log,
                                                 self_search)
            chosen = params.method
    start, stop = sh.rows(nq)
    with progress(total=stop - start, desc="searching", unit="pt") as bar:
        indices, sims = ix.search(index, all_queries[start:stop], k, params.batch_size, bar)
    del index
    if self_search:
        put_self_first(indices, sims, centres=np.arange(start, stop))
    result = KnnResult(indices, sims, chosen, resolved, auto,
                       seconds={"search": time.perf_counter() - t})
    if chosen != "exact" and recall_sample > 0:
        _measure_recall(result, base, all_queries, k, tuning, recall_sample, params.seed,
                        (start, stop), self_search, sh)
        log(f"cf-knn: recall@{k} against exact search on {result.recall_sample} queries: "
            f"{result.recall:.4f}")
    result.missing = int(sh.sum([(indices < 0).sum()])[0])
    return result


def _torch_neighbours(base, queries, k, params: ix.KnnParams, *, requested, sh, log,
                      progress) -> KnnResult:
    """Exact search of this rank's share of the queries by tiled products in torch."""
    self_search = queries is None
    all_queries = base if queries is None else queries
    start, stop = sh.rows(all_queries.shape[0])
    t = time.perf_counter()
    searcher = TiledSearch(base, k, device=params.device, precision=params.precision,
                           query_block=params.query_block, tile=params.tile)
    with progress(total=stop - start, desc="searching", unit="pt") as bar:
        found = searcher.search(all_queries[start:stop], bar)
    indices, sims = found.indices, found.similarities
    if self_search:
        put_self_first(indices, sims, centres=np.arange(start, stop))
    record = {"method": "exact", **found.record()}
    record["rescued_rows"] = int(sh.sum([found.rescued])[0])
    if found.precision != "fp32":
        log(f"cf-knn: torch: {found.precision} products, the {found.candidates} best of each "
            f"row re-scored in fp32; {record['rescued_rows']} rows searched again in fp32 "
            "(their candidates could have missed a neighbour)")
    auto = {"chosen": "exact", "backend": "torch"} if requested == "auto" else None
    return KnnResult(indices, sims, "exact", record, auto,
                     seconds={"search": time.perf_counter() - t})


def _tune_auto(index, base, queries, k, params, resolved, auto, recall_target, recall_sample,
               sh, log, self_search):
    """auto above exact's size: the smallest nprobe reaching the target on the sample, or
    exact search where none is cheaper. Returns (index, tuning, resolved parameters)."""
    n, nq = base.shape[0], queries.shape[0]

    def search_ids(q, p):
        ix.set_nprobe(index, p, params.use_gpu)
        return index.search(q, k)[1]

    tuning = tune_ivf(search_ids, base, queries, k, max_nprobe(n, resolved["nlist"]),
                      sample=recall_sample, seed=params.seed,
                      centres=np.arange(nq) if self_search else None, target=recall_target,
                      timed=True)
    found, trials = sh.broadcast([tuning.nprobe, tuning.trials])  # rank 0's choice, everywhere
    # the file keeps what repeats (nprobe, recall); the timings go to stderr
    auto["trials"] = [t[:2] for t in trials]
    log(f"cf-knn: auto: exact search of the {len(tuning.rows)} sample queries took "
        f"{tuning.exact_seconds:.2f} s; IVF (nprobe, recall, s): "
        + " ".join(f"{p}:{r:.3f}:{sec:.2f}" for p, r, sec in trials))
    if found is None:
        auto["chosen"] = params.method = "exact"
        log(f"cf-knn: auto: IVF reaches only recall@{k} {tuning.recall:.4f} (nprobe "
            f"{trials[-1][0] if trials else 0}) before it would cost more than exact search "
            f"(target {recall_target}; neighbourhoods not clustered at this k?): exact search")
        del index
        return ix.build_index(base, params, k), None, params.resolved(n, k)
    resolved["nprobe"] = found
    ix.set_nprobe(index, found, params.use_gpu)
    log(f"cf-knn: auto: {nq} x {n} points, above {auto['exact_below']}^2: IVF "
        f"nlist={resolved['nlist']}, nprobe {found} reaches recall@{k} {tuning.recall:.4f} >= "
        f"{recall_target} on {len(tuning.rows)} queries "
        f"(~{1 / ivf_relative_cost(n, resolved['nlist'], found):.0f}x fewer operations than "
        "exact)")
    return index, tuning, resolved


def _measure_recall(result: KnnResult, base, queries, k, tuning, recall_sample, seed, span,
                    self_search, sh) -> None:
    """recall@k of this search against exact search on the sample rows (auto's sample
    when it tuned, else drawn here), summed over the ranks."""
    start, stop = span
    if tuning is not None:
        rows, exact = tuning.rows, tuning.exact_ids
    else:
        rows, exact = sample_rows(queries.shape[0], recall_sample, seed), None
    mine = (rows >= start) & (rows < stop)
    if exact is not None:
        ex = exact[mine]
    else:
        ex = exact_of(base, queries[rows[mine]], k, centres=rows[mine] if self_search else None)
    hits, slots = sh.sum([recall_hits(result.indices[rows[mine] - start], ex), ex.size])
    result.recall, result.recall_sample = hits / max(slots, 1), len(rows)
