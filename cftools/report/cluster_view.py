"""What the gallery shows about a clustering, computed with vectorised numpy (no Python
loop over points, so 1M points take seconds):

- ``dense_clusters``: cluster ids 0..C-1 with sizes; unassigned points (-1) are singletons.
- membership strength of every point in its cluster, the order of its card:
  ``strength_from_links``: the mean link weight to the rest of the cluster,
      s_i = sum_{j in C(i), j != i, j among i's links} w_ij / min(|C(i)| - 1, links of i),
      a missing link counting 0 (w: the reciprocal weights (p_ij + p_ji) / 2 cf-merge reads);
  ``strength_from_features``: the mean cosine to the rest of the cluster,
      s_i = (x_i . S_C - 1) / (|C| - 1) with S_C the sum of the cluster's unit features.
  Singletons have no strength (NaN).
- ``likely_strays``: in clusters of 3 or more, members whose strength is below a share
  of their cluster's median strength (0.5 for links, 0.7 for cosine; see STRAY_RATIO),
  or below an absolute bound when one is given.
- ``display_order``: clusters by falling size (ties: by label), members by falling strength.
- ``paginate``: cards packed onto pages of at most ``per_page`` images; a cluster larger
  than a page is split across consecutive pages; singletons get pages of their own.
- ``truth_summary``/``largest_splits``: with true identities, each cluster's majority
  identity and purity, the members of another identity, and the identities spread over
  the most clusters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PER_PAGE = 300        # images (or names) on one page at most


SINGLES_PER_PAGE = 300


# Strays: strength below this share of the cluster's median; link weights spread wider than
# cosines, so their share is lower (what it marks on the demo round: bench/results/code-choices.md)
STRAY_RATIO = {"link weight": 0.5, "cosine": 0.7}


STRAY_MIN_SIZE = 3


BLOCK_ROWS = 1 << 16


def dense_clusters(labels: np.ndarray):
    """(cid, sizes, label_of): dense ids 0..C-1 per point, the size of each cluster, and
    the file's label of each cluster (-1 for an unassigned point, each its own singleton)."""
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.shape[0]
    assigned = labels >= 0
    uniq, inv = np.unique(labels[assigned], return_inverse=True)
    cid = np.empty(n, dtype=np.int64)
    cid[assigned] = inv
    n_un = int(n - assigned.sum())
    cid[~assigned] = uniq.size + np.arange(n_un)
    label_of = np.concatenate([uniq, np.full(n_un, -1, dtype=np.int64)])
    sizes = np.bincount(cid, minlength=label_of.size).astype(np.int64)
    return cid, sizes, label_of


def strength_from_links(cid, sizes, indices, weights, block_rows: int = BLOCK_ROWS):
    """Mean link weight of each point to the rest of its cluster (NaN for singletons)."""
    n = cid.shape[0]
    out = np.full(n, np.nan, dtype=np.float32)
    for start in range(0, n, block_rows):
        stop = min(n, start + block_rows)
        idx = np.asarray(indices[start:stop])
        w = np.asarray(weights[start:stop], dtype=np.float32)
        rows = np.arange(start, stop)[:, None]
        valid = (idx >= 0) & (idx != rows)
        mine = cid[start:stop]
        same = valid & (cid[np.where(valid, idx, 0)] == mine[:, None])
        total = np.where(same, w, 0).sum(axis=1)
        denom = np.minimum(sizes[mine] - 1, valid.sum(axis=1))
        ok = denom > 0
        out[start:stop][ok] = total[ok] / denom[ok]
        out[start:stop][(sizes[mine] > 1) & ~ok] = 0.0  # in a cluster, but no link at all
    return out


