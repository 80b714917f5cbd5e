"""The pseudo-labels' threshold (calibration.pseudo): the grid above the calibrated
threshold, and the best F_0.5 of the held-out pairs in the jury's graph."""

import numpy as np
import pytest

from cftools.core.calibration.jury import Contender
from cftools.core.calibration.pseudo import choose_pseudo_threshold, f_beta, threshold_grid


def test_the_grid_starts_at_the_calibrated_threshold_and_steps_above_it():
    assert threshold_grid(0.5788)[:3] == [0.5788, 0.58, 0.6]
    assert threshold_grid(0.5788)[-1] == 0.98
    assert threshold_grid(0.6) == [0.6] + [round(0.02 * k, 10) for k in range(31, 50)]
    assert threshold_grid(0.99) == [0.99]
    assert threshold_grid(-0.1)[:3] == [-0.1, -0.08, -0.06]  # cosine links go below 0


def test_f_half_weighs_precision_twice():
    assert f_beta(1.0, 1.0) == pytest.approx(1.0)
    assert f_beta(0.9, 0.3) > f_beta(0.3, 0.9)
    assert f_beta(0.0, 0.0) == 0.0


def _jury(stray: float):
    """Three held-out identities of four points (links 0.9 within) and four distractors,
    each its own identity; every point of identity 0 links to distractor 12 at ``stray``."""
    labels = np.array([0] * 4 + [1] * 4 + [2] * 4 + [10, 11, 12, 13])
    n, L = labels.size, 6
    order = np.zeros((n, L), dtype=np.int64)
    weights = np.zeros((n, L), dtype=np.float32)
    mask = np.zeros((n, L), dtype=bool)
    for i in range(n):
        same = [j for j in np.flatnonzero(labels == labels[i]) if j != i]
        row = [i] + same + ([12] if labels[i] == 0 else []) + \
            ([0, 1, 2, 3] if i == 12 else [])
        row = row[:L]
        order[i, :len(row)] = row
        mask[i, :len(row)] = True
        weights[i, :len(row)] = [1.0] + [0.9 if labels[j] == labels[i] else stray
                                         for j in row[1:]]
    thresholds = {"infomap": 0.5, "link_mode_infomap": "reciprocal"}
    return Contender("model", order, mask, weights, thresholds), labels


def test_a_stray_link_above_the_calibrated_threshold_is_cut():
    """Identity 0's links to a distractor (0.6) pass the calibrated threshold (0.5) and
    cost precision; the lowest grid threshold above them keeps every true pair: chosen."""
    contender, labels = _jury(stray=0.6)
    found = choose_pseudo_threshold(contender, labels, np.array([0, 1, 2]), mode="reciprocal",
                                    calibrated=0.5)
    assert found.precision_at_calibrated < 1.0 and found.recall_at_calibrated == 1.0
    assert found.threshold == pytest.approx(0.62)
    assert (found.precision, found.recall) == (1.0, 1.0)
    assert found.calibrated == 0.5 and found.decoder == "infomap"


def test_clean_clusters_keep_the_calibrated_threshold():
    """Where the calibrated threshold already gives pure, whole clusters, nothing stricter
    scores better and the lowest threshold (the calibrated one) is kept."""
    contender, labels = _jury(stray=0.2)
    found = choose_pseudo_threshold(contender, labels, np.array([0, 1, 2]), mode="reciprocal",
                                    calibrated=0.5)
    assert found.threshold == 0.5 and found.precision == 1.0 and found.recall == 1.0
