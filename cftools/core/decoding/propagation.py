"""Label propagation over the kept links: the decoder that scales (cf-merge --method
propagation), in torch, on CUDA where there is a GPU, else vectorised on the CPU.

Every point starts as its own cluster. In each round a point takes the label that holds
the most link weight around it: the kept links i -> j and j -> i both count (a link kept
in both directions counts twice), and its own current label counts SELF_WEIGHT more;
among labels within TIE of the best it keeps its own, else the smallest. Rounds repeat
until no point would change. Only points whose neighbourhood changed are looked at
again, so late rounds are cheap. A synchronous round can swap two labels back and forth
forever (i takes j's while j takes i's); so in every round only about half of the points
that would change do, chosen by a hash of the point, the round and the seed (the same on
CPU and GPU).

Each round is a sort of (point, neighbour's label) keys and segment sums: linear in the
kept links up to the sort, with no per-point Python. Infomap, which it replaces where
Infomap is too slow, is single-threaded; see man cf-merge for the measured costs and
quality against it.
"""

from __future__ import annotations

import numpy as np

from ...formats.links import check_links
from .graph import relabel
from .weights import BLOCK_ROWS, row_ranges

SELF_WEIGHT = 1.0  # a point's own label, beside the weights of its links
TIE = 1e-6  # label weights this close count as equal
MAX_ROUNDS = 200
FULL_ROUND = 0.5  # look at every point again where more than this share would be
_HASH = (0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D)


def propagation_device(device=None):
    """The torch device: CUDA when torch sees a GPU, else the CPU (``device`` forces one)."""
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _kept_links(torch, indices, probabilities, threshold: float, device,
                block_rows: int = BLOCK_ROWS):
    """(source, target, weight) tensors on ``device`` of the links i -> j with j valid,
    j != i and p_ij >= threshold, in row order: thresholded on the device, block by
    block, so no graph is built on the host first."""
    t = np.float32(threshold)
    src, dst, wts = [], [], []
    for start, stop in row_ranges(indices.shape[0], block_rows):
        idx = torch.from_numpy(np.ascontiguousarray(indices[start:stop])).to(device)
        p = torch.from_numpy(np.ascontiguousarray(probabilities[start:stop],
                                                  dtype=np.float32)).to(device)
        rows = torch.arange(start, stop, device=device).unsqueeze(1)
        keep = (idx >= 0) & (idx != rows) & (p >= float(t))
        src.append(rows.expand_as(idx)[keep])
        dst.append(idx[keep])
        wts.append(p[keep].double())
    return torch.cat(src), torch.cat(dst), torch.cat(wts)


def _symmetric_csr(torch, src, dst, w, n: int):
    """CSR of the kept links in both directions, i -> j and j -> i merged into one entry
    of summed weight: (indptr, neighbour, weight) tensors, neighbours rising in a row."""
    device = src.device
    key, order = torch.sort(torch.cat([src * n + dst, dst * n + src]))
    key, inverse = torch.unique_consecutive(key, return_inverse=True)
    wt = torch.zeros(key.numel(), dtype=torch.float64, device=device)
    wt.scatter_add_(0, inverse, torch.cat([w, w])[order])
    del order, inverse
    counts = torch.bincount(key // n, minlength=n)
    indptr = torch.zeros(n + 1, dtype=torch.int64, device=device)
    indptr[1:] = torch.cumsum(counts, 0)
    return indptr, key % n, wt


def _edges_of(torch, indptr, rows):
    """(position of each edge of ``rows`` in the CSR, index into ``rows`` of its row)."""
    counts = indptr[rows + 1] - indptr[rows]
    owner = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), counts)
    first = torch.cumsum(counts, 0) - counts
    pos = indptr[rows][owner] + torch.arange(owner.numel(), device=rows.device) - first[owner]
    return pos, owner