def strength_from_features(cid, sizes, read_block, n: int, block_rows: int = BLOCK_ROWS):
    """Mean cosine of each point to the rest of its cluster (NaN for singletons).
    ``read_block(start, stop)`` returns unit feature rows; the features are read twice,
    a block at a time, and only clusters of 2 or more hold a sum (C2 x d floats)."""
    from scipy import sparse

    multi = sizes > 1
    compact = np.full(sizes.size, -1, dtype=np.int64)
    compact[multi] = np.arange(int(multi.sum()))
    sums = None
    for start in range(0, n, block_rows):
        stop = min(n, start + block_rows)
        x = np.asarray(read_block(start, stop), dtype=np.float32)
        c = compact[cid[start:stop]]
        keep = np.flatnonzero(c >= 0)
        if sums is None:
            sums = np.zeros((int(multi.sum()), x.shape[1]), dtype=np.float64)
        if keep.size:
            onehot = sparse.csr_matrix((np.ones(keep.size), (c[keep], keep)),
                                       shape=(sums.shape[0], stop - start))
            sums += onehot @ x.astype(np.float64)
    out = np.full(n, np.nan, dtype=np.float32)
    if sums is None or sums.shape[0] == 0:
        return out
    sums = sums.astype(np.float32)
    for start in range(0, n, block_rows):
        stop = min(n, start + block_rows)
        c = compact[cid[start:stop]]
        keep = np.flatnonzero(c >= 0)
        if not keep.size:
            continue
        x = np.asarray(read_block(start, stop), dtype=np.float32)[keep]
        dots = np.einsum("ij,ij->i", x, sums[c[keep]])
        out[start + keep] = (dots - 1.0) / (sizes[cid[start + keep]] - 1)
    return out


