"""Links -> clusters: the decoders of cf-merge, the singleton policy and threshold calibration.

Input everywhere is a links pair, row i describing point i:

- ``indices``       (N, k) int64 neighbour ids; -1 = no neighbour; j == i (the centre,
                    normally at position 0) is ignored wherever it appears;
- ``probabilities`` (N, k) float32 p_ij, the probability that neighbour j shares i's
                    identity (for cosine links: the raw cosine similarity).

Output is ``labels`` (N,) int64, clusters numbered 0..C-1 in order of their smallest
member, -1 = unassigned. No function here looks at ground truth, except the calibration,
which must only ever be given *labelled* links (never those of the set being clustered).

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

Memory is linear in the number of edges: rows are streamed in blocks into a CSR graph
of int32 targets and float32 weights (8 bytes a kept edge), and connected components
use a vectorised union-find (hooking + pointer jumping) over int32 edge arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import warnings

import numpy as np

DECODERS = ("peaks", "intimacy", "infomap", "components")
SINGLETON_POLICIES = ("keep", "unassign", "attach")
DEFAULT_INTIMACY_RATIO = 0.5
DEFAULT_SIZE_STEP = 0.01
PEAKS_TOLERANCES = (0.0, 0.003, 0.01, 0.03)  # calibration grid of the peaks tie tolerance
INTIMACY_RATIOS = (0.2, 0.35, 0.5, 0.65, 0.8)  # calibration grid of the intimacy ratio
INFOMAP_CHUNK = 1 << 22  # links handed to Infomap per call
BLOCK_ROWS = 1 << 17  # rows per streamed block (64 links: ~8 MiB of indices)


# --------------------------------------------------------------------------- validation


def check_links(indices: np.ndarray, probabilities: np.ndarray) -> None:
    """Raise ValueError unless the pair is a well-formed links array."""
    if indices.ndim != 2 or probabilities.shape != indices.shape:
        raise ValueError(f"indices {indices.shape} and probabilities {probabilities.shape} "
                         "must be 2-D arrays of the same shape")
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices must be integers, got {indices.dtype}")
    n = indices.shape[0]
    if indices.size:
        lo, hi = int(indices.min()), int(indices.max())
        if lo < -1 or hi >= n:
            raise ValueError(f"neighbour ids must lie in [0, {n}) or be -1, found {lo}..{hi}")


def _blocks(n: int, block_rows: int = BLOCK_ROWS):
    for start in range(0, n, block_rows):
        yield start, min(n, start + block_rows)


def _valid(idx_block: np.ndarray, start: int) -> np.ndarray:
    """Neighbours that exist and are not the row's own point."""
    rows = np.arange(start, start + idx_block.shape[0])[:, None]
    return (idx_block >= 0) & (idx_block != rows)


# --------------------------------------------------------------------------- link modes

LINK_MODES = ("reciprocal", "directed")


