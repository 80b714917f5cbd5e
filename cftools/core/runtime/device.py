"""Choosing where to compute: ``--device auto|cpu|cuda`` for torch and for faiss."""

from __future__ import annotations

from ...errors import CfError


def torch_device(name: str = "auto"):
    """The torch device for ``--device``; ``cuda`` without a GPU is an error, not a fallback."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CfError("--device cuda asked for, but torch sees no CUDA GPU")
    return torch.device(name)


def faiss_gpu_count() -> int:
    import faiss

    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def faiss_use_gpu(name: str = "auto") -> bool:
    """Whether faiss should run on the GPU for ``--device``."""
    gpus = faiss_gpu_count()
    if name == "cuda" and gpus == 0:
        raise CfError("--device cuda asked for, but this faiss build sees no GPU "
                      "(install the gpu extra: pip install -e .[gpu])")
    return name != "cpu" and gpus > 0
