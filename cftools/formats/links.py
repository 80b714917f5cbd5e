"""Reading a links file whole, validated: the input of every decoder (cf-merge, cf-eval
sweep and gallery)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import CfError
from .artifacts import Artifact, check_finite, open_artifact
from .thresholds import check_thresholds


def check_links(indices: np.ndarray, probabilities: np.ndarray) -> None:
    """Raise ValueError unless the pair is a well-formed links array."""
    if indices.ndim != 2 or probabilities.shape != indices.shape:
        raise ValueError(f"indices {indices.shape} and probabilities {probabilities.shape} "
                         "must be 2-D arrays of the same shape")
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices must be integers, got {indices.dtype}")
    n = indices.shape[0]
    if indices.size:
        lo, hi = int(indices.min()), int(indices.max())
        if lo < -1 or hi >= n:
            raise ValueError(f"neighbour ids must lie in [0, {n}) or be -1, found {lo}..{hi}")


class Links(NamedTuple):
    """A links file in memory."""

    indices: np.ndarray  # (N, k) int64, -1 = no neighbour
    probabilities: np.ndarray  # (N, k) float32
    attrs: dict  # the file's root attributes
    thresholds: dict | None  # its calibrated thresholds (formats.thresholds), if any
    artifact: Artifact  # closed; its id and provenance serve the next file's history


def read_links(path) -> Links:
    """The links file at ``path``, validated: the schema, finite probabilities in [0, 1]
    (cosine links in [-1, 1]), neighbour ids in range, thresholds a JSON object."""
    art = open_artifact(path, "links")
    try:
        check_finite(art, "probabilities")
        indices = art.read("indices")
        probabilities = art.read("probabilities")
        attrs = dict(art.attrs)
        thresholds = art.json_attr("thresholds", None)
    except BaseException:
        art.close()
        raise
    art.close()
    low = -1.0 if attrs.get("method") == "cosine" else 0.0  # cosine links hold similarities
    bad = (probabilities < low - 1e-5) | (probabilities > 1.0 + 1e-5)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise CfError(f"dataset 'probabilities' holds values outside [{low:g}, 1] "
                      f"(first at row {row})", path)
    try:
        check_links(indices, probabilities)
    except ValueError as err:
        raise CfError(str(err), path) from None
    if thresholds is not None and not isinstance(thresholds, dict):
        raise CfError("attribute 'thresholds' must be a JSON object of decoder -> threshold", path)
    try:
        check_thresholds(thresholds or {}, low)
    except ValueError as err:
        raise CfError(f"attribute 'thresholds': {err}", path) from None
    return Links(indices, probabilities, attrs, thresholds, art)
