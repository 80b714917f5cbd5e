"""Exact cosine kNN in torch by tiled matrix products (cf-knn --backend torch), on CUDA
or on the CPU, with no faiss.

The queries are taken a block at a time, each block multiplied with the base a tile at a
time, and a running top-c of candidates kept per query. On CUDA the columns of a tile are
cut into groups (BLOCKS): the top c of a row lie in its c groups of largest maximum (a
group outside them holds no value above the c-th largest maximum, and each of those c
groups holds one at least that large), so one reduction by max, which reads the
products once at memory speed, leaves the costlier top-k selection a group's share of
the columns (plus the c groups' members).

Products: fp32 on the CPU, where the result is exact search (to the order of float
sums). On CUDA (precision auto) they run in fp16 on the tensor cores with fp32
accumulation, and the c = k + margin candidates of each query are re-scored in fp32 and
the k best kept. That result is exact search too, and each row is checked: a product in
fp16 lies within ``product_error`` of its fp32 value, so a point left out of the
candidates has an fp32 similarity of at most C + error, C the c-th candidate's fp16
similarity; a row whose k-th re-scored similarity lies above that is exact, and any other
row is searched again in fp32 (counted in ``TiledResult.rescued``). fp16 rather than
bf16: unit vectors need no exponent range, and fp16's 11-bit significand bounds the error
eight times tighter (about 0.0015 against 0.012 in cosine), so a margin of k/2
candidates seldom leaves a row to search again; the two run at the same tensor-core
rate. ``precision='bf16'`` is there to compare.

Rows come back by falling similarity, ties by rising id; the caller puts each centre
first (exact.put_self_first).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
# (query rows per block, base rows per tile, columns per group of the max reduction): the
# products of one block and one tile are rows x tile values, 256 MiB in fp32 on the CPU,
# 1 GiB in fp16 on CUDA. On the CPU a plain top-k of the products costs about what their
# max reduction does, so no groups there (bench/results/code-choices.md).
BLOCKS = {"cpu": (1024, 65536, 1), "cuda": (8192, 65536, 16)}
# unit roundoff of the products' inputs and output
_UNIT_ROUNDOFF = {"fp16": 2.0 ** -11, "bf16": 2.0 ** -8}


def margin(k: int) -> int:
    """Candidates kept beyond k per query where products are rounded (re-scored in fp32)."""
    return max(16, k // 2)


def resolve_precision(precision: str, device_type: str) -> str:
    """auto: fp16 products on CUDA, fp32 on the CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "fp16" if device_type == "cuda" else "fp32"
    return precision


def product_error(precision: str, dim: int, norm_tolerance: float = 1e-3) -> float:
    """A bound on |p - q.b| for a product p of unit rows q, b (norms within
    ``norm_tolerance`` of 1) computed from inputs rounded to ``precision`` with fp32
    accumulation and the result rounded to ``precision``: input rounding (2u + u^2)
    sum |q_i b_i| <= (2u + u^2) |q| |b|, fp16's subnormals (absolute 2^-25 each), the fp32
    sum (d 2^-24 of sum |q_i b_i|) and the output rounding u |p|. 0 for fp32."""
    if precision == "fp32":
        return 0.0
    u = _UNIT_ROUNDOFF[precision]
    scale = (1.0 + norm_tolerance) ** 2 * 1.01
    sub = 2.0 ** -24 * 2.0 * math.sqrt(dim) if precision == "fp16" else 0.0
    return scale * (3.0 * u + u * u + dim * 2.0 ** -24) + sub


@dataclass
class TiledResult:
    indices: np.ndarray  # (rows, k) int64, by falling similarity
    similarities: np.ndarray  # (rows, k) float32, fp32 products
    precision: str  # of the products that chose the candidates
    candidates: int  # kept per query before the fp32 re-score (k where fp32)
    rescued: int  # rows searched again in fp32 (the candidates' check failed)
    query_block: int
    tile: int
    group: int

    def record(self) -> dict:
        """For the knn file's params."""
        return {"backend": "torch", "precision": self.precision, "candidates": self.candidates,
                "rescued_rows": self.rescued, "query_block": self.query_block,
                "tile": self.tile, "group": self.group}


@contextlib.contextmanager
def _full_fp32_sums(torch):
    """fp32 products in fp32 (no TF32) and half products summed in fp32 (no reduced
    precision split-K) on CUDA; restored afterwards."""
    m = torch.backends.cuda.matmul
    saved = (m.allow_tf32, m.allow_fp16_reduced_precision_reduction,
             m.allow_bf16_reduced_precision_reduction)
    m.allow_tf32 = False
    m.allow_fp16_reduced_precision_reduction = False
    m.allow_bf16_reduced_precision_reduction = False
    try:
        yield
    finally:
        (m.allow_tf32, m.allow_fp16_reduced_precision_reduction,
         m.allow_bf16_reduced_precision_reduction) = saved


