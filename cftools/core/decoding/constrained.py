"""Decoded clusters made to honour a person's answers (core/corrections.py).

``enforce`` takes any decoder's labels and, in this order:

1. must-links: the clusters a must-link group spans are merged into the largest of them
   (an unassigned member joins it; a group with no cluster, or a named point left
   unassigned, becomes one);
2. cannot-links: a cluster holding two cannot-linked groups is split along its weakest
   links. Its members' links (every link between two members, whatever its weight) are
   taken strongest first, each must-link group one node, and a link is kept unless it
   would join two parts that hold a cannot-linked pair (constrained single linkage, the
   maximum spanning forest that honours the answers); parts left unlinked are then joined
   largest first wherever no answer forbids it. The part with the most members keeps the
   cluster's id; the others get new ids.

No answer is ever left unmet when the answers agree with each other (core.corrections
refuses those that do not). Which links a split reads is a function of the members: the
decoder's links (``link_edges``) or the members' cosines (``cosine_edges``, where a
command has features and no links).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..corrections import Constraints
from .graph import union_find

EdgeSource = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
COSINE_NEIGHBOURS = 32  # links per member when a split reads cosines


@dataclass
class Enforced:
    labels: np.ndarray
    merges: list = field(default_factory=list)  # [(kept id, merged id)]
    splits: list = field(default_factory=list)  # [(split id, [new ids], [part sizes])]


def link_edges(indices: np.ndarray, weights: np.ndarray) -> EdgeSource:
    """The links among ``members`` from a links pair (weights as the decoder read them)."""
    def edges(members):
        n = indices.shape[0]
        inside = np.zeros(n, bool)
        inside[members] = True
        idx = indices[members]
        ok = (idx >= 0) & (idx != members[:, None])
        ok[ok] = inside[idx[ok]]
        src = np.repeat(members, idx.shape[1])[ok.ravel()]
        return src, idx[ok], np.asarray(weights[members], np.float64)[ok]
    return edges


def cosine_edges(features: np.ndarray, k: int = COSINE_NEIGHBOURS) -> EdgeSource:
    """Each member's ``k`` most similar members by cosine (unit rows)."""
    def edges(members):
        x = features[members]
        sim = x @ x.T
        np.fill_diagonal(sim, -np.inf)
        kk = min(k, members.size - 1)
        if kk <= 0:
            return (np.zeros(0, np.int64),) * 2 + (np.zeros(0),)
        top = np.argpartition(-sim, kk - 1, axis=1)[:, :kk]
        w = np.take_along_axis(sim, top, axis=1)
        return np.repeat(members, kk), members[top.ravel()], w.ravel().astype(np.float64)
    return edges


def enforce(labels: np.ndarray, cons: Constraints, edges: EdgeSource,
            next_id: int | None = None) -> Enforced:
    """``labels`` (-1 unassigned) made to honour ``cons``; new ids from ``next_id``
    (default: above the largest label)."""
    labels = np.asarray(labels, np.int64).copy()
    top = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
    fresh = max(top, next_id or 0)
    out = Enforced(labels)
    if cons.empty:
        return out
    fresh = _merge_groups(out, cons, fresh)
    _split_cannot(out, cons, edges, fresh)
    return out


