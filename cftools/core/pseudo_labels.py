"""Clusters of D_U + the labelled set D_L -> the next round's training labels.

Rows: D_L's rows of known label, then the D_U rows (of each cluster's core, when a
stricter clustering is given) whose cluster has at least
``min_size`` and at most ``max_size`` points. Labels: D_L's own ids, then
pseudo-identities numbered from max(D_L label) + 1 upward, so they never collide.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PseudoLabels:
    labelled_rows: np.ndarray  # rows of D_L kept (known label)
    unlabelled_rows: np.ndarray  # rows of D_U kept (in a cluster of an accepted size)
    labels: np.ndarray  # D_L's labels, then the pseudo-identities
    offset: int  # the first pseudo-identity
    max_size: int  # the size limit applied (0: none)
    counts: dict  # what was kept and left out
    label_names: dict[str, str] | None = None  # names of the labels (named clusters)


def largest_identity(labels: np.ndarray) -> int:
    """Points of the largest identity among known labels (0 when none is known)."""
    known = labels[labels >= 0]
    return int(np.bincount(np.unique(known, return_inverse=True)[1]).max()) if known.size else 0


def trim_oversized(pred: np.ndarray, features: np.ndarray, max_size: int,
                   exempt: np.ndarray | None = None) -> np.ndarray:
    """Cluster labels ``pred`` (-1 unassigned) with every cluster of more than ``max_size``
    points cut down to the ``max_size`` members nearest its mean direction; the others
    become unassigned. A cluster bigger than any real identity is mostly one identity and
    strays joined to it: the identity holds its centre, the strays its edge. ``features``:
    rows of the clustered points (compared by cosine). ``exempt``: points a person's answers
    name; a cluster holding one is left whole."""
    pred = np.asarray(pred, dtype=np.int64).copy()
    assigned = pred >= 0
    if max_size < 1 or not assigned.any():
        return pred
    sizes = np.bincount(pred[assigned])
    spared = np.zeros(sizes.size, dtype=bool)
    if exempt is not None and exempt.size:
        spared[pred[exempt][pred[exempt] >= 0]] = True
    big = np.flatnonzero((sizes > max_size) & ~spared)
    if not big.size:
        return pred
    rows = np.flatnonzero(assigned)[np.isin(pred[assigned], big)]
    rows = rows[np.argsort(pred[rows], kind="stable")]  # by cluster, rows in order within
    for members in np.split(rows, np.cumsum(sizes[big])[:-1]):
        x = np.asarray(features[members], dtype=np.float64)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        closeness = x @ x.mean(axis=0)
        # the nearest max_size stay (ties broken by row, so the cut is deterministic)
        keep = np.lexsort((members, -closeness))[:max_size]
        out = np.ones(members.size, dtype=bool)
        out[keep] = False
        pred[members[out]] = -1
    return pred


def keep_cores(pred: np.ndarray, strict: np.ndarray) -> np.ndarray:
    """Cluster labels ``pred`` (-1 unassigned) with every cluster cut to its core: its
    members in the largest piece of it under ``strict``, a clustering of the same points at
    a stricter threshold (ties: the lowest strict label); a cluster whose largest piece
    holds one point becomes unassigned. A stricter cut leaves purer clusters but splits an
    identity into pieces, and an identity trained as several classes is taught apart from
    itself: the core keeps the cut's purity and one class per cluster."""
    pred = np.asarray(pred, dtype=np.int64)
    strict = np.asarray(strict, dtype=np.int64)
    out = np.full(pred.shape, -1, dtype=np.int64)
    rows = np.flatnonzero((pred >= 0) & (strict >= 0))
    if not rows.size:
        return out
    pieces, piece_of, sizes = np.unique(np.stack([pred[rows], strict[rows]], axis=1), axis=0,
                                        return_inverse=True, return_counts=True)
    by_cluster = np.lexsort((pieces[:, 1], -sizes, pieces[:, 0]))  # largest piece first
    first = by_cluster[np.r_[True, pieces[by_cluster[1:], 0] != pieces[by_cluster[:-1], 0]]]
    core = np.zeros(len(pieces), dtype=bool)
    core[first[sizes[first] >= 2]] = True
    kept = rows[core[piece_of.ravel()]]
    out[kept] = pred[kept]
    return out


