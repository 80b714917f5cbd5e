"""Top-1 identification with distractors: the MegaFace protocol in miniature.

For every identity with at least two images, its first image (in file order) goes into the
gallery and the others are probes. Images of identities seen only once, and any extra
distractor features, join the gallery as distractors. A probe is identified correctly
when its most cosine-similar gallery image is its own identity's gallery image.
Rows labelled -1 (unknown identity) take no part: they could be anyone.
"""

from __future__ import annotations

import numpy as np


def identification_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (gallery rows of identities with probes, probe rows, single-image distractor rows)."""
    labels = np.asarray(labels, dtype=np.int64)
    known = np.flatnonzero(labels >= 0)
    _, first, counts = np.unique(labels[known], return_index=True, return_counts=True)
    first_rows = known[first]
    mates = first_rows[counts >= 2]
    singles = first_rows[counts == 1]
    is_probe = np.zeros(labels.shape[0], dtype=bool)
    is_probe[known] = True
    is_probe[first_rows] = False
    return mates, np.flatnonzero(is_probe), singles


def top1_identification(features: np.ndarray, labels: np.ndarray,
                        distractors: np.ndarray | None = None, *,
                        batch_size: int = 4096) -> dict:
    """Top-1 accuracy by cosine similarity (rows are taken as L2-normalised).

    Returns {top1, probes, gallery, distractors, identities, unknown}."""
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    mates, probes, singles = identification_split(labels)
    extra = (np.zeros((0, features.shape[1]), np.float32) if distractors is None
             else np.asarray(distractors, dtype=np.float32))
    if extra.shape[1] != features.shape[1]:
        raise ValueError(f"distractors have dimension {extra.shape[1]}, features {features.shape[1]}")
    gallery = np.concatenate([features[mates], features[singles], extra])
    gallery_labels = np.concatenate([labels[mates], np.full(len(singles) + len(extra), -1)])
    correct = 0
    for start in range(0, len(probes), batch_size):
        rows = probes[start:start + batch_size]
        best = np.argmax(features[rows] @ gallery.T, axis=1) if len(gallery) else np.zeros(0, int)
        correct += int((gallery_labels[best] == labels[rows]).sum())
    return {
        "top1": correct / len(probes) if len(probes) else float("nan"),
        "probes": int(len(probes)),
        "gallery": int(len(gallery)),
        "distractors": int(len(singles) + len(extra)),
        "identities": int(len(mates)),
        "unknown": int((labels < 0).sum()),
    }