def reciprocal(indices: np.ndarray, probabilities: np.ndarray,
               block_rows: int = BLOCK_ROWS) -> np.ndarray:
    """Symmetric link weights: w_ij = (p_ij + p_ji) / 2, with p_ji = 0 when i is not among
    j's links. A link counts as much as both ends agree on it: a stray point that ranks a
    crowd's members highly, while none of them ranks it back, keeps only half its weight.
    (CelebA standard split, links of one trained model: Infomap's pairwise F 94.3 -> 96.3;
    every decoder gained 1-3 points.)

    Invalid entries (-1) and self links keep their value. Memory is linear in the links:
    every row's ids are sorted once (int32/int64 + float32 copies of the arrays), then
    each p_ji is found by a vectorised binary search in row j (log2(k) gathers)."""
    check_links(indices, probabilities)
    n, k = indices.shape
    out = np.array(probabilities, dtype=np.float32, copy=True)
    if n == 0 or k == 0:
        return out
    width = 1 << int(np.ceil(np.log2(k)))  # rows padded to a power of two for the search
    id_dtype = np.int32 if n < 2**31 - 1 else np.int64
    sorted_ids = np.full((n, width), n, dtype=id_dtype)  # padding n: above every id
    sorted_p = np.zeros((n, width), dtype=np.float32)
    for start, stop in _blocks(n, block_rows):
        idx = indices[start:stop]
        ids = np.where(_valid(idx, start), idx, n)  # invalid ids sort last, never match
        order = np.argsort(ids, axis=1, kind="stable")
        sorted_ids[start:stop, :k] = np.take_along_axis(ids, order, axis=1)
        sorted_p[start:stop, :k] = np.take_along_axis(
            np.asarray(probabilities[start:stop], dtype=np.float32), order, axis=1)
    flat_ids, flat_p = sorted_ids.ravel(), sorted_p.ravel()
    pos_dtype = np.int32 if n * width < 2**31 - 1 else np.int64
    # small query blocks: the log2(width) gathers of a block hit row j while it is cached
    search_rows = max(1, (1 << 14) // k)
    for start, stop in _blocks(n, search_rows):
        idx = indices[start:stop]
        valid = _valid(idx, start)
        base = idx[valid].astype(pos_dtype) * pos_dtype(width)  # start of row j
        i = np.broadcast_to(np.arange(start, stop, dtype=id_dtype)[:, None], idx.shape)[valid]
        below = np.zeros(base.size, pos_dtype)  # lower bound of i in row j
        step = width >> 1
        while step:
            cand = below + pos_dtype(step)
            below = np.where(flat_ids[base + cand - 1] < i, cand, below)
            step >>= 1
        pos = base + below
        back = np.where(flat_ids[pos] == i, flat_p[pos], np.float32(0))
        block = out[start:stop]
        block[valid] = (block[valid] + back) * np.float32(0.5)
    return out


def link_weights(indices, probabilities, mode: str) -> np.ndarray:
    """The weights the decoders read under ``mode`` (one of LINK_MODES)."""
    if mode == "reciprocal":
        return reciprocal(indices, probabilities)
    if mode == "directed":
        return probabilities
    raise ValueError(f"unknown link mode {mode!r}; choose from {', '.join(LINK_MODES)}")


def threshold_key(name: str, mode: str = "reciprocal") -> str:
    """Key of a calibrated value in a thresholds dict: reciprocal values under their plain
    name ("infomap", "intimacy_ratio"), directed ones prefixed ("directed_infomap")."""
    return name if mode == "reciprocal" else f"{mode}_{name}"


# --------------------------------------------------------------------------- graphs


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

    def select(self, keep: np.ndarray) -> "Graph":
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
    for start, stop in _blocks(n, block_rows):
        idx = indices[start:stop]
        p = probabilities[start:stop]
        keep = _valid(idx, start) & (p >= t)
        counts[start:stop] = keep.sum(axis=1)
        dst_parts.append(idx[keep].astype(np.int32))
        w_parts.append(p[keep].astype(np.float32, copy=False))
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    dst = np.concatenate(dst_parts) if dst_parts else np.zeros(0, np.int32)
    weight = np.concatenate(w_parts) if w_parts else np.zeros(0, np.float32)
    return Graph(n, indptr, dst, weight)


def union_find(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Root of every node's weakly connected component (the smallest node id in it).

    Vectorised union-find: each round hooks the larger root of every edge onto the smaller
    (np.minimum.at), compresses paths by pointer jumping until every node points at a
    root, and drops the edges now inside one component; rounds shrink the edge list fast.
    Ids are int32 below 2^31 nodes: about 20 bytes of temporaries per edge at the peak."""
    dtype = np.int32 if n < 2**31 - 1 else np.int64
    parent = np.arange(n, dtype=dtype)
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


# --------------------------------------------------------------------------- decoders


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
    for start, stop in _blocks(n, block_rows):
        idx = indices[start:stop]
        p = probabilities[start:stop].astype(np.float64)
        valid = _valid(idx, start)
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
    for start, stop in _blocks(n, block_rows):
        idx = indices[start:stop]
        p = probabilities[start:stop]
        valid = _valid(idx, start)
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
    for start, stop in _blocks(n, block_rows):
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
    raise ValueError(f"unknown decoder {method!r}; choose from {', '.join(DECODERS)}")


# --------------------------------------------------------------------------- singletons


def apply_singletons(labels: np.ndarray, indices, probabilities, policy: str = "keep",
                     attach_threshold: float | None = None) -> tuple[np.ndarray, dict]:
    """Apply the singleton policy to decoded labels; returns (labels, counts).

    - keep:     every singleton stays a cluster of its own;
    - unassign: singletons get -1;
    - attach:   a singleton joins the cluster of its most probable neighbour that lies in
                a cluster of 2 or more (as decoded, before any attaching) if that link's
                probability is >= attach_threshold; the others stay singletons.
    counts: singletons (found), attached, unassigned, kept (singletons left as such)."""
    if policy not in SINGLETON_POLICIES:
        raise ValueError(f"unknown singleton policy {policy!r}")
    labels = np.asarray(labels, dtype=np.int64).copy()
    n = labels.shape[0]
    assigned = labels >= 0
    sizes = np.bincount(labels[assigned]) if assigned.any() else np.zeros(0, np.int64)
    single = assigned.copy()
    single[assigned] = sizes[labels[assigned]] == 1
    counts = {"singletons": int(single.sum()), "attached": 0, "unassigned": 0, "kept": 0}
    rows = np.flatnonzero(single)
    if policy == "attach" and rows.size:
        if attach_threshold is None:
            raise ValueError("the attach policy needs an attach threshold")
        idx = indices[rows]
        p = probabilities[rows]
        valid = (idx >= 0) & (idx != rows[:, None])
        safe = np.where(valid, idx, 0)
        target_lab = labels[safe]
        in_big = valid & (target_lab >= 0)
        in_big[in_big] = sizes[target_lab[in_big]] >= 2
        masked = np.where(in_big, p, -np.inf)
        best = masked.argmax(axis=1)
        r = np.arange(rows.size)
        ok = masked[r, best] >= np.float32(attach_threshold)
        labels[rows[ok]] = target_lab[r[ok], best[ok]]
        counts["attached"] = int(ok.sum())
        counts["kept"] = int(rows.size - ok.sum())
    elif policy == "unassign":
        labels[rows] = -1
        counts["unassigned"] = int(rows.size)
    else:
        counts["kept"] = int(rows.size)
    counts["unassigned_total"] = int((labels < 0).sum()) if n else 0
    return relabel(labels), counts


def cluster_summary(labels: np.ndarray) -> dict:
    """Counts a user wants to see after decoding."""
    assigned = labels >= 0
    sizes = np.bincount(labels[assigned]) if assigned.any() else np.zeros(0, np.int64)
    sizes = sizes[sizes > 0]
    return {
        "n_points": int(labels.shape[0]),
        "n_clusters": int(sizes.size),
        "n_singletons": int((sizes == 1).sum()),
        "n_unassigned": int((~assigned).sum()),
        "largest": int(sizes.max()) if sizes.size else 0,
        "clustered_points": int(sizes[sizes >= 2].sum()),
    }


# --------------------------------------------------------------------------- calibration


CALIBRATION_CAP = 30  # identities weigh as if they had at most this many points


def _pairwise_f(pred: np.ndarray, truth: np.ndarray) -> float:
    """The calibration objective: pairwise F with identities capped at CALIBRATION_CAP
    points (metrics.capped_pairwise_f), so that one giant identity of D_L cannot decide
    the thresholds alone. Equal to pairwise F where no identity is larger."""
    from .metrics import capped_pairwise_f

    return capped_pairwise_f(pred, truth, CALIBRATION_CAP)


def link_threshold(indices, probabilities, labels) -> float:
    """The threshold maximising the F1 of the links as a same-identity classifier
    (over valid, non-self links whose two ends have known labels)."""
    labels = np.asarray(labels)
    n = indices.shape[0]
    rows = np.broadcast_to(np.arange(n)[:, None], indices.shape)
    valid = (indices >= 0) & (indices != rows)
    i, j = rows[valid], indices[valid]
    known = (labels[i] >= 0) & (labels[j] >= 0)
    p = probabilities[valid][known]
    same = (labels[i] == labels[j])[known]
    if not same.any() or p.size == 0:
        return float(np.median(p)) if p.size else 0.5
    order = np.argsort(-p, kind="stable")
    p, same = p[order], same[order]
    tp = np.cumsum(same)
    claimed = np.arange(1, p.size + 1)
    f1 = 2 * tp / (claimed + same.sum())
    # cut only between distinct values: the threshold p[c] keeps everything >= p[c]
    last = np.r_[p[1:] != p[:-1], True]
    best = int(np.flatnonzero(last)[np.argmax(f1[last])])
    return float(p[best])


def _grid_search(score, candidates: np.ndarray, fine: int) -> tuple[float, float]:
    """Best of a coarse grid, then of a fine grid between the coarse neighbours of the best.

    The coarse grid is scanned from the highest threshold down and stops once two
    thresholds in a row score under half the best so far: lower thresholds only merge
    more (and are the slow ones, with the most links)."""
    candidates = np.unique(candidates)[::-1]
    scores = []
    for t in candidates:
        scores.append(score(float(t)))
        best_so_far = max(scores)
        if len(scores) >= 3 and best_so_far > 0 and max(scores[-2:]) < 0.5 * best_so_far:
            break
    scores = np.array(scores)
    b = int(np.argmax(scores))
    lo = candidates[min(b + 1, len(candidates) - 1)]
    hi = candidates[max(b - 1, 0)]
    best_t, best_s = float(candidates[b]), float(scores[b])
    if fine and hi > lo:
        for t in np.linspace(lo, hi, fine + 2)[1:-1]:
            s = score(float(t))
            if s > best_s:
                best_t, best_s = float(t), s
    return best_t, best_s


def calibrate_thresholds(indices, probabilities, labels, decoders=DECODERS, *, coarse: int = 16,
                         fine: int = 6, seed: int = 0, return_scores: bool = False) -> dict:
    """Thresholds for every decoder (and "link"), chosen on LABELLED links.

    Each decoder's threshold maximises the pairwise F of its clusters against ``labels``
    (-1 = unknown, not scored), every identity weighed as if it had at most
    CALIBRATION_CAP points (see _pairwise_f): a coarse grid over quantiles of the link probabilities,
    then a fine grid between the best point's grid neighbours. ``intimacy`` also gets its
    ratio ("intimacy_ratio") from a small grid at its best threshold, ``peaks`` its tie
    tolerance ("peaks_tolerance", from PEAKS_TOLERANCES) jointly with its threshold. "link" is the
    threshold maximising the F1 of the links as a same-identity classifier. Call it on the
    labelled data only (D_L or a validation split of it), never on the set to cluster."""
    check_links(indices, probabilities)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape[0] != indices.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {indices.shape[0]} points")
    if not (labels >= 0).any():
        raise ValueError("calibration needs labels; all are -1")
    out: dict = {"link": link_threshold(indices, probabilities, labels)}
    scores: dict = {}
    n = indices.shape[0]
    valid = (indices >= 0) & (indices != np.arange(n)[:, None])
    values = probabilities[valid]
    if values.size == 0:
        raise ValueError("no links to calibrate on (every row holds only itself)")
    qs = np.linspace(0.0, 1.0, coarse + 1) ** 0.5  # denser towards the high quantiles
    grid = np.r_[np.quantile(values, qs), out["link"]]

    for method in decoders:
        if method == "intimacy":
            t, s = _grid_search(lambda t: _pairwise_f(
                decode_intimacy(indices, probabilities, t, DEFAULT_INTIMACY_RATIO), labels),
                grid, fine)
            ratios = INTIMACY_RATIOS
            rs = [_pairwise_f(decode_intimacy(indices, probabilities, t, r), labels) for r in ratios]
            r = float(ratios[int(np.argmax(rs))])
            if max(rs) > s:  # refine the threshold around t at the chosen ratio
                near = grid[np.argsort(np.abs(grid - t))[:3]]
                t, s = _grid_search(lambda tt: _pairwise_f(
                    decode_intimacy(indices, probabilities, tt, r), labels), np.r_[near, t], fine)
            out["intimacy_ratio"] = r
        elif method == "peaks":
            # the confidence tolerance and the threshold, jointly on a small grid
            best = None
            for tol in PEAKS_TOLERANCES:
                t, s = _grid_search(lambda t: _pairwise_f(
                    decode_peaks(indices, probabilities, t, tol), labels), grid, fine)  # noqa: B023
                if best is None or s > best[2]:
                    best = (tol, t, s)
            tol, t, s = best
            out["peaks_tolerance"] = tol
        else:
            t, s = _grid_search(lambda t: _pairwise_f(
                decode(method, indices, probabilities, t, seed=seed), labels), grid, fine)
        out[method] = t
        scores[method] = s
    if return_scores:
        return out, scores
    return out


def resolve_threshold(method: str, thresholds: dict | None,
                      mode: str = "reciprocal") -> float | None:
    """The calibrated threshold of ``method`` under link ``mode`` from a thresholds dict,
    falling back to "link" (the link classifier's threshold)."""
    if not thresholds:
        return None
    for key in (threshold_key(method, mode), "link"):
        value = thresholds.get(key)
        if isinstance(value, (int, float)) and np.isfinite(value):
            return float(value)
    return None
