"""The decoders' thresholds, chosen on labelled links: one grid search per decoder and
link mode, the rows calibration decodes, and the link mode a decoder uses by default.

Calibration is only ever given labelled links (D_L or a part of it), never those of the
set being clustered; keys of the thresholds it returns follow formats.thresholds.
"""

from __future__ import annotations

import hashlib
from typing import Literal, overload

import numpy as np

from ...formats.links import check_links
from ...formats.thresholds import (
    LINK_MODES,
    calibrated_mode,
    link_mode_key,
    resolve_threshold,
    threshold_key,
)
from ..decoding.decoders import (
    DECODERS,
    DEFAULT_INTIMACY_RATIO,
    decode,
    decode_intimacy,
    decode_peaks,
)
from ..decoding.weights import link_weights
from ..runtime.workers import parallel_map
from .objective import calibration_score, link_threshold

_OBJECTIVE = calibration_score  # the objective worker processes calibrate with

PEAKS_TOLERANCES = (0.0, 0.003, 0.01, 0.03)  # calibration grid of the peaks tie tolerance
INTIMACY_RATIOS = (0.2, 0.35, 0.5, 0.65, 0.8)  # calibration grid of the intimacy ratio
# Cosine links are weighed as given: averaging both directions won D_L's calibration on
# CelebA by a hair and then lost on D_U, and costs long-tailed faces most of Infomap's F_P
# (bench/results/code-choices.md). Directed cosine Infomap is also the published baseline the
# round must beat.
COSINE_MODES = ("directed",)
# The coarse grid stops after this many thresholds in a row below the best so far (the
# figures: bench/results/code-choices.md)
GRID_PATIENCE = 3
COARSE_GRID, FINE_GRID = 16, 6  # thresholds of the coarse grid, and of the fine one
# Links (rows x positions) from which one calibration is worth a worker process
PARALLEL_LINKS = 100_000
# A decoder's calibration time per link, relative to Infomap's (one measurement on the
# 125K demo's D_L: bench/results/code-choices.md): the workers take the longest first
CALIBRATION_COST = {"infomap": 1.0, "propagation": 0.4, "intimacy": 0.35, "peaks": 0.25,
                    "components": 0.06}


def _grid_search(score, candidates: np.ndarray, fine: int,
                 scan: list[float] | None = None) -> tuple[float, float]:
    """Best of a coarse grid, then of a fine grid between the coarse neighbours of the best.

    The coarse grid is scanned from the highest threshold down and stops once two
    thresholds in a row score under half the best so far, or GRID_PATIENCE in a row score
    under the best: lower thresholds only merge more (and are the slow ones, with the most
    links), and the score falls on past its peak. ``scan``: the coarse scores of an
    earlier search of the same grid, in scan order, replayed instead of scored again; the
    scores found here are appended to it."""
    candidates = np.unique(candidates)[::-1]
    scan = [] if scan is None else scan
    found: list[float] = []
    for i, t in enumerate(candidates):
        if i == len(scan):
            scan.append(score(float(t)))
        found.append(scan[i])
        best_so_far = max(found)
        if len(found) >= 3 and best_so_far > 0 and (
                max(found[-2:]) < 0.5 * best_so_far
                or (len(found) > GRID_PATIENCE
                    and max(found[-GRID_PATIENCE:]) < best_so_far)):
            break
    scores = np.array(found)
    b = int(np.argmax(scores))
    lo = candidates[min(b + 1, len(candidates) - 1)]
    hi = candidates[max(b - 1, 0)]
    best_t, best_s = float(candidates[b]), float(scores[b])
    if fine and hi > lo:
        for t in np.linspace(lo, hi, fine + 2)[1:-1]:
            s = score(float(t))
            if s > best_s:
                best_t, best_s = float(t), s
    return best_t, best_s


@overload
def calibrate_thresholds(indices, probabilities, labels, decoders=..., *, coarse: int = ...,
                         fine: int = ..., seed: int = ...,
                         return_scores: Literal[False] = ...) -> dict: ...


