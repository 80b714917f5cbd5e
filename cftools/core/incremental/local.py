"""Decoding only where new points reach, and mapping the result onto existing ids.

The graph decoded is local: the new points and, as one node each, the old clusters they
have kept links to (the links of its members summed; every node keeps its L-1 strongest
out-links). Its size grows with the new points and the clusters they touch, never with
the old points' own neighbourhoods. Then, phase by phase:

1. merge evidence: the distinct members of each old cluster that new links reach, through
   a new point with kept links into both, both in the new point's local cluster (or
   old-old links kept now that were not before); a merge needs ``merge_links`` members
   and MERGE_SHARE of each cluster on *both* sides: one stray member (an image of B
   decoded into A) that new images of B link to is no evidence that A and B are one;
2. merges, most evidence first; the larger cluster (then the smaller id) keeps its id;
3. a new point joins the old cluster it holds the most kept link weight to within its
   local cluster; else the largest old cluster of its local cluster; else a new cluster
   with an id above the largest;
4. new singletons follow the old file's singleton policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..decoding.decoders import decode
from ..decoding.graph import relabel, union_find
from ..decoding.singletons import settle_singletons
from .links import edge_weights
from .point_rules import intimacy_kept, peaks_edges

# a merge of two old clusters needs new links to reach, on each side, merge_links members
# and this share of the cluster: new images of look-alikes can reach a few members of each
# of two clusters of different people (bench/results/code-choices.md)
MERGE_SHARE = 0.75


@dataclass
class LocalClusters:
    """The decoded local graph: kept links touching new points and the local clusters."""

    src: np.ndarray  # kept links (point ids), each touching a new point
    dst: np.ndarray
    w: np.ndarray
    keys: np.ndarray  # old cluster ids touched (an unassigned old point p: -(p + 1))
    local: np.ndarray  # local cluster of each node: new points, then one per key
    n_nodes: int
    n_edges: int

    @property
    def super_module(self) -> np.ndarray:
        """Local cluster of each old cluster node."""
        return self.local[self.local.size - self.keys.size:]


def decode_local(indices, probs, old_indices, old_probs, old_labels, rows, n0, *, decoder,
                 threshold, mode, intimacy_ratio, peaks_tolerance, max_size, size_step,
                 singletons, attach_threshold, merge_links, seed, next_id=None):
    """(labels of old + new, merges [(kept, merged, members reached)], counts); new
    clusters take ids from ``next_id`` (default: above the largest old id)."""
    n, length = indices.shape
    relinked = rows[rows < n0]
    src, dst, w = kept_links(indices, probs, relinked, n0, threshold, mode)
    rules = None
    if decoder == "peaks":  # its rule reads whole rows: see point_rules
        rules = peaks_edges(indices, probs, relinked, n0, threshold=threshold,
                            tolerance=peaks_tolerance, mode=mode)
    elif decoder == "intimacy":  # links cut as bridges are no evidence either
        keep = intimacy_kept(indices, probs, src, dst, threshold=threshold,
                             ratio=intimacy_ratio, mode=mode)
        src, dst, w = src[keep], dst[keep], w[keep]
        rules = (src, dst)
    lc = _decode_nodes(src, dst, w, old_labels, n0, n, length, decoder=decoder,
                       threshold=threshold, max_size=max_size, size_step=size_step,
                       intimacy_ratio=intimacy_ratio, peaks_tolerance=peaks_tolerance, seed=seed,
                       rules=rules)
    pairs = _new_point_pairs(lc, old_labels, n0)
    sides = _sides_through_new_points(pairs)
    _add_old_old_sides(sides, lc, indices, probs, old_indices, old_probs, old_labels, relinked,
                       n0, threshold, mode)
    old_sizes = np.bincount(old_labels[old_labels >= 0]) if (old_labels >= 0).any() \
        else np.zeros(0, np.int64)
    merges, kept_id = _merge(sides, old_sizes, merge_links)
    labels, joined, fresh = _assign(lc, pairs, old_labels, old_sizes, merges, kept_id, n0, n,
                                    next_id)
    # new singletons under the old file's policy
    new_rows = np.arange(n0, n)
    sizes = np.bincount(labels[labels >= 0])
    single = new_rows[(labels[n0:] >= 0) & (sizes[np.maximum(labels[n0:], 0)] == 1)]
    attached = 0
    if singletons in ("unassign", "attach") and single.size and (
            singletons == "unassign" or attach_threshold is not None):
        ids = indices[single]
        valid = (ids >= 0) & (ids != single[:, None])
        weights = np.zeros(ids.shape, np.float32)
        weights[valid] = edge_weights(indices, probs, np.broadcast_to(single[:, None],
                                                                      ids.shape)[valid],
                                      ids[valid], mode)
        attached = settle_singletons(labels, single, ids, weights, singletons,
                                     attach_threshold)["attached"]
    counts = {"joined_existing": int(joined), "new_clusters": int(len(fresh)),
              "in_new_clusters": int(n - n0 - joined), "new_singletons": int(single.size),
              "attached": int(attached), "merges": len(merges), "local_nodes": int(lc.n_nodes),
              "local_edges": int(lc.n_edges)}
    return labels, merges, counts


def kept_links(indices, probs, relinked, n0, threshold, mode):
    """Every kept link touching a new point: the new rows' own, and the relinked old rows'
    links to new points, weighed under ``mode``."""
    n, length = indices.shape
    new_ids = np.arange(n0, n)
    src_a = np.repeat(new_ids, length)
    dst_a = indices[n0:].ravel()
    ok = (dst_a >= 0) & (dst_a != src_a)
    src_a, dst_a = src_a[ok], dst_a[ok]
    if relinked.size:
        r_idx = indices[relinked]
        hit = r_idx >= n0
        src_b = np.repeat(relinked, length)[hit.ravel()]
        dst_b = r_idx[hit]
    else:
        src_b = dst_b = np.zeros(0, np.int64)
    src = np.concatenate([src_a, src_b])
    dst = np.concatenate([dst_a, dst_b])
    w = edge_weights(indices, probs, src, dst, mode)
    kept = w >= np.float32(threshold)
    return src[kept], dst[kept], w[kept]


def _cluster_key(old_labels, p):
    """The node of old point p: its cluster, or -(p + 1) when it is unassigned."""
    return np.where(old_labels[p] >= 0, old_labels[p], -(p + 1))


def _decode_nodes(src, dst, w, old_labels, n0, n, length, *, decoder, threshold, max_size,
                  size_step, intimacy_ratio, peaks_tolerance, seed, rules=None) -> LocalClusters:
    """The decoder on the local graph: new points 0..n1-1, then one node per old cluster
    touched, link weights summed per node pair, each node's L-1 strongest out-links.
    ``rules``: point edges that decide instead (peaks, intimacy): the local clusters are
    their components over the nodes."""
    n1 = n - n0
    old_end = np.where(src < n0, src, np.where(dst < n0, dst, -1))
    old_pts = old_end[old_end >= 0]
    if rules is not None:
        old_pts = np.r_[old_pts, rules[0][rules[0] < n0], rules[1][rules[1] < n0]]
    keys = np.unique(_cluster_key(old_labels, old_pts)) if old_pts.size \
        else np.zeros(0, np.int64)

    def node(p):
        out = np.empty(p.shape, np.int64)
        new = p >= n0
        out[new] = p[new] - n0
        out[~new] = n1 + np.searchsorted(keys, _cluster_key(old_labels, p[~new]))
        return out

    u, v = node(src), node(dst)
    n_nodes = n1 + keys.size
    pair = u * n_nodes + v
    up, inv = np.unique(pair, return_inverse=True)
    wsum = np.bincount(inv, weights=w).astype(np.float32)
    pu, pv = up // n_nodes, up % n_nodes
    order = np.lexsort((-wsum, pu))
    pu, pv, wsum = pu[order], pv[order], wsum[order]
    first = np.r_[0, np.flatnonzero(np.diff(pu)) + 1]
    rank = np.arange(pu.size) - np.repeat(first, np.diff(np.r_[first, pu.size]))
    top = rank < length - 1
    pu, pv, wsum, rank = pu[top], pv[top], wsum[top], rank[top]
    local_idx = np.full((n_nodes, length), -1, np.int64)
    local_w = np.zeros((n_nodes, length), np.float32)
    local_idx[:, 0] = np.arange(n_nodes)
    local_idx[pu, rank + 1] = pv
    local_w[pu, rank + 1] = wsum
    if rules is not None:
        local = relabel(union_find(n_nodes, node(rules[0]), node(rules[1])))
    else:
        local = decode(decoder, local_idx, local_w, float(threshold), max_size=max_size,
                       size_step=size_step, intimacy_ratio=intimacy_ratio,
                       peaks_tolerance=peaks_tolerance, seed=seed)
    return LocalClusters(src, dst, w, keys, local, n_nodes, int(pu.size))


def _new_point_pairs(lc: LocalClusters, old_labels, n0):
    """(new point, old member, its cluster, link weight) of every kept link between a new
    point and a clustered old point of the new point's own local cluster."""
    a = np.r_[lc.src, lc.dst]
    b = np.r_[lc.dst, lc.src]
    wb = np.r_[lc.w, lc.w]
    sel = (a >= n0) & (b < n0)
    a, b, wb = a[sel], b[sel], wb[sel]
    lab_b = old_labels[b]
    sel = lab_b >= 0
    a, b, wb, lab_b = a[sel], b[sel], wb[sel], lab_b[sel]
    same = lc.local[a - n0] == lc.super_module[np.searchsorted(lc.keys, lab_b)]
    return a[same], b[same], lab_b[same], wb[same]


