"""The old points a new point enters: their sequences rebuilt with the entrants, as cf-seq
would build them (centre first, then by falling similarity, L positions)."""

from __future__ import annotations

import numpy as np


def _row_sims(feats: np.ndarray, rows: np.ndarray, ids: np.ndarray, block: int = 2048
              ) -> np.ndarray:
    """Cosine of point rows[r] to each ids[r, c] (ids -1 -> -inf), in row blocks."""
    out = np.empty(ids.shape, np.float32)
    for b in range(0, rows.size, block):
        i = ids[b:b + block]
        safe = np.where(i >= 0, i, 0)
        s = np.einsum("rd,rcd->rc", feats[rows[b:b + block]], feats[safe])
        out[b:b + block] = np.where(i >= 0, s, -np.inf)
    return out


def rebuild_rows(feats: np.ndarray, old_indices: np.ndarray, old_valid: np.ndarray,
                 new_idx: np.ndarray, new_sim: np.ndarray, n_old: int, length: int,
                 old_sims: np.ndarray | None = None, min_sim: float | None = None):
    """The old points whose top ``length`` a new point enters, and their new rows.

    ``old_sims``: the old rows' cosines when the links are cosine links (they are the
    links), else computed: the last valid neighbour's for every candidate, whole rows only
    for the rows entered. Returns (affected old rows (A,), order (A, L), mask (A, L),
    similarities (A, L)). A candidate pair (i, j) is
    an old point i among new point j's neighbours; it enters i's row when its similarity
    beats that of i's last (L-th) neighbour, or i's row has a free (masked) slot.
    ``min_sim`` (cf-seq --min-sim): a neighbour below it, old or new, is a free slot."""
    nq, k = new_idx.shape
    j = np.repeat(np.arange(n_old, n_old + nq), k)
    i = new_idx.ravel()
    s = new_sim.ravel()
    cand = (i >= 0) & (i < n_old)
    i, j, s = i[cand], j[cand], s[cand]
    empty = np.zeros((0, length), np.int64)
    nothing = (np.zeros(0, np.int64), empty, empty.astype(bool), empty.astype(np.float32))
    if i.size == 0:
        return nothing
    uniq = np.unique(i)
    # the similarity an entrant must beat: i's L-th neighbour (or -inf with a free slot);
    # rows run by falling similarity, so that is the last position
    rows_old = old_indices[uniq]
    valid_old = old_valid[uniq].copy()
    valid_old[:, 0] = False  # the centre
    full = valid_old[:, 1:].all(axis=1)
    if old_sims is not None:
        last = old_sims[uniq, -1]
    else:
        last = _row_sims(feats, uniq, rows_old[:, -1:])[:, 0]
    if min_sim is not None:  # rows run by falling similarity: a last one above is all above
        full &= last >= min_sim
    floor = np.where(full, last, -np.inf)
    pos = np.searchsorted(uniq, i)
    enters = s > floor[pos]
    if min_sim is not None:
        enters &= s >= min_sim
    i, j, s, pos = i[enters], j[enters], s[enters], pos[enters]
    hit = np.unique(pos)
    if hit.size == 0:
        return nothing
    rows_old, valid_old = rows_old[hit], valid_old[hit]
    sim_old = old_sims[uniq[hit]] if old_sims is not None else \
        _row_sims(feats, uniq[hit], rows_old)
    if min_sim is not None:
        valid_old &= sim_old >= min_sim
    sim_old = np.where(valid_old, sim_old, -np.inf).astype(np.float32)
    return _merged_rows(uniq, hit, pos, j, s, rows_old, valid_old, sim_old, length)


def _merged_rows(uniq, hit, pos, j, s, rows_old, valid_old, sim_old, length: int):
    """Per affected row: its old neighbours and its entrants (new point j at similarity
    s), the best L-1 by similarity after the centre; (affected, order, mask, cosine)."""
    remap = np.full(uniq.size, -1, np.int64)
    remap[hit] = np.arange(hit.size)
    r = remap[pos]
    counts = np.bincount(r, minlength=hit.size)
    width = int(counts.max())
    ent_ids = np.full((hit.size, width), -1, np.int64)
    ent_sim = np.full((hit.size, width), -np.inf, np.float32)
    order_r = np.argsort(r, kind="stable")
    start = np.r_[0, np.cumsum(counts)[:-1]]
    col = np.arange(r.size) - start[r[order_r]]
    ent_ids[r[order_r], col] = j[order_r]
    ent_sim[r[order_r], col] = s[order_r]
    ids = np.concatenate([np.where(valid_old, rows_old, -1), ent_ids], axis=1)
    sims = np.concatenate([sim_old, ent_sim], axis=1)
    sims[:, 0] = -np.inf  # the old centre slot
    ids[:, 0] = -1
    best = np.argsort(-sims, axis=1, kind="stable")[:, :length - 1]
    nb_ids = np.take_along_axis(ids, best, axis=1)
    nb_sims = np.take_along_axis(sims, best, axis=1)
    affected = uniq[hit]
    order = np.empty((hit.size, length), np.int64)
    mask = np.zeros((hit.size, length), bool)
    order[:, 0] = affected
    mask[:, 0] = True
    ok = (nb_ids >= 0) & np.isfinite(nb_sims)
    order[:, 1:1 + nb_ids.shape[1]] = np.where(ok, nb_ids, affected[:, None])
    mask[:, 1:1 + nb_ids.shape[1]] = ok
    if 1 + nb_ids.shape[1] < length:
        order[:, 1 + nb_ids.shape[1]:] = affected[:, None]
    cos = np.zeros((hit.size, length), np.float32)  # the rows' cosine links
    cos[:, 0] = 1.0
    cos[:, 1:1 + nb_ids.shape[1]] = np.where(ok, nb_sims, 0)
    return affected, order, mask, cos
