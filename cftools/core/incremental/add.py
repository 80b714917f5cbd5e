"""New points into an existing clustering, without clustering everything again.

Given the existing set (features X_old, its links (N0 x L) and clusters) and new features
X_new, the step works only where the new points reach:

1. neighbours of the new points among old + new (search.py: one search by the auto
   policy of cf-knn);
2. the *affected* old points: those with a new point among their top L (found among the
   new points' 4L nearest old points, checked against the similarity of the old point's
   L-th neighbour). Their rows are rebuilt (rows.py);
3. links for the new rows and the rebuilt rows, by the same path that made the old ones
   (links.py). Model links, by default (``relink="mirror"``): a rebuilt row is not run
   through the model again; its old neighbours keep their probabilities and an entrant j
   gets p_ij := p_ji, read from j's own (new) row (0 where i is not in it).
   ``relink="model"`` runs the rebuilt rows through the model (those an entrant can make
   a kept link in), which costs one model pass per entered row: ~23 rows per new point at
   1M points, most of an add's time;
4. the calibrated decoder (same method, threshold, link mode) on the local graph, then
   local clusters -> ids (local.py): old points keep their ids except where recorded
   merges join two old clusters.

Cost: the index search touches every point (as any search must), copying old rows and
labels is O(N) memory traffic; everything else grows with the new points and the rows
they touch, never with N.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..clusformer.grammar import build_sequences
from ..decoding.decoders import DEFAULT_INTIMACY_RATIO, DEFAULT_SIZE_STEP
from ..decoding.identities import next_free_id
from ..decoding.setting import DecoderSetting
from .links import kept_cosine_floor, link_rows, lookup, mirror_links
from .local import decode_local
from .redecode import redecode as redecode_region
from .rows import rebuild_rows
from .search import search_new

REVERSE_FACTOR = 4  # affected old points are looked for among the new points' 4L nearest
# model links: an entered old row is relinked only where an entrant's cosine to its centre
# reaches this quantile of the cosines of the links the decoder keeps (on a sample)
COSINE_QUANTILE = 0.005
RELINK = ("mirror", "model")  # how rebuilt old rows get model links; the first is default


@dataclass
class AddResult:
    labels: np.ndarray  # (N0 + N1,) the clusters of old + new
    indices: np.ndarray  # (N0 + N1, L) links of old + new (affected rows rebuilt)
    probabilities: np.ndarray
    affected: np.ndarray  # old rows rebuilt
    merges: list  # [(kept_id, merged_id, n_links)]
    counts: dict
    knn_info: dict
    seconds: dict = field(default_factory=dict)
    changes: np.ndarray | None = None  # --redecode: id changes of old points (identities)
    next_id: int | None = None  # the least cluster id never used, after the add


def add_points(old_feats: np.ndarray, new_feats: np.ndarray, old_indices: np.ndarray,
               old_probs: np.ndarray, old_labels: np.ndarray, *, link_method: str, model=None,
               decoder: str = "infomap", threshold: float, mode: str = "reciprocal",
               intimacy_ratio: float = DEFAULT_INTIMACY_RATIO,
               peaks_tolerance: float = 0.0, max_size: int | None = None,
               size_step: float = DEFAULT_SIZE_STEP, singletons: str = "keep",
               attach_threshold: float | None = None, merge_links: int = 3, seed: int = 0,
               knn_method: str = "auto", batch_size: int = 256, device="cpu",
               bf16: bool | None = None, progress=None,
               cosine_quantile: float = COSINE_QUANTILE, relink: str = RELINK[0],
               min_sim: float | None = None, redecode: bool = False,
               next_id: int | None = None, step: int = 0, old_batch=None) -> AddResult:
    """The clusters of old + new; see the module's docstring. ``relink``: how rebuilt old
    rows get model links ("mirror": from the entrants' rows, no model pass; "model": the
    model on the rebuilt rows). ``cosine_quantile``: relink="model" only; entered old rows
    whose entrants all lie below that quantile of the cosines of kept links (see
    kept_cosine_floor) keep their links; 0 relinks every entered row. ``min_sim``: cf-seq
    --min-sim of the links' sequences (neighbours below it are masked, as there).
    ``redecode``, ``next_id``, ``step``, ``old_batch``: see _decode."""
    if relink not in RELINK:
        raise ValueError(f"relink must be one of {RELINK}, not {relink!r}")
    secs: dict = {}
    n0, n1 = old_feats.shape[0], new_feats.shape[0]
    n, length = n0 + n1, old_indices.shape[1]
    feats = np.concatenate([old_feats, new_feats])
    t = time.perf_counter()
    new_idx, new_sim, knn_info = search_new(feats, new_feats, min(n, REVERSE_FACTOR * length),
                                            method=knn_method, seed=seed, progress=progress,
                                            recall_k=length)
    secs["search"] = time.perf_counter() - t

    t = time.perf_counter()
    # masked positions of the old links hold the centre's id (cf-seq); treat them as free
    old_valid = old_indices != np.arange(n0)[:, None]
    old_valid[:, 0] = True
    cosine = link_method == "cosine"
    affected, a_order, a_mask, a_cos = rebuild_rows(
        feats, old_indices, old_valid, new_idx, new_sim, n0, length,
        old_sims=np.where(old_valid, old_probs, -np.inf) if cosine else None, min_sim=min_sim)
    # the new points' own rows: centre first, then the L-1 nearest (as cf-seq builds them)
    n_order, n_mask, _ = build_sequences(new_idx, new_sim, length,
                                         centres=np.arange(n0, n), min_sim=min_sim)
    secs["rows"] = time.perf_counter() - t

    t = time.perf_counter()
    n_probs = _new_links(feats, new_feats, n_order, n_mask, link_method=link_method,
                         model=model, batch_size=batch_size, device=device, bf16=bf16)
    candidates = affected.size
    cos_floor = None
    if not cosine and relink == "mirror":
        a_probs = mirror_links(old_indices, old_probs, affected, a_order, a_mask, n_order,
                               n_probs, n0)
    else:  # cosine links too: only rows an entrant can make a kept link in
        keep, cos_floor = _rows_to_relink(
            old_feats, old_indices, old_probs, old_valid, affected, a_order, a_cos, n_order,
            n_probs, n0, threshold=float(threshold), mode=mode,
            quantile=0.0 if cosine else cosine_quantile, seed=seed, secs=secs)
        affected, a_order, a_mask, a_cos = affected[keep], a_order[keep], a_mask[keep], a_cos[keep]
        a_probs = a_cos if cosine else link_rows(feats, a_order, a_mask, method=link_method,
                                                 model=model, batch_size=batch_size,
                                                 device=device, bf16=bf16)
    secs["links"] = time.perf_counter() - t

    t = time.perf_counter()
    indices, probs = _assemble(old_indices, old_probs, (affected, a_order, a_probs),
                               (n_order, n_probs))
    secs["copy"], t = time.perf_counter() - t, time.perf_counter()
    setting = DecoderSetting(decoder, float(threshold), mode, intimacy_ratio, peaks_tolerance,
                             max_size, size_step, singletons, attach_threshold)
    labels, merges, counts, changes = _decode(
        indices, probs, old_indices, old_probs, old_labels,
        np.concatenate([affected, np.arange(n0, n)]), n0, setting, redecode=redecode,
        merge_links=merge_links, seed=seed, next_id=next_id, step=step, old_batch=old_batch)
    secs["decode"] = time.perf_counter() - t
    counts.update(entered_old_rows=int(candidates), relinked_old_rows=int(affected.size),
                  new_points=int(n1), relink="cosine" if cosine else relink,
                  **({} if cos_floor is None else {"cosine_floor": cos_floor}))
    return AddResult(labels, indices, probs, affected, merges, counts, knn_info, secs, changes,
                     next_free_id(labels, next_id))


def _decode(indices, probs, old_indices, old_probs, old_labels, rows, n0,
            setting: DecoderSetting, *, redecode, merge_links, seed, next_id, step,
            old_batch=None):
    """(labels, merges, counts, id changes or None): the local decoding that keeps old
    clusters whole, or with ``redecode`` the region decoded again (redecode.py); new ids
    from ``next_id`` (the least never used), id changes recorded under batch ``step``;
    ``old_batch``: the batch each old point came in (None: all the original set)."""
    if redecode:
        labels, changes, _, counts = redecode_region(
            indices, probs, old_indices, old_probs, old_labels, rows, n0, setting, seed=seed,
            next_id=next_free_id(old_labels, next_id), step=step, old_batch=old_batch)
        return labels, [], counts, changes
    s = setting
    labels, merges, counts = decode_local(
        indices, probs, old_indices, old_probs, old_labels, rows, n0, decoder=s.method,
        threshold=s.threshold, mode=s.mode, intimacy_ratio=s.intimacy_ratio,
        peaks_tolerance=s.peaks_tolerance, max_size=s.max_size, size_step=s.size_step,
        singletons=s.singletons, attach_threshold=s.attach_threshold, merge_links=merge_links,
        seed=seed, next_id=next_id)
    return labels, merges, counts, None


def _new_links(feats, new_feats, n_order, n_mask, *, link_method, model, batch_size, device,
               bf16):
    """Links of the new points' rows, by the path that made the old ones."""
    if link_method == "cosine":  # cosine links are the similarities: no model, no gather
        return (np.einsum("nd,nld->nl", new_feats, feats[n_order]) * n_mask).astype(np.float32)
    return link_rows(feats, n_order, n_mask, method=link_method, model=model,
                     batch_size=batch_size, device=device, bf16=bf16)


