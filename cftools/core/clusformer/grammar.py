"""The visual grammar: a point's kNN as a sequence, and its Cosine Distance Encoding (CDE).

A sequence of length L is the centre first, then its neighbours by falling cosine
similarity. The centre is put first explicitly: with duplicate images a twin may tie with
it or even come before it in the kNN row, so "neighbour 0 is the point" is never assumed.
Positions are never dropped, only masked (mask False): a neighbour below ``min_sim``, or a
slot with no neighbour at all (approximate search pads with -1; such a slot holds the
centre's own id so that gathers stay in range).

Targets per position: 1 when the neighbour has the centre's identity, 0 when not, -1 when
either label is unknown or the position is masked (out of the loss).

The CDE is never stored: for a batch it is the L x L matrix of cosines between the tokens,
computed on the device by a gather and one batched matmul.
"""

from __future__ import annotations

import numpy as np

TARGET_UNKNOWN = -1


def build_sequences(indices: np.ndarray, similarities: np.ndarray, length: int, *,
                    centres: np.ndarray | None = None, min_sim: float | None = None,
                    labels: np.ndarray | None = None):
    """kNN rows -> (order (n, L) int64, mask (n, L) bool, targets (n, L) int8 or None).

    ``centres[r]`` is the point row r is about (default: r). Each row of ``indices`` may or
    may not hold its centre, anywhere; it is removed from the neighbours and put first."""
    indices = np.asarray(indices, dtype=np.int64)
    similarities = np.asarray(similarities, dtype=np.float32)
    n, k = indices.shape
    if length < 1:
        raise ValueError("sequence length must be >= 1")
    centres = np.arange(n, dtype=np.int64) if centres is None else np.asarray(centres, np.int64)
    # neighbours proper: not the centre, not padding; stable sort by falling similarity
    valid = (indices >= 0) & (indices != centres[:, None]) & np.isfinite(similarities)
    m = max(0, min(k, length) - 1)
    if (k > 1 and (indices[:, 0] == centres).all() and valid[:, 1:].all()
            and (np.diff(similarities[:, 1:], axis=1) <= 0).all()):
        # rows as cf-knn writes them (centre first, then falling): the sort below would
        # leave columns 1.. where they are, so take them as they are
        nb, nb_sim, nb_valid = (a[:, 1:1 + m].copy() for a in (indices, similarities, valid))
    else:
        key = np.where(valid, -similarities.astype(np.float64), np.inf)
        perm = np.argsort(key, axis=1, kind="stable")[:, : max(0, length - 1)]
        nb = np.take_along_axis(indices, perm, axis=1)
        nb_sim = np.take_along_axis(similarities, perm, axis=1)
        nb_valid = np.take_along_axis(valid, perm, axis=1)
    if min_sim is not None:
        nb_valid &= nb_sim >= min_sim
    order = np.empty((n, length), dtype=np.int64)
    mask = np.zeros((n, length), dtype=bool)
    order[:, 0] = centres
    mask[:, 0] = True
    m = nb.shape[1]
    # a slot without any neighbour (k < L or padding) keeps the centre's id, masked
    order[:, 1:1 + m] = np.where(nb >= 0, nb, centres[:, None])
    order[:, 1 + m:] = centres[:, None]
    mask[:, 1:1 + m] = nb_valid
    targets = None if labels is None else make_targets(order, mask, labels)
    return order, mask, targets


def make_targets(order: np.ndarray, mask: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1 same identity as the centre, 0 different, -1 unknown label or masked position."""
    labels = np.asarray(labels, dtype=np.int64)
    lab = labels[order]
    centre = lab[:, :1]
    known = mask & (lab >= 0) & (centre >= 0)
    return np.where(known, (lab == centre).astype(np.int8), np.int8(TARGET_UNKNOWN)).astype(np.int8)


# --------------------------------------------------------------------------- torch side


def gather_tokens(features, order):
    """features (N, d) tensor on the device, order (B, L) -> token features (B, L, d)."""
    return features[order]


def cosine_encoding(tokens, mask=None):
    """The CDE: (B, L, d) unit tokens -> (B, L, L) cosines between them (batched matmul).

    Masked tokens are zeroed first, so their columns read 0 and leak nothing."""
    if mask is not None:
        tokens = tokens * mask.unsqueeze(-1).to(tokens.dtype)
    return tokens @ tokens.transpose(1, 2)


def centre_cosine(tokens):
    """Cosine of every token to the centre (position 0): the training-free baseline."""
    return (tokens * tokens[:, :1]).sum(-1)