def _sides_through_new_points(pairs) -> dict:
    """{(cluster x, cluster y): (members of x, members of y)} reached through new points
    with kept links into both."""
    pair_new, pair_mem, pair_lab, _ = pairs
    sides: dict = {}
    if not pair_new.size:
        return sides
    order = np.lexsort((pair_mem, pair_lab, pair_new))
    pn, pl, pm = pair_new[order], pair_lab[order], pair_mem[order]
    cuts = np.flatnonzero(np.diff(pn)) + 1
    for n_l, n_m in zip(np.split(pl, cuts), np.split(pm, cuts)):
        labs = np.unique(n_l)
        if labs.size < 2:
            continue
        members = {int(lab): set(n_m[n_l == lab].tolist()) for lab in labs}
        for x in range(labs.size):
            for y in range(x + 1, labs.size):
                lx, ly = int(labs[x]), int(labs[y])
                side = sides.setdefault((lx, ly), (set(), set()))
                side[0].update(members[lx])
                side[1].update(members[ly])
    return sides


def _add_old_old_sides(sides, lc, indices, probs, old_indices, old_probs, old_labels, relinked,
                       n0, threshold, mode) -> None:
    """Old-old links of the relinked rows kept now and not before, between two old clusters
    of one local cluster (candidates: p_ij can reach the threshold at all)."""
    keys = lc.keys
    if not (relinked.size and keys.size):
        return
    length = indices.shape[1]
    t = np.float32(threshold)
    super_module = lc.super_module
    r_idx = indices[relinked]
    cand = (r_idx >= 0) & (r_idx < n0)
    floor = 2 * t - 1 if mode == "reciprocal" else t
    cand &= probs[relinked] >= floor
    cs = np.repeat(relinked, length)[cand.ravel()]
    cd = r_idx[cand]
    ls, ld = old_labels[cs], old_labels[cd]
    ok = (ls >= 0) & (ld >= 0) & (ls != ld)
    cs, cd, ls, ld = cs[ok], cd[ok], ls[ok], ld[ok]
    ks, kd = np.searchsorted(keys, ls), np.searchsorted(keys, ld)
    ks, kd = np.minimum(ks, keys.size - 1), np.minimum(kd, keys.size - 1)
    ok = (keys[ks] == ls) & (keys[kd] == ld) & (super_module[ks] == super_module[kd])
    cs, cd, ls, ld = cs[ok], cd[ok], ls[ok], ld[ok]
    if not cs.size:
        return
    now = edge_weights(indices, probs, cs, cd, mode) >= t
    before = edge_weights(old_indices, old_probs, cs, cd, mode) >= t
    new = now & ~before
    for x, y, lx, ly in zip(cs[new], cd[new], ls[new], ld[new]):
        if lx > ly:
            x, y, lx, ly = y, x, ly, lx
        side = sides.setdefault((int(lx), int(ly)), (set(), set()))
        side[0].add(int(x))
        side[1].add(int(y))


