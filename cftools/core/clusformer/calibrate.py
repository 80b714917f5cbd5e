"""What cf-train calibrates on the labelled sequences besides training: cosine's own
sequence length, the decoders' thresholds for a trained model's links and for cosine
links, each on the whole labelled set linked as D_U will be, and the guard's contenders
over the labelled set crowded with unlabelled points."""

from __future__ import annotations

import numpy as np
import torch

from ...formats.thresholds import LINK_MODES
from ..calibration.jury import Contender
from ..calibration.length import choose_length
from ..calibration.thresholds import COSINE_MODES, calibration_rows, decoder_thresholds
from ..decoding.decoders import DECODERS
from .gate import Gate
from .inference import cosine_to_centre, predict
from .sequences import SequenceData


def calibrate_decoders(data: SequenceData, model, features_t, amp, log, *,
                       max_points: int = 100_000, seed: int = 0,
                       known: tuple[np.ndarray, np.ndarray] | None = None, cosine: bool = True,
                       decoders=DECODERS) -> tuple[dict, dict | None, tuple[np.ndarray, np.ndarray]]:
    """(model thresholds, cosine thresholds, (rows, the model's probabilities on them)) of
    the decoders (cf-merge), each calibrated on the whole labelled set linked as D_U will
    be: once by the trained model, once by raw cosine (what cf-link's cosine links carry)
    unless ``cosine`` is False (cosine links are used at another length: None).
    Above ``max_points`` rows, a random subset of identities holding up to that many is
    used. ``known``: (rows, the same model's probabilities on them), not predicted again
    (the held-out rows, already linked by validation). ``decoders``: those calibrated."""
    centre_labels = data.labels[data.order[:, 0]]
    rows = calibration_rows(centre_labels, max_points, seed)
    if rows.size < centre_labels.size:
        log(f"calibrating the decoders on {rows.size} of {centre_labels.size} rows "
            f"(--calibration-points {max_points})")
    order, mask = data.order[rows], data.mask[rows]
    probs = np.empty(order.shape, dtype=np.float32)
    todo = np.ones(rows.size, dtype=bool)
    if known is not None and known[0].size:
        at = np.searchsorted(rows, known[0]).clip(max=rows.size - 1)
        found = rows[at] == known[0]
        probs[at[found]] = known[1][found]
        todo[at[found]] = False
    probs[todo] = predict(model, features_t, order[todo], mask[todo], amp=amp)
    links: dict[str, tuple[np.ndarray, tuple[str, ...]]] = {"model": (probs, LINK_MODES)}
    if cosine:
        links["cosine"] = (cosine_to_centre(features_t, order, mask), COSINE_MODES)
    found_t = decoder_thresholds(order, mask, links, data.labels, seed=seed, log=log,
                                 decoders=decoders)
    return found_t["model"], found_t.get("cosine"), (rows, probs)


def choose_data_length(data: SequenceData, features: np.ndarray, max_points: int, seed: int,
                       log) -> dict:
    """The sequence length (calibration.length) chosen on these labelled sequences, from
    their cosine links."""
    rows = calibration_rows(data.labels[data.order[:, 0]], max_points, seed)
    order, mask = data.order[rows], data.mask[rows]
    cosine = cosine_to_centre(torch.from_numpy(features), order, mask)
    return choose_length(order, mask, cosine, data.labels, seed=seed, log=log)


def crowded_contenders(model, features: np.ndarray, labels: np.ndarray, distractors: np.ndarray,
                       held_ids: np.ndarray, thresholds: tuple[dict, dict],
                       lengths: tuple[int, int], amp=None, gate: Gate | None = None
                       ) -> tuple[Contender, Contender, np.ndarray]:
    """(the model's contender, cosine's, the labels of all points) for the guard over the
    labelled points and ``distractors`` (unit rows like them, e.g. the unlabelled set)
    searched together by exact cosine kNN. Each distractor is its own identity: one that
    joins a held-out identity's cluster counts against it, as a look-alike of the
    unlabelled set would. The jury inside the labelled set alone is less crowded than a
    larger unlabelled set, and cosine links lose more than the model's as the set grows
    (bench/studies/guard-density).

    Only the clusters of the held-out identities ``held_ids`` are scored, so the rows are
    their points and every point in their lists (distractors and training identities
    alike), each searched among all points and linked by the model at its length and by
    cosine at theirs (``lengths``: model's, cosine's), with their calibrated ``thresholds``
    (model's, cosine's); a link to a point outside the rows is dropped when decoded (the
    verdicts every point a row gives, at a fraction of the cost: bench/studies/
    guard-density). ``gate``: the model's gate for the guard's decoder; the model then
    reads only the rows it can change, as cf-link does, and the jury judges the links
    cf-link would write."""
    from ..neighbours.exact import put_self_first
    from ..neighbours.index import KnnParams, build_index, check_k, search

    points = np.vstack([features, distractors]).astype(np.float32, copy=False)
    n_model, n_cosine = lengths
    k, exact = max(lengths), KnnParams(method="exact")
    check_k(k, points.shape[0], self_search=False)
    index = build_index(points, exact, k)
    held = np.flatnonzero(np.isin(labels, held_ids))
    found = search(index, points[held], k, exact.batch_size)  # the held rows' own lists
    rows = np.union1d(held, found[0])
    rest = np.setdiff1d(rows, held, assume_unique=True)
    order = np.empty((rows.size, k), dtype=np.int64)
    sims = np.empty((rows.size, k), dtype=np.float32)
    for part, (ids, sim) in ((held, found),
                             (rest, search(index, points[rest], k, exact.batch_size))):
        at = np.searchsorted(rows, part)
        order[at], sims[at] = ids, sim
    order = put_self_first(order, sims, centres=rows)[0]
    mask = np.ones(order.shape, dtype=bool)
    points_t = torch.from_numpy(points)
    probs = predict(model, points_t, order[:, :n_model], mask[:, :n_model], amp=amp, gate=gate)
    cosine = cosine_to_centre(points_t, order[:, :n_cosine], mask[:, :n_cosine])
    others = labels.max(initial=-1) + 1 + np.arange(distractors.shape[0])
    return (Contender("model", order[:, :n_model], mask[:, :n_model], probs, thresholds[0]),
            Contender("cosine", order[:, :n_cosine], mask[:, :n_cosine], cosine, thresholds[1]),
            np.concatenate([labels.astype(np.int64), others]))
