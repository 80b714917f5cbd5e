"""cf-merge add --redecode: decode again where new links join old clusters and where old
clusters have grown, old ids kept where they still hold.

Units are the new points, the old clusters (all the members of one, one unit) and the
unassigned old points. A new point joins the unit that holds the most of the kept link
weight touching it (its own links and the rebuilt old rows' links to it) and every unit
that holds at least JOIN_SHARE of it; old-old links of rebuilt rows kept now and not before
(model links run again) join their two units.
A connected group of units holding exactly one old cluster and no unassigned old point
cannot change the partition elsewhere: its new points join that cluster (as the default
add would) and the cluster is not decoded again, unless it has grown (below). Every other
group is *the region*: old clusters and unassigned old points that new points join together,
with those new points, and groups of new points that reach no old cluster.

Growth: an old cluster that new points join is decoded again, with them, when its size
crosses a step of a geometric ladder, (1 + GROWTH)^k times the members it had in the
original set (batch 0; 1 for a cluster made by an add): a cluster is looked at again each
time it has grown by GROWTH since, so the decode work this adds is about (1 + 1/GROWTH)
times the points added at most, over the adds (amortised; about 1 / ln(1 + GROWTH) times
once the clusters' steps are spread), while a clustering that is only extended, never decoded
again, would keep every mistake it made at its first size.

The links of the region's rows among themselves (links to points outside dropped) are
decoded by the decoder, threshold, link mode and singleton policy that made the clustering,
and the region's clusters take the old ids by largest overlap, one to one
(core.decoding.identities): two old clusters may become one (the larger's id kept), one may
split (its larger part keeps the id), and every id change is recorded. Outside the region
no old point changes. A change that one cluster's new points alone see (a link lost where an
entrant pushed an old neighbour out of a row) does not decode it again.

Cost: the decode of the region, which grows with the clusters new links join together
and with the ladder's steps (measured against clustering again: bench/results/
issue26-incremental.md).
"""

from __future__ import annotations

import numpy as np

from ..decoding.graph import union_find
from ..decoding.identities import carry_ids
from ..decoding.setting import DecoderSetting
from .links import edge_weights
from .local import kept_links

# a new point joins a unit holding at least this share of the kept weight touching it, as
# well as its strongest: a second old cluster holding half as much as the first, of two
# (lower shares chained much more of the clustering into the region: bench/results/
# issue26-incremental.md)
JOIN_SHARE = 1 / 3
# a cluster new points join is decoded again each time it grows by this share (the ladder;
# without it, or at 0.2, adds on the demo set ended more than 1 F_P below clustering at
# once: bench/results/issue26-incremental.md)
GROWTH = 0.1


def unit_links(indices, probs, old_indices, old_probs, old_labels, rows, n0, threshold: float,
               mode: str):
    """(a, b): pairs of units joined (a unit: a new point or an unassigned old point by its
    row, an old cluster as n + its id): see the module."""
    n = indices.shape[0]
    relinked = rows[rows < n0]
    lab_of = np.r_[old_labels, np.full(n - n0, -1, np.int64)]

    def unit(p):
        return np.where(lab_of[p] >= 0, n + lab_of[p], p)

    src, dst, w = kept_links(indices, probs, relinked, n0, threshold, mode)
    a, b, ww = np.r_[src, dst], np.r_[dst, src], np.r_[w, w]
    sel = a >= n0  # each kept link from the side of its new point(s)
    a, b, ww = a[sel], unit(b[sel]), ww[sel].astype(np.float64)
    width = 2 * n + 1  # units are below 2n
    pair, inv = np.unique((a - n0) * width + b, return_inverse=True)
    weight = np.bincount(inv.ravel(), weights=ww, minlength=pair.size)
    pa, pb = pair // width, pair % width
    total = np.bincount(pa, weights=weight, minlength=n - n0)
    top = np.zeros(n - n0)  # pairs come sorted by new point: the largest of each run
    if pa.size:
        starts = np.r_[0, np.flatnonzero(np.diff(pa)) + 1]
        top[pa[starts]] = np.maximum.reduceat(weight, starts)
    # its strongest unit, and every unit holding JOIN_SHARE
    joined = (weight >= JOIN_SHARE * total[pa]) | (weight >= top[pa])
    ua, ub = pa[joined] + n0, pb[joined]
    # old-old links of the rebuilt rows kept now and not before (candidates: p_ij can reach
    # the threshold at all)
    t = np.float32(threshold)
    r_idx = indices[relinked]
    cand = (r_idx >= 0) & (r_idx < n0) & (r_idx != relinked[:, None])
    cand &= probs[relinked] >= (t if mode == "directed" else 2 * t - 1)
    at, col = np.nonzero(cand)
    cs, cd = relinked[at], r_idx[at, col]
    lab_s, lab_d = old_labels[cs], old_labels[cd]
    cross = (lab_s != lab_d) | (lab_s < 0)
    cs, cd = cs[cross], cd[cross]
    new = (edge_weights(indices, probs, cs, cd, mode) >= t) & \
        (edge_weights(old_indices, old_probs, cs, cd, mode) < t)
    return np.r_[ua, unit(cs[new])], np.r_[ub, unit(cd[new])]


