"""Graphs of kept links (CSR, int32 targets and float32 weights: 8 bytes a kept edge),
their connected components, and the union-find every component search in cftools uses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .weights import BLOCK_ROWS, row_ranges, valid_links


@dataclass
class Graph:
    """Directed graph on n nodes in CSR form: edges of row i are dst[indptr[i]:indptr[i+1]]."""

    n: int
    indptr: np.ndarray  # (n+1,) int64
    dst: np.ndarray  # (E,) int32
    weight: np.ndarray  # (E,) float32

    @property
    def n_edges(self) -> int:
        return int(self.dst.shape[0])

    def src(self) -> np.ndarray:
        return np.repeat(np.arange(self.n, dtype=np.int32), np.diff(self.indptr))

    def out_degree(self) -> np.ndarray:
        return np.diff(self.indptr)

    def select(self, keep: np.ndarray) -> Graph:
        """The subgraph of the edges where ``keep`` (E,) is True."""
        counts = np.bincount(self.src()[keep], minlength=self.n)
        indptr = np.zeros(self.n + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return Graph(self.n, indptr, self.dst[keep], self.weight[keep])

    def csr(self, data=None):
        import scipy.sparse as sp

        if data is None:
            data = np.ones(self.n_edges, dtype=np.float32)
        return sp.csr_matrix((data, self.dst, self.indptr), shape=(self.n, self.n))


def threshold_graph(indices: np.ndarray, probabilities: np.ndarray, threshold: float,
                    block_rows: int = BLOCK_ROWS) -> Graph:
    """The kept edges i -> j (valid, j != i, p_ij >= threshold), in row order."""
    n = indices.shape[0]
    t = np.float32(threshold)
    counts = np.empty(n, dtype=np.int64)
    dst_parts, w_parts = [], []
    for start, stop in row_ranges(n, block_rows):
        idx = indices[start:stop]
        p = probabilities[start:stop]
        keep = valid_links(idx, start) & (p >= t)
        counts[start:stop] = keep.sum(axis=1)
        dst_parts.append(idx[keep].astype(np.int32))
        w_parts.append(p[keep].astype(np.float32, copy=False))
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    dst = np.concatenate(dst_parts) if dst_parts else np.zeros(0, np.int32)
    weight = np.concatenate(w_parts) if w_parts else np.zeros(0, np.float32)
    return Graph(n, indptr, dst, weight)


def union_find(n: int, src: np.ndarray, dst: np.ndarray,
               parent: np.ndarray | None = None) -> np.ndarray:
    """Root of every node's weakly connected component (the smallest node id in it).

    Vectorised union-find: each round hooks the larger root of every edge onto the smaller
    (np.minimum.at), compresses paths by pointer jumping until every node points at a
    root, and drops the edges now inside one component; rounds shrink the edge list fast.
    Ids are int32 below 2^31 nodes: about 20 bytes of temporaries per edge at the peak.
    ``parent``: the result of an earlier call, to go on joining more edges to it (edges
    that arrive in batches, or one at a time where the order of the unions matters)."""
    dtype = np.int32 if n < 2**31 - 1 else np.int64
    parent = np.arange(n, dtype=dtype) if parent is None else parent.astype(dtype)
    a = np.asarray(src, dtype=dtype)
    b = np.asarray(dst, dtype=dtype)
    while a.size:
        ra = parent[a]
        rb = parent[b]
        cross = ra != rb
        if not cross.all():
            a, b, ra, rb = a[cross], b[cross], ra[cross], rb[cross]
        del cross
        if not a.size:
            break
        lo = np.minimum(ra, rb)
        hi = np.maximum(ra, rb, out=ra)
        del rb
        np.minimum.at(parent, hi, lo)
        del lo, hi, ra
        while True:  # pointer jumping: parent <- parent[parent] until stable
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    return parent.astype(np.int64, copy=False)


def relabel(roots: np.ndarray) -> np.ndarray:
    """Consecutive cluster ids 0..C-1 in order of each cluster's smallest member; -1 stays."""
    roots = np.asarray(roots, dtype=np.int64)
    out = np.full(roots.shape[0], -1, dtype=np.int64)
    assigned = roots >= 0
    if not assigned.any():
        return out
    r = roots[assigned]
    # first appearance of each root, in row order
    uniq, first, inv = np.unique(r, return_index=True, return_inverse=True)
    rank = np.empty(uniq.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(uniq.size)
    out[assigned] = rank[inv]
    return out


def components(graph: Graph) -> np.ndarray:
    """Weakly connected components of a graph as consecutive labels."""
    return relabel(union_find(graph.n, graph.src(), graph.dst))
