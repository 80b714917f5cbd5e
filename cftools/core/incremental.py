"""New points into an existing clustering, without clustering everything again.

Given the existing set (features X_old, its links (N0 x L) and clusters) and new features
X_new, the step works only where the new points reach:

1. neighbours of the new points among old + new (one index search; exact while small,
   else an inverted-file index with nprobe tuned on a sample to a recall target);
2. the *affected* old points: those with a new point among their top L (found among the
   new points' 4L nearest old points, checked against the similarity of the old point's
   L-th neighbour). Their rows are rebuilt: the old neighbours and the new points that
   enter, centre first, by falling similarity, L positions;
3. links for the new rows and the rebuilt rows, by the same path that made the old ones
   (the model's probabilities or raw cosine, as the links file says). Model links, by
   default (``relink="mirror"``): a rebuilt row is not run through the model again; its
   old neighbours keep their probabilities and an entrant j gets p_ij := p_ji, read from
   j's own (new) row (0 where i is not in it). ``relink="model"`` runs the rebuilt rows
   through the model (those an entrant can make a kept link in), which costs one model
   pass per entered row: ~23 rows per new point at 1M points, most of an add's time;
4. the calibrated decoder (same method, threshold, link mode) on the local graph: the new
   points and, as one node each, the old clusters they have kept links to (the links of
   its members summed; every node keeps its L-1 strongest out-links);
5. local clusters -> ids: a new point joins the old cluster it holds the most kept link
   weight to within its local cluster; local clusters without old points become new
   clusters with fresh ids above the largest; old points keep their ids, except where two
   old clusters lie in one local cluster *and* new links reach at least ``merge_links``
   distinct members and MERGE_SHARE of each (through new points with kept links into
   both, or old-old links kept now that were not before): those are merged (the larger
   keeps its id) and every merge is recorded.

Cost: the index search touches every point (as any search must), copying old rows and
labels is O(N) memory traffic; everything else grows with the new points and the rows
they touch, never with N.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import decoding
from . import neighbours as nb

# a merge of two old clusters needs new links to reach, on each side, merge_links members
# and this share of the cluster: on CelebA (cosine links at 0.93) new images reached 3-9
# members of each of two clusters of different people (sizes 11-28), which merged them
MERGE_SHARE = 0.75
REVERSE_FACTOR = 4  # affected old points are looked for among the new points' 4L nearest
# model links: an entered old row is relinked only where an entrant's cosine to its centre
# reaches this quantile of the cosines of the links the decoder keeps (on a sample)
COSINE_QUANTILE = 0.005
FLOOR_SAMPLE = 4096  # old rows whose links give the cosine floor
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


# --------------------------------------------------------------------------- neighbours


def search_new(base: np.ndarray, queries: np.ndarray, k: int, *, method: str = "auto",
               exact_below: int = nb.AUTO_EXACT_BELOW, recall_target: float = nb.RECALL_TARGET,
               sample: int = 100, seed: int = 0, batch_size: int = 16384, progress=None,
               recall_k: int | None = None):
    """(indices, similarities, info): the k nearest of each query among ``base`` (which
    holds the queries at its end). auto: exact while queries x base is small, else IVF
    searched by matrix products (InvertedLists) at the smallest nprobe whose recall@recall_k
    (the first ``recall_k`` columns, default k: the ones that make sequences; the rest only
    find the old rows a new point enters) on a sample of the queries against exact search
    reaches ``recall_target`` (neighbours.smallest_nprobe, as cf-knn tunes faiss's IVF);
    exact where no nprobe cheaper than exact search reaches it."""
    recall_k = min(k, recall_k or k)
    n, nq = base.shape[0], queries.shape[0]
    centres = np.arange(n - nq, n)
    info: dict = {"requested": method}
    chosen = method
    if method == "auto":
        chosen = "exact" if nb.auto_uses_exact(n, nq, exact_below) else "ivf"
    if chosen == "ivf":
        lists = InvertedLists(base, seed=seed)
        rows = nb.sample_rows(nq, sample, seed)
        exact_ids = nb.exact_of(base, queries[rows], recall_k, centres=centres[rows])

        def search_at(p: int) -> np.ndarray:
            got, _ = lists.search(queries[rows], k, p)
            nb.put_self_first(got, np.zeros(got.shape, np.float32), centres=centres[rows])
            return got[:, :recall_k]

        found, reached, trials = nb.smallest_nprobe(
            search_at, exact_ids, nb.max_nprobe(n, lists.nlist), target=recall_target)
        info.update(nlist=lists.nlist, trials=[t[:2] for t in trials], recall_k=recall_k)
        if found is None:
            chosen = "exact"
        else:
            info.update(nprobe=int(found), recall_at_k=float(reached),
                        recall_sample=len(rows))
            indices, sims = lists.search(queries, k, found)
            if progress is not None:
                progress.update(nq)
    if chosen == "exact":
        index = nb.build_index(base, nb.KnnParams(method="exact", batch_size=batch_size), k)
        indices, sims = nb.search(index, queries, k, batch_size, progress)
        del index
    info["method"] = chosen
    nb.put_self_first(indices, sims, centres=centres)
    return indices, sims, info


class InvertedLists:
    """Inverted lists for a search of a few queries against many points, by matrix
    products: a coarse quantiser (spherical k-means, sqrt(N)/2 lists from 16 points a
    list, 10 rounds), the points sorted by list, and per list one product of the
    queries that probe it with its members. faiss's IVF scans a list one vector at a time
    per query (10K queries x 1M points, nprobe 10: 9 s on one core); here the same work is
    a few hundred GEMMs."""

    def __init__(self, base: np.ndarray, *, seed: int = 0, block: int = 1 << 16):
        import faiss

        n, d = base.shape
        self.base = base
        self.nlist = nlist = int(max(1, min(np.sqrt(n) / 2, n // 39)))
        rng = np.random.default_rng(seed)
        train = base[np.sort(rng.choice(n, size=min(n, 16 * nlist), replace=False))]
        km = faiss.Kmeans(d, nlist, niter=10, spherical=True, seed=seed,
                          min_points_per_centroid=1)
        km.train(np.ascontiguousarray(train))
        self.centroids = km.centroids.astype(np.float32)
        assign = np.empty(n, np.int64)
        for b in range(0, n, block):
            assign[b:b + block] = np.argmax(base[b:b + block] @ self.centroids.T, axis=1)
        self.order = np.argsort(assign, kind="stable")
        self.offsets = np.r_[0, np.cumsum(np.bincount(assign, minlength=nlist))]

    def search(self, queries: np.ndarray, k: int, nprobe: int):
        nq = queries.shape[0]
        nprobe = min(nprobe, self.nlist)
        cq = queries @ self.centroids.T
        probes = np.argpartition(-cq, nprobe - 1, axis=1)[:, :nprobe] if nprobe < self.nlist \
            else np.broadcast_to(np.arange(self.nlist), (nq, self.nlist))
        cand_s = np.full((nq, nprobe * k), -np.inf, np.float32)
        cand_i = np.full((nq, nprobe * k), -1, np.int64)
        q_of = np.repeat(np.arange(nq), nprobe)
        slot = np.tile(np.arange(nprobe), nq)
        lst = np.asarray(probes).ravel()
        by = np.argsort(lst, kind="stable")
        q_of, slot, lst = q_of[by], slot[by], lst[by]
        cuts = np.r_[0, np.flatnonzero(np.diff(lst)) + 1, lst.size]
        for a, b in zip(cuts[:-1], cuts[1:]):
            ll = lst[a]
            members = self.order[self.offsets[ll]:self.offsets[ll + 1]]
            if members.size == 0:
                continue
            qs, sl = q_of[a:b], slot[a:b]
            sims = queries[qs] @ self.base[members].T
            kk = min(k, members.size)
            part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk] if kk < members.size \
                else np.broadcast_to(np.arange(kk), sims.shape)
            cols = sl[:, None] * k + np.arange(kk)[None, :]
            cand_s[qs[:, None], cols] = np.take_along_axis(sims, part, 1)
            cand_i[qs[:, None], cols] = members[part]
        kk = min(k, cand_s.shape[1])
        top = np.argpartition(-cand_s, kk - 1, axis=1)[:, :kk] if kk < cand_s.shape[1] \
            else np.broadcast_to(np.arange(kk), cand_s.shape)
        s = np.take_along_axis(cand_s, top, 1)
        i = np.take_along_axis(cand_i, top, 1)
        o = np.argsort(-s, axis=1, kind="stable")
        s, i = np.take_along_axis(s, o, 1), np.take_along_axis(i, o, 1)
        if kk < k:  # fewer candidates than k: pad as faiss does
            s = np.concatenate([s, np.full((nq, k - kk), -np.inf, np.float32)], 1)
            i = np.concatenate([i, np.full((nq, k - kk), -1, np.int64)], 1)
        return i, s


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
    # per affected row: its old neighbours and its entrants, best L-1 by similarity
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


# --------------------------------------------------------------------------- links


def link_rows(feats: np.ndarray, order: np.ndarray, mask: np.ndarray, *, method: str,
              model=None, batch_size: int = 256, device="cpu", bf16: bool | None = None):
    """Links of the given sequences, by the path cf-link takes (model or cosine), computed
    over only the points these sequences name."""
    import torch

    from .linking import cast_for_inference, link_array
    from .model import unit_rows
    from .training import autocast_dtype

    if order.shape[0] == 0:
        return np.zeros(order.shape, np.float32)
    used, local = np.unique(order, return_inverse=True)
    local = local.reshape(order.shape)
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:  # "cuda" is the current GPU: name it as
        dev = torch.device("cuda", torch.cuda.current_device())  # parameters there do
    x = torch.from_numpy(np.ascontiguousarray(feats[used])).to(dev)
    if method == "cosine":
        return link_array(local, mask, x, method="cosine", batch_size=4096)
    if next(model.parameters()).device != dev:  # a copy there: the caller's model stays put
        import copy

        model = copy.deepcopy(model).to(dev)
    amp = autocast_dtype(dev, bf16)
    if amp is torch.bfloat16:
        model, amp = cast_for_inference(model, torch.bfloat16), None
    model.eval()
    unit = unit_rows(x) if model.needs_cosine else None
    prepared = model.prepare(x, dtype=model.input_proj.weight.dtype)
    return link_array(local, mask, prepared, model=model, batch_size=batch_size, amp=amp,
                      unit=unit)


def mirror_links(old_indices: np.ndarray, old_probs: np.ndarray, affected: np.ndarray,
                 order: np.ndarray, mask: np.ndarray, new_order: np.ndarray,
                 new_probs: np.ndarray, n_old: int) -> np.ndarray:
    """Model links of rebuilt old rows without a model pass: an old neighbour keeps the
    probability it had in the row, an entrant j (>= n_old) gets p_ij := p_ji from j's own
    row (0 where i is not among j's links). The model reads a row as a whole, so the old
    probabilities are those of a row without the entrant: an approximation that costs
    two row reads per link instead of a transformer pass per row."""
    length = order.shape[1]
    out = np.zeros(order.shape, np.float32)
    if affected.size == 0:
        return out
    src = np.repeat(affected, length)
    dst = order.ravel()
    flat = out.ravel()  # a view: filling it fills out
    new = dst >= n_old
    flat[~new] = lookup(old_indices, old_probs, src[~new], dst[~new])
    flat[new] = lookup(new_order, new_probs, dst[new] - n_old, src[new])
    out[:, 0] = old_probs[affected, 0]
    return np.where(mask, out, 0).astype(np.float32)


def kept_cosine_floor(feats: np.ndarray, indices: np.ndarray, probs: np.ndarray,
                      valid: np.ndarray, threshold: float, mode: str, quantile: float, *,
                      sample: int = FLOOR_SAMPLE, seed: int = 0, min_kept: int = 200):
    """The cosine below which the decoder keeps (almost) no link, read from the links
    themselves: over the links of ``sample`` random old rows, those of weight >= threshold
    under ``mode`` (p_ij, or (p_ij + p_ji) / 2), the ``quantile`` quantile of their
    cosines. Model links with the cosine skip rise with cosine (logit a * cos + b + a
    learned correction), so a link far below the kept links' cosines is not kept. None
    when the sample keeps fewer than ``min_kept`` links (no floor: every row relinked).
    No labels are read. Cost: sample x L products, independent of N."""
    n = indices.shape[0]
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(n, sample), replace=False))
    ids, ok = indices[rows], valid[rows].copy()
    ok[:, 0] = False
    ok &= ids != rows[:, None]
    src = np.repeat(rows, ids.shape[1])[ok.ravel()]
    dst = ids[ok]
    kept = edge_weights(indices, probs, src, dst, mode) >= np.float32(threshold)
    if int(kept.sum()) < min_kept:
        return None
    cos = np.einsum("nd,nd->n", feats[src[kept]], feats[dst[kept]])
    return {"floor": float(np.quantile(cos, quantile)), "quantile": float(quantile),
            "kept_links": int(kept.sum()), "sample_rows": int(rows.size)}


def lookup(order: np.ndarray, probs: np.ndarray, rows: np.ndarray, ids: np.ndarray
           ) -> np.ndarray:
    """probs[rows[e], c] where order[rows[e], c] == ids[e], else 0 (one row read per pair)."""
    out = np.zeros(rows.size, np.float32)
    step = 1 << 16
    for b in range(0, rows.size, step):
        r, i = rows[b:b + step], ids[b:b + step]
        hit = order[r] == i[:, None]
        out[b:b + r.size] = np.where(hit, probs[r], 0).max(axis=1)
    return out


def edge_weights(indices: np.ndarray, probs: np.ndarray, src: np.ndarray, dst: np.ndarray,
                 mode: str) -> np.ndarray:
    """w of the edges src -> dst (dst among src's links) under ``mode``: p_ij, or
    (p_ij + p_ji) / 2 with p_ji = 0 when src is not among dst's links; only the rows the
    edges name are read."""
    forward = lookup(indices, probs, src, dst)
    if mode == "directed":
        return forward
    return (forward + lookup(indices, probs, dst, src)) * 0.5


# --------------------------------------------------------------------------- the step


def add_points(old_feats: np.ndarray, new_feats: np.ndarray, old_indices: np.ndarray,
               old_probs: np.ndarray, old_labels: np.ndarray, *, link_method: str, model=None,
               decoder: str = "infomap", threshold: float, mode: str = "reciprocal",
               intimacy_ratio: float = decoding.DEFAULT_INTIMACY_RATIO,
               peaks_tolerance: float = 0.0, max_size: int | None = None,
               size_step: float = decoding.DEFAULT_SIZE_STEP, singletons: str = "keep",
               attach_threshold: float | None = None, merge_links: int = 3, seed: int = 0,
               knn_method: str = "auto", batch_size: int = 256, device="cpu",
               bf16: bool | None = None, progress=None,
               cosine_quantile: float = COSINE_QUANTILE, relink: str = RELINK[0],
               min_sim: float | None = None) -> AddResult:
    """The clusters of old + new; see the module's docstring. ``relink``: how rebuilt old
    rows get model links ("mirror": from the entrants' rows, no model pass; "model": the
    model on the rebuilt rows). ``cosine_quantile``: relink="model" only; entered old rows
    whose entrants all lie below that quantile of the cosines of kept links (see
    kept_cosine_floor) keep their links; 0 relinks every entered row. ``min_sim``: cf-seq
    --min-sim of the links' sequences (neighbours below it are masked, as there)."""
    if relink not in RELINK:
        raise ValueError(f"relink must be one of {RELINK}, not {relink!r}")
    secs: dict = {}
    t = time.perf_counter()
    n0, n1 = old_feats.shape[0], new_feats.shape[0]
    n, length = n0 + n1, old_indices.shape[1]
    feats = np.concatenate([old_feats, new_feats])
    k_search = min(n, REVERSE_FACTOR * length)
    new_idx, new_sim, knn_info = search_new(feats, new_feats, k_search, method=knn_method,
                                            seed=seed, progress=progress, recall_k=length)
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
    from .grammar import build_sequences

    n_order, n_mask, _ = build_sequences(new_idx, new_sim, length,
                                         centres=np.arange(n0, n), min_sim=min_sim)
    secs["rows"] = time.perf_counter() - t

    t = time.perf_counter()
    if cosine:  # cosine links are the similarities: no model, no second gather
        n_probs = (np.einsum("nd,nld->nl", new_feats, feats[n_order]) * n_mask
                   ).astype(np.float32)
    else:
        n_probs = link_rows(feats, n_order, n_mask, method=link_method, model=model,
                            batch_size=batch_size, device=device, bf16=bf16)
    # an old row is relinked where an entrant could make a kept link: under reciprocal
    # weights (p_ij + p_ji) / 2 >= t needs p_ji >= 2t - 1, p_ji read from the entrant's row
    # ... and, for model links, where some entrant's cosine to the row's centre reaches the
    # cosine floor: the cosine below which kept links (weight >= t) are rare (the
    # ``cosine_quantile`` quantile of the cosines of the kept links of a sample of old rows)
    candidates = affected.size
    cos_floor = None
    mirror = not cosine and relink == "mirror"
    if not cosine and not mirror and cosine_quantile > 0 and affected.size:
        t_floor = time.perf_counter()
        cos_floor = kept_cosine_floor(old_feats, old_indices, old_probs, old_valid,
                                      float(threshold), mode, cosine_quantile, seed=seed)
        secs["cosine_floor"] = time.perf_counter() - t_floor
    if (mode == "reciprocal" or cos_floor is not None) and affected.size and not mirror:
        entrant = a_order >= n0
        ok = np.ones(int(entrant.sum()), bool)
        if mode == "reciprocal":
            r_i = np.repeat(affected, length)[entrant.ravel()]
            r_j = a_order[entrant]
            ok &= lookup(n_order, n_probs, r_j - n0, r_i) >= 2 * float(threshold) - 1
        if cos_floor is not None:
            ok &= a_cos[entrant] >= cos_floor["floor"]
        strong = np.zeros(affected.size, bool)
        np.logical_or.at(strong, np.repeat(np.arange(affected.size), length)[entrant.ravel()],
                         ok)
        affected, a_order, a_mask = affected[strong], a_order[strong], a_mask[strong]
        a_cos = a_cos[strong]
    if cosine:
        a_probs = a_cos
    elif mirror:
        a_probs = mirror_links(old_indices, old_probs, affected, a_order, a_mask, n_order,
                               n_probs, n0)
    else:
        a_probs = link_rows(feats, a_order, a_mask, method=link_method, model=model,
                            batch_size=batch_size, device=device, bf16=bf16)
    rows = np.concatenate([affected, np.arange(n0, n)])
    secs["links"] = time.perf_counter() - t

    t = time.perf_counter()
    indices = np.empty((n, length), np.int64)
    probs = np.empty((n, length), np.float32)
    indices[:n0] = old_indices
    probs[:n0] = old_probs
    indices[affected] = a_order
    probs[affected] = a_probs
    indices[n0:] = n_order
    probs[n0:] = n_probs
    secs["copy"] = time.perf_counter() - t

    t = time.perf_counter()
    labels, merges, counts = _decode_local(
        indices, probs, old_indices, old_probs, old_labels, rows, n0, decoder=decoder,
        threshold=threshold, mode=mode, intimacy_ratio=intimacy_ratio,
        peaks_tolerance=peaks_tolerance, max_size=max_size, size_step=size_step,
        singletons=singletons, attach_threshold=attach_threshold, merge_links=merge_links,
        seed=seed)
    secs["decode"] = time.perf_counter() - t
    counts.update(entered_old_rows=int(candidates), relinked_old_rows=int(affected.size),
                  new_points=int(n1), relink="cosine" if cosine else relink)
    if cos_floor is not None:
        counts.update(cosine_floor=cos_floor)
    return AddResult(labels, indices, probs, affected, merges, counts, knn_info, secs)


def _decode_local(indices, probs, old_indices, old_probs, old_labels, rows, n0, *, decoder,
                  threshold, mode, intimacy_ratio, peaks_tolerance, max_size, size_step,
                  singletons, attach_threshold, merge_links, seed):
    """The decoder on the graph of the new points and the old clusters they link to, each
    old cluster one node (its members' kept links to and from new points summed), then
    local clusters -> ids. Size: the new points plus the clusters they touch, never the
    old points' own neighbourhoods."""
    n, length = indices.shape
    n1 = n - n0
    t = np.float32(threshold)
    relinked = rows[rows < n0]
    new_ids = np.arange(n0, n)
    # every link touching a new point: the new rows' own, and the relinked rows' to new points
    src_a = np.repeat(new_ids, length)
    dst_a = indices[n0:].ravel()
    ok = (dst_a >= 0) & (dst_a != src_a)
    src_a, dst_a = src_a[ok], dst_a[ok]
    if relinked.size:
        r_idx = indices[relinked]
        hit = r_idx >= n0
        src_b = np.repeat(relinked, length)[hit.ravel()]
        dst_b = r_idx[hit]
    else:
        src_b = dst_b = np.zeros(0, np.int64)
    src = np.concatenate([src_a, src_b])
    dst = np.concatenate([dst_a, dst_b])
    w = edge_weights(indices, probs, src, dst, mode)
    kept = w >= t
    src, dst, w = src[kept], dst[kept], w[kept]
    # nodes: new points 0..n1-1, then one per old cluster touched (unassigned: one each)
    old_end = np.where(src < n0, src, np.where(dst < n0, dst, -1))
    old_pts = old_end[old_end >= 0]
    key_of = lambda p: np.where(old_labels[p] >= 0, old_labels[p], -(p + 1))  # noqa: E731
    keys = np.unique(key_of(old_pts)) if old_pts.size else np.zeros(0, np.int64)

    def node(p):
        out = np.empty(p.shape, np.int64)
        new = p >= n0
        out[new] = p[new] - n0
        out[~new] = n1 + np.searchsorted(keys, key_of(p[~new]))
        return out

    u, v = node(src), node(dst)
    n_nodes = n1 + keys.size
    # summed weights per (u, v); each node keeps its ``length`` strongest out-links
    pair = u * n_nodes + v
    up, inv = np.unique(pair, return_inverse=True)
    wsum = np.bincount(inv, weights=w).astype(np.float32)
    pu, pv = up // n_nodes, up % n_nodes
    order = np.lexsort((-wsum, pu))
    pu, pv, wsum = pu[order], pv[order], wsum[order]
    first = np.r_[0, np.flatnonzero(np.diff(pu)) + 1]
    rank = np.arange(pu.size) - np.repeat(first, np.diff(np.r_[first, pu.size]))
    top = rank < length - 1
    pu, pv, wsum, rank = pu[top], pv[top], wsum[top], rank[top]
    local_idx = np.full((n_nodes, length), -1, np.int64)
    local_w = np.zeros((n_nodes, length), np.float32)
    local_idx[:, 0] = np.arange(n_nodes)
    local_idx[pu, rank + 1] = pv
    local_w[pu, rank + 1] = wsum
    local = decoding.decode(decoder, local_idx, local_w, float(threshold), max_size=max_size,
                            size_step=size_step, intimacy_ratio=intimacy_ratio,
                            peaks_tolerance=peaks_tolerance, seed=seed)
    super_module = local[n1:]
    super_label = np.where(keys >= 0, keys, -1)

    # ---- merge evidence: distinct members of each old cluster that new links reach, through
    # a new point with kept links into both, both in the new point's local cluster. A merge
    # needs merge_links members on *both* sides: one stray member (an image of B decoded
    # into A) that new images of B link to is no evidence that A and B are one identity.
    a = np.r_[src, dst]
    b = np.r_[dst, src]
    wb = np.r_[w, w]
    sel = (a >= n0) & (b < n0)
    a, b, wb = a[sel], b[sel], wb[sel]
    lab_b = old_labels[b]
    sel = lab_b >= 0
    a, b, wb, lab_b = a[sel], b[sel], wb[sel], lab_b[sel]
    same = local[a - n0] == super_module[np.searchsorted(keys, lab_b)]
    pair_new, pair_mem, pair_lab, pair_w = a[same], b[same], lab_b[same], wb[same]
    sides: dict = {}
    if pair_new.size:
        order = np.lexsort((pair_mem, pair_lab, pair_new))
        pn, pl, pm = pair_new[order], pair_lab[order], pair_mem[order]
        cuts = np.flatnonzero(np.diff(pn)) + 1
        for n_l, n_m in zip(np.split(pl, cuts), np.split(pm, cuts)):
            labs = np.unique(n_l)
            if labs.size < 2:
                continue
            members = {int(lab): set(n_m[n_l == lab].tolist()) for lab in labs}
            for x in range(labs.size):
                for y in range(x + 1, labs.size):
                    lx, ly = int(labs[x]), int(labs[y])
                    side = sides.setdefault((lx, ly), (set(), set()))
                    side[0].update(members[lx])
                    side[1].update(members[ly])
    # ... and old-old links of the relinked rows kept now and not before, between two old
    # clusters of one local cluster (candidates: p_ij can reach the threshold at all)
    if relinked.size and keys.size:
        r_idx = indices[relinked]
        cand = (r_idx >= 0) & (r_idx < n0)
        floor = 2 * t - 1 if mode == "reciprocal" else t
        cand &= probs[relinked] >= floor
        cs = np.repeat(relinked, length)[cand.ravel()]
        cd = r_idx[cand]
        ls, ld = old_labels[cs], old_labels[cd]
        ok = (ls >= 0) & (ld >= 0) & (ls != ld)
        cs, cd, ls, ld = cs[ok], cd[ok], ls[ok], ld[ok]
        ks, kd = np.searchsorted(keys, ls), np.searchsorted(keys, ld)
        ks, kd = np.minimum(ks, keys.size - 1), np.minimum(kd, keys.size - 1)
        ok = (keys[ks] == ls) & (keys[kd] == ld) & (super_module[ks] == super_module[kd])
        cs, cd, ls, ld = cs[ok], cd[ok], ls[ok], ld[ok]
        if cs.size:
            now = edge_weights(indices, probs, cs, cd, mode) >= t
            before = edge_weights(old_indices, old_probs, cs, cd, mode) >= t
            for x, y, lx, ly in zip(cs[now & ~before], cd[now & ~before], ls[now & ~before],
                                    ld[now & ~before]):
                if lx > ly:
                    x, y, lx, ly = y, x, ly, lx
                side = sides.setdefault((int(lx), int(ly)), (set(), set()))
                side[0].add(int(x))
                side[1].add(int(y))
    old_sizes = np.bincount(old_labels[old_labels >= 0]) if (old_labels >= 0).any() \
        else np.zeros(0, np.int64)
    need = lambda lab: max(merge_links, int(np.ceil(MERGE_SHARE * old_sizes[lab])))  # noqa
    evidence = {pr: min(len(sa), len(sb)) for pr, (sa, sb) in sides.items()
                if len(sa) >= need(pr[0]) and len(sb) >= need(pr[1])}
    parent: dict = {}

    def find(x):
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    merges = []  # union-find over old ids; the larger cluster (then the smaller id) keeps its id
    for (x, y), m in sorted(evidence.items(), key=lambda kv: (-kv[1], kv[0])):
        rx, ry = find(x), find(y)
        if rx == ry:
            continue
        sx, sy = old_sizes[rx], old_sizes[ry]
        keep_id, gone = (rx, ry) if (sx, -rx) >= (sy, -ry) else (ry, rx)
        parent[gone] = keep_id
        merges.append((int(keep_id), int(gone), int(m)))

    labels = np.empty(n, np.int64)
    labels[:n0] = old_labels
    if merges:
        gone = np.array([g for _, g, _ in merges])
        moved = np.isin(labels[:n0], gone)
        labels[:n0][moved] = [find(int(v)) for v in labels[:n0][moved]]
    # a new point joins the old cluster of its local cluster it holds the most kept link
    # weight to; else the largest old cluster in its local cluster; else a new cluster
    best_lab = np.full(n1, -1, np.int64)
    if pair_new.size:
        width = old_sizes.size + 1
        key = (pair_new - n0) * width + pair_lab
        uk, inv = np.unique(key, return_inverse=True)
        tot = np.bincount(inv, weights=pair_w)
        kn, kl = uk // width, uk % width
        order = np.lexsort((kl, -tot, kn))
        first = np.r_[True, kn[order][1:] != kn[order][:-1]]
        best_lab[kn[order][first]] = kl[order][first]
    biggest = {}
    for m_id, lab in zip(super_module.tolist(), super_label.tolist()):
        if lab >= 0 and (m_id not in biggest or (old_sizes[lab], -lab) >
                         (old_sizes[biggest[m_id]], -biggest[m_id])):
            biggest[m_id] = lab
    next_id = int(old_labels.max()) + 1 if old_labels.size and old_labels.max() >= 0 else 0
    fresh: dict = {}
    joined = formed = 0
    for v in range(n1):
        lab = best_lab[v]
        if lab < 0:
            lab = biggest.get(int(local[v]), -1)
        if lab >= 0:
            labels[n0 + v] = find(int(lab))
            joined += 1
        else:
            c = int(local[v])
            if c not in fresh:
                fresh[c] = next_id
                next_id += 1
            labels[n0 + v] = fresh[c]
            formed += 1
    # new singletons under the old file's policy
    new_rows = np.arange(n0, n)
    sizes = np.bincount(labels[labels >= 0], minlength=next_id)
    single = new_rows[(labels[n0:] >= 0) & (sizes[np.maximum(labels[n0:], 0)] == 1)]
    n_single = int(single.size)
    attached = 0
    if singletons == "unassign":
        labels[single] = -1
    elif singletons == "attach" and single.size and attach_threshold is not None:
        for r in single:
            ids = indices[r]
            ok = (ids >= 0) & (ids != r)
            if not ok.any():
                continue
            wr = edge_weights(indices, probs, np.full(ok.sum(), r), ids[ok], mode)
            tl = labels[ids[ok]]
            big = (tl >= 0) & (sizes[np.maximum(tl, 0)] >= 2)
            if big.any() and wr[big].max() >= attach_threshold:
                labels[r] = tl[big][np.argmax(wr[big])]
                attached += 1
    counts = {"joined_existing": int(joined), "new_clusters": int(len(fresh)),
              "in_new_clusters": int(formed), "new_singletons": n_single,
              "attached": int(attached), "merges": len(merges), "local_nodes": int(n_nodes),
              "local_edges": int(pu.size)}
    return labels, merges, counts
