"""Where bench/incremental.py leaves its runs, and the split each run used.

bench/incremental.py --sets SET --seed S runs the default round in
work/incremental/SET/w/round1 (D_U all at once: clusters.h5, or clusters-model.h5 with
--links model) and the 80% + 4 batches in work/incremental/SET/inc-seedS[-model...]
(clusters0.h5 the 80% from scratch, clusters4.h5 and links4.h5 after the last add). The
scripts next to this file import it by name: Python puts a script's own folder first on its
module search path.
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[3]  # the repository
BIN = Path(sys.executable).parent  # cf-knn, cf-seq, cf-link, cf-merge beside this Python


def work_of(name: str) -> Path:
    """bench/incremental.py's folder for this set."""
    return ROOT / "work" / "incremental" / name


def round_of(name: str) -> Path:
    """The round that clustered all of D_U at once."""
    return work_of(name) / "w" / "round1"


def seed_of(inc: str) -> int:
    """The seed of a run folder's name: inc-seed1-model -> 1."""
    return int(inc.split("seed")[1].split("-")[0])


def first_share(n: int, seed: int, share: float = 0.8) -> tuple[np.ndarray, int]:
    """(the permutation of D_U's rows, n0): bench/incremental.py clusters perm[:n0] from
    scratch and adds the rest in batches."""
    return np.random.default_rng(seed).permutation(n), int(round(share * n))


def labels_of(path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f["labels"][()]