def _choose(torch, own, owner, labels, sums, r: int, n: int):
    """Per row (``own`` its current labels), from (row ``owner``, label, summed weight)
    entries with distinct labels in a row: its own label where that is within TIE of the
    best, else the smallest of the best labels."""
    best = torch.full((r,), -np.inf, dtype=sums.dtype, device=sums.device)
    best.scatter_reduce_(0, owner, sums, "amax")
    top = sums >= best[owner] - TIE
    pick = torch.where(top & (labels == own[owner]), torch.full_like(labels, -1),
                       torch.where(top, labels, torch.full_like(labels, n)))
    choice = torch.full((r,), n, dtype=torch.int64, device=sums.device)
    choice.scatter_reduce_(0, owner, pick, "amin")
    return torch.where(choice < 0, own, choice)


def _best_labels(torch, lab, rows, nbr, wt, indptr, n, entry_row, *, distinct: bool = False):
    """The label each of ``rows`` (None: every point) would take this round.
    ``distinct``: every neighbour of a row still holds a label of its own (the first
    round), so no sort is needed."""
    if rows is None:  # every entry, in CSR order
        own, r = lab, n
        labels, weight, owner = lab[nbr], wt, entry_row
    else:
        pos, owner = _edges_of(torch, indptr, rows)
        own, r = lab[rows], rows.numel()
        labels, weight = lab[nbr[pos]], wt[pos]
    local = torch.arange(r, device=lab.device)
    labels = torch.cat([labels, own])
    owner = torch.cat([owner, local])
    weight = torch.cat([weight, torch.full((r,), SELF_WEIGHT, dtype=wt.dtype,
                                           device=lab.device)])
    if distinct:
        return _choose(torch, own, owner, labels, weight, r, n)
    key, perm = torch.sort(owner * n + labels)
    key, inverse = torch.unique_consecutive(key, return_inverse=True)
    sums = torch.zeros(key.numel(), dtype=wt.dtype, device=lab.device)
    sums.scatter_add_(0, inverse, weight[perm])
    return _choose(torch, own, key // n, key % n, sums, r, n)


def _half(torch, rows, round_no: int, seed: int):
    """About half of ``rows``, by a hash of (row, round, seed): the same on every device."""
    h = (rows * _HASH[0] + (round_no + 1) * _HASH[1] + (seed + 1) * _HASH[2]) & 0xFFFFFFFF
    h = (h ^ (h >> 15)) * _HASH[1] & 0xFFFFFFFF
    return ((h >> 13) & 1) == 1


def decode_propagation(indices, probabilities, threshold: float, *, seed: int = 0,
                       device=None, max_rounds: int = MAX_ROUNDS) -> np.ndarray:
    """Cluster labels by label propagation over the links with p_ij >= threshold."""
    import torch

    check_links(indices, probabilities)
    n = indices.shape[0]
    dev = propagation_device(device)
    with torch.inference_mode():
        src, dst, w = _kept_links(torch, indices, probabilities, threshold, dev)
        if src.numel() == 0:
            return np.arange(n, dtype=np.int64)
        indptr, nbr, wt = _symmetric_csr(torch, src, dst, w, n)
        del src, dst, w
        lab = torch.arange(n, dtype=torch.int64, device=dev)
        entry_row = torch.repeat_interleave(torch.arange(n, device=dev), indptr[1:] - indptr[:-1])
        rows = None  # every point, until few are left to look at
        for round_no in range(max_rounds):
            new = _best_labels(torch, lab, rows, nbr, wt, indptr, n, entry_row,
                               distinct=round_no == 0)
            current = lab if rows is None else lab[rows]
            wants = new != current
            if not bool(wants.any()):
                break
            movers = (torch.arange(n, device=dev) if rows is None else rows)[wants]
            go = (new[wants] < current[wants]) | _half(torch, movers, round_no, seed)
            if not bool(go.any()):
                go = torch.ones_like(go)
            moved = movers[go]
            lab[moved] = new[wants][go]
            pos, _ = _edges_of(torch, indptr, moved)
            # next round: the points that moved, their neighbours, and those still waiting
            look = torch.zeros(n, dtype=torch.bool, device=dev)
            look[moved] = True
            look[nbr[pos]] = True
            look[movers[~go]] = True
            rows = torch.nonzero(look).squeeze(1)
            if rows.numel() > FULL_ROUND * n:
                rows = None
        out = lab.cpu().numpy()
    return relabel(out)
