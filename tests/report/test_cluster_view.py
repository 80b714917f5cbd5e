"""cftools.report.cluster_view: the ordering, paging, strays and purity behind the gallery."""

import numpy as np
import pytest

from cftools.report import cluster_view as V


def test_dense_clusters_makes_unassigned_singletons():
    cid, sizes, label_of = V.dense_clusters(np.array([5, -1, 5, 2, -1]))
    assert sizes[cid].tolist() == [2, 1, 2, 1, 1]
    assert label_of[cid].tolist() == [5, -1, 5, 2, -1]
    assert cid[1] != cid[4]


def test_strength_from_links_is_mean_weight_to_the_rest():
    # cluster {0,1,2}; 0 links to 1 (0.9) and 3 (0.8, other cluster); 2 links to nobody of its own
    labels = np.array([0, 0, 0, 1])
    cid, sizes, _ = V.dense_clusters(labels)
    idx = np.array([[0, 1, 3], [1, 0, 2], [2, 3, -1], [3, 2, 0]])
    w = np.array([[1, .9, .8], [1, .6, .4], [1, .7, 0], [1, .7, .8]], dtype=np.float32)
    s = V.strength_from_links(cid, sizes, idx, w)
    assert s[0] == pytest.approx(0.9 / 2)            # 1 of 2 possible mates, missing = 0
    assert s[1] == pytest.approx((0.6 + 0.4) / 2)
    assert s[2] == 0.0
    assert np.isnan(s[3])                              # singleton


def test_strength_from_features_matches_brute_force():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = rng.integers(0, 7, 60)
    labels[:3] = [100, 101, -1]
    cid, sizes, _ = V.dense_clusters(labels)
    s = V.strength_from_features(cid, sizes, lambda a, b: x[a:b], 60, block_rows=16)
    for i in range(60):
        mates = np.flatnonzero((cid == cid[i]) & (np.arange(60) != i))
        if mates.size == 0:
            assert np.isnan(s[i])
        else:
            assert s[i] == pytest.approx(float((x[mates] @ x[i]).mean()), abs=1e-5)


def test_strays_are_low_against_their_cluster_median():
    labels = np.array([0] * 5 + [1] * 2)
    cid, sizes, _ = V.dense_clusters(labels)
    s = np.array([.9, .8, .85, .3, .7, .1, .1], dtype=np.float32)
    stray = V.likely_strays(cid, sizes, s, ratio=0.5)
    assert stray.tolist() == [False, False, False, True, False, False, False]  # pairs: never
    assert V.likely_strays(cid, sizes, s, ratio=0.5, below=0.2)[5:].all()


def test_display_order_sizes_then_strength():
    labels = np.array([3, 3, 7, 7, 7, 9, -1])
    cid, sizes, label_of = V.dense_clusters(labels)
    strength = np.array([.2, .8, .5, .9, .1, np.nan, np.nan], dtype=np.float32)
    corder, porder = V.display_order(cid, sizes, label_of, strength)
    assert label_of[corder].tolist() == [7, 3, 9, -1]
    assert porder.tolist() == [3, 2, 4, 1, 0, 5, 6]


def test_paginate_caps_pages_and_covers_every_member_once():
    sizes = np.array([700, 120, 90, 90, 30, 2, 2] + [1] * 650)
    pages, singles = V.paginate(sizes, per_page=300, singles_per_page=300)
    assert all(0 < p.count <= 300 for p in pages + singles)
    seen = {}
    for p in pages:
        for rank, a, b in p.pieces:
            seen.setdefault(rank, []).append((a, b))
    for rank, size in enumerate(sizes[:7]):
        spans = sorted(seen[rank])
        assert spans[0][0] == 0 and spans[-1][1] == size
        assert all(x[1] == y[0] for x, y in zip(spans, spans[1:]))
    assert [p.count for p in pages[:3]] == [300, 300, 100 + 120]  # the 700 split, then packed
    assert sum(p.count for p in singles) == 650 and len(singles) == 3
    assert all(p.name.startswith("s") for p in singles)


def test_truth_purity_other_and_splits():
    pred = np.array([0, 0, 0, 0, 1, 1, 2, 3])
    truth = np.array([5, 5, 5, 6, 6, 6, 6, -1])
    cid, sizes, _ = V.dense_clusters(pred)
    maj, mc, known, other = V.truth_summary(cid, sizes.size, truth)
    assert maj.tolist() == [5, 6, 6, -1] and mc.tolist() == [3, 2, 1, 0]
    assert known.tolist() == [4, 2, 1, 0]
    assert other.tolist() == [False, False, False, True, False, False, False, False]
    splits = V.largest_splits(cid, truth)
    assert splits[0][0] == 6 and splits[0][1] == 4 and len(splits[0][2]) == 3
    assert splits[0][2][0] == (1, 2)
    assert [s[0] for s in splits] == [6]  # identity 5 lies in one cluster: no split


def test_order_is_vectorised_at_scale():
    import time

    rng = np.random.default_rng(1)
    n = 300_000
    labels = rng.integers(0, n // 5, n)
    cid, sizes, label_of = V.dense_clusters(labels)
    strength = rng.random(n).astype(np.float32)
    t0 = time.perf_counter()
    V.display_order(cid, sizes, label_of, strength)
    V.likely_strays(cid, sizes, strength, ratio=0.5)
    V.truth_summary(cid, sizes.size, labels)
    assert time.perf_counter() - t0 < 20
