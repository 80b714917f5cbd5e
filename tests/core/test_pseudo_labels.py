"""Pseudo-labels for the next round: trimming clusters larger than any real identity, keeping
cores, carrying the labels onto features of all the points."""

import numpy as np
import pytest

from cftools.core.pseudo_labels import carried_labels, trim_oversized


def _unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_an_oversized_cluster_keeps_the_members_nearest_its_mean():
    rng = np.random.default_rng(0)
    core = _unit([1, 0, 0] + 0.05 * rng.standard_normal((6, 3)))  # one identity
    strays = _unit([[0.3, 1, 0], [0.3, 0, 1]])  # joined to it, far from its centre
    small = _unit([[0, 1, 1], [0, 1, 0.9]])
    features = np.vstack([core, strays, small])
    pred = np.r_[np.zeros(8, np.int64), [1, 1]]
    pred[2] = -1  # an unassigned point stays unassigned
    out = trim_oversized(pred, features, max_size=5)
    assert out[2] == -1 and (out[[6, 7]] == -1).all()  # the strays go
    assert (out[[0, 1, 3, 4, 5]] == 0).all()  # the identity's 5 stay
    assert (out[[8, 9]] == 1).all()  # a cluster within the size is untouched
    assert (pred[[6, 7]] == 0).all()  # the input is not changed
    # a cluster holding a point a person's answers name is left whole
    assert np.array_equal(trim_oversized(pred, features, 5, exempt=np.array([7])), pred)
    # scaled rows give the same cut: the members are compared by cosine
    assert np.array_equal(trim_oversized(pred, features * np.arange(1, 11)[:, None], 5), out)


def test_nothing_to_trim_without_a_limit_or_a_cluster():
    pred = np.array([0, 0, 0, -1])
    features = _unit(np.eye(4)[:, :3] + 0.1)
    assert np.array_equal(trim_oversized(pred, features, 0), pred)
    assert np.array_equal(trim_oversized(np.full(4, -1), features, 2), np.full(4, -1))


def test_a_cluster_keeps_its_largest_piece_under_the_stricter_cut():
    """keep_cores: each cluster keeps its members in its largest strict piece (ties: the
    lowest strict label); a cluster whose largest piece is one point, and points the
    strict clustering leaves unassigned, become unassigned."""
    from cftools.core.pseudo_labels import keep_cores

    pred = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, -1, 3, 3])
    strict = np.array([5, 5, 5, 6, 6, 7, 7, 8, 8, 9, 10, 4, 11, -1])
    got = keep_cores(pred, strict)
    assert got.tolist() == [0, 0, 0, -1, -1, 1, 1, -1, -1, -1, -1, -1, -1, -1]
    assert keep_cores(pred, pred).tolist() == [*pred[:12], 3, 3]  # the same cut: whole
    assert (keep_cores(pred, np.full(pred.shape, -1)) == -1).all()


def test_cores_leave_out_points_before_the_size_limits():
    from cftools.core.pseudo_labels import pseudo_labels

    pred = np.array([0, 0, 0, 0, 1, 1, 1, -1])
    strict = np.array([0, 0, 0, 1, 2, 3, 4, 5])  # cluster 1 falls into single points
    chosen = pseudo_labels(pred, np.array([0, 0, 1, 1]), min_size=2, max_size=0,
                           cores=strict)
    assert chosen.unlabelled_rows.tolist() == [0, 1, 2]
    assert chosen.counts["outside_cores"] == 4 and chosen.counts["dropped_unassigned"] == 1


def test_carried_labels_reach_every_row_of_both_sources():
    """Each retraining row's label lands on its row of its source; rows it does not hold
    are unknown (-1); inconsistent retraining sets are refused."""
    lab_l, lab_u = carried_labels([0, 1, 1, 0], [2, 0, 3, 0], np.array([5, 9, 9, 4]), (3, 4))
    assert lab_l.tolist() == [4, -1, 5] and lab_u.tolist() == [9, -1, -1, 9]
    for source, rows, labels, message in (([0, 2], [0, 1], [1, 2], "source other than"),
                                          ([0, 1], [0, 4], [1, 2], "row 4 of the unlabelled"),
                                          ([1, 1], [2, 2], [1, 2], "twice"),
                                          ([0, 1], [0, 1], [1], "as many")):
        with pytest.raises(ValueError, match=message):
            carried_labels(source, rows, np.array(labels), (3, 4))
