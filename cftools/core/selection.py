"""Choices cf-train makes on the labelled set D_L, never on the set to cluster.

- The sequence length L (how many neighbours a point's links reach): Infomap over the
  (directed) cosine links of D_L is calibrated at every candidate length no longer than
  the sequences, and the best length by the calibration objective is kept; near ties go
  to the longer length (it reaches larger identities, which D_U may hold: on lfw-dev
  D_L scores L 31 and L 81 alike, 0.9423 and 0.9422, while D_U's 236-image identity
  splits at L 31, F_P 72.7, and holds at L 81, F_P 98.3). Why a choice at all: a fixed
  L 32 reaches 31 neighbours, and an identity of 236 faces cannot be joined through that
  few (lfw-dev: F_P 69.6 at k 20 against 97.8 at k 50), while on CelebA, where no one has
  more than 30 faces, longer lists only add look-alikes.
- The cosine decoders' thresholds at that length: what cf-link's cosine links carry.
- The guard: the model's links and cosine links, each decoded with its own calibrated
  thresholds, scored against the held-out identities (never trained on). The verdict is
  recorded in the model; cf-link --method auto uses the winner, and a user who links with
  a model that lost is told so.
"""

from __future__ import annotations

import numpy as np

from .decoding import LINK_MODES, calibrate_thresholds, decode, link_weights, threshold_key
from .metrics import bcubed_scores, pairwise_scores

CANDIDATE_LENGTHS = (11, 21, 31, 51, 81)  # the centre and k = 10 ... 80 neighbours
LENGTH_TIE = 1e-3  # calibration scores this close are a tie (pairwise F on a 0-1 scale)
GUARD_DECODER = "infomap"
GUARD_RESAMPLES = 200  # random halves of the held-out identities the guard scores
GUARD_CONFIDENCE = 0.9  # the share of them the model must lead to be used
# Cosine links are weighed as given: averaging both directions won D_L's calibration on
# CelebA by a hair (L 31: 0.9508 against 0.9498 directed at L 21) and then lost on D_U
# (95.19 / 95.35 against 95.63 / 95.63), and on lfw-dev it takes Infomap's F_P from 92.2
# to 68.9. Directed cosine Infomap is also the published baseline the round must beat.
COSINE_MODES = ("directed",)


def candidate_lengths(seq_len: int) -> list[int]:
    """The lengths tried for sequences of ``seq_len`` positions: every candidate that
    fits, and ``seq_len`` itself."""
    return sorted({n for n in CANDIDATE_LENGTHS if n < seq_len} | {seq_len})


def calibration_rows(centre_labels: np.ndarray, max_points: int, seed: int) -> np.ndarray:
    """Rows to calibrate on: all, or a random subset of whole identities holding up to
    ``max_points`` rows (calibration decodes each set some 20 times per decoder)."""
    rows = np.arange(centre_labels.size)
    if rows.size <= max_points:
        return rows
    ids, counts = np.unique(centre_labels, return_counts=True)
    perm = np.random.default_rng([seed, 7]).permutation(ids.size)
    take = ids[perm[:max(1, int(np.searchsorted(np.cumsum(counts[perm]), max_points)))]]
    return rows[np.isin(centre_labels, take)]


def local_links(order: np.ndarray, mask: np.ndarray, probs: np.ndarray, n_points: int):
    """Links among the centres of these rows only: (indices into the rows, weights), every
    neighbour outside the rows or masked turned into an invalid entry (-1, weight 0)."""
    points = order[:, 0]
    remap = np.full(n_points, -1, dtype=np.int64)
    remap[points] = np.arange(points.size)
    idx = remap[order]
    inside = (idx >= 0) & mask
    return np.where(inside, idx, -1), np.where(inside, probs, 0.0).astype(np.float32)


def calibrate_links(idx, probs, labels, decoders, seed: int = 0,
                    modes=LINK_MODES) -> tuple[dict, dict]:
    """Thresholds of ``decoders`` under each of ``modes`` (keys as threshold_key) and each
    decoder's calibration score per mode: {decoder: {mode: score}}; link_mode_DECODER is
    the mode that scored best (ties: directed)."""
    thresholds, scores = {}, {}
    for mode in modes:
        found, s = calibrate_thresholds(idx, link_weights(idx, probs, mode), labels,
                                        decoders=decoders, seed=seed, return_scores=True)
        thresholds.update({threshold_key(str(k), mode): v for k, v in found.items()
                           if k != "link"})  # the link threshold comes from held-out rows
        for name, value in s.items():
            scores.setdefault(name, {})[mode] = float(value)
    for name, by_mode in scores.items():  # the mode cf-merge uses unless told otherwise
        thresholds[f"link_mode_{name}"] = max(by_mode, key=lambda m: (by_mode[m], m == "directed"))
    return thresholds, scores


