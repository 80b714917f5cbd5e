"""Memory behaviour of the process: glibc's malloc told to keep what batched work frees."""

from __future__ import annotations

# glibc mallopt parameters
_M_TRIM_THRESHOLD = -1


_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks for reuse instead of handing them back to the
    kernel. Batched inference and training free and reallocate the same tens of MB of
    temporaries every batch; by default glibc unmaps or trims them each time, and the
    kernel's page faults on the fresh pages can cost as much as the arithmetic
    (bench/results/code-choices.md). Allocations up to 32 MiB come from the heap, and up to
    1 GiB of free heap is kept.
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
