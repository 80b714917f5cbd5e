"""Stable cluster ids across re-decodings: a new clustering takes the ids of an old one.

``carry_ids(new, old, next_id)``: every new cluster takes the id of the old cluster it
shares the most points with, one to one (the pairs of largest overlap first; ties: the
smaller old id, then the smaller new label), so a cluster split in two keeps its id on
the larger part and two clusters merged keep the larger one's id. The other new clusters
get ids from ``next_id`` up (the least id never used: an id, once gone, is never given
again). Only the first len(old) rows are compared: rows after them are points the old
clustering did not have.

Every point whose id changed is accounted for by one row of ``changes`` (step, kind,
old id, new id, points): kind SPLIT when the old id lives on in another cluster (these
points left it), MERGED when the old id is gone (its points now carry the new id; -1:
unassigned).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLIT, MERGED = 1, 2
CHANGE_COLUMNS = ("step", "kind", "old_id", "new_id", "points")


@dataclass
class Carried:
    labels: np.ndarray  # the new clustering under the carried ids
    changes: np.ndarray  # (M, 5) int64: step, kind, old id, new id, points
    next_id: int  # the least id never used, after this
    kept: int  # old ids carried over
    fresh: int  # new ids given

    def summary(self) -> dict:
        kinds = self.changes[:, 1] if self.changes.size else np.zeros(0, np.int64)
        return {"ids_kept": self.kept, "ids_new": self.fresh,
                "split_rows": int((kinds == SPLIT).sum()),
                "merged_rows": int((kinds == MERGED).sum()),
                "points_changed": int(self.changes[:, 4].sum()) if self.changes.size else 0}


def next_free_id(labels: np.ndarray, recorded: int | None = None) -> int:
    """The least id never used: above every label and the one a file recorded."""
    top = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
    return max(top, int(recorded or 0))


def carry_ids(new: np.ndarray, old: np.ndarray, next_id: int, step: int = 0) -> Carried:
    """``new`` labels (-1 unassigned) relabelled with the ids of ``old`` (see the module)."""
    new = np.asarray(new, np.int64)
    old = np.asarray(old, np.int64)
    n_old = old.shape[0]
    both = (new[:n_old] >= 0) & (old >= 0)
    pairs = np.stack([old[both], new[:n_old][both]], axis=1)
    if pairs.size:
        uniq, counts = np.unique(pairs, axis=0, return_counts=True)
    else:
        uniq, counts = np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    order = np.lexsort((uniq[:, 1], uniq[:, 0], -counts))
    id_of: dict[int, int] = {}
    taken: set[int] = set()
    for o, c in uniq[order].tolist():  # one to one, largest overlap first
        if c not in id_of and o not in taken:
            id_of[c] = o
            taken.add(o)
    kept = len(id_of)
    labs = np.unique(new[new >= 0])
    first = np.full(labs.size, new.shape[0], np.int64)  # new ids in order of smallest member
    assigned = np.flatnonzero(new >= 0)
    np.minimum.at(first, np.searchsorted(labs, new[assigned]), assigned)
    fresh = 0
    for lab in labs[np.argsort(first, kind="stable")].tolist():
        if lab not in id_of:
            id_of[lab] = next_id
            next_id += 1
            fresh += 1
    out = np.full(new.shape[0], -1, np.int64)
    if labs.size:
        table = np.array([id_of[lab] for lab in labs.tolist()], np.int64)
        out[assigned] = table[np.searchsorted(labs, new[assigned])]
    changes = id_changes(old, out[:n_old], step)
    return Carried(out, changes, next_id, kept, fresh)


def id_changes(old: np.ndarray, now: np.ndarray, step: int) -> np.ndarray:
    """One row per (old id, new id) pair of points whose id changed."""
    moved = (old >= 0) & (now != old)
    if not moved.any():
        return np.zeros((0, 5), np.int64)
    pairs, counts = np.unique(np.stack([old[moved], now[moved]], axis=1), axis=0,
                              return_counts=True)
    alive = np.unique(now[now >= 0])
    kind = np.where(np.isin(pairs[:, 0], alive), SPLIT, MERGED)
    return np.column_stack([np.full(counts.size, step), kind, pairs[:, 0], pairs[:, 1],
                            counts]).astype(np.int64)
