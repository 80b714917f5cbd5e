"""Links -> clusters: the decoders of cf-merge.

Output is ``labels`` (N,) int64, clusters numbered 0..C-1 in order of their smallest
member, -1 = unassigned. No function here looks at ground truth.

Decoders (each takes one threshold t; an edge i -> j is *kept* when p_ij >= t):

- ``components``  connected components (weak) of the kept edges. With ``max_size``, any
                  component larger than it has its own threshold raised by ``size_step``
                  and is split again, repeatedly, until every component fits (or its
                  threshold passes every weight, leaving singletons).
- ``peaks``       GCN-V style. Confidence of point i over its neighbours N_i (valid, not
                  itself): c_i = (1/|N_i|) sum_j s_ij, s_ij = p_ij if p_ij >= t else -p_ij
                  (the sign says whether j is predicted to share i's identity, the weight
                  how strongly). Each point links to its most probable neighbour j with
                  c_j >= c_i, when p_ij >= t; clusters are the components of these links
                  (a point with no such neighbour is a peak, the root of its cluster).
                  Ties c_j == c_i are allowed, so equally confident points may merge and
                  the result does not depend on the order of the points; ``tolerance``
                  (calibrated, "peaks_tolerance") widens the tie to c_j >= c_i - tol.
- ``intimacy``    STAR-FC style pruning. N(i) = {i} plus i's kept neighbours. The node
                  intimacy of a kept edge is |N(i) & N(j)| / max(|N(i)|, |N(j)|), the
                  share of neighbours the two have in common; kept edges of intimacy below
                  ``ratio`` are cut (they are the bridges between clusters: two points of
                  one identity see the same crowd), then connected components.
- ``infomap``     Infomap (two-level, directed) on the kept edges weighted by p_ij; a
                  point with no kept edge is a singleton. Infomap's search is seeded but
                  may depend on the order of the points where the optimum is not clear.
"""

from __future__ import annotations

import warnings

import numpy as np

from ...formats.links import check_links
from .graph import Graph, components, relabel, threshold_graph, union_find
from .propagation import decode_propagation
from .weights import BLOCK_ROWS, row_ranges, valid_links

DECODERS = ("peaks", "intimacy", "infomap", "components", "propagation")
DEFAULT_INTIMACY_RATIO = 0.5
DEFAULT_SIZE_STEP = 0.01
INFOMAP_CHUNK = 1 << 22  # links handed to Infomap per call


def decode_components(indices, probabilities, threshold: float, *, max_size: int | None = None,
                      size_step: float = DEFAULT_SIZE_STEP) -> np.ndarray:
    graph = threshold_graph(indices, probabilities, threshold)
    labels = components(graph)
    if not max_size:
        return labels
    if max_size < 1:
        raise ValueError("max_size must be at least 1")
    n = graph.n
    src, dst, w = graph.src(), graph.dst, graph.weight
    node_t = np.full(n, np.float32(threshold), dtype=np.float32)  # threshold of each node's component
    next_label = int(labels.max()) + 1 if n else 0
    for _ in range(100000):
        sizes = np.bincount(labels, minlength=next_label)
        over = sizes[labels] > max_size  # nodes in oversized components
        if not over.any():
            break
        # raise the threshold of every oversized component; only its inner edges remain in play
        node_t[over] += np.float32(size_step)
        inner = over[src] & (labels[src] == labels[dst])
        src, dst, w = src[inner], dst[inner], w[inner]
        keep = w >= node_t[src]
        src, dst, w = src[keep], dst[keep], w[keep]
        roots = union_find(n, src, dst)
        # nodes of oversized components get new labels from their new roots
        sub = np.flatnonzero(over)
        uniq, inv = np.unique(roots[sub], return_inverse=True)
        labels[sub] = next_label + inv
        next_label += uniq.size
    return relabel(labels)


def confidence(indices, probabilities, threshold: float, block_rows: int = BLOCK_ROWS
               ) -> np.ndarray:
    """GCN-V style confidence c_i = (1/|N_i|) sum_j (p_ij if p_ij >= t else -p_ij) (0 if N_i is empty)."""
    n = indices.shape[0]
    t = np.float32(threshold)
    conf = np.zeros(n, dtype=np.float64)
    for start, stop in row_ranges(n, block_rows):
        idx = indices[start:stop]
        p = probabilities[start:stop].astype(np.float64)
        valid = valid_links(idx, start)
        signed = np.where(p >= t, p, -p)
        count = valid.sum(axis=1)
        total = np.where(valid, signed, 0.0).sum(axis=1)
        conf[start:stop] = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return conf


