"""Dropout whose mask costs a quarter of the random draws, for training on the CPU.

torch draws one random number per element for a dropout mask, serially on the CPU: on
the small preset that was a large share of a training batch's time (the figures:
bench/results/code-choices.md). Here each element's keep/drop comes from 16 random bits,
four elements to one 64-bit draw; an element is kept with probability
round(keep * 2^16) / 2^16 (within 1e-5 of 1 - p) and scaled by 1 / (1 - p), as
nn.Dropout does. On a GPU, and in eval mode, it is nn.Dropout. Drawn from torch's
generator: torch.manual_seed makes it repeat.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_BITS = 1 << 16


def keep_mask(shape, keep: float, device=None) -> torch.Tensor:
    """A bool tensor of ``shape``, each element True with probability ``keep`` (to 2^-16)."""
    n, kept = math.prod(shape), int(round(keep * _BITS))
    if kept <= 0 or kept >= _BITS:  # the bound would not fit an int16
        return torch.full(shape, kept > 0, dtype=torch.bool, device=device)
    draws = torch.randint(-(1 << 63), (1 << 63) - 1, ((n + 3) // 4,), dtype=torch.int64,
                          device=device)
    # each int16 is uniform on [-2^15, 2^15): True for the lowest round(keep * 2^16) values
    return draws.view(torch.int16)[:n].view(shape) < kept - _BITS // 2


def cheap_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """F.dropout(x, p) in training, with keep_mask's mask on the CPU."""
    if p == 0.0 or x.device.type != "cpu":
        return F.dropout(x, p, True)
    keep = 1.0 - p
    # two products, not torch.where: the same values, and a cheaper backward
    return x * keep_mask(x.shape, keep, x.device) * (1.0 / keep)


class CheapDropout(nn.Dropout):
    """nn.Dropout with keep_mask's mask on the CPU in training mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.inplace:
            return F.dropout(x, self.p, self.training, self.inplace)
        return cheap_dropout(x, self.p)


def use_cheap_dropout(module: nn.Module) -> None:
    """Every nn.Dropout inside ``module`` replaced by a CheapDropout of the same p (the
    attention weights' dropout, a number inside nn.MultiheadAttention, is the caller's:
    Clusformer.forward applies it with cheap_dropout)."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, CheapDropout(child.p))
