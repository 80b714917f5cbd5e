"""Answers as constraints (core/corrections.py), clusters made to honour them
(core/decoding/constrained.py) and ids carried across re-decodings
(core/decoding/identities.py)."""

from __future__ import annotations

import numpy as np
import pytest

from cftools.core.corrections import answered_pairs, constraints_from
from cftools.core.decoding.constrained import cosine_edges, enforce, link_edges
from cftools.core.decoding.identities import MERGED, SPLIT, carry_ids, next_free_id
from cftools.errors import CfError
from cftools.formats.corrections import Answer


def same(n, a, b):
    return Answer(n, "same", tuple(a), tuple(b))


def diff(n, a, b):
    return Answer(n, "different", tuple(a), tuple(b))


def test_closure_of_answers():
    cons = constraints_from([same(1, [0], [1]), same(2, [1], [2]), diff(3, [2], [5]),
                             Answer(4, "name", (7, 8), name="Ann"),
                             Answer(5, "name", (9,), name="Bob")], 10)
    assert cons.group[0] == cons.group[1] == cons.group[2] and cons.group[7] == cons.group[8]
    assert cons.names == {int(cons.group[7]): "Ann", 9: "Bob"}
    rows, cols = np.array([0, 0, 5, 7, 3]), np.array([2, 5, 1, 9, 4])
    assert answered_pairs(cons, rows, cols).tolist() == [1, 0, 0, 0, -1]  # two names differ


@pytest.mark.parametrize("answers, says", [
    ([same(1, [3], [4]), diff(2, [3], [4])], "answer 2 says points 3 and 4 differ, but the "
                                             "'same' answers 1 join them"),
    ([same(1, [0], [1]), same(2, [1], [2]), same(3, [2], [3]), diff(4, [0], [3])],
     "the 'same' answers 1, 2, 3 join them"),
    ([Answer(1, "name", (0, 1), name="Ann"), Answer(2, "name", (1,), name="Bob")],
     "answers 1 and 2 give one identity two names"),
])
def test_contradictions_are_refused_naming_the_answers(answers, says):
    with pytest.raises(CfError, match="contradictory answers") as err:
        constraints_from(answers, 6, "c.json")
    assert says in str(err.value) and str(err.value).startswith("c.json: ")


def chain():
    """Two tight groups 0-3 and 4-7 joined by one weak link 3-4, all in cluster 0."""
    n = 8
    idx = np.full((n, 3), -1, np.int64)
    w = np.zeros((n, 3), np.float32)
    idx[:, 0] = np.arange(n)
    for i in range(n):
        for c, j in enumerate((i - 1, i + 1), 1):
            if 0 <= j < n:
                idx[i, c] = j
                w[i, c] = 0.3 if {i, j} == {3, 4} else 0.9
    return idx, w


def test_a_cannot_link_splits_along_the_weakest_link():
    idx, w = chain()
    labels = np.zeros(8, np.int64)
    out = enforce(labels, constraints_from([diff(1, [0], [7])], 8), link_edges(idx, w))
    assert out.labels[:4].tolist() == [0] * 4 and len(set(out.labels[4:])) == 1
    assert out.labels[4] != 0 and out.splits == [(0, [int(out.labels[4])], [4, 4])]


def test_the_larger_part_keeps_the_id_and_must_links_merge():
    idx, w = chain()
    labels = np.array([5, 5, 5, 5, 5, 5, 2, 2])
    cons = constraints_from([diff(1, [1], [2]), same(2, [0], [7])], 8)
    out = enforce(labels, cons, link_edges(idx, w))
    assert out.merges == [(5, 2)]  # the larger cluster's id stays
    # 0 = 7 closes the chain into a ring; 1 != 2 cuts it at 1-2 and at its weakest link,
    # 3-4: the larger part keeps the id, the other takes a new one
    assert out.labels.tolist() == [5, 5, 6, 6, 5, 5, 5, 5]
    assert out.splits == [(5, [6], [6, 2])]


def test_cosine_edges_split_where_no_links_are_given():
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal([1, 0, 0], 0.05, (5, 3)), rng.normal([0, 1, 0], 0.05, (4, 3))]
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    out = enforce(np.zeros(9, np.int64), constraints_from([diff(1, [0], [8])], 9),
                  cosine_edges(x, 3))
    assert len(set(out.labels[:5])) == 1 and len(set(out.labels[5:])) == 1
    assert out.labels[0] != out.labels[8] and out.labels[0] == 0


