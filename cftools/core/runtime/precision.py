"""Mixed precision: the autocast dtype of Clusformer's training and inference, and the
autocast context of the backbone's training."""

from __future__ import annotations

import torch

from ...errors import CfError


def autocast_dtype(device: torch.device, bf16: bool | None):
    """The autocast dtype to use, or None for plain float32."""
    if device.type == "cuda":
        if bf16 is False:
            return torch.float16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if bf16 is False:
        return None
    supported = cpu_bf16_supported()
    if bf16 and not supported:
        raise CfError("--bf16 asked for, but this CPU has no bfloat16 support")
    return torch.bfloat16 if supported else None


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 BF16 or AMX); without it,
    bf16 autocast is slower than float32."""
    return bool(torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_for(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "auto" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast(device.type, enabled=False)
