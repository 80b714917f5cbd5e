"""Link weights: the links of cf-link as the decoders read them.

Input everywhere is a links pair, row i describing point i:

- ``indices``       (N, k) int64 neighbour ids; -1 = no neighbour; j == i (the centre,
                    normally at position 0) is ignored wherever it appears;
- ``probabilities`` (N, k) float32 p_ij, the probability that neighbour j shares i's
                    identity (for cosine links: the raw cosine similarity).

Under the ``reciprocal`` link mode the decoders read w_ij = (p_ij + p_ji) / 2, under
``directed`` p_ij as given. Rows are streamed in blocks, so memory stays linear in the
links.
"""

from __future__ import annotations

import numpy as np

from ...formats.links import check_links
from ...formats.thresholds import LINK_MODES

BLOCK_ROWS = 1 << 17  # rows per streamed block (64 links: ~8 MiB of indices)


def row_ranges(n: int, block_rows: int = BLOCK_ROWS):
    for start in range(0, n, block_rows):
        yield start, min(n, start + block_rows)


def valid_links(idx_block: np.ndarray, start: int) -> np.ndarray:
    """Neighbours that exist and are not the row's own point."""
    rows = np.arange(start, start + idx_block.shape[0])[:, None]
    return (idx_block >= 0) & (idx_block != rows)


def reciprocal(indices: np.ndarray, probabilities: np.ndarray,
               block_rows: int = BLOCK_ROWS) -> np.ndarray:
    """Symmetric link weights: w_ij = (p_ij + p_ji) / 2, with p_ji = 0 when i is not among
    j's links. A link counts as much as both ends agree on it: a stray point that ranks a
    crowd's members highly, while none of them ranks it back, keeps only half its weight
    (what it gained model links on CelebA: bench/results/code-choices.md).

    Invalid entries (-1) and self links keep their value. Memory is linear in the links:
    every row's ids are sorted once (int32/int64 + float32 copies of the arrays), then
    each p_ji is found by a vectorised binary search in row j (log2(k) gathers)."""
    check_links(indices, probabilities)
    n, k = indices.shape
    out = np.array(probabilities, dtype=np.float32, copy=True)
    if n == 0 or k == 0:
        return out
    width = 1 << int(np.ceil(np.log2(k)))  # rows padded to a power of two for the search
    id_dtype = np.int32 if n < 2**31 - 1 else np.int64
    sorted_ids = np.full((n, width), n, dtype=id_dtype)  # padding n: above every id
    sorted_p = np.zeros((n, width), dtype=np.float32)
    for start, stop in row_ranges(n, block_rows):
        idx = indices[start:stop]
        ids = np.where(valid_links(idx, start), idx, n)  # invalid ids sort last, never match
        order = np.argsort(ids, axis=1, kind="stable")
        sorted_ids[start:stop, :k] = np.take_along_axis(ids, order, axis=1)
        sorted_p[start:stop, :k] = np.take_along_axis(
            np.asarray(probabilities[start:stop], dtype=np.float32), order, axis=1)
    flat_ids, flat_p = sorted_ids.ravel(), sorted_p.ravel()
    pos_dtype = np.int32 if n * width < 2**31 - 1 else np.int64
    # small query blocks: the log2(width) gathers of a block hit row j while it is cached
    search_rows = max(1, (1 << 14) // k)
    for start, stop in row_ranges(n, search_rows):
        idx = indices[start:stop]
        valid = valid_links(idx, start)
        base = idx[valid].astype(pos_dtype) * pos_dtype(width)  # start of row j
        i = np.broadcast_to(np.arange(start, stop, dtype=id_dtype)[:, None], idx.shape)[valid]
        below = np.zeros(base.size, pos_dtype)  # lower bound of i in row j
        step = width >> 1
        while step:
            cand = below + pos_dtype(step)
            below = np.where(flat_ids[base + cand - 1] < i, cand, below)
            step >>= 1
        pos = base + below
        back = np.where(flat_ids[pos] == i, flat_p[pos], np.float32(0))
        block = out[start:stop]
        block[valid] = (block[valid] + back) * np.float32(0.5)
    return out


def link_weights(indices, probabilities, mode: str) -> np.ndarray:
    """The weights the decoders read under ``mode`` (one of LINK_MODES)."""
    if mode == "reciprocal":
        return reciprocal(indices, probabilities)
    if mode == "directed":
        return probabilities
    raise ValueError(f"unknown link mode {mode!r}; choose from {', '.join(LINK_MODES)}")
