"""Unit tests of cftools.core.metrics: hand-computed cases, brute force, scikit-learn."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cftools.core.metrics import NMI_AVERAGES, evaluate, nmi, pairwise_scores

sk = pytest.importorskip("sklearn.metrics")


# ----------------------------------------------------------------------------- brute force


def _singletonise(pred):
    """-1 -> a fresh label per point, as the module documents."""
    pred = np.array(pred, dtype=np.int64)
    un = pred == -1
    pred[un] = pred.max(initial=0) + 1 + np.arange(un.sum())
    return pred


def _brute(pred, truth):
    """O(N^2) pairwise and BCubed straight from the definitions."""
    keep = np.asarray(truth) != -1
    p = _singletonise(pred)[keep]
    t = np.asarray(truth)[keep]
    tp = fp = fn = 0
    for i, j in itertools.combinations(range(len(p)), 2):
        same_p, same_t = p[i] == p[j], t[i] == t[j]
        tp += same_p and same_t
        fp += same_p and not same_t
        fn += same_t and not same_p
    prec = tp / (tp + fp) if tp + fp else 1.0
    rec = tp / (tp + fn) if tp + fn else 1.0
    bp = np.mean([np.sum((p == p[i]) & (t == t[i])) / np.sum(p == p[i]) for i in range(len(p))])
    br = np.mean([np.sum((p == p[i]) & (t == t[i])) / np.sum(t == t[i]) for i in range(len(p))])
    return prec, rec, bp, br


# ----------------------------------------------------------------------------- hand cases


def test_one_big_cluster_pairwise_f_differs_from_fmi():
    # truth: identity 0 x4, identity 1 x2; everything predicted as one cluster of 6
    truth = [0, 0, 0, 0, 1, 1]
    pred = [9, 9, 9, 9, 9, 9]
    r = evaluate(pred, truth)
    # TP = C(4)+C(2) = 6+1 = 7; predicted pairs = C(6) = 15; true pairs = 7
    assert r["true_positive_pairs"] == 7 and r["predicted_pairs"] == 15 and r["true_pairs"] == 7
    assert r["pairwise_precision"] == pytest.approx(7 / 15)
    assert r["pairwise_recall"] == pytest.approx(1.0)
    # F = 2 * 7/15 * 1 / (7/15 + 1) = 14/22 = 7/11 ; FMI = sqrt(7/15) -- not the same number
    assert r["pairwise_f"] == pytest.approx(7 / 11)
    assert r["fmi"] == pytest.approx(math.sqrt(7 / 15))
    assert r["fmi"] - r["pairwise_f"] > 0.04
    assert r["fmi"] == pytest.approx(sk.fowlkes_mallows_score(truth, pred))
    # BCubed P = (4 * 4/6 + 2 * 2/6) / 6 = 20/36 = 5/9 ; R = 1 ; F = 2*(5/9)/(14/9) = 5/7
    assert r["bcubed_precision"] == pytest.approx(5 / 9)
    assert r["bcubed_recall"] == pytest.approx(1.0)
    assert r["bcubed_f"] == pytest.approx(5 / 7)
    # one predicted cluster -> H(P) = 0 -> MI = 0 -> NMI 0
    assert r["nmi"] == pytest.approx(0.0)
    # noise: cluster of 6 with majority identity 0 (4 points) -> 2 of 6 points are noise
    assert r["noise_points"] == 2 and r["n_clustered_points"] == 6
    assert r["noise_ratio"] == pytest.approx(1 / 3)
    assert (r["n_clusters"], r["n_singletons"], r["n_true_clusters"]) == (1, 0, 2)


def test_small_mixed_case():
    # truth 0 0 0 1 1 ; pred A A B B B -> cells (A,0)=2, (B,0)=1, (B,1)=2
    truth = [0, 0, 0, 1, 1]
    pred = [3, 3, 8, 8, 8]
    r = evaluate(pred, truth)
    # TP = C2 + C1 + C2 = 2 ; pred pairs C2 + C3 = 4 ; true pairs C3 + C2 = 4 -> P = R = 1/2
    assert r["pairwise_precision"] == pytest.approx(0.5)
    assert r["pairwise_recall"] == pytest.approx(0.5)
    assert r["pairwise_f"] == pytest.approx(0.5) and r["fmi"] == pytest.approx(0.5)  # equal as P = R
    # BCubed P: A-points 2/2 each, B's identity-0 point 1/3, B's identity-1 points 2/3 each
    #   = (1 + 1 + 1/3 + 2/3 + 2/3) / 5 = (11/3) / 5 = 11/15
    # BCubed R: A-points 2/3 each, B0 point 1/3, B1 points 2/2 -> (2/3+2/3+1/3+1+1)/5 = 11/15
    assert r["bcubed_precision"] == pytest.approx(11 / 15)
    assert r["bcubed_recall"] == pytest.approx(11 / 15)
    # noise: A pure (0 of 2), B majority identity 1 (2 of 3) -> 1 noise point of 5 clustered
    assert r["noise_ratio"] == pytest.approx(1 / 5)
    # NMI against scikit-learn (arithmetic is its default)
    assert r["nmi"] == pytest.approx(sk.normalized_mutual_info_score(truth, pred))


def test_unassigned_are_singletons_and_counted():
    truth = [0, 0, 1, 1, 2]
    pred = [5, 5, -1, -1, 7]
    r = evaluate(pred, truth)
    # clusters {0,1} {2} {3} {4}: TP = 1 ; pred pairs = 1 ; true pairs = C2 + C2 = 2
    assert r["pairwise_precision"] == pytest.approx(1.0)
    assert r["pairwise_recall"] == pytest.approx(0.5)  # would be 1.0 if -1 were one cluster
    assert r["pairwise_f"] == pytest.approx(2 / 3)
    assert r["fmi"] == pytest.approx(math.sqrt(0.5))
    # BCubed R = (1 + 1 + 1/2 + 1/2 + 1) / 5 = 4/5
    assert r["bcubed_recall"] == pytest.approx(0.8)
    assert r["n_unassigned"] == 2 and r["n_clusters"] == 4 and r["n_singletons"] == 3
    assert r["noise_ratio"] == 0.0 and r["n_clustered_points"] == 2
    # NMI equals scikit-learn's once -1 are made singletons by hand
    assert r["nmi"] == pytest.approx(sk.normalized_mutual_info_score(truth, _singletonise(pred)))


def test_unknown_truth_is_excluded():
    truth = [0, 0, -1, 1]
    pred = [0, 0, 0, 1]
    r = evaluate(pred, truth)
    # point 2 dropped -> the rest is a perfect clustering; including it would cost precision
    assert r["n_excluded"] == 1 and r["n_points"] == 3
    for key in ("pairwise_f", "fmi", "bcubed_f", "nmi"):
        assert r[key] == pytest.approx(1.0), key
    assert r["noise_ratio"] == 0.0  # would be 1/3 had the unknown point counted
    with pytest.raises(ValueError, match="no point has a known truth"):
        evaluate([0, 1], [-1, -1])


def test_perfect_singletons_score_one():
    r = evaluate(np.arange(5), np.arange(5) + 10)
    for key in ("pairwise_precision", "pairwise_recall", "pairwise_f", "fmi",
                "bcubed_precision", "bcubed_recall", "bcubed_f", "nmi"):
        assert r[key] == 1.0, key
    # scikit-learn gives 0.0 here (TP = 0); ours is defined as 1.0 (documented)
    assert sk.fowlkes_mallows_score(np.arange(5), np.arange(5)) == 0.0


def test_degenerate_pair_cases():
    # all singletons predicted, one true identity of 3: no claimed pair -> P = 1, R = 0
    r = pairwise_scores([0, 1, 2], [4, 4, 4])
    assert (r["pairwise_precision"], r["pairwise_recall"], r["pairwise_f"], r["fmi"]) == (1.0, 0.0, 0.0, 0.0)
    # one cluster predicted, all identities distinct: no true pair -> R = 1, P = 0
    r = pairwise_scores([4, 4, 4], [0, 1, 2])
    assert (r["pairwise_precision"], r["pairwise_recall"], r["pairwise_f"]) == (0.0, 1.0, 0.0)
    # both one cluster: NMI 1 (scikit-learn agrees)
    assert nmi([1, 1, 1], [2, 2, 2]) == 1.0 == sk.normalized_mutual_info_score([2, 2, 2], [1, 1, 1])


def test_nmi_average_named_and_checked():
    truth = [0, 0, 1, 1, 2, 2, 2]
    pred = [0, 0, 0, 1, 1, 2, 3]
    for avg in NMI_AVERAGES:
        want = sk.normalized_mutual_info_score(truth, pred, average_method=avg)
        assert nmi(pred, truth, avg) == pytest.approx(want, abs=1e-12)
        assert evaluate(pred, truth, nmi_average=avg)["nmi_average"] == avg
    vals = {avg: nmi(pred, truth, avg) for avg in NMI_AVERAGES}
    assert vals["max"] < vals["arithmetic"] < vals["min"]  # they do differ here
    with pytest.raises(ValueError, match="unknown NMI average"):
        nmi(pred, truth, "harmonic")


def test_input_checks():
    with pytest.raises(ValueError, match="4 labels but truth has 3"):
        evaluate([0, 0, 1, 1], [0, 0, 1])
    with pytest.raises(ValueError, match=">= 0, or -1"):
        evaluate([0, -2], [0, 0])
    with pytest.raises(ValueError, match="integer"):
        evaluate([0.5, 1.0], [0, 0])


# ----------------------------------------------------------------------------- random checks


def test_agrees_with_sklearn_on_random_labelings():
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(20, 400))
        truth = rng.integers(0, int(rng.integers(1, 40)), n)
        pred = rng.integers(0, int(rng.integers(1, 40)), n)
        r = evaluate(pred, truth)
        if r["true_positive_pairs"] > 0:  # where both define FMI the same way
            assert r["fmi"] == pytest.approx(sk.fowlkes_mallows_score(truth, pred), abs=1e-12)
        for avg in NMI_AVERAGES:
            got = nmi(pred, truth, avg)
            assert got == pytest.approx(sk.normalized_mutual_info_score(truth, pred, average_method=avg),
                                        abs=1e-10)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-1, 5), st.integers(-1, 4)), min_size=1, max_size=25))
def test_matches_brute_force(pairs):
    pred = np.array([p for p, _ in pairs])
    truth = np.array([t for _, t in pairs])
    if (truth == -1).all():
        with pytest.raises(ValueError):
            evaluate(pred, truth)
        return
    r = evaluate(pred, truth)
    prec, rec, bp, br = _brute(pred, truth)
    assert r["pairwise_precision"] == pytest.approx(prec)
    assert r["pairwise_recall"] == pytest.approx(rec)
    assert r["bcubed_precision"] == pytest.approx(bp)
    assert r["bcubed_recall"] == pytest.approx(br)
    assert r["n_excluded"] == int((truth == -1).sum())
    assert r["n_unassigned"] == int(((pred == -1) & (truth != -1)).sum())
    assert 0.0 <= r["nmi"] <= 1.0 and 0.0 <= r["noise_ratio"] < 1.0
    json.dumps(r, allow_nan=False)  # plain, finite, serialisable


def test_permutation_and_relabelling_invariance():
    rng = np.random.default_rng(2)
    truth = rng.integers(-1, 30, 500)
    pred = rng.integers(-1, 25, 500)
    base = evaluate(pred, truth)
    perm = rng.permutation(500)
    new_names_p = rng.permutation(1000)[:25] * 7 + 3  # any other integers >= 0
    new_names_t = rng.permutation(1000)[:30] + 100
    pred2 = np.where(pred == -1, -1, new_names_p[np.maximum(pred, 0)])
    truth2 = np.where(truth == -1, -1, new_names_t[np.maximum(truth, 0)])
    again = evaluate(pred2[perm], truth2[perm])
    assert again.keys() == base.keys()
    for key, value in base.items():
        assert again[key] == pytest.approx(value, abs=1e-12), key
    # swapping the roles of pred and truth swaps precision and recall
    sw = evaluate(truth[truth != -1], pred[truth != -1].clip(0))
    fw = evaluate(pred[truth != -1].clip(0), truth[truth != -1])
    assert sw["pairwise_precision"] == pytest.approx(fw["pairwise_recall"])
    assert sw["bcubed_recall"] == pytest.approx(fw["bcubed_precision"])


def test_large_input_is_linear_enough():
    # a million points: the contingency is sparse, nothing N x N is ever built
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 100_000, 1_000_000)
    pred = truth.copy()
    flip = rng.random(truth.size) < 0.1
    pred[flip] = -1
    r = evaluate(pred, truth)
    assert r["pairwise_precision"] == 1.0 and r["bcubed_precision"] == 1.0
    assert r["n_unassigned"] == int(flip.sum())
    assert 0.7 < r["pairwise_recall"] < 0.9