@overload
def calibrate_thresholds(indices, probabilities, labels, decoders=..., *, coarse: int = ...,
                         fine: int = ..., seed: int = ...,
                         return_scores: Literal[True]) -> tuple[dict, dict]: ...


def calibrate_thresholds(indices, probabilities, labels, decoders=DECODERS, *,
                         coarse: int = COARSE_GRID, fine: int = FINE_GRID, seed: int = 0,
                         return_scores: bool = False) -> dict | tuple[dict, dict]:
    """Thresholds for every decoder (and "link"), chosen on LABELLED links.

    Each decoder's threshold maximises objective.calibration_score of its clusters against
    ``labels`` (-1 = unknown, not scored): the mean of pairwise F, every identity weighed
    as if it had at most IDENTITY_CAP points, and BCubed F. A coarse grid over quantiles of
    the link probabilities, then a fine grid between the best point's grid neighbours.
    ``intimacy`` also gets its ratio ("intimacy_ratio") from a small grid at its best
    threshold, ``peaks`` its tie tolerance ("peaks_tolerance", from PEAKS_TOLERANCES)
    jointly with its threshold. "link" is the threshold maximising the F1 of the links as
    a same-identity classifier. Call it on the labelled data only (D_L or a validation
    split of it), never on the set to cluster."""
    out, scores = calibrate_many([dict(indices=indices, probabilities=probabilities,
                                       labels=labels, decoders=decoders, coarse=coarse,
                                       fine=fine, seed=seed)])[0]
    return (out, scores) if return_scores else out


def calibrate_many(jobs: list[dict], refused: dict | None = None) -> list[tuple[dict, dict]]:
    """calibrate_thresholds' (thresholds, scores) for each job (a dict of its arguments:
    indices, probabilities, labels, decoders, coarse, fine, seed). The decoders of all the
    jobs are calibrated together, in worker processes where the links are large
    (PARALLEL_LINKS): each is a run of Infomap or another decoder some 20 times, on one
    core, and they do not depend on each other. ``refused``: where given, a job whose
    links cannot be calibrated is recorded there ({job's index: the error}) and gets
    ({}, {}), instead of raising."""
    prepared: list = []
    keys: list = []
    tasks: list = []
    for i, job in enumerate(jobs):
        try:
            out, grid, digest, labels = _prepare(**job)
        except Exception as err:  # noqa: BLE001 - the caller decides what a refusal costs
            if refused is None:
                raise
            refused[i] = err
            prepared.append(None)
            continue
        prepared.append((out, digest))
        for method in job["decoders"]:
            key = (digest, method, job["coarse"], job["fine"], job["seed"],
                   calibration_score)  # the objective too
            if key not in _CALIBRATED and key not in keys:
                keys.append(key)
                tasks.append((method, job["indices"], job["probabilities"], labels, grid,
                              job["fine"], job["seed"], _SCANNED.get(_scan_key(key))))
    # workers calibrate with the objective module's own score: never when it is swapped
    parallel = (calibration_score is _OBJECTIVE
                and any(task[1].size >= PARALLEL_LINKS for task in tasks))
    for key, (values, score, scan) in zip(keys, parallel_map(
            _calibrate_one, tasks, parallel=parallel, cost=_calibration_cost)):
        _CALIBRATED[key] = values, score
        if scan is not None:
            _SCANNED[_scan_key(key)] = scan
    results: list = []
    for job, ready in zip(jobs, prepared):
        if ready is None:
            results.append(({}, {}))
            continue
        out, digest = ready
        scores: dict = {}
        for method in job["decoders"]:
            values, s = _CALIBRATED[(digest, method, job["coarse"], job["fine"], job["seed"],
                                     calibration_score)]
            out.update(values)
            scores[method] = s
        results.append((out, scores))
    for memo in (_CALIBRATED, _SCANNED):
        while len(memo) > MEMO_SIZE:
            memo.pop(next(iter(memo)))
    return results


def _calibration_cost(method: str, indices, *_) -> float:
    """The relative work of calibrating ``method`` on these links (parallel_map's order)."""
    return indices.size * CALIBRATION_COST.get(method, 1.0)


