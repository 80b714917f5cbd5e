"""cf-merge add --redecode: decode again only where new links join old clusters, old ids
kept where they still hold.

The kept links that touch a new point (and old-old links of the rebuilt rows kept now and
not before) join *units*: each new point, each old cluster (all its members, one unit) and
each unassigned old point. A component of units holding exactly one old cluster and no
unassigned old point cannot change the partition elsewhere: its new points join that
cluster, as the default add would, and the cluster is not decoded again. Every other
component is *the region*: components that join two or more old clusters (or an old cluster
and unassigned old points) through new points, and components of new points (with any
unassigned old points they reach) and no old cluster. The links of the region's rows among
themselves (links to points outside dropped) are decoded by the decoder, threshold, link
mode and singleton policy that made the clustering, and the region's clusters take the old
ids by largest overlap, one to one (core.decoding.identities): two old clusters the new
links join may become one (the larger's id kept), an old cluster may split (its larger part
keeps the id), and every id change is recorded. Outside the region no old point changes.

Cost: the decode of the region, which grows with the old clusters new points link
together, not with every cluster a new point joins (bench/results/issue26-incremental.md:
the earlier rule, every old cluster a new link touches, decoded 92% of 100K points for 1K
new ones). Changes inside one old cluster that only one cluster's new points see (a link
lost where an entrant pushed an old neighbour out of a row) are, as in the default add, not
evidence enough to decode it again.
"""

from __future__ import annotations

import numpy as np

from ..decoding.graph import union_find
from ..decoding.identities import carry_ids
from ..decoding.setting import DecoderSetting
from .links import edge_weights
from .local import kept_links


def unit_links(indices, probs, old_indices, old_probs, old_labels, rows, n0, threshold: float,
               mode: str):
    """(src, dst) point pairs that join units: kept links touching a new point, and old-old
    links of the rebuilt old rows kept now and not before (model links run again)."""
    relinked = rows[rows < n0]
    src, dst, _ = kept_links(indices, probs, relinked, n0, threshold, mode)
    length = indices.shape[1]
    r_idx = indices[relinked]
    cand = (r_idx >= 0) & (r_idx < n0) & (r_idx != relinked[:, None])
    cs = np.repeat(relinked, length)[cand.ravel()]
    cd = r_idx[cand]
    cross = old_labels[cs] != old_labels[cd]
    cross |= old_labels[cs] < 0
    cs, cd = cs[cross], cd[cross]
    t = np.float32(threshold)
    new = (edge_weights(indices, probs, cs, cd, mode) >= t) & \
        (edge_weights(old_indices, old_probs, cs, cd, mode) < t)
    return np.r_[src, cs[new]], np.r_[dst, cd[new]]


def plan_region(src, dst, old_labels, n0: int, n: int):
    """(the region's rows, sorted; the new points that join an old cluster without a decode
    and that cluster, as (points, labels); old clusters any new link touches): see the
    module. ``src``, ``dst``: unit_links."""
    # unit of a point: a new point or an unassigned old point itself, a clustered old point
    # its cluster (n + label)
    lab_of = np.r_[old_labels, np.full(n - n0, -1, np.int64)]

    def unit(p):
        return np.where(lab_of[p] >= 0, n + lab_of[p], p)

    ends = np.r_[src, dst]
    keys = np.unique(np.r_[unit(ends), np.arange(n0, n)])
    a, b = np.searchsorted(keys, unit(src)), np.searchsorted(keys, unit(dst))
    comp = union_find(keys.size, a, b).astype(np.int64)
    is_cluster = keys >= n
    old_unit = is_cluster | (keys < n0)
    n_old = np.bincount(comp, weights=old_unit, minlength=keys.size)
    n_clusters = np.bincount(comp, weights=is_cluster, minlength=keys.size)
    simple = (n_old == 1) & (n_clusters == 1)  # per component root
    # the cluster of each simple component
    cluster_of = np.full(keys.size, -1, np.int64)
    cluster_of[comp[is_cluster]] = keys[is_cluster] - n
    in_region = ~simple[comp]
    labs = keys[in_region & is_cluster] - n
    loose = keys[in_region & (keys < n0)]
    new_keys = (keys >= n0) & (keys < n)
    members = np.flatnonzero(np.isin(old_labels, labs)) if labs.size else np.zeros(0, np.int64)
    region = np.unique(np.r_[members, loose, keys[new_keys & in_region]]).astype(np.int64)
    joining = new_keys & ~in_region
    joins = (keys[joining].astype(np.int64), cluster_of[comp[joining]])
    return region, joins, int(is_cluster.sum())


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
             setting: DecoderSetting, *, seed: int, next_id: int, step: int):
    """(labels of old + new, the id changes, the next free id, counts): see the module."""
    n = indices.shape[0]
    src, dst = unit_links(indices, probs, old_indices, old_probs, old_labels, rows, n0,
                          setting.threshold, setting.mode)
    region, (joiners, joined_to), touched = plan_region(src, dst, old_labels, n0, n)
    labels = np.r_[old_labels, np.full(n - n0, -1, np.int64)]
    labels[joiners] = joined_to
    old_rows = region[region < n0]
    if region.size:
        local, w = sub_links(indices, probs, region, setting.mode)
        decoded, _ = setting.decode(local, w, seed)
        carried = carry_ids(decoded, old_labels[old_rows], next_id, step)
    else:
        carried = carry_ids(np.zeros(0, np.int64), np.zeros(0, np.int64), next_id, step)
    labels[region] = carried.labels
    counts = _counts(labels, old_labels, old_rows, n0)
    counts.update(region_points=int(region.size), region_new_points=int((region >= n0).sum()),
                  region_old_clusters=int(np.unique(old_labels[old_rows][
                      old_labels[old_rows] >= 0]).size),
                  touched_old_clusters=touched, joined_without_decode=int(joiners.size),
                  **{f"region_{k}": v for k, v in carried.summary().items()})
    return labels, carried.changes, carried.next_id, counts


def _counts(labels, old_labels, old_rows, n0) -> dict:
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