def _assemble(old_indices, old_probs, rebuilt, new_rows):
    """Links of old + new: the old rows, the rebuilt ones over them, the new ones after."""
    (affected, a_order, a_probs), (n_order, n_probs) = rebuilt, new_rows
    n0, length = old_indices.shape
    n = n0 + n_order.shape[0]
    indices = np.empty((n, length), np.int64)
    probs = np.empty((n, length), np.float32)
    indices[:n0], probs[:n0] = old_indices, old_probs
    indices[affected], probs[affected] = a_order, a_probs
    indices[n0:], probs[n0:] = n_order, n_probs
    return indices, probs


def _rows_to_relink(old_feats, old_indices, old_probs, old_valid, affected, a_order, a_cos,
                    n_order, n_probs, n0, *, threshold, mode, quantile, seed, secs):
    """The entered old rows to relink (a mask over ``affected``) and the cosine floor used
    (model links, ``quantile`` > 0). A row is relinked where an entrant could make a kept link:
    under reciprocal weights (p_ij + p_ji) / 2 >= t needs p_ji >= 2t - 1, p_ji read from
    the entrant's row; and where some entrant's cosine to the row's centre reaches the
    cosine floor: the cosine below which kept links are rare (the ``quantile`` of the
    cosines of the kept links of a sample of old rows)."""
    length = a_order.shape[1]
    keep = np.ones(affected.size, bool)
    cos_floor = None
    if quantile > 0 and affected.size:
        t = time.perf_counter()
        cos_floor = kept_cosine_floor(old_feats, old_indices, old_probs, old_valid, threshold,
                                      mode, quantile, seed=seed)
        secs["cosine_floor"] = time.perf_counter() - t
    if (mode == "reciprocal" or cos_floor is not None) and affected.size:
        entrant = a_order >= n0
        ok = np.ones(int(entrant.sum()), bool)
        if mode == "reciprocal":
            r_i = np.repeat(affected, length)[entrant.ravel()]
            r_j = a_order[entrant]
            ok &= lookup(n_order, n_probs, r_j - n0, r_i) >= 2 * threshold - 1
        if cos_floor is not None:
            ok &= a_cos[entrant] >= cos_floor["floor"]
        keep = np.zeros(affected.size, bool)
        np.logical_or.at(keep, np.repeat(np.arange(affected.size), length)[entrant.ravel()], ok)
    return keep, cos_floor