def _top_of_tile(torch, s, c: int, group: int):
    """The c largest values of each row of ``s`` (Q, T) and their columns, unsorted."""
    q, t = s.shape
    if t <= c:
        return s, torch.arange(t, device=s.device).expand(q, t)
    if group <= 1 or t < 4 * c:
        return torch.topk(s, c, dim=1, sorted=False)
    pad = (-t) % group
    if pad:
        s = torch.nn.functional.pad(s, (0, pad), value=-math.inf)
    g = s.view(q, -1, group)
    best_groups = torch.topk(g.amax(dim=2), min(c, g.shape[1]), dim=1, sorted=False).indices
    members = g.gather(1, best_groups.unsqueeze(2).expand(-1, -1, group)).reshape(q, -1)
    vals, pos = torch.topk(members, c, dim=1, sorted=False)
    return vals, best_groups.gather(1, pos // group) * group + pos % group


def _candidates(torch, q, base, c: int, tile: int, group: int):
    """The c best (values, ids) of each query row of ``q`` among ``base``, by products in
    their dtype, over the base's tiles with a running top-c."""
    run_v = run_i = None
    for start in range(0, base.shape[0], tile):
        vals, cols = _top_of_tile(torch, q @ base[start:start + tile].T, c, group)
        ids = cols + start
        if run_v is None:
            run_v, run_i = vals, ids
            continue
        run_v, run_i = torch.cat([run_v, vals], 1), torch.cat([run_i, ids], 1)
        if run_v.shape[1] > c:
            run_v, pos = torch.topk(run_v, c, dim=1, sorted=False)
            run_i = run_i.gather(1, pos)
    return run_v, run_i


def _best_k(torch, sims, ids, k: int):
    """The k best of each row by falling similarity, ties by rising id."""
    by_id = torch.argsort(ids, dim=1)
    ids, sims = ids.gather(1, by_id), sims.gather(1, by_id)
    order = torch.sort(sims, dim=1, descending=True, stable=True).indices[:, :k]
    return ids.gather(1, order), sims.gather(1, order)


class TiledSearch:
    """The base on the device, searched a block of queries at a time."""

    def __init__(self, base: np.ndarray, k: int, *, device, precision: str = "auto",
                 query_block: int | None = None, tile: int | None = None,
                 group: int | None = None):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.k = int(k)
        self.precision = resolve_precision(precision, self.device.type)
        default_block, default_tile, default_group = BLOCKS[
            "cuda" if self.device.type == "cuda" else "cpu"]
        self.query_block = int(query_block or default_block)
        self.tile = int(tile or default_tile)
        self.group = int(group or default_group)
        self.n, self.dim = base.shape
        base = np.ascontiguousarray(base, dtype=np.float32)
        self.base32 = torch.from_numpy(base).to(self.device)  # no copy on the CPU
        self.low = None
        if self.precision != "fp32":
            dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
            self.low = self.base32.to(dtype)
        self.c = min(self.n, self.k + (margin(self.k) if self.low is not None else 0))
        self.error = product_error(self.precision, self.dim)
        self.rescued = 0

    def search(self, queries: np.ndarray, progress=None) -> TiledResult:
        """The k nearest base rows of every query row."""
        nq = queries.shape[0]
        indices = np.empty((nq, self.k), np.int64)
        sims = np.empty((nq, self.k), np.float32)
        torch = self.torch
        with torch.inference_mode(), _full_fp32_sums(torch):
            for start in range(0, nq, self.query_block):
                stop = min(nq, start + self.query_block)
                q32 = torch.from_numpy(np.ascontiguousarray(queries[start:stop],
                                                            dtype=np.float32)).to(self.device)
                ids, vals = self._block(q32)
                indices[start:stop] = ids.cpu().numpy()
                sims[start:stop] = vals.cpu().numpy()
                if progress is not None:
                    progress.update(stop - start)
        return TiledResult(indices, sims, self.precision, self.c, self.rescued,
                           self.query_block, self.tile, self.group)

    def _block(self, q32):
        torch = self.torch
        if self.low is None:
            vals, ids = _candidates(torch, q32, self.base32, self.c, self.tile, self.group)
            return _best_k(torch, vals, ids, self.k)
        approx, ids = _candidates(torch, q32.to(self.low.dtype), self.low, self.c, self.tile,
                                  self.group)
        # the fp32 re-score of the candidates
        exact = torch.bmm(self.base32[ids], q32.unsqueeze(2)).squeeze(2)
        ids, vals = _best_k(torch, exact, ids, self.k)
        if self.c < self.n:  # else every point was a candidate
            bound = approx.float().amin(dim=1) + self.error
            unsure = torch.nonzero(vals[:, -1] <= bound).squeeze(1)
            if unsure.numel():
                self.rescued += int(unsure.numel())
                v32, i32 = _candidates(torch, q32[unsure], self.base32, self.k, self.tile,
                                       self.group)
                ids[unsure], vals[unsure] = _best_k(torch, v32, i32, self.k)
        return ids, vals


def tiled_knn(base: np.ndarray, k: int, *, queries: np.ndarray | None = None, device="cpu",
              precision: str = "auto", query_block: int | None = None, tile: int | None = None,
              group: int | None = None, progress=None) -> TiledResult:
    """The k nearest neighbours by cosine of each query (default: each base row) among
    ``base``, rows by falling similarity (the centre is not put first here)."""
    searcher = TiledSearch(base, k, device=device, precision=precision,
                           query_block=query_block, tile=tile, group=group)
    return searcher.search(base if queries is None else queries, progress)