def _prepare(indices, probabilities, labels, decoders, coarse: int, fine: int, seed: int):
    """(thresholds so far: the link threshold, the coarse grid, the links' digest, labels)
    of one calibration, its input checked."""
    check_links(indices, probabilities)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape[0] != indices.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {indices.shape[0]} points")
    if not (labels >= 0).any():
        raise ValueError("calibration needs labels; all are -1")
    out: dict = {"link": link_threshold(indices, probabilities, labels)}
    n = indices.shape[0]
    valid = (indices >= 0) & (indices != np.arange(n)[:, None])
    values = probabilities[valid]
    if values.size == 0:
        raise ValueError("no links to calibrate on (every row holds only itself)")
    qs = np.linspace(0.0, 1.0, coarse + 1) ** 0.5  # denser towards the high quantiles
    grid = np.r_[np.quantile(values, qs), out["link"]]
    return out, grid, _digest(indices, probabilities, labels), labels


# Calibrations already made in this process, by the digest of their links and labels: the
# same decoder is never calibrated twice on the same links and grids
_CALIBRATED: dict = {}
# The coarse grid's scores of a decoder already calibrated on the same links, by
# _scan_key: a calibration on a finer grid replays them and scores only its fine points
# (cosine's length choice scans every length on the coarse grid alone, and the decoders'
# calibration then refines the chosen one)
_SCANNED: dict = {}
MEMO_SIZE = 64


def _scan_key(key: tuple) -> tuple:
    """A calibration's memo key less its fine grid: calibrations that share a coarse scan."""
    digest, method, coarse, _fine, seed, objective = key
    return digest, method, coarse, seed, objective


def _digest(indices, probabilities, labels) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in (indices, probabilities, labels):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def _calibrate_one(method: str, indices, probabilities, labels, grid, fine: int, seed: int,
                   scan: list[float] | None = None) -> tuple[dict, float, list[float] | None]:
    """({method: threshold, and its second parameter}, calibration score, the coarse scan)
    of one decoder. ``scan``: the coarse scores of an earlier calibration of the same
    links (_SCANNED), for the decoders searched on one grid (not intimacy, not peaks:
    theirs is None)."""
    out: dict = {}
    scanned = None
    if method == "intimacy":
        t, s = _grid_search(lambda t: calibration_score(
            decode_intimacy(indices, probabilities, t, DEFAULT_INTIMACY_RATIO), labels),
            grid, fine)
        ratios = INTIMACY_RATIOS
        rs = [calibration_score(decode_intimacy(indices, probabilities, t, r), labels)
              for r in ratios]
        r = float(ratios[int(np.argmax(rs))])
        if max(rs) > s:  # refine the threshold around t at the chosen ratio
            near = grid[np.argsort(np.abs(grid - t))[:3]]
            t, s = _grid_search(lambda tt, r=r: calibration_score(
                decode_intimacy(indices, probabilities, tt, r), labels), np.r_[near, t], fine)
        out["intimacy_ratio"] = r
    elif method == "peaks":
        # the confidence tolerance and the threshold, jointly on a small grid
        best = (0.0, 0.0, -1.0)
        for tol in PEAKS_TOLERANCES:
            t, s = _grid_search(lambda t, tol=tol: calibration_score(
                decode_peaks(indices, probabilities, t, tol), labels), grid, fine)
            if s > best[2]:
                best = (tol, t, s)
        tol, t, s = best
        out["peaks_tolerance"] = tol
    else:
        scanned = list(scan or [])
        t, s = _grid_search(lambda t: calibration_score(
            decode(method, indices, probabilities, t, seed=seed), labels), grid, fine, scanned)
    out[method] = t
    return out, s, scanned


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
    return calibrate_links_many([(idx, probs, labels, decoders, seed, modes)])[0]


