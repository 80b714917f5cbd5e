"""Calibrated cosine (its fit) and the gate: the rows whose links the model cannot
change, which keep calibrated cosine.

cf-train fits ``a`` and ``b`` of P(same) = sigmoid(a * cos + b) to the training links
(``fit_cosine_logit``) before training; the model starts as that and learns a correction.

A cosine-skip model's logit at position j is ``a * cos_j + b`` (calibrated cosine: raw
cosine to the centre through the fitted scale and offset) plus the transformer's
correction. A decoder keeps a link when its weight reaches its threshold t; the model can
flip that decision only where the correction is larger than the distance of
``a * cos_j + b`` from logit(t), and points towards it. That distance at which the trained
model still flipped a decision, the largest seen on D_L's held-out rows (identities it
never trained on), is the correction's reach at t; cf-train records it for every decoder
at the threshold and link mode calibration chose for it (the ``gate`` entry of the
model's training summary), widened by GATE_MARGIN.

cf-link runs the transformer only on rows with a link whose calibrated cosine lies within
the reach of the threshold of the decoder it gates for; every other row gets
``sigmoid(a * cos + b)``, computed as the model computes it: exactly the weight the model
gives where its correction is zero. Under the reciprocal link mode a weight averages both
directions; a link of a skipped row has its cosine outside the reach, and so has the
reverse link (the same cosine): both directions stay on the side of t calibrated cosine
puts them, as long as the correction stays within its reach. Weights of kept links (what
Infomap's flow reads) may differ from the model's by up to the reach.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from ...formats.thresholds import calibrated_mode, threshold_key
from .grammar import centre_cosine
from .model import unit_rows

GATE_MARGIN = 1.5  # the reach recorded: the largest flip distance seen, times this
GATE_FLOOR = 0.05  # ... and at least this (logit units), when held-out rows flip nothing


@dataclass(frozen=True)
class Gate:
    """Where the model can change ``decoder``'s decisions: links whose calibrated cosine
    logit lies within ``reach`` of logit(``threshold``) (the threshold of ``mode``)."""

    decoder: str
    mode: str
    threshold: float
    reach: float  # in logit units, margin included
    flip_distance: float  # the largest distance at which held-out rows flipped, margin not

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def centre(self) -> float:
        return _logit(self.threshold)

    def rows_to_read(self, cos_logit: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(rows,) bool: the rows with a real neighbour (mask, position 0 aside) whose
        calibrated cosine logit ``cos_logit`` (rows, L) lies within the reach."""
        near = (cos_logit - self.centre).abs() <= self.reach
        near &= mask
        near[:, 0] = False
        return near.any(dim=1)


