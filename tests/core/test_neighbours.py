"""core.neighbours: the centre first, the IVF tuning that gives up where exact search is
cheaper, and the quality of a kNN graph against the truth (knn_quality)."""

import json

import numpy as np
import pytest
from conftest import unit_rows

from cftools.core.neighbours import quality
from cftools.core.neighbours.exact import exact_of, put_self_first, sample_rows
from cftools.core.neighbours.index import KnnParams, build_index, knn, set_nprobe
from cftools.core.neighbours.policy import ivf_relative_cost, max_nprobe, tune_ivf
from cftools.core.neighbours.quality import knn_quality


def test_centre_first_even_with_duplicates():
    x = unit_rows(300, 8, seed=4)
    x[[10, 20, 30]] = x[5]  # four identical vectors: faiss may return any of them first
    idx, sims = knn(x, 6)
    assert (idx[:, 0] == np.arange(300)).all()
    for i in (5, 10, 20, 30):
        assert set(idx[i, :4]) == {5, 10, 20, 30}
        np.testing.assert_allclose(sims[i, :4], 1.0, atol=1e-5)


def test_put_self_first_inserts_a_missing_centre_and_keeps_order():
    idx = np.array([[4, 3, 0, 2], [2, 3, 4, 0], [3, 1, 4, 0]])
    sims = np.array([[.9, .8, .7, .6], [.9, .8, .7, .6], [.9, .8, .7, .6]], np.float32)
    put_self_first(idx, sims)
    assert idx.tolist() == [[0, 4, 3, 2], [1, 2, 3, 4], [2, 3, 1, 4]]
    assert sims[:, 0].tolist() == [1, 1, 1] and sims[0, 1:].tolist() == pytest.approx([.9, .8, .6])


def test_tune_nprobe_gives_up_where_ivf_would_cost_more_than_exact():
    # uniform random points: no clusters, IVF cannot reach 0.95 cheaply -> None
    x = unit_rows(4000, 32, seed=8)
    params = KnnParams(method="ivf", nlist=60)
    index = build_index(x, params, 10)
    rows = sample_rows(4000, 200, 0)
    exact = exact_of(x, x[rows], 10, centres=rows)
    def search_ids(q, p):
        set_nprobe(index, p)
        return index.search(q, 10)[1]

    tuning = tune_ivf(search_ids, x, x, 10, max_nprobe(4000, 60), sample=200, seed=0,
                      centres=np.arange(4000))
    assert (tuning.rows == rows).all() and (tuning.exact_ids == exact).all()
    found, reached, trials = tuning.nprobe, tuning.recall, tuning.trials
    assert found is None and reached < 0.95
    assert trials[-1][0] == max_nprobe(4000, 60)
    assert ivf_relative_cost(4000, 60, max_nprobe(4000, 60)) < 1
    assert ivf_relative_cost(4000, 60, max_nprobe(4000, 60) + 1) >= 1


# ----------------------------------------------------------------------------- kNN quality


# 6 points, identities 0 0 0 1 1 2; rows list self first, then 2 neighbours
TRUTH6 = np.array([0, 0, 0, 1, 1, 2])


KNN6 = np.array([
    [0, 1, 3],  # 1 same, 3 other
    [1, 0, 2],  # 0 same, 2 same
    [2, 4, 1],  # 4 other, 1 same
    [3, 4, 0],  # 4 same, 0 other
    [4, 3, 5],  # 3 same, 5 other
    [5, 0, 1],  # other, other (identity 2 has no mates)
])


def test_knn_quality_hand_case():
    q = knn_quality(KNN6, TRUTH6)
    assert q["ranks"] == 2 and q["n_points"] == 6 and q["n_self_not_first"] == 0
    # rank 1 matches: points 0,1,3,4 -> 4/6 ; rank 2 matches: point 1, 2 -> 2/6
    assert q["same_at_rank"] == pytest.approx([4 / 6, 2 / 6])
    # precision@2 = (4 + 2) / 12
    assert q["precision_at_rank"] == pytest.approx([4 / 6, 6 / 12])
    # mates: points 0-2 have 2, points 3-4 have 1, point 5 none (not averaged)
    # recall@1 = (1/2 + 1/2 + 0/2 + 1 + 1) / 5 = 3/5 ; recall@2 = (1/2 + 1 + 1/2 + 1 + 1) / 5 = 4/5
    assert q["n_with_mates"] == 5
    assert q["recall_at_rank"] == pytest.approx([0.6, 0.8])
    assert q["neighbour_recall"] == pytest.approx(0.8)
    # same-identity edges 0-1, 1-2, 3-4 -> components {0,1,2} {3,4} {5} = the truth
    assert q["upper_pairwise_recall"] == 1.0 and q["upper_bcubed_recall"] == 1.0
    assert q["upper_pairwise_precision"] == 1.0
    assert q["upper_n_clusters"] == 3 == q["n_true_clusters"]
    json.dumps(q, allow_nan=False)


