"""cf-embed train with another loss for the pseudo-labelled rows (a study, not a command).

    python train.py VARIANT RETRAIN.h5 [cf-embed train options...]

RETRAIN.h5 is cf-merge labels' output (its 'source' dataset tells D_L's rows, 0, from the
pseudo-labelled ones, 1). The run is cf-embed train's, with its step replaced:

  plain      cf-embed train's own loss (the control: the same code path);
  mask       a pseudo-labelled image's softmax leaves out the other pseudo-identities:
             it is pulled to its own cluster and pushed from D_L's identities only, so a
             character split over several clusters is not taught apart from itself;
  forget=F   the fraction F of the pseudo-labelled images of each batch with the largest
             loss count for nothing (small-loss selection against strays), ramped in
             over the first epoch;
  mask+forget=F  both;
  sub=K      sub-centre ArcFace (Deng et al., ECCV 2020): K centres a class, an image is
             scored by its nearest; strays can gather at a centre of their own instead of
             pulling the class's main one. The centres start at the imprinted class mean,
             spread by a little noise.
"""

from __future__ import annotations

import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from cftools.commands import embed
from cftools.core.recognition import training
from cftools.core.runtime.precision import autocast_for


def pseudo_from(retrain: str) -> int:
    """The first class index (after train_backbone's np.unique) that is a pseudo-identity."""
    with h5py.File(retrain, "r") as f:
        labels, source = f["labels"][:], f["source"][:]
    return int(np.unique(labels[(source == 0) & (labels >= 0)]).size)


def patched_step(variant: str, first_pseudo: int):
    mask = variant.startswith("mask")
    forget = float(variant.split("forget=")[1]) if "forget=" in variant else 0.0

    def _step(self, x, y):
        x = x.to(self.device, non_blocking=True, memory_format=self.fmt)
        y = y.to(self.device, non_blocking=True)
        with autocast_for(self.device, self.tconf.precision):
            logits, cosine = self.model(x, y)
        logits = logits.float()
        is_pseudo = y >= first_pseudo
        if mask:
            classes = torch.arange(logits.shape[1], device=y.device)
            hide = (is_pseudo[:, None] & (classes[None, :] >= first_pseudo)
                    & (classes[None, :] != y[:, None]))
            logits = logits.masked_fill(hide, float("-inf"))
        per = F.cross_entropy(logits, y, reduction="none")
        weight = torch.ones_like(per)
        if forget > 0 and is_pseudo.sum() > 1:
            step = self.scheduler.last_epoch  # steps so far
            ramp = min(1.0, step / max(1, self.steps_per_epoch))
            n_drop = int(round(forget * ramp * int(is_pseudo.sum())))
            if n_drop:
                losses = per.detach().masked_fill(~is_pseudo, float("-inf"))
                weight[losses.topk(n_drop).indices] = 0.0
        loss = (per * weight).sum() / weight.sum().clamp_min(1.0)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return (float(loss.detach()) * x.shape[0], float((cosine.argmax(1) == y).sum()),
                x.shape[0])

    return _step


class SubcentreArcFace(training.ArcFace):
    def __init__(self, dim, classes, s, m, easy_margin, k):
        super().__init__(dim, classes * k, s, m, easy_margin)
        self.k, self.n_classes = k, classes

    def forward(self, embeddings, labels):
        with torch.autocast(embeddings.device.type, enabled=False):
            cos_all = F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float()))
            cosine = cos_all.view(-1, self.n_classes, self.k).amax(-1).clamp(-1.0, 1.0)
            target = cosine.gather(1, labels[:, None])
            sine = (1.0 - target * target).clamp(0.0, 1.0).sqrt()
            phi = target * self.cos_m - sine * self.sin_m
            phi = torch.where(target > self.th, phi, target - self.mm)
            logits = cosine.scatter(1, labels[:, None], phi)
            return logits * self.s, cosine.detach()


def patch_subcentres(k: int) -> None:
    plain_imprint = training.imprint_head

    def head(dim, classes, s, m, easy_margin):
        return SubcentreArcFace(dim, classes, s, m, easy_margin, k)

    def imprint(*args, **kwargs):
        means = plain_imprint(*args, **kwargs)
        g = torch.Generator().manual_seed(0)
        spread = means[:, None, :] + 0.01 * torch.randn(means.shape[0], k, means.shape[1],
                                                         generator=g)
        return F.normalize(spread, dim=-1).reshape(-1, means.shape[1])

    training.ArcFace = head
    training.imprint_head = imprint


def main(argv: list[str]) -> int:
    variant, retrain, rest = argv[0], argv[1], argv[2:]
    if variant.startswith("sub="):
        patch_subcentres(int(variant.split("=")[1]))
    elif variant != "plain":
        training._BackboneRun._step = patched_step(variant, pseudo_from(retrain))
    return embed.main(["train", retrain, *rest])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