def plan_region(ua, ub, old_labels, n0: int, n: int, old_batch=None):
    """(the region's rows, sorted; the new points that join an old cluster without a decode
    and that cluster, as (points, labels); counts): see the module. ``ua``, ``ub``:
    unit_links; ``old_batch``: the batch of each old point (None: all 0)."""
    keys = np.unique(np.r_[ua, ub, np.arange(n0, n)])
    comp = union_find(keys.size, np.searchsorted(keys, ua),
                      np.searchsorted(keys, ub)).astype(np.int64)
    is_cluster = keys >= n
    n_old = np.bincount(comp, weights=is_cluster | (keys < n0), minlength=keys.size)
    n_clusters = np.bincount(comp, weights=is_cluster, minlength=keys.size)
    simple = (n_old == 1) & (n_clusters == 1)  # per component root
    cluster_of = np.full(keys.size, -1, np.int64)  # the cluster of each simple component
    cluster_of[comp[is_cluster]] = keys[is_cluster] - n
    new_keys = (keys >= n0) & (keys < n)
    grown = _grown(cluster_of[comp[new_keys & simple[comp]]], old_labels, old_batch)
    simple[comp[is_cluster & np.isin(keys - n, grown)]] = False
    in_region = ~simple[comp]
    labs = keys[in_region & is_cluster] - n
    members = np.flatnonzero(np.isin(old_labels, labs)) if labs.size else np.zeros(0, np.int64)
    region = np.unique(np.r_[members, keys[in_region & (keys < n0)],
                             keys[new_keys & in_region]]).astype(np.int64)
    joining = new_keys & ~in_region
    joins = (keys[joining].astype(np.int64), cluster_of[comp[joining]])
    return region, joins, {"joined_old_clusters": int(is_cluster.sum()),
                           "grown_old_clusters": int(grown.size)}


def _grown(joined_to, old_labels, old_batch) -> np.ndarray:
    """The old clusters (ids) whose size crosses a step of the growth ladder when the new
    points ``joined_to`` them join (see the module)."""
    labs, added = np.unique(joined_to, return_counts=True)
    if not labs.size:
        return labs
    assigned = old_labels >= 0
    size = np.bincount(old_labels[assigned])[labs]
    first = assigned if old_batch is None else assigned & (old_batch == 0)
    base = np.maximum(np.bincount(old_labels[first], minlength=labs.max() + 1)[labs], 1)
    step = np.log1p(GROWTH)
    before = np.floor(np.log(size / base) / step + 1e-9)
    after = np.floor(np.log((size + added) / base) / step + 1e-9)
    return labs[after > before]


def sub_links(indices, probs, region: np.ndarray, mode: str):
    """The region's rows with ids renumbered into it (links leaving it dropped), weighed
    under ``mode`` from the whole links (only the rows named are read)."""
    n = indices.shape[0]
    pos = np.full(n, -1, np.int64)
    pos[region] = np.arange(region.size)
    ids = indices[region]
    valid = (ids >= 0) & (ids != region[:, None])
    valid[valid] = pos[ids[valid]] >= 0
    w = np.zeros(ids.shape, np.float32)
    src = np.broadcast_to(region[:, None], ids.shape)[valid]
    w[valid] = edge_weights(indices, probs, src, ids[valid], mode)
    local = np.where(valid, pos[np.where(valid, ids, 0)], -1)
    local[:, 0] = np.arange(region.size)  # each row's centre first, as cf-link writes them
    return local, w


def redecode(indices, probs, old_indices, old_probs, old_labels, rows, n0,
             setting: DecoderSetting, *, seed: int, next_id: int, step: int, old_batch=None):
    """(labels of old + new, the id changes, the next free id, counts): see the module."""
    n = indices.shape[0]
    ua, ub = unit_links(indices, probs, old_indices, old_probs, old_labels, rows, n0,
                        setting.threshold, setting.mode)
    region, (joiners, joined_to), plan = plan_region(ua, ub, old_labels, n0, n, old_batch)
    labels = np.r_[old_labels, np.full(n - n0, -1, np.int64)]
    labels[joiners] = joined_to
    old_rows = region[region < n0]
    if region.size:
        local, w = sub_links(indices, probs, region, setting.mode)
        decoded, _ = setting.decode(local, w, seed)
    else:
        decoded = np.zeros(0, np.int64)
    carried = carry_ids(decoded, old_labels[old_rows], next_id, step)
    labels[region] = carried.labels
    counts = _counts(labels, n0)
    counts.update(region_points=int(region.size), region_new_points=int((region >= n0).sum()),
                  region_old_clusters=int(np.unique(old_labels[old_rows][
                      old_labels[old_rows] >= 0]).size),
                  joined_without_decode=int(joiners.size), **plan,
                  **{f"region_{k}": v for k, v in carried.summary().items()})
    return labels, carried.changes, carried.next_id, counts


def _counts(labels, n0) -> dict:
    """What became of the new points: joined an old cluster's id, or formed new clusters."""
    old_now = labels[:n0]
    has_old = np.unique(old_now[old_now >= 0])
    new_lab = labels[n0:]
    joined = np.isin(new_lab, has_old) & (new_lab >= 0)
    fresh = np.unique(new_lab[~joined & (new_lab >= 0)])
    sizes = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(1, np.int64)
    return {"joined_existing": int(joined.sum()), "new_clusters": int(fresh.size),
            "in_new_clusters": int((~joined).sum()),
            "new_singletons": int(((new_lab >= 0) & (sizes[np.maximum(new_lab, 0)] == 1)).sum()),
            "merges": 0}