def _group_median(cid_sorted, values_sorted, starts, counts):
    """Median of each group of a (cid, value)-sorted array, groups given by starts/counts."""
    lo = values_sorted[starts + (counts - 1) // 2]
    hi = values_sorted[starts + counts // 2]
    return (lo + hi) / 2


def cluster_medians(cid, sizes, strength) -> np.ndarray:
    """Median strength of each cluster (NaN for singletons), by one sort of all points."""
    med = np.full(sizes.size, np.nan)
    pts = np.flatnonzero(~np.isnan(strength))
    if pts.size:
        order = np.lexsort((strength[pts], cid[pts]))
        c, v = cid[pts][order], strength[pts][order].astype(np.float64)
        groups, starts, counts = np.unique(c, return_index=True, return_counts=True)
        med[groups] = _group_median(c, v, starts, counts)
    return med


def likely_strays(cid, sizes, strength, *, ratio: float | None = None,
                  below: float | None = None, min_size: int = STRAY_MIN_SIZE) -> np.ndarray:
    """Boolean mask of likely strays: in clusters of ``min_size`` or more, a strength
    below ``ratio`` times the cluster's median strength; and (when given) any strength
    below the absolute bound ``below``."""
    n = cid.shape[0]
    stray = np.zeros(n, dtype=bool)
    has = ~np.isnan(strength)
    if below is not None:
        stray |= has & (strength < below)
    if ratio is not None:
        med = cluster_medians(cid, sizes, strength)
        big = has & (sizes[cid] >= min_size)
        stray[big] |= strength[big] < ratio * med[cid[big]]
    return stray


def display_order(cid, sizes, label_of, strength):
    """(cluster_order, point_order): clusters by falling size then label (unassigned
    last among singletons), and all points grouped by cluster in that order, each
    cluster's members by falling strength (ties: by index)."""
    unassigned = label_of < 0
    cluster_order = np.lexsort((np.where(unassigned, np.iinfo(np.int64).max, label_of),
                                unassigned, -sizes))
    rank = np.empty_like(cluster_order)
    rank[cluster_order] = np.arange(cluster_order.size)
    s = np.where(np.isnan(strength), -np.inf, strength)
    point_order = np.lexsort((np.arange(cid.size), -s, rank[cid]))
    return cluster_order, point_order


@dataclass
class Page:
    """One page: its file name and the pieces of clusters on it, as (cluster rank, first
    member, end member) in display order; a cluster split over pages has several pieces."""

    name: str
    pieces: list = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(b - a for _, a, b in self.pieces)


def paginate(sizes_by_rank: np.ndarray, per_page: int = PER_PAGE,
             singles_per_page: int = SINGLES_PER_PAGE):
    """(cluster pages, singleton pages) for clusters given by size in display order.
    Cards are packed greedily; no page holds more than per_page members."""
    sizes_by_rank = np.asarray(sizes_by_rank, dtype=np.int64)
    multi = int((sizes_by_rank > 1).sum())
    pages, current = [], Page("")
    for rank in range(multi):  # a loop over clusters, not points
        size = int(sizes_by_rank[rank])
        if current.count and current.count + size > per_page:
            pages.append(current)
            current = Page("")
        start = 0
        while start < size:
            take = min(size - start, per_page - current.count)
            current.pieces.append((rank, start, start + take))
            start += take
            if current.count >= per_page:
                pages.append(current)
                current = Page("")
    if current.pieces:
        pages.append(current)
    for i, p in enumerate(pages):
        p.name = f"c{i + 1:05d}.html"
    n_single = sizes_by_rank.size - multi
    singles = []
    for i, a in enumerate(range(0, n_single, singles_per_page)):
        b = min(n_single, a + singles_per_page)
        singles.append(Page(f"s{i + 1:05d}.html", [(multi + a, 0, b - a)]))
    return pages, singles


def truth_summary(cid, n_clusters: int, truth):
    """(majority, majority_count, known, other): per cluster its majority identity (-1
    when no member's identity is known), how many members hold it and how many have a
    known identity (purity = majority_count / known); per point, whether its known
    identity differs from its cluster's majority."""
    truth = np.asarray(truth, dtype=np.int64)
    known_pt = truth >= 0
    majority = np.full(n_clusters, -1, dtype=np.int64)
    maj_count = np.zeros(n_clusters, dtype=np.int64)
    known = np.bincount(cid[known_pt], minlength=n_clusters).astype(np.int64)
    if known_pt.any():
        pairs = np.stack([cid[known_pt], truth[known_pt]], axis=1)
        uniq, counts = np.unique(pairs, axis=0, return_counts=True)
        # per cluster, the pair with the largest count (ties: the smaller identity)
        order = np.lexsort((uniq[:, 1], -counts, uniq[:, 0]))
        first = np.ones(order.size, dtype=bool)
        first[1:] = uniq[order[1:], 0] != uniq[order[:-1], 0]
        best = order[first]
        majority[uniq[best, 0]] = uniq[best, 1]
        maj_count[uniq[best, 0]] = counts[best]
    other = known_pt & (truth != majority[cid])
    return majority, maj_count, known, other


def largest_splits(cid, truth, top: int = 100):
    """The identities spread over the most clusters: a list of (identity, size, pieces)
    with pieces [(cluster id, members of the identity in it), ...] largest first."""
    truth = np.asarray(truth, dtype=np.int64)
    known = truth >= 0
    if not known.any():
        return []
    pairs = np.stack([truth[known], cid[known]], axis=1)
    uniq, counts = np.unique(pairs, axis=0, return_counts=True)
    ids, first, n_pieces = np.unique(uniq[:, 0], return_index=True, return_counts=True)
    size = np.add.reduceat(counts, first)
    split = n_pieces > 1
    order = np.lexsort((ids[split], -size[split], -n_pieces[split]))[:top]
    out = []
    for i in np.flatnonzero(split)[order]:  # at most `top` identities
        sl = slice(first[i], first[i] + n_pieces[i])
        pc = sorted(zip(uniq[sl, 1].tolist(), counts[sl].tolist()), key=lambda t: (-t[1], t[0]))
        out.append((int(ids[i]), int(size[i]), pc))
    return out
