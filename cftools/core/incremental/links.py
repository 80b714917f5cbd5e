"""Links of the rows an add touches, by the path that made the old ones (the model's
probabilities or raw cosine), and link weights read from rows held in memory."""

from __future__ import annotations

import copy

import numpy as np
import torch

from ..clusformer.inference import cast_for_inference, link_array
from ..clusformer.model import unit_rows
from ..runtime.precision import autocast_dtype

FLOOR_SAMPLE = 4096  # old rows whose links give the cosine floor

def link_rows(feats: np.ndarray, order: np.ndarray, mask: np.ndarray, *, method: str,
              model=None, batch_size: int = 256, device="cpu", bf16: bool | None = None):
    """Links of the given sequences, by the path cf-link takes (model or cosine), computed
    over only the points these sequences name."""
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