def pseudo_labels(pred: np.ndarray, labelled: np.ndarray, *, min_size: int,
                  max_size: int | str, names: dict[str, str] | None = None,
                  labelled_names: dict[str, str] | None = None,
                  trim: np.ndarray | None = None,
                  exempt: np.ndarray | None = None,
                  cores: np.ndarray | None = None) -> PseudoLabels:
    """The retraining rows and labels from cluster labels ``pred`` of D_U (-1 unassigned)
    and D_L's labels (-1 unknown). ``max_size``: a number (0: no limit) or "auto", the
    largest identity of D_L (a cluster bigger than any real identity is most likely
    several merged). ``names``: {cluster id: name} a person gave; a named cluster whose
    name is one of D_L's identities (``labelled_names``: {label: name}) takes that label,
    the others keep their pseudo-identity under the name (``label_names`` of the result).
    ``trim``: the features of D_U; a cluster over ``max_size`` is then cut to its members
    nearest its mean (trim_oversized, ``exempt`` as there) instead of dropped whole.
    ``cores``: a stricter clustering of D_U; each cluster is first cut to its core
    (keep_cores)."""
    keep_l = np.flatnonzero(labelled >= 0)
    unassigned = int((pred < 0).sum())
    outside_cores = trimmed = 0
    if cores is not None:
        cut = keep_cores(pred, cores)
        outside_cores, pred = _newly_unassigned(pred, cut), cut
    if max_size == "auto":
        max_size = largest_identity(labelled)
    if trim is not None and max_size:
        cut = trim_oversized(pred, trim, int(max_size), exempt=exempt)
        trimmed, pred = _newly_unassigned(pred, cut), cut
    assigned = pred >= 0
    sizes = np.bincount(pred[assigned]) if assigned.any() else np.zeros(0, np.int64)
    big = assigned.copy()
    big[assigned] = sizes[pred[assigned]] >= min_size
    if max_size:
        big[assigned] &= sizes[pred[assigned]] <= max_size
    keep_u = np.flatnonzero(big)
    offset = int(labelled[keep_l].max()) + 1 if keep_l.size else 0
    _, pseudo = np.unique(pred[keep_u], return_inverse=True)
    pseudo = pseudo.astype(np.int64) + offset
    dropped_small = int(((sizes < min_size)[pred[assigned]]).sum()) if assigned.any() else 0
    counts = {
        "n_labelled": int(keep_l.size), "n_pseudo": int(keep_u.size),
        "n_labelled_ids": int(np.unique(labelled[keep_l]).size),
        "n_pseudo_ids": int(pseudo.max() - offset + 1) if pseudo.size else 0,
        "pseudo_label_offset": offset, "min_size": int(min_size),
        "max_size": int(max_size or 0), "dropped_unassigned": unassigned,
        "dropped_small": dropped_small,
        "dropped_large": int(assigned.sum() - keep_u.size - dropped_small),
        "trimmed": trimmed, "outside_cores": outside_cores,
        "dropped_unlabelled_rows_of_labelled_set": int(labelled.size - keep_l.size),
    }
    label_names = None
    if names:
        pseudo, label_names = _named(pred[keep_u], pseudo, names, labelled_names or {})
        counts["named_clusters"] = len(label_names)
    return PseudoLabels(keep_l, keep_u, np.concatenate([labelled[keep_l], pseudo]), offset,
                        int(max_size or 0), counts, label_names)


def _newly_unassigned(before: np.ndarray, after: np.ndarray) -> int:
    """Points a cut took out of their cluster."""
    return int(((before >= 0) & (after < 0)).sum())


def _named(pred_kept: np.ndarray, pseudo: np.ndarray, names: dict[str, str],
           labelled_names: dict[str, str]):
    """Pseudo-labels with named clusters put under the labelled set's label of that name,
    and the names of the labels used."""
    by_name = {v: int(k) for k, v in labelled_names.items()}
    pseudo = pseudo.copy()
    out = {k: v for k, v in labelled_names.items()}
    for cluster, name in names.items():
        rows = pred_kept == int(cluster)
        if not rows.any():
            continue
        if name in by_name:
            pseudo[rows] = by_name[name]
            out[str(by_name[name])] = name
        else:
            out[str(int(pseudo[rows][0]))] = name
    return pseudo, out


def carried_labels(source: np.ndarray, source_rows: np.ndarray, labels: np.ndarray,
                   sizes: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The labels a retraining set (``source`` 0 = labelled, 1 = pseudo-labelled, each
    row's ``source_rows`` there and its ``labels``) gives every row of its two sources, of
    ``sizes`` (labelled rows, unlabelled rows): two int64 arrays, -1 where it holds no row.
    Raises ValueError on arrays of different lengths, a source other than 0 or 1, a row
    past its source's size, or a row given twice."""
    source, source_rows = np.asarray(source), np.asarray(source_rows, dtype=np.int64)
    if not source.shape == source_rows.shape == np.shape(labels):
        raise ValueError(f"has {np.size(labels)} labels, {source.size} sources and "
                         f"{source_rows.size} source rows: they must be as many")
    if not np.isin(source, (0, 1)).all():
        raise ValueError("has a source other than 0 (labelled) or 1 (pseudo-labelled)")
    out = []
    for side, (size, which) in enumerate(zip(sizes, ("the labelled", "the unlabelled"))):
        at = source == side
        rows = source_rows[at]
        bad = rows[(rows < 0) | (rows >= size)]
        if bad.size:
            raise ValueError(f"names row {int(bad[0])} of {which} set, which has {size} rows")
        if np.unique(rows).size < rows.size:
            raise ValueError(f"names a row of {which} set twice")
        side_labels = np.full(size, -1, dtype=np.int64)
        side_labels[rows] = labels[at]
        out.append(side_labels)
    return out[0], out[1]