def fit_cosine_logit(cosine: np.ndarray, truth: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """(a, b) of the logistic regression P(same) = sigmoid(a * cos + b), by Newton's method
    with a small ridge (links that are all one class, or separable, stay finite)."""
    x = np.asarray(cosine, dtype=np.float64)
    y = np.asarray(truth, dtype=np.float64)
    if x.size == 0 or y.min() == y.max():
        return 1.0, 0.0
    mu, sd = x.mean(), max(x.std(), 1e-6)  # standardised: Newton is well conditioned
    z = (x - mu) / sd
    w = np.zeros(2)
    X = np.stack([z, np.ones_like(z)], axis=1)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        grad = X.T @ (p - y) + 1e-3 * w
        hess = (X * (p * (1 - p))[:, None]).T @ X + 1e-3 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    a = w[0] / sd
    return float(a), float(w[1] - a * mu)


@torch.no_grad()
def unit_cosine(unit: torch.Tensor, order: np.ndarray, block: int = 4096) -> torch.Tensor:
    """(rows, L) float32 on ``unit``'s device: the raw cosine of every position of
    ``order`` to its centre, from ``unit`` (unit_rows of the features), in blocks of rows.
    What a cosine-skip model adds to its logits and the gate reads: computed once per
    block of rows, so both see the same values."""
    out = torch.empty(order.shape, dtype=torch.float32, device=unit.device)
    for b in range(0, order.shape[0], block):
        out[b:b + block] = centre_cosine(unit[torch.from_numpy(order[b:b + block]).to(unit.device)])
    return out


@torch.no_grad()
def cosine_logits(model, unit: torch.Tensor, order: np.ndarray) -> np.ndarray:
    """(rows, L) float32: a cosine-skip model's calibrated cosine logit a * cos + b of
    every position, as the model computes it."""
    return model.cosine_logit(unit_cosine(unit, order)).cpu().numpy()


def _logit(p: float) -> float:
    return float(np.log(p) - np.log1p(-p))


def flip_distance(cos_logit: np.ndarray, model_logit: np.ndarray, use: np.ndarray,
                  threshold: float) -> float:
    """The largest |cos_logit - logit(threshold)| over the positions ``use`` where the
    model's decision at ``threshold`` differs from calibrated cosine's (0: none differs)."""
    centre = _logit(threshold)
    c = np.asarray(cos_logit, dtype=np.float64)[use]
    m = np.asarray(model_logit, dtype=np.float64)[use]
    flipped = (c >= centre) != (m >= centre)
    return float(np.abs(c[flipped] - centre).max()) if flipped.any() else 0.0


def measure_gates(thresholds: dict, cos_logit: np.ndarray, model_logit: np.ndarray,
                  use: np.ndarray, decoders) -> dict:
    """{decoder: Gate.as_dict()} for every decoder with a calibrated threshold in (0, 1),
    from held-out rows: ``cos_logit`` and ``model_logit`` (rows, L), ``use`` the positions
    that are real neighbours (not the centre)."""
    out = {}
    for decoder in decoders:
        mode = calibrated_mode(thresholds, decoder) or "reciprocal"
        t = thresholds.get(threshold_key(decoder, mode))
        if not isinstance(t, float) or not 0.0 < t < 1.0:
            continue
        dist = flip_distance(cos_logit, model_logit, use, t)
        out[decoder] = Gate(decoder, mode, t, max(GATE_FLOOR, GATE_MARGIN * dist),
                            dist).as_dict()
    return out


def model_logits(probs: np.ndarray) -> np.ndarray:
    """Logits back from probabilities (float64; 0 and 1 map to large finite values)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def recorded_gate(training: dict, decoder: str) -> Gate | None:
    """The gate cf-train recorded for ``decoder``, or None (a model without one: made
    before the gate, without held-out identities, or without a cosine skip)."""
    entry = (training.get("gate") or {}).get(decoder)
    if not isinstance(entry, dict):
        return None
    try:
        gate = Gate(str(entry["decoder"]), str(entry["mode"]), float(entry["threshold"]),
                    float(entry["reach"]), float(entry["flip_distance"]))
    except (KeyError, TypeError, ValueError):
        return None
    if not (0.0 < gate.threshold < 1.0 and np.isfinite(gate.reach) and gate.reach >= 0):
        return None
    return gate


def held_out_gates(model, features_t, order: np.ndarray, mask: np.ndarray, probs: np.ndarray,
                   thresholds: dict, decoders, log) -> dict:
    """Every decoder's gate, from the held-out rows (``order``, ``mask``) of the kept
    ``model`` and its probabilities there: {decoder: Gate.as_dict()}."""
    cos_logit = cosine_logits(model, unit_rows(features_t), order)
    use = mask.copy()
    use[:, 0] = False
    gates = measure_gates(thresholds, cos_logit, model_logits(probs), use, decoders)
    log("gate: the model changed held-out links' decisions up to " + ", ".join(
        f"{g['flip_distance']:.3f} ({name})" for name, g in gates.items())
        + f" logits from the threshold; cf-link reads rows with a link within {GATE_MARGIN} "
        "times that")
    return gates
