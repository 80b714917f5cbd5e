"""Running a trained Clusformer: sequences -> for every point, the probability that each
neighbour in its sequence shares its identity. One batch loop (``link_array``) serves
cf-link, cf-merge add, training's validation and calibration, and cosine links alike.

Column j of a point's links is position j of its sequence (column 0 is the point itself).
Masked positions (below --min-sim, or no neighbour at all) get probability 0.
``method="cosine"`` gives the raw cosine to the centre instead: the training-free baseline.
cf-link streams: sequences are read and links produced in row blocks (``link_blocks``), so
N is bounded by disk, not memory (the features themselves are held whole).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import torch

from ...errors import CfError
from ...formats.artifacts import Artifact, row_blocks
from .grammar import centre_cosine
from .model import unit_rows

METHODS = ("model", "cosine")


def cast_for_inference(model, dtype):
    """A copy of the model with its weights in ``dtype`` (bf16: faster on CPUs with
    AVX-512 BF16), except ``feature_mean``: centring and the CDE stay in float32."""
    out = copy.deepcopy(model).to(dtype)
    out.feature_mean = model.feature_mean.detach().clone().float()
    if model.needs_cosine:  # a * cos + b: b is ~ -50, bf16 would round it by 0.25
        out.skip = torch.nn.Parameter(model.skip.detach().clone().float())
    return out.eval()


def check_fits(model, n_features_dim: int, seq_len: int, model_path=None) -> None:
    c = model.config
    if c.dim != n_features_dim:
        raise CfError(f"model expects features of dimension {c.dim}, the features have "
                      f"{n_features_dim}", model_path)
    if c.seq_len > seq_len:
        raise CfError(f"model reads sequences of length L={c.seq_len}, the sequences have "
                      f"only L={seq_len} (rerun cf-seq with -L {c.seq_len} or more)", model_path)


@torch.no_grad()
def link_blocks(sequences: Artifact, features_t: torch.Tensor, *, model=None,
                method: str = "model", batch_size: int = 256, amp=None,
                prepared: bool = False, unit=None, length: int | None = None, progress=None,
                rows: tuple[int, int] | None = None
                ) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """Yield (start, stop, indices (rows, L) int64, probabilities (rows, L) float32).

    ``prepared``: ``features_t`` is already ``model.prepare``d (centred and normalised,
    as cf-link does in place); otherwise the model prepares a copy here. ``unit``: the
    features' ``unit_rows``, which a cosine-skip model needs; made here when not given
    (from ``features_t``, which must then not be prepared). ``length``: links of the first
    ``length`` positions only (a model's L, for longer sequences). ``rows``: only the
    sequences [start, stop) (one rank's share under torchrun), else all of them."""
    if method not in METHODS:
        raise CfError(f"unknown link method {method!r} (model or cosine)")
    if method == "model":
        if model is None:
            raise CfError("--method model needs --model")
        model.eval()
        if model.needs_cosine and unit is None:
            if prepared:
                raise CfError("a cosine-skip model needs the raw unit features (unit=)")
            unit = unit_rows(features_t)
        if not prepared:
            features_t = model.prepare(features_t)
    lo, hi = rows if rows is not None else (0, sequences["order"].shape[0])
    for start, stop in row_blocks(sequences["order"]):
        start, stop = max(start, lo), min(stop, hi)  # chunk-aligned reads within the range
        if start >= stop:
            continue
        order = np.ascontiguousarray(sequences.read("order", slice(start, stop))[:, :length])
        mask = np.ascontiguousarray(sequences.read("mask", slice(start, stop))[:, :length])
        if order.min() < 0 or order.max() >= features_t.shape[0]:
            raise CfError(f"sequence ids out of range [0, {features_t.shape[0]}) in rows "
                          f"{start}..{stop - 1}", sequences.path)
        yield start, stop, order, link_array(order, mask, features_t, model=model,
                                             method=method, batch_size=batch_size, amp=amp,
                                             unit=unit, progress=progress)


@torch.no_grad()
def link_array(order: np.ndarray, mask: np.ndarray, features_t: torch.Tensor, *, model=None,
               method: str = "model", batch_size: int = 256, amp=None, unit=None,
               progress=None) -> np.ndarray:
    """Links (rows, L) float32 of sequences held in memory: ``order`` ids index
    ``features_t``, which for the model is already ``model.prepare``d (``unit``: the raw
    unit rows a cosine-skip model needs); cosine links read the raw features."""
    device = features_t.device
    probs = np.empty(order.shape, dtype=np.float32)
    for b in range(0, order.shape[0], batch_size):
        o = torch.from_numpy(order[b:b + batch_size]).to(device)
        m = torch.from_numpy(mask[b:b + batch_size]).to(device)
        if method == "model":
            probs[b:b + o.shape[0]] = run_batch(model, features_t, o, m, amp, unit)
        else:
            probs[b:b + o.shape[0]] = (centre_cosine(features_t[o]) * m).cpu().numpy()
        if progress is not None:
            progress.update(o.shape[0])
    return probs


def run_batch(model, prepared, order_t, mask_t, amp, unit=None) -> np.ndarray:
    """Link probabilities of one batch, masked positions 0; ``prepared`` = model.prepare(features),
    ``unit`` = unit_rows(features), needed by a model with a cosine skip."""
    cosine = centre_cosine(unit[order_t]) if model.needs_cosine else None
    with torch.autocast(prepared.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        logits = model.infer(prepared, order_t, mask_t, cosine)
    prob = torch.sigmoid(logits.float()) * mask_t
    return prob.cpu().numpy()


@torch.no_grad()
def predict(model, features_t, order, mask, *, batch_size=256, amp=None, progress=None):
    """Probabilities (n, L) float32 for in-memory sequences over raw ``features_t`` (the
    model prepares a copy); masked positions get 0."""
    model.eval()
    unit = unit_rows(features_t) if model.needs_cosine else None
    return link_array(order, mask, model.prepare(features_t), model=model,
                      batch_size=batch_size, amp=amp, unit=unit, progress=progress)


def cosine_to_centre(features_t, order, mask, batch_size=4096) -> np.ndarray:
    """Raw cosine of every position to its centre (masked positions 0): cosine links."""
    return link_array(order, mask, features_t, method="cosine", batch_size=batch_size)