def _merge(sides: dict, old_sizes: np.ndarray, merge_links: int):
    """The merges the evidence supports, most evidence first, and the id each old cluster
    ends with. Union-find over the clusters named; when two are joined the larger (then
    the smaller id) keeps its id."""
    def need(lab):
        return max(merge_links, int(np.ceil(MERGE_SHARE * old_sizes[lab])))

    evidence = {pr: min(len(sa), len(sb)) for pr, (sa, sb) in sides.items()
                if len(sa) >= need(pr[0]) and len(sb) >= need(pr[1])}
    ids = np.unique(np.array([i for pr in evidence for i in pr], np.int64))
    parent = np.arange(ids.size, dtype=np.int64)
    keeper = ids.copy()  # keeper[root]: the id the root's clusters keep
    merges = []
    for (x, y), m in sorted(evidence.items(), key=lambda kv: (-kv[1], kv[0])):
        a, b = np.searchsorted(ids, [x, y])
        kx, ky = int(keeper[parent[a]]), int(keeper[parent[b]])
        if parent[a] == parent[b]:
            continue
        keep_id, gone = (kx, ky) if (old_sizes[kx], -kx) >= (old_sizes[ky], -ky) else (ky, kx)
        parent = union_find(ids.size, np.array([a]), np.array([b]), parent=parent)
        keeper[parent[a]] = keep_id
        merges.append((keep_id, gone, int(m)))

    def kept_id(lab: int) -> int:
        pos = int(np.searchsorted(ids, lab))
        if pos < ids.size and ids[pos] == lab:
            return int(keeper[parent[pos]])
        return int(lab)

    return merges, kept_id