def decode_peaks(indices, probabilities, threshold: float, tolerance: float = 0.0,
                 block_rows: int = BLOCK_ROWS) -> np.ndarray:
    """Peaks decoding; a neighbour counts as "at least as confident" when
    c_j >= c_i - tolerance. Model probabilities saturate near 1, so inside a large
    identity many confidences are equal up to rounding and a strict comparison leaves
    spurious local peaks that split it; a small tolerance (calibrated) joins them."""
    n = indices.shape[0]
    t = np.float32(threshold)
    conf = confidence(indices, probabilities, threshold, block_rows)
    src_parts, dst_parts = [], []
    for start, stop in row_ranges(n, block_rows):
        idx = indices[start:stop]
        p = probabilities[start:stop]
        valid = valid_links(idx, start)
        safe = np.where(valid, idx, 0)
        cand = valid & (conf[safe] >= conf[start:stop, None] - tolerance)
        masked = np.where(cand, p, -np.inf)
        best = masked.max(axis=1, keepdims=True)
        # join every neighbour tying for the most probable: picking the first of equals
        # lets pairs choose each other (0<->1, 2<->3) and split an identity
        join = cand & (masked == best) & (best >= t)
        r, c = np.nonzero(join)
        src_parts.append((r + start).astype(np.int64))
        dst_parts.append(idx[r, c].astype(np.int64))
    src = np.concatenate(src_parts) if src_parts else np.zeros(0, np.int64)
    dst = np.concatenate(dst_parts) if dst_parts else np.zeros(0, np.int64)
    return relabel(union_find(n, src, dst))


def intimacy(graph: Graph, block_rows: int = 1 << 15) -> np.ndarray:
    """Node intimacy of every edge of ``graph``: |N(i) & N(j)| / max(|N(i)|, |N(j)|) with
    N(i) = {i} + out-neighbours of i. Computed by sparse products of row blocks of A
    (A = adjacency + identity) with A^T, so memory stays bounded."""
    import scipy.sparse as sp

    n = graph.n
    a = (graph.csr(np.ones(graph.n_edges, dtype=np.float32))
         + sp.identity(n, dtype=np.float32, format="csr")).tocsr()
    at = a.T.tocsr()
    size = np.diff(a.indptr).astype(np.float32)  # |N(i)|
    out = np.empty(graph.n_edges, dtype=np.float32)
    src = graph.src()
    for start, stop in row_ranges(n, block_rows):
        e0, e1 = graph.indptr[start], graph.indptr[stop]
        if e0 == e1:
            continue
        common = (a[start:stop] @ at).tocsr()
        rows = src[e0:e1] - start
        cols = graph.dst[e0:e1]
        inter = np.asarray(common[rows, cols]).ravel().astype(np.float32)
        out[e0:e1] = inter / np.maximum(size[src[e0:e1]], size[cols])
    return out


def decode_intimacy(indices, probabilities, threshold: float,
                    ratio: float = DEFAULT_INTIMACY_RATIO) -> np.ndarray:
    graph = threshold_graph(indices, probabilities, threshold)
    if graph.n_edges:
        graph = graph.select(intimacy(graph) >= np.float32(ratio))
    return components(graph)


def decode_infomap(indices, probabilities, threshold: float, *, seed: int = 0,
                   trials: int = 1) -> np.ndarray:
    import infomap

    graph = threshold_graph(indices, probabilities, threshold)
    n = graph.n
    labels = np.arange(n, dtype=np.int64)  # points Infomap never sees stay singletons
    if graph.n_edges == 0:
        return labels
    # Infomap seeds start at 1
    im = infomap.Infomap(two_level=True, directed=True, silent=True, seed=int(seed) + 1,
                         num_trials=int(trials))
    # bulk-add from arrays, a chunk at a time (float32 holds ids exactly below 2^24)
    dtype = np.float32 if n < 2**24 else np.float64
    src = graph.src()
    for a in range(0, graph.n_edges, INFOMAP_CHUNK):
        b = min(graph.n_edges, a + INFOMAP_CHUNK)
        links = np.empty((b - a, 3), dtype=dtype)
        links[:, 0] = src[a:b]
        links[:, 1] = graph.dst[a:b]
        # Infomap needs positive weights; cosine links thresholded below 0 could have others
        links[:, 2] = np.maximum(graph.weight[a:b], 1e-6)
        im.add_links(links)
    del src, graph
    im.run()
    # get_modules() returns a plain dict; the newer result.modules() walks a SWIG iterator
    # that faiss's SWIG runtime (same process) hijacks, which crashes the interpreter
    with warnings.catch_warnings():  # deprecated for the crashing path above; kept < 3.0
        warnings.simplefilter("ignore")
        modules = im.get_modules()
    nodes = np.fromiter(modules.keys(), dtype=np.int64, count=len(modules))
    mods = np.fromiter(modules.values(), dtype=np.int64, count=len(modules))
    labels[nodes] = n + mods  # module ids are disjoint from the singleton ids
    return relabel(labels)


def decode(method: str, indices, probabilities, threshold: float, *,
           max_size: int | None = None, size_step: float = DEFAULT_SIZE_STEP,
           intimacy_ratio: float = DEFAULT_INTIMACY_RATIO, peaks_tolerance: float = 0.0,
           seed: int = 0) -> np.ndarray:
    """Cluster labels of links by ``method`` (one of DECODERS) at ``threshold``."""
    check_links(indices, probabilities)
    if method == "components":
        return decode_components(indices, probabilities, threshold, max_size=max_size,
                                 size_step=size_step)
    if method == "peaks":
        return decode_peaks(indices, probabilities, threshold, peaks_tolerance)
    if method == "intimacy":
        return decode_intimacy(indices, probabilities, threshold, intimacy_ratio)
    if method == "infomap":
        return decode_infomap(indices, probabilities, threshold, seed=seed)
    if method == "propagation":
        return decode_propagation(indices, probabilities, threshold, seed=seed)
    raise ValueError(f"unknown decoder {method!r}; choose from {', '.join(DECODERS)}")