def choose_length(order, mask, cosine, labels, *, seed: int = 0, log=print) -> dict:
    """The sequence length (and link mode) under which Infomap over cosine links clusters
    these labelled rows best. ``order``/``mask``/``cosine`` are the rows' sequences at
    full length and their cosine to the centre; ``labels`` of all points."""
    lengths = candidate_lengths(order.shape[1])
    centre_labels = labels[order[:, 0]]
    table = {}
    for length in lengths:
        idx, w = local_links(order[:, :length], mask[:, :length], cosine[:, :length],
                             labels.shape[0])
        _, scores = calibrate_links(idx, w, centre_labels, (GUARD_DECODER,), seed,
                                    modes=COSINE_MODES)
        table[length] = scores[GUARD_DECODER]
    best = max(max(s.values()) for s in table.values())
    chosen = max(n for n, s in table.items() if max(s.values()) >= best - LENGTH_TIE)
    log("sequence length from cosine Infomap on the labelled set: " + ", ".join(
        f"L {n}: {max(s.values()):.4f}" for n, s in table.items()) + f" -> L {chosen}")
    return {"length": int(chosen), "candidates": lengths,
            "scores": {str(n): s for n, s in table.items()}}


def decode_with(idx, probs, thresholds: dict, decoder: str = GUARD_DECODER, seed: int = 0):
    """Clusters of these links by ``decoder`` at its calibrated threshold, in the link mode
    calibration chose for it."""
    mode = thresholds.get(f"link_mode_{decoder}", "reciprocal")
    t = thresholds.get(threshold_key(decoder, mode), thresholds.get("link"))
    return decode(decoder, idx, link_weights(idx, probs, mode), float(t), seed=seed)


def guard(order, mask, model_probs, cosine, labels, model_thresholds: dict,
          cosine_thresholds: dict, *, seed: int = 0, resamples: int = GUARD_RESAMPLES) -> dict:
    """Decode the held-out rows' links among themselves both ways and score each against
    the labels (the mean of pairwise and BCubed F). The model wins only when it is ahead
    on the held-out identities as a whole AND on at least GUARD_CONFIDENCE of
    ``resamples`` random halves of them: a few dozen held-out identities are a noisy
    jury (CelebA, 30 identities: the model led by 0.5 there and trailed by 0.8 on the
    unlabelled half), and a model that loses costs more than cosine left in place."""
    truth = labels[order[:, 0]]
    out = {"decoder": GUARD_DECODER, "points": int(order.shape[0])}
    preds = {}
    for name, probs, thr in (("model", model_probs, model_thresholds),
                             ("cosine", cosine, cosine_thresholds)):
        idx, w = local_links(order, mask, probs, labels.shape[0])
        preds[name] = decode_with(idx, w, thr, seed=seed)
        out[name] = {"pairwise_f": float(pairwise_scores(preds[name], truth)["pairwise_f"]),
                     "bcubed_f": float(bcubed_scores(preds[name], truth)["bcubed_f"])}
    mean = {k: (out[k]["pairwise_f"] + out[k]["bcubed_f"]) / 2 for k in ("model", "cosine")}
    ids = np.unique(truth)
    rng = np.random.default_rng([seed, 11])
    ahead = 0
    for _ in range(resamples if ids.size >= 2 else 0):
        keep = np.isin(truth, rng.choice(ids, ids.size // 2, replace=False))
        score = {k: _mean_f(preds[k][keep], truth[keep]) for k in ("model", "cosine")}
        ahead += score["model"] > score["cosine"]
    out["resamples"] = int(resamples)
    out["model_ahead"] = float(ahead / resamples) if resamples else 0.0
    out["winner"] = "model" if (mean["model"] >= mean["cosine"]
                                and out["model_ahead"] >= GUARD_CONFIDENCE) else "cosine"
    return out


def _mean_f(pred, truth) -> float:
    return (pairwise_scores(pred, truth)["pairwise_f"] + bcubed_scores(pred, truth)["bcubed_f"]) / 2
