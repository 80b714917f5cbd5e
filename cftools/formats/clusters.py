"""Reading cluster labels: a clusters file (with the attributes that say how it was
made), or labels in any format ``load_labels`` reads."""

from __future__ import annotations

import numpy as np

from ..errors import CfError
from .artifacts import Artifact, open_artifact
from .features import load_labels, split_spec
from .schema import HDF5_SUFFIXES


def read_clusters(path) -> tuple[np.ndarray, dict, Artifact]:
    """(labels, root attributes, the closed artifact) of a clusters file: labels 1-D,
    each >= 0 or -1 (unassigned)."""
    with open_artifact(path, "clusters") as art:
        labels = art.read("labels")
        attrs = dict(art.attrs)
    if labels.ndim != 1:
        raise CfError(f"cluster labels must be 1-D, got shape {labels.shape}", path)
    if labels.size and labels.min() < -1:
        raise CfError("cluster labels must be >= 0, or -1 for unassigned", path)
    return labels.astype(np.int64, copy=False), attrs, art


def read_predicted(spec) -> tuple[np.ndarray, dict | None]:
    """Predicted labels and the attributes of their clusters file (None for labels given
    in another format: .npy, .meta, FILE.h5:/path)."""
    path, inner = split_spec(spec)
    if inner is None and path.suffix.lower() in HDF5_SUFFIXES:
        labels, attrs, _ = read_clusters(path)
        return labels, attrs
    return load_labels(spec), None