def test_unchanged_clusters_keep_their_ids():
    old = np.array([4, 4, 9, 9, 9, -1, 7])
    new = np.array([1, 1, 0, 0, 0, -1, 2])  # the same clustering, numbered afresh
    out = carry_ids(new, old, next_free_id(old, 12))
    assert out.labels.tolist() == old.tolist() and not out.changes.size
    assert out.next_id == 12 and out.kept == 3 and out.fresh == 0


def test_a_split_keeps_the_larger_part_and_is_recorded():
    old = np.array([3, 3, 3, 3, 3, 8, 8])
    new = np.array([0, 0, 0, 1, 1, 2, 2])
    out = carry_ids(new, old, 10, step=2)
    assert out.labels.tolist() == [3, 3, 3, 10, 10, 8, 8]
    assert out.changes.tolist() == [[2, SPLIT, 3, 10, 2]]


def test_merges_are_recorded_and_ids_never_come_back():
    old = np.array([0, 0, 0, 1, 1, 2])
    new = np.array([0, 0, 0, 0, 0, 1])  # 0 and 1 merged; 2 stays
    out = carry_ids(new, old, 5)
    assert out.labels.tolist() == [0, 0, 0, 0, 0, 2]
    assert out.changes.tolist() == [[0, MERGED, 1, 0, 2]]
    # the next clustering splits them again: the part that was 1 gets a new id, not 1
    again = carry_ids(np.array([0, 0, 0, 1, 1, 2]), out.labels, out.next_id)
    assert again.labels.tolist() == [0, 0, 0, 5, 5, 2] and again.next_id == 6
    assert 1 not in again.labels


def test_new_points_get_new_ids_in_order():
    old = np.array([0, 0, 1])
    new = np.array([2, 2, 0, 0, 1, 3])  # rows 3..5 are new points
    out = carry_ids(new, old, 2)
    assert out.labels.tolist() == [0, 0, 1, 1, 2, 3]


def test_answered_pairs_become_training_targets(tmp_path):
    import json

    from cftools.core.clusformer.sequences import SequenceData
    from cftools.core.corrections import train_on_answers
    from cftools.formats.features import load_features, write_features
    from cftools.formats.writing import write_artifact

    x = np.eye(6, dtype=np.float32)
    write_features(tmp_path / "du.h5", x)  # no labels: only the answers teach
    fu = load_features(tmp_path / "du.h5")
    order = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0], [3, 2, 1], [4, 5, 0], [5, 4, 1]])
    data = SequenceData(order, np.ones(order.shape, bool), np.full(order.shape, -1, np.int8),
                        np.full(6, -1, np.int64))
    (tmp_path / "c.json").write_text(json.dumps({
        "cftools_kind": "corrections", "cftools_format": 1, "features_id": fu.id,
        "n_points": 6, "answers": [{"kind": "same", "a": [0], "b": [1]},
                                   {"kind": "different", "a": [0], "b": [2]}]}))
    out = train_on_answers(data, tmp_path / "c.json", fu)
    assert out.targets[0].tolist() == [-1, 1, 0] and out.targets[1].tolist() == [-1, 1, -1]
    assert out.targets[2].tolist() == [-1, -1, 0] and (out.targets[4:] == -1).all()
    assert out.labels[0] == out.labels[1] != out.labels[2] and (out.labels[3:] == -1).all()
    # the same answers through a training set cf-merge labels wrote: rows follow source_rows
    with write_artifact(tmp_path / "r.h5", "features",
                        inputs={"unlabelled": fu.artifact}) as f:
        f.create_dataset("features", data=x[[5, 2, 1, 0]])
        f.create_dataset("labels", data=np.array([7, 8, 8, 9]))
        f.create_dataset("source", data=np.array([0, 1, 1, 1], np.int8))
        f.create_dataset("source_rows", data=np.array([5, 2, 1, 0]))
    fr = load_features(tmp_path / "r.h5")
    data = SequenceData(np.array([[3, 2, 1], [2, 3, 0]]), np.ones((2, 3), bool),
                        np.full((2, 3), -1, np.int8), fr.labels)
    out = train_on_answers(data, tmp_path / "c.json", fr)
    assert out.targets.tolist() == [[-1, 1, 0], [-1, 1, -1]]
    with pytest.raises(CfError, match="another data set"):
        train_on_answers(data, tmp_path / "c.json", _other(tmp_path))


def _other(tmp_path):
    from cftools.formats.features import load_features, write_features

    write_features(tmp_path / "other.h5", np.eye(6, dtype=np.float32)[::-1].copy())
    return load_features(tmp_path / "other.h5")
