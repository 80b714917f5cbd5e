"""A person's answers as constraints on a clustering: must-links, cannot-links, names.

- "same" (a, b): every point of a and of b is one identity: a must-link group;
- "different" (a, b): no point of a shares an identity with one of b: cannot-links
  between their groups;
- "name" (points, name): the points are one identity (a must-link group) called name;
  two groups of different names are different identities (a cannot-link), and points of
  one name are one group even when named in separate answers.

``Constraints`` holds the closure: the must-link group of every point (its root), the
cannot-linked group pairs, each group's name, and for every constraint the answers that
made it, so that a contradiction (a cannot-link inside a must-link chain, one group given
two names) is refused naming the answers. The decoding that honours them is in
core/decoding/constrained.py; the questions that ask for them, core/review.py.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..errors import CfError
from ..formats.corrections import Answer


@dataclass
class Constraints:
    n: int
    group: np.ndarray  # (N,) int64: the root of every point's must-link group
    cannot: np.ndarray  # (K, 2) int64: cannot-linked group roots, each pair once, a < b
    names: dict[int, str] = field(default_factory=dict)  # group root -> name
    answers: int = 0  # answers the constraints came from

    @property
    def empty(self) -> bool:
        return not self.cannot.size and not self.must_rows().size and not self.names

    def must_rows(self) -> np.ndarray:
        """The points in a must-link group of two or more."""
        sizes = np.bincount(self.group, minlength=self.n)
        return np.flatnonzero(sizes[self.group] > 1)

    def members(self) -> dict[int, np.ndarray]:
        """{root: points} of the groups of two or more."""
        rows = self.must_rows()
        order = np.argsort(self.group[rows], kind="stable")
        rows = rows[order]
        roots, starts = np.unique(self.group[rows], return_index=True)
        return {int(r): p for r, p in zip(roots, np.split(rows, starts[1:]))}

    def constrained_rows(self) -> np.ndarray:
        """Every point some answer names, through its group."""
        roots = np.unique(np.r_[self.cannot.ravel(), list(self.names), self.must_rows()])
        return np.flatnonzero(np.isin(self.group, roots))


def no_constraints(n: int) -> Constraints:
    return Constraints(n, np.arange(n, dtype=np.int64), np.zeros((0, 2), np.int64))


class _Groups:
    """Union-find over the points answers name, remembering which answer joined what."""

    def __init__(self):
        self.parent: dict[int, int] = {}
        self.edges: dict[int, list[tuple[int, str]]] = {}  # point -> [(other, answer)]

    def find(self, x: int) -> int:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def join(self, x: int, y: int, answer: str) -> None:
        self.edges.setdefault(x, []).append((y, answer))
        self.edges.setdefault(y, []).append((x, answer))
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            self.parent[max(rx, ry)] = min(rx, ry)

    def chain(self, x: int, y: int) -> list[str]:
        """The answers along a path of 'same' answers from x to y (breadth first)."""
        prev: dict[int, tuple[int, str]] = {x: (x, "")}
        todo = deque([x])
        while todo:
            u = todo.popleft()
            if u == y:
                break
            for v, ans in self.edges.get(u, []):
                if v not in prev:
                    prev[v] = (u, ans)
                    todo.append(v)
        out, u = [], y
        while u != x and u in prev:
            u, ans = prev[u]
            out.append(ans)
        return sorted(set(out))


def constraints_from(answers: list[Answer], n: int, path=None) -> Constraints:
    """The closure of ``answers`` over a set of ``n`` points; a contradiction is refused
    with one line naming the answers (``path``: the file they came from)."""
    groups = _Groups()
    named: dict[str, tuple[int, str]] = {}  # name -> (a point, the answer)
    for ans in answers:
        if ans.kind == "same":
            first = ans.a[0]
            for p in ans.a[1:] + ans.b:
                groups.join(first, p, ans.label)
        elif ans.kind == "name" and ans.name is not None:
            first = ans.a[0]
            for p in ans.a[1:]:
                groups.join(first, p, ans.label)
            if ans.name in named:
                groups.join(named[ans.name][0], first, ans.label)
            else:
                named[ans.name] = (first, ans.label)
    roots = {p: groups.find(p) for p in groups.parent}
    group = np.arange(n, dtype=np.int64)
    if roots:
        pts = np.fromiter(roots.keys(), np.int64, len(roots))
        group[pts] = np.fromiter(roots.values(), np.int64, len(roots))
    names: dict[int, str] = {}
    for name, (p, number) in named.items():
        root = int(group[p])
        if root in names and names[root] != name:
            other = next(num for nm, (_, num) in named.items() if nm == names[root])
            raise CfError(f"contradictory answers: answers {other} and {number} give one "
                          f"identity two names ({names[root]!r}, {name!r}); point {p}", path)
        names[root] = name
    pairs: dict[tuple[int, int], str] = {}
    for ans in answers:
        if ans.kind != "different":
            continue
        for x in ans.a:
            for y in ans.b:
                gx, gy = int(group[x]), int(group[y])
                if gx == gy:
                    joined = groups.chain(x, y) if x != y else []
                    said = f"the 'same' answers {', '.join(map(str, joined))} join them" \
                        if joined else "they are one point"
                    raise CfError(f"contradictory answers: answer {ans.label} says points "
                                  f"{x} and {y} differ, but {said}", path)
                pairs.setdefault((min(gx, gy), max(gx, gy)), ans.label)
    named_roots = sorted(names)
    for i, r1 in enumerate(named_roots):  # two names are two identities
        for r2 in named_roots[i + 1:]:
            pairs.setdefault((r1, r2), "")
    cannot = np.array(sorted(pairs), np.int64).reshape(-1, 2)
    return Constraints(n, group, cannot, names, len(answers))


def answered_pairs(cons: Constraints, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """For point pairs (rows[i], cols[i]): 1 where the answers say one identity, 0 where
    they say two, -1 where they say nothing. What training reads as labelled pairs."""
    gi, gj = cons.group[rows], cons.group[cols]
    out = np.full(rows.shape, -1, np.int8)
    must = cons.must_rows()
    in_group = np.zeros(cons.n, bool)
    in_group[must] = True
    out[(gi == gj) & in_group[rows] & in_group[cols]] = 1
    if cons.cannot.size:
        key = cons.cannot[:, 0] * np.int64(cons.n) + cons.cannot[:, 1]
        a, b = np.minimum(gi, gj), np.maximum(gi, gj)
        out[np.isin(a * np.int64(cons.n) + b, key)] = 0
    return out


def train_on_answers(data, path, feats, log=None):
    """cf-train --corrections: the answered pairs of a corrections file become labelled
    pairs of the training sequences ``data`` (core.clusformer.sequences.SequenceData) over
    the features ``feats``. The answers name rows of the set they were given about: FEATURES
    itself (or a set it grew from), or, for a training set cf-merge labels wrote (datasets
    source, source_rows), its pseudo-labelled rows. A position (centre i, neighbour j) the
    answers decide gets target 1 (one identity) or 0 (two); an answered centre of unknown
    label joins training under its must-link group (a label above every known one).
    Returns the new data; ``log`` gets one line of counts."""
    from ..formats.corrections import check_fits, lineage, read_corrections

    corr = read_corrections(path)
    art = feats.artifact
    if art is not None and "source_rows" in art and "source" in art:
        src, src_rows = art.read("source"), art.read("source_rows")
        n_set = int(src_rows[src == 1].max()) + 1 if (src == 1).any() else 0
        check_fits(corr, max(n_set, corr.n_points), lineage(art, feats.id), against=feats.path)
        answered_row = np.where(src == 1, src_rows, -1)  # training row -> answered set's row
        n_set = max(n_set, corr.n_points)
    else:
        check_fits(corr, feats.n, lineage(art, feats.id), against=feats.path, names=feats.names)
        answered_row, n_set = np.arange(feats.n), feats.n
    cons = constraints_from(corr.answers, n_set, path)
    order, mask = data.order, data.mask
    rows = np.where(order >= 0, answered_row[np.maximum(order, 0)], -1)
    centre = np.broadcast_to(rows[:, :1], rows.shape)
    ok = mask & (rows >= 0) & (centre >= 0)
    ok[:, 0] = False
    said = np.full(order.shape, -1, np.int8)
    said[ok] = answered_pairs(cons, centre[ok], rows[ok])
    targets = np.where(said >= 0, said, data.targets).astype(np.int8)
    labels = data.labels.copy()
    named = np.zeros(n_set, bool)
    named[cons.constrained_rows()] = True
    train_rows = np.flatnonzero((answered_row >= 0) & named[np.maximum(answered_row, 0)]
                                & (labels < 0))
    top = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
    labels[train_rows] = top + cons.group[answered_row[train_rows]]
    if log is not None:
        log(f"cf-train: {len(corr.answers)} answers: {int((said == 1).sum())} positions of one "
            f"identity and {int((said == 0).sum())} of two; {train_rows.size} points of unknown "
            "label join training")
    return type(data)(order, mask, targets, labels)
