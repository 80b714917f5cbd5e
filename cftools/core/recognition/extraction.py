"""Embedding images with a trained backbone (cf-embed extract, and the head imprinted
when fine-tuning)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...data.images import BadImages, ImageDataset
from ..runtime.precision import autocast_for
from .backbone import Backbone, BackboneConfig, memory_format


@torch.no_grad()
def extract_features(model: Backbone, config: BackboneConfig, paths, *, batch_size: int = 256,
                     workers: int = 0, device: torch.device | None = None,
                     flip_test: bool = False, precision: str = "auto", reporter=None,
                     bad: BadImages | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Embed images -> (features of the readable ones, L2-normalised float32; mask of
    which images were readable). Unreadable ones are recorded in ``bad`` and skipped."""
    from torch.utils.data import DataLoader

    device = device if device is not None else torch.device("cpu")

    dataset: Any = ImageDataset(paths, np.full(len(paths), -1), config.image_size, config.mean, config.std)
    loader: DataLoader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda")
    fmt = memory_format(device)
    model = model.to(device, memory_format=fmt).eval()  # type: ignore[call-overload]
    out = np.zeros((len(paths), config.dim), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    bar = reporter.progress(total=len(paths), desc="extract", unit="img") if reporter else None
    for x, _, idx, errors in loader:
        good = torch.tensor([not e for e in errors], dtype=torch.bool)
        for i, e in zip(idx.tolist(), errors):
            if e and bad is not None:
                bad.add(paths[i], e)
        if good.any():
            x = x[good].to(device, non_blocking=True, memory_format=fmt)
            with autocast_for(device, precision):
                emb = model(x).float()
                if flip_test:
                    emb = emb + model(x.flip(-1)).float()
            emb = F.normalize(emb, dim=1)
            rows = idx[good].numpy()
            out[rows] = emb.cpu().numpy()
            ok[rows] = True
        if bar is not None:
            bar.update(len(errors))
    if bar is not None:
        bar.close()
    return out[ok], ok
