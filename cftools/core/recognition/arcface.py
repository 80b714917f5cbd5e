"""ArcFace: additive angular margin softmax (Deng et al., CVPR 2019).

logit_j = s * cos(theta_j) for j != y and s * cos(theta_y + m) for the true class, with
the reference implementation's handling where theta_y + m passes pi (cos stops falling):
- default: where cos(theta_y) <= cos(pi - m), use cos(theta_y) - m * sin(m) instead, a
  linear continuation that keeps the target logit monotone in theta;
- ``easy_margin``: apply the margin only where cos(theta_y) > 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ArcFace(nn.Module):
    def __init__(self, dim: int, classes: int, s: float = 64.0, m: float = 0.5,
                 easy_margin: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(classes, dim))
        nn.init.xavier_uniform_(self.weight)
        self.s, self.m, self.easy_margin = float(s), float(m), bool(easy_margin)
        self.cos_m, self.sin_m = math.cos(m), math.sin(m)
        self.th = math.cos(math.pi - m)
        self.mm = math.sin(math.pi - m) * m

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (scaled logits with the margin (B, classes), plain cosines); float32 whatever
        the autocast, since the margin arithmetic near cos = +-1 needs the precision."""
        with torch.autocast(embeddings.device.type, enabled=False):
            cosine = F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float()))
            cosine = cosine.clamp(-1.0, 1.0)
            target = cosine.gather(1, labels[:, None])
            sine = (1.0 - target * target).clamp(0.0, 1.0).sqrt()
            phi = target * self.cos_m - sine * self.sin_m
            if self.easy_margin:
                phi = torch.where(target > 0, phi, target)
            else:
                phi = torch.where(target > self.th, phi, target - self.mm)
            logits = cosine.scatter(1, labels[:, None], phi)
            return logits * self.s, cosine.detach()
