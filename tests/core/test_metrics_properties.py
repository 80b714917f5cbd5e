"""Property-based tests (hypothesis) of the metrics: invariances and fixed points that
must hold for any labelling, not just the hand-picked ones."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cftools.core.metrics import evaluate

SCORES = ("pairwise_precision", "pairwise_recall", "pairwise_f", "fmi", "bcubed_precision",
          "bcubed_recall", "bcubed_f", "nmi", "noise_ratio")

labellings = st.integers(1, 60).flatmap(
    lambda n: st.tuples(arrays(np.int64, n, elements=st.integers(-1, 8)),
                        arrays(np.int64, n, elements=st.integers(0, 8)),
                        st.randoms(use_true_random=False)))


def relabel(labels, rng):
    """Map each label >= 0 to another arbitrary id; -1 stays unassigned."""
    ids = np.unique(labels[labels >= 0])
    new = dict(zip(ids.tolist(), rng.sample(range(1000, 1000 + 10 * len(ids) + 10), len(ids))))
    return np.array([new.get(v, -1) for v in labels.tolist()], dtype=np.int64)


@settings(max_examples=150, deadline=None)
@given(labellings)
def test_scores_are_bounded_and_consistent(case):
    pred, truth, _ = case
    m = evaluate(pred, truth)
    for key in SCORES:
        assert 0.0 <= m[key] <= 1.0 + 1e-12, (key, m[key])
    p, r = m["pairwise_precision"], m["pairwise_recall"]
    # the harmonic mean never exceeds the geometric mean (pairwise F <= FMI)
    assert m["pairwise_f"] <= m["fmi"] + 1e-12
    assert m["n_unassigned"] == int((pred == -1).sum())
    assert m["n_points"] == len(pred)
    if p > 0 and r > 0:
        assert abs(m["pairwise_f"] - 2 * p * r / (p + r)) < 1e-12


@settings(max_examples=150, deadline=None)
@given(labellings)
def test_invariant_to_relabelling_and_to_permuting_the_points(case):
    pred, truth, rnd = case
    base = evaluate(pred, truth)
    order = np.array(rnd.sample(range(len(pred)), len(pred)))
    moved = evaluate(relabel(pred, rnd)[order], relabel(truth, rnd)[order])
    for key in SCORES + ("n_clusters", "n_singletons"):
        assert abs(base[key] - moved[key]) < 1e-9, key


@settings(max_examples=100, deadline=None)
@given(arrays(np.int64, st.integers(1, 60), elements=st.integers(0, 8)),
       st.randoms(use_true_random=False))
def test_a_perfect_clustering_scores_one_whatever_its_ids(truth, rnd):
    m = evaluate(relabel(truth, rnd), truth)
    for key in ("pairwise_precision", "pairwise_recall", "pairwise_f", "fmi",
                "bcubed_precision", "bcubed_recall", "bcubed_f"):
        assert m[key] == 1.0, key
    assert m["noise_ratio"] == 0.0


@settings(max_examples=100, deadline=None)
@given(arrays(np.int64, st.integers(1, 40), elements=st.integers(0, 5)))
def test_all_singletons_and_unassigned_score_the_same(truth):
    singles = evaluate(np.arange(len(truth)), truth)
    unassigned = evaluate(np.full(len(truth), -1), truth)
    for key in SCORES:
        assert singles[key] == unassigned[key], key
    assert singles["pairwise_precision"] == 1.0 and singles["bcubed_precision"] == 1.0
    assert unassigned["n_clusters"] == len(truth) == unassigned["n_singletons"]
