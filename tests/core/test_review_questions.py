"""Review questions (core/review.py): what is asked, how it is ordered, how p(same) is
read from the links or fitted on a labelled set."""

from __future__ import annotations

import numpy as np

from cftools.core.corrections import constraints_from
from cftools.core.review import (
    Calibration,
    candidates,
    fit_calibration,
    from_links,
    link_scale,
    review,
)
from cftools.formats.corrections import Answer


def clustered():
    """Identity P in two clusters that nearly merged (0-5 and 6-9), identity Q (10-15)
    with a look-alike R (16-17) inside its cluster, a singleton of P (18) just under the
    threshold, and far points (19-20)."""
    rng = np.random.default_rng(0)
    p, q = rng.standard_normal(8), rng.standard_normal(8)
    r = q + 0.8 * rng.standard_normal(8)
    centres = [p] * 10 + [q] * 6 + [r] * 2 + [p] + list(rng.standard_normal((2, 8)))
    x = np.array(centres) + 0.15 * rng.standard_normal((21, 8))
    x[18] = p + 0.4 * rng.standard_normal(8)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    sim = x @ x.T
    order = np.argsort(-sim, axis=1, kind="stable")[:, :8]
    order[:, 0] = np.arange(21)
    w = np.take_along_axis(sim, order, 1).astype(np.float32)
    labels = np.array([0] * 6 + [1] * 4 + [2] * 8 + [3, 4, 5])
    truth = np.array([0] * 10 + [1] * 6 + [2] * 2 + [0, 3, 4])
    return labels, order, w, truth


def test_every_kind_is_asked_and_ordered_by_expected_gain():
    labels, idx, w, truth = clustered()
    t = 0.8
    pool, cal = review(labels, idx, w, t, objective="pairs")
    assert {q.rule for q in pool} == {"join", "member", "cut"}
    gains = [q.gain for q in pool]
    assert gains == sorted(gains, reverse=True)
    for q in pool:
        wrong = q.p_same if q.kind == "join" else 1 - q.p_same
        assert np.isclose(q.gain, q.size_a * q.size_b * wrong)
        assert np.isclose(q.p_same, cal.p(q.rule, q.weight, t))
    # the two halves of P, the best question: many pairs, strong links across
    top = pool[0]
    assert top.rule == "join" and {top.cluster_a, top.cluster_b} == {0, 1}
    # a side is shown by its most central member first
    assert all(labels[q.a[0]] == q.cluster_a for q in pool if q.cluster_a >= 0)
    assert any(q.rule == "join" and 18 in q.a + q.b for q in pool)  # the singleton of P


def test_bcubed_weighs_what_each_point_gains():
    labels, idx, w, _ = clustered()
    pool, _ = review(labels, idx, w, 0.8)
    for q in pool:
        wrong = q.p_same if q.kind == "join" else 1 - q.p_same
        assert np.isclose(q.gain, 2 * q.pairs / (q.size_a + q.size_b) * wrong)


def test_answered_questions_are_left_out():
    labels, idx, w, _ = clustered()
    pool, _ = review(labels, idx, w, 0.8)
    first = pool[0]
    cons = constraints_from([Answer(1, "different", (first.a[0],), (first.b[0],))], 21)
    again, _ = review(labels, idx, w, 0.8, answered=cons)
    assert len(again) == len(pool) - 1
    assert all((q.a[0], q.b[0]) != (first.a[0], first.b[0]) for q in again)


def test_p_same_fitted_on_a_labelled_set():
    labels, idx, w, truth = clustered()
    pool, scale = candidates(labels, idx, w, 0.8)
    assert np.isclose(scale, link_scale(np.asarray(w).ravel(), 0.8)) or scale > 0
    cal = fit_calibration(pool, truth, 0.8, scale, "D_L", min_questions=3)
    assert isinstance(cal, Calibration) and cal.source == "D_L"
    for rule in ("join", "member", "cut"):
        assert np.isfinite(cal.alpha[rule]) and np.isfinite(cal.beta[rule])
    # a rule with too few questions keeps the links' own model
    sparse = fit_calibration(pool, truth, 0.8, scale, "D_L", min_questions=10_000)
    assert sparse.alpha == from_links(scale).alpha


def test_separable_answers_give_a_finite_slope():
    from cftools.core.review import _logistic

    x = np.r_[np.linspace(-0.2, -0.01, 50), np.linspace(0.01, 0.2, 50)]
    y = (x > 0).astype(float)
    alpha, beta = _logistic(x, y, 1 / 0.05)
    assert np.isfinite(alpha) and 0 < alpha < 1e4 and abs(beta) < 10
