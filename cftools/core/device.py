"""Choosing where to compute: ``--device auto|cpu|cuda`` for torch and for faiss."""

from __future__ import annotations

from ..errors import CfError


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


# glibc mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks for reuse instead of handing them back to the
    kernel. Batched inference and training free and reallocate the same tens of MB of
    temporaries every batch; by default glibc unmaps or trims them each time, and the
    kernel's page faults on the fresh pages cost as much as the arithmetic (cf-link, 100K
    sequences on 2 cores: 55-80 s with 20-80 s of system time, against 27 s with 0.6 s).
    Allocations up to 32 MiB come from the heap, and up to 1 GiB of free heap is kept.
    Returns whether it took effect (glibc only; elsewhere a no-op)."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