def calibrate_links_many(link_sets: list[tuple], refused: dict | None = None, *,
                         fine: int = FINE_GRID) -> list[tuple[dict, dict]]:
    """calibrate_links of each (idx, probs, labels, decoders, seed, modes), all calibrated
    together (calibrate_many). ``refused``: as calibrate_many's, by link set (a set is
    refused, and gets ({}, {}), when any of its modes is). ``fine``: the fine grid's size
    (0: the coarse grid alone)."""
    jobs, owner = [], []
    for n, (idx, probs, labels, decoders, seed, modes) in enumerate(link_sets):
        for mode in modes:
            jobs.append(dict(indices=idx, probabilities=link_weights(idx, probs, mode),
                             labels=labels, decoders=decoders, coarse=COARSE_GRID,
                             fine=fine, seed=seed))
            owner.append(n)
    by_job: dict | None = None if refused is None else {}
    found = iter(calibrate_many(jobs, by_job))
    if refused is not None and by_job:
        for job, err in by_job.items():
            refused.setdefault(owner[job], err)
    results: list = []
    for n, (*_, modes) in enumerate(link_sets):
        per_mode = [next(found) for _ in modes]
        if refused is not None and n in refused:
            results.append(({}, {}))
            continue
        thresholds: dict = {}
        scores: dict = {}
        for mode, done in zip(modes, per_mode):
            values, s = done
            thresholds.update({threshold_key(str(k), mode): v for k, v in values.items()
                               if k != "link"})  # the link threshold comes from held-out rows
            for name, value in s.items():
                scores.setdefault(name, {})[mode] = float(value)
        for name, by_mode in scores.items():  # the mode cf-merge uses unless told otherwise
            thresholds[link_mode_key(name)] = max(by_mode,
                                                  key=lambda m: (by_mode[m], m == "directed"))
        results.append((thresholds, scores))
    return results


def decode_with(idx, probs, thresholds: dict, decoder: str, seed: int = 0):
    """Clusters of these links by ``decoder`` at its calibrated threshold, in the link mode
    calibration chose for it."""
    mode = calibrated_mode(thresholds, decoder) or "reciprocal"
    t = resolve_threshold(decoder, thresholds, mode)
    if t is None:
        raise ValueError(f"no calibrated threshold for {decoder}")
    return decode(decoder, idx, link_weights(idx, probs, mode), t, seed=seed)


def default_mode(method: str, stored: dict | None, link_method) -> str:
    """The link mode when none is asked for: the one cf-train's calibration found better
    for this decoder (link_mode_DECODER in the links' thresholds), else directed for cosine
    links (averaging both directions hurts them on long-tailed faces) and reciprocal for
    model links."""
    mode = calibrated_mode(stored, method)
    if mode is not None:
        return mode
    return "directed" if link_method == "cosine" else "reciprocal"


def decoder_thresholds(order: np.ndarray, mask: np.ndarray, links: dict, labels: np.ndarray, *,
                       seed: int = 0, log=print, decoders=DECODERS) -> dict:
    """The thresholds of ``decoders`` (cf-merge; default every one) for each kind of links
    of these labelled rows: ``links`` maps a name ("model", "cosine") to (probabilities (rows, L), the link
    modes to calibrate); ``labels`` are those of all points. Returns {name: thresholds},
    {} for a kind whose calibration failed (said in ``log``).

    The rows should be the whole labelled set linked as D_U will be (every row, neighbours
    of every identity). The held-out rows alone, linked among themselves, hold only a
    share of the identities, so few look-alikes, and the thresholds chosen there are far
    too lax for a real unlabelled set: the density of identities matters more than the
    model's optimism on its own training identities."""
    centre_labels = labels[order[:, 0]]
    link_sets = [(*local_links(order, mask, probs, labels.shape[0]), centre_labels,
                  tuple(decoders), seed, modes) for probs, modes in links.values()]
    refused: dict = {}  # a model is still good without them: said, and calibrated as {}
    found: dict = {}
    for n, (name, (thresholds, _)) in enumerate(
            zip(links, calibrate_links_many(link_sets, refused))):
        if n in refused:
            err = refused[n]
            log(f"warning: decoder threshold calibration failed: {type(err).__name__}: {err}")
        found[name] = thresholds
    for name, t in found.items():
        if t:
            log(f"decoder thresholds ({name} links): " + ", ".join(
                f"{k} {t[threshold_key(k, mode)]:.4g} ({mode})"
                for k in DECODERS if (mode := calibrated_mode(t, k)) is not None))
    return found
