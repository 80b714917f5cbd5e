"""core.decoding.propagation: label propagation splits what one bridge joins, keeps to the
kept links, settles pairs that would swap labels forever, repeats itself exactly, and
clusters demo links about as well as Infomap at the same threshold."""

import numpy as np
import pytest
import torch

from cftools.core.decoding.decoders import DECODERS, decode, decode_components
from cftools.core.decoding.propagation import decode_propagation
from cftools.core.metrics import pairwise_scores
from cftools.core.neighbours.index import knn
from cftools.data.demo import make_demo_features


def rows_of(edges: dict, n: int, k: int):
    """(indices, probabilities) rows from {i: [(j, p), ...]}, self first, padded with -1."""
    idx = np.full((n, k), -1, np.int64)
    p = np.zeros((n, k), np.float32)
    for i in range(n):
        idx[i, 0], p[i, 0] = i, 1.0
        for c, (j, w) in enumerate(edges.get(i, []), start=1):
            idx[i, c], p[i, c] = j, w
    return idx, p


def cliques_and_bridge():
    """Two 5-cliques (0-4, 5-9) of strong links and one weaker link 4 -> 5 between them."""
    edges = {i: [(j, 0.9) for j in range(5) if j != i] for i in range(5)}
    edges.update({i: [(j, 0.9) for j in range(5, 10) if j != i] for i in range(5, 10)})
    edges[4] = edges[4] + [(5, 0.6)]
    return rows_of(edges, 10, 6)


def test_one_bridge_does_not_join_two_crowds():
    idx, p = cliques_and_bridge()
    assert np.unique(decode_components(idx, p, 0.5)).size == 1  # the bridge is kept
    labels = decode_propagation(idx, p, 0.5)
    assert (labels[:5] == labels[0]).all() and (labels[5:] == labels[5]).all()
    assert labels[0] != labels[5]


def test_links_below_the_threshold_are_not_followed():
    idx, p = cliques_and_bridge()
    labels = decode_propagation(idx, p, 0.95)  # nothing kept
    assert np.array_equal(labels, np.arange(10))


def test_a_pair_that_would_swap_labels_settles_in_one_cluster():
    # two points that each weigh the other above themselves: a synchronous round swaps
    # their labels; the half-of-the-movers rule ends it
    idx, p = rows_of({0: [(1, 0.9)], 1: [(0, 0.9)]}, 2, 2)
    for seed in range(5):
        assert decode_propagation(idx, p, 0.5, seed=seed, max_rounds=20).tolist() == [0, 0]


def test_isolated_points_stay_singletons_and_ids_run_by_first_member():
    idx, p = rows_of({1: [(2, 0.9)], 2: [(1, 0.8)], 4: [(3, 0.2)]}, 5, 3)
    assert decode_propagation(idx, p, 0.5).tolist() == [0, 1, 1, 2, 3]
    assert decode("propagation", idx, p, 0.5).tolist() == [0, 1, 1, 2, 3]
    assert "propagation" in DECODERS


@pytest.fixture(scope="module")
def demo_links():
    x, y = make_demo_features(3000, 32, seed=4)
    idx, sims = knn(x, 20)
    return idx, sims, y


def test_clusters_lie_inside_components_and_repeat_exactly(demo_links):
    idx, sims, _ = demo_links
    a = decode_propagation(idx, sims, 0.6)
    b = decode_propagation(idx, sims, 0.6)
    assert np.array_equal(a, b)
    comp = decode_components(idx, sims, 0.6)
    for c in np.unique(a):
        assert np.unique(comp[a == c]).size == 1
    assert np.unique(a).size >= np.unique(comp).size


def test_about_as_good_as_infomap_on_demo_links(demo_links):
    idx, sims, y = demo_links
    f = {m: pairwise_scores(decode(m, idx, sims, 0.6), y)["pairwise_f"]
         for m in ("infomap", "propagation", "components")}
    assert f["propagation"] > f["components"]
    assert f["propagation"] > f["infomap"] - 0.02, f


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU")
def test_cuda_gives_the_cpu_clusters(demo_links):
    idx, sims, _ = demo_links
    cpu = decode_propagation(idx, sims, 0.6, device="cpu")
    gpu = decode_propagation(idx, sims, 0.6, device="cuda")
    assert np.array_equal(cpu, gpu)
