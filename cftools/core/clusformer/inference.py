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
from dataclasses import dataclass

import numpy as np
import torch

from ...errors import CfError
from ...formats.artifacts import Artifact, row_blocks
from .gate import Gate, unit_cosine
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


@dataclass
class LinkStats:
    """What a linking pass did: rows linked, and rows the model read (the rest were
    outside its gate and kept calibrated cosine)."""

    rows: int = 0
    model_rows: int = 0


@torch.no_grad()
def link_blocks(sequences: Artifact, features_t: torch.Tensor, *, model=None,
                method: str = "model", batch_size: int = 256, amp=None,
                prepared: bool = False, unit=None, length: int | None = None, progress=None,
                rows: tuple[int, int] | None = None, gate: Gate | None = None,
                stats: LinkStats | None = None
                ) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """Yield (start, stop, indices (rows, L) int64, probabilities (rows, L) float32).

    ``prepared``: ``features_t`` is already ``model.prepare``d (centred and normalised,
    as cf-link does in place); otherwise the model prepares a copy here. ``unit``: the
    features' ``unit_rows``, which a cosine-skip model needs; made here when not given
    (from ``features_t``, which must then not be prepared). ``length``: links of the first
    ``length`` positions only (a model's L, for longer sequences). ``rows``: only the
    sequences [start, stop) (one rank's share under torchrun), else all of them.
    ``gate``: the model reads only the rows it can change (link_array)."""
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
                                             unit=unit, progress=progress, gate=gate,
                                             stats=stats)


@torch.no_grad()
def link_array(order: np.ndarray, mask: np.ndarray, features_t: torch.Tensor, *, model=None,
               method: str = "model", batch_size: int = 256, amp=None, unit=None,
               progress=None, gate: Gate | None = None, stats: LinkStats | None = None
               ) -> np.ndarray:
    """Links (rows, L) float32 of sequences held in memory: ``order`` ids index
    ``features_t``, which for the model is already ``model.prepare``d (``unit``: the raw
    unit rows a cosine-skip model needs); cosine links read the raw features.

    ``gate`` (a cosine-skip model only): the model reads only the rows the gate says it
    can change; the others get calibrated cosine, sigmoid(a * cos + b), as the model
    computes it (gate.py). ``stats`` counts the rows linked and the rows the model read."""
    device = features_t.device
    out = np.empty(order.shape, dtype=np.float32)  # logits for the model, else cosine
    rows = np.arange(order.shape[0])
    cosine = None
    if method == "model" and model.needs_cosine:
        cosine = unit_cosine(unit, order)  # the cosine skip's input, and the gate's
        if gate is not None:  # every row starts as calibrated cosine; the model reads some
            cos_logit = model.cosine_logit(cosine)
            out[:] = cos_logit.cpu().numpy()
            rows = np.flatnonzero(gate.rows_to_read(
                cos_logit, torch.from_numpy(mask).to(cosine.device)).cpu().numpy())
    for b in range(0, rows.size, batch_size):
        take = rows[b:b + batch_size]
        o = torch.from_numpy(order[take]).to(device)
        m = torch.from_numpy(mask[take]).to(device)
        if method == "model":
            c = cosine[torch.from_numpy(take).to(cosine.device)] if cosine is not None else None
            out[take] = batch_logits(model, features_t, o, m, amp, cosine=c)
        else:
            out[take] = (centre_cosine(features_t[o]) * m).cpu().numpy()
        if progress is not None:
            progress.update(o.shape[0])
    if progress is not None and rows.size < order.shape[0]:
        progress.update(order.shape[0] - rows.size)
    if stats is not None:
        stats.rows += order.shape[0]
        stats.model_rows += int(rows.size) if method == "model" else 0
    if method == "model":  # one sigmoid over the block, whichever rows the model read
        return (torch.sigmoid(torch.from_numpy(out)) * torch.from_numpy(mask)).numpy()
    return out


def batch_logits(model, prepared, order_t, mask_t, amp, unit=None, cosine=None) -> np.ndarray:
    """Logits (batch, L) float32 of one batch; ``prepared`` = model.prepare(features). A
    model with a cosine skip needs the raw cosine of the batch's positions to their
    centres: ``cosine`` (batch, L), or computed here from ``unit`` = unit_rows(features)."""
    if model.needs_cosine and cosine is None:
        cosine = centre_cosine(unit[order_t])
    with torch.autocast(prepared.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        logits = model.infer(prepared, order_t, mask_t, cosine)
    return logits.float().cpu().numpy()


def run_batch(model, prepared, order_t, mask_t, amp, unit=None) -> np.ndarray:
    """Link probabilities of one batch (masked positions 0): batch_logits through the
    sigmoid."""
    logits = torch.from_numpy(batch_logits(model, prepared, order_t, mask_t, amp, unit))
    return (torch.sigmoid(logits) * mask_t.cpu()).numpy()


@torch.no_grad()
def predict(model, features_t, order, mask, *, batch_size=256, amp=None, progress=None,
            gate: Gate | None = None):
    """Probabilities (n, L) float32 for in-memory sequences over raw ``features_t`` (the
    model prepares a copy); masked positions get 0. ``gate``: as link_array's."""
    model.eval()
    unit = unit_rows(features_t) if model.needs_cosine else None
    return link_array(order, mask, model.prepare(features_t), model=model,
                      batch_size=batch_size, amp=amp, unit=unit, progress=progress, gate=gate)


def cosine_to_centre(features_t, order, mask, batch_size=4096) -> np.ndarray:
    """Raw cosine of every position to its centre (masked positions 0): cosine links."""
    return link_array(order, mask, features_t, method="cosine", batch_size=batch_size)