def test_knn_quality_upper_bound_short_of_truth():
    knn = KNN6.copy()
    knn[1] = [1, 0, 3]  # drop edge 1-2 ...
    knn[2] = [2, 4, 5]  # ... from both sides: components {0,1} {2} {3,4} {5}
    q = knn_quality(knn, TRUTH6)
    # true pairs C3 + C2 = 4 ; found C2 + C2 = 2 -> R = 1/2, F = 2(1/2)/(3/2) = 2/3
    assert q["upper_pairwise_recall"] == pytest.approx(0.5)
    assert q["upper_pairwise_f"] == pytest.approx(2 / 3)
    # BCubed R = (2/3 + 2/3 + 1/3 + 1 + 1 + 1) / 6 = 7/9
    assert q["upper_bcubed_recall"] == pytest.approx(7 / 9)
    assert q["upper_n_clusters"] == 4


def test_knn_quality_self_not_first_missing_and_unknown():
    knn = KNN6.copy()
    knn[0] = [1, 0, 3]  # a duplicate image ranked before the point itself
    q = knn_quality(knn, TRUTH6)
    assert q["n_self_not_first"] == 1
    assert q["same_at_rank"] == pytest.approx(knn_quality(KNN6, TRUTH6)["same_at_rank"])
    # without self: the same answer from the bare neighbour lists
    bare = knn_quality(KNN6[:, 1:], TRUTH6, self_first=False)
    full = knn_quality(KNN6, TRUTH6)
    for key in ("same_at_rank", "recall_at_rank", "upper_pairwise_recall"):
        assert bare[key] == pytest.approx(full[key])
    # -1 = no neighbour: a miss, never an error
    knn = KNN6.copy()
    knn[1, 2] = -1
    q = knn_quality(knn, TRUTH6)
    assert q["same_at_rank"][1] == pytest.approx(1 / 6)
    # unknown truth: centre excluded, and never a match as a neighbour
    truth = TRUTH6.copy()
    truth[2] = -1
    q = knn_quality(KNN6, truth)
    assert q["n_points"] == 5 and q["n_excluded"] == 1
    # rank 1: 0->1, 1->0, 3->4, 4->3 match, 5->0 not -> 4/5
    # rank 2: 0->3, 1->2 (unknown: a miss), 3->0, 4->5, 5->1 -> 0/5
    assert q["same_at_rank"] == pytest.approx([4 / 5, 0.0])
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        knn_quality(np.where(KNN6 == 5, 6, KNN6), TRUTH6)


def test_knn_quality_small_blocks_agree():
    rng = np.random.default_rng(4)
    n, k = 300, 9
    truth = rng.integers(0, 30, n)
    knn = np.concatenate([np.arange(n)[:, None], rng.integers(0, n, (n, k - 1))], axis=1)
    a = knn_quality(knn, truth)
    b = knn_quality(knn, truth, block_rows=7)
    assert a.keys() == b.keys()
    for key in a:  # same up to the order of float sums
        assert a[key] == pytest.approx(b[key], abs=1e-12), key
    # the bound is a clustering with no wrong pair, and recall grows with rank
    assert a["upper_pairwise_precision"] == 1.0
    assert np.all(np.diff(a["recall_at_rank"]) >= 0)


def test_knn_quality_components_folded_in_batches(monkeypatch):
    # the same upper bounds when same-identity edges are folded into components often
    rng = np.random.default_rng(5)
    n, k = 400, 6
    truth = rng.integers(0, 60, n)
    knn = np.concatenate([np.arange(n)[:, None], rng.integers(0, n, (n, k - 1))], axis=1)
    once = knn_quality(knn, truth)
    monkeypatch.setattr(quality, "EDGE_FLUSH", 3)
    folded = knn_quality(knn, truth, block_rows=11)
    for key in ("upper_pairwise_recall", "upper_bcubed_recall", "upper_n_clusters"):
        assert folded[key] == pytest.approx(once[key]), key
    assert once["upper_n_clusters"] < n  # some merging happened


def test_knn_quality_repeated_id_counts_once():
    knn = KNN6.copy()
    knn[1] = [1, 0, 0]  # neighbour 0 listed twice
    q = knn_quality(knn, TRUTH6)
    # rank 2 matches: point 1's second 0 is a repeat (no match), point 2 -> 1 still -> 1/6
    assert q["same_at_rank"] == pytest.approx([4 / 6, 1 / 6])
    # recall@2 = (1/2 + 1/2 + 1/2 + 1 + 1) / 5 = 0.7 (point 1 would claim 2/2 if counted twice)
    assert q["neighbour_recall"] == pytest.approx(0.7)
    assert all(0.0 <= x <= 1.0 for x in q["recall_at_rank"])
