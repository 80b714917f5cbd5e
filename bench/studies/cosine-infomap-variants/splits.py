"""The standard splits of ../shared/data's face sets and the scores this study prints.

D_L is a set's labelled_idx rows, D_U its unlabelled_idx rows. The scripts next to this
file import it by name: Python puts a script's own folder first on its module search path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cftools.core.metrics import bcubed_scores, pairwise_scores

ROOT = Path(__file__).resolve().parents[3]  # the repository
SHARED = ROOT.parent / "shared" / "data"
SETS = ("lfw-dev-dlib128", "celeba-dlib128")


def load(name: str):
    """((features, labels) of D_L, (features, labels) of D_U) of ../shared/data/NAME."""
    d = SHARED / name
    if not (d / "features.npy").exists():
        raise SystemExit(f"{d}: no features.npy (the study needs ../shared/data)")
    x = np.load(d / "features.npy")
    y = np.load(d / "labels.npy")
    li = np.load(d / "labelled_idx.npy")
    ui = np.load(d / "unlabelled_idx.npy")
    return (x[li], y[li]), (x[ui], y[ui])


def score(pred, y) -> tuple[float, float]:
    """(pairwise F, BCubed F) in points."""
    return 100 * pairwise_scores(pred, y)["pairwise_f"], 100 * bcubed_scores(pred, y)["bcubed_f"]
