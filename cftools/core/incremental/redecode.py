"""cf-merge add --redecode: decode again where the new links land, old ids kept where they
still hold.

The region is the new points, every member of each old cluster a kept link of a new point
touches (either way), and the unassigned old points such links reach. The links of the
region's rows among themselves (links to points outside dropped) are decoded by the
decoder, threshold, link mode and singleton policy that made the clustering, and the
region's clusters take the old ids by largest overlap, one to one (core.decoding.
identities): an old cluster the new links now split keeps its id on its larger part, and
every id change is recorded. Outside the region nothing changes. Unlike the default add,
which keeps every old cluster whole, this may undo an old mistake; it costs the decode of
the region, which grows with the clusters the new points touch.
"""

from __future__ import annotations

import numpy as np

from ..decoding.identities import carry_ids
from ..decoding.setting import DecoderSetting
from .links import edge_weights
from .local import kept_links


def region_of(indices, probs, old_labels, rows, n0, threshold: float, mode: str) -> np.ndarray:
    """The rows to decode again (sorted): see the module."""
    n = indices.shape[0]
    relinked = rows[rows < n0]
    src, dst, _ = kept_links(indices, probs, relinked, n0, threshold, mode)
    ends = np.r_[src, dst]
    old = np.unique(ends[ends < n0])
    labs = np.unique(old_labels[old])
    labs = labs[labs >= 0]
    members = np.flatnonzero(np.isin(old_labels, labs)) if labs.size else np.zeros(0, np.int64)
    loose = old[old_labels[old] < 0]
    return np.unique(np.r_[members, loose, np.arange(n0, n)]).astype(np.int64)


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


def redecode(indices, probs, old_labels, rows, n0, setting: DecoderSetting, *, seed: int,
             next_id: int, step: int):
    """(labels of old + new, the region, the id changes, the next free id, counts)."""
    n = indices.shape[0]
    region = region_of(indices, probs, old_labels, rows, n0, setting.threshold, setting.mode)
    local, w = sub_links(indices, probs, region, setting.mode)
    decoded, _ = setting.decode(local, w, seed)
    old_rows = region[region < n0]
    carried = carry_ids(decoded, old_labels[old_rows], next_id, step)
    labels = np.r_[old_labels, np.full(n - n0, -1, np.int64)]
    labels[region] = carried.labels
    # a new point joined an existing cluster when its cluster holds an old point
    has_old = np.unique(labels[old_rows][labels[old_rows] >= 0])
    new_lab = labels[n0:]
    joined = np.isin(new_lab, has_old) & (new_lab >= 0)
    fresh = np.unique(new_lab[~joined & (new_lab >= 0)])
    sizes = np.bincount(labels[labels >= 0])
    counts = {"joined_existing": int(joined.sum()), "new_clusters": int(fresh.size),
              "in_new_clusters": int((~joined).sum()),
              "new_singletons": int(((new_lab >= 0) & (sizes[np.maximum(new_lab, 0)] == 1)).sum()),
              "merges": 0, "region_points": int(region.size),
              "region_old_clusters": int(np.unique(old_labels[old_rows][old_labels[old_rows] >= 0]).size),
              **{f"region_{k}": v for k, v in carried.summary().items()}}
    return labels, carried.changes, carried.next_id, counts