def _assign(lc: LocalClusters, pairs, old_labels, old_sizes, merges, kept_id, n0, n,
            next_id=None):
    """Labels of old + new: merges applied to old points; each new point joins the old
    cluster of its local cluster it holds the most kept link weight to, else the largest
    old cluster in its local cluster, else a new cluster. Returns (labels, how many new
    points joined an old cluster, {local cluster: new id})."""
    n1 = n - n0
    pair_new, _, pair_lab, pair_w = pairs
    labels = np.empty(n, np.int64)
    labels[:n0] = old_labels
    if merges:
        moved = np.isin(labels[:n0], np.array([gone for _, gone, _ in merges]))
        labels[:n0][moved] = [kept_id(int(v)) for v in labels[:n0][moved]]
    best_lab = np.full(n1, -1, np.int64)
    if pair_new.size:
        width = old_sizes.size + 1
        key = (pair_new - n0) * width + pair_lab
        uk, inv = np.unique(key, return_inverse=True)
        tot = np.bincount(inv, weights=pair_w)
        kn, kl = uk // width, uk % width
        order = np.lexsort((kl, -tot, kn))
        first = np.r_[True, kn[order][1:] != kn[order][:-1]]
        best_lab[kn[order][first]] = kl[order][first]
    biggest: dict = {}
    super_label = np.where(lc.keys >= 0, lc.keys, -1)
    for m_id, lab in zip(lc.super_module.tolist(), super_label.tolist()):
        if lab >= 0 and (m_id not in biggest or (old_sizes[lab], -lab) >
                         (old_sizes[biggest[m_id]], -biggest[m_id])):
            biggest[m_id] = lab
    top = int(old_labels.max()) + 1 if old_labels.size and old_labels.max() >= 0 else 0
    next_id = max(top, next_id or 0)
    fresh: dict = {}
    joined = 0
    for v in range(n1):
        lab = best_lab[v]
        if lab < 0:
            lab = biggest.get(int(lc.local[v]), -1)
        if lab >= 0:
            labels[n0 + v] = kept_id(int(lab))
            joined += 1
        else:
            c = int(lc.local[v])
            if c not in fresh:
                fresh[c] = next_id
                next_id += 1
            labels[n0 + v] = fresh[c]
    return labels, joined, fresh