def _merge_groups(out: Enforced, cons: Constraints, fresh: int) -> int:
    labels = out.labels
    sizes = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, np.int64)
    pairs_a, pairs_b = [], []
    groups = cons.members()
    for root in cons.names:  # a named point left unassigned is a cluster: it has a name
        groups.setdefault(int(root), np.array([root], np.int64))
    for pts in groups.values():
        labs = np.unique(labels[pts])
        labs = labs[labs >= 0]
        if labs.size == 0:  # no member in a cluster: the group is one
            labels[pts] = fresh
            fresh += 1
            continue
        big = int(labs[np.lexsort((labs, -sizes[labs]))[0]])
        labels[pts[labels[pts] < 0]] = big
        for lab in labs:
            if lab != big:
                pairs_a.append(big)
                pairs_b.append(int(lab))
    if pairs_a:
        ids = np.unique(np.r_[pairs_a, pairs_b])
        pos_a, pos_b = np.searchsorted(ids, pairs_a), np.searchsorted(ids, pairs_b)
        roots = union_find(ids.size, pos_a, pos_b)
        # each merged set keeps the id of its largest cluster (then the smallest id)
        keep: dict[int, int] = {}
        for pos, lab in enumerate(ids.tolist()):
            r = int(roots[pos])
            cur = keep.get(r)
            if cur is None or (sizes[lab], -lab) > (sizes[cur], -cur):
                keep[r] = lab
        new_of = np.array([keep[int(r)] for r in roots], np.int64)
        moved = np.isin(labels, ids)
        labels[moved] = new_of[np.searchsorted(ids, labels[moved])]
        out.merges.extend((int(new_of[p]), int(lab)) for p, lab in enumerate(ids.tolist())
                          if new_of[p] != lab)
    return fresh


def _split_cannot(out: Enforced, cons: Constraints, edges: EdgeSource, fresh: int) -> None:
    labels = out.labels
    if not cons.cannot.size:
        return
    # a cannot-linked group pair shares a cluster where any member of each does
    # after the merges every member of a group shares its root's cluster
    la, lb = labels[cons.cannot[:, 0]], labels[cons.cannot[:, 1]]
    bad = np.unique(la[(la == lb) & (la >= 0)])
    for lab in bad.tolist():
        members = np.flatnonzero(labels == lab)
        parts = _split_one(members, cons, edges)
        sizes = np.array([p.size for p in parts])
        order = np.lexsort((np.array([p.min() for p in parts]), -sizes))
        new_ids = []
        for rank, i in enumerate(order.tolist()):
            if rank == 0:
                continue
            labels[parts[i]] = fresh
            new_ids.append(fresh)
            fresh += 1
        out.splits.append((int(lab), new_ids, sizes[order].tolist()))


def _split_one(members: np.ndarray, cons: Constraints, edges: EdgeSource) -> list[np.ndarray]:
    """The parts of one cluster: constrained single linkage over its links."""
    groups, node = np.unique(cons.group[members], return_inverse=True)
    m = groups.size
    src, dst, w = edges(members)
    pos = np.searchsorted(members, src), np.searchsorted(members, dst)
    u, v = node[pos[0]], node[pos[1]]
    keep = u != v
    u, v, w = u[keep], v[keep], w[keep]
    inside = np.isin(cons.cannot, groups).all(axis=1)
    ca = np.searchsorted(groups, cons.cannot[inside, 0])
    cb = np.searchsorted(groups, cons.cannot[inside, 1])
    parent = list(range(m))
    conflict: dict[int, set[int]] = {}
    for a, b in zip(ca.tolist(), cb.tolist()):
        conflict.setdefault(a, set()).add(b)
        conflict.setdefault(b, set()).add(a)

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def join(x, y):
        rx, ry = find(x), find(y)
        if rx == ry or ry in conflict.get(rx, ()):
            return
        cx, cy = conflict.pop(rx, set()), conflict.pop(ry, set())
        parent[ry] = rx
        for z in cy:
            conflict[z].discard(ry)
            conflict[z].add(rx)
        if cx | cy:
            conflict[rx] = cx | cy

    for i in np.argsort(-w, kind="stable").tolist():
        join(int(u[i]), int(v[i]))
    weight = np.bincount(node, minlength=m)
    roots = [find(x) for x in range(m)]
    sizes: dict[int, int] = {}
    for x, r in enumerate(roots):
        sizes[r] = sizes.get(r, 0) + int(weight[x])
    by_size = sorted(sizes, key=lambda r: (-sizes[r], r))
    for i, s in enumerate(by_size):  # parts no link joins: to the largest that may take them
        for r in by_size[:i]:
            rr, rs = find(r), find(s)
            if rr != rs and rs not in conflict.get(rr, ()):
                join(rr, rs)
                break
    part = np.array([find(x) for x in range(m)])[node]
    return [members[part == r] for r in np.unique(part)]
