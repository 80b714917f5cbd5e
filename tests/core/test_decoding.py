"""core.decoding: every decoder recovers separable identities exactly and ignores the order
of the points; union-find agrees with scipy; each decoder's defining rule holds on small
hand-made graphs; singleton policies; calibration picks the best threshold of its grid."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from cftools.core.calibration.objective import calibration_score
from cftools.core.calibration.thresholds import calibrate_thresholds
from cftools.core.decoding.decoders import DECODERS, confidence, decode, intimacy
from cftools.core.decoding.graph import threshold_graph, union_find
from cftools.core.decoding.singletons import apply_singletons, cluster_summary
from cftools.core.decoding.weights import link_weights, reciprocal
from cftools.core.metrics import evaluate, pairwise_scores
from cftools.core.neighbours.index import knn
from cftools.data.demo import make_demo_features, split_by_identity


def same_partition(a, b) -> bool:
    """Equal up to renaming (-1 = unassigned must match exactly)."""
    a, b = np.asarray(a), np.asarray(b)
    if not np.array_equal(a < 0, b < 0):
        return False
    a, b = a[a >= 0], b[b >= 0]
    pairs = np.unique(np.stack([a, b]), axis=1)
    return pairs.shape[1] == np.unique(a).size == np.unique(b).size


def permute_links(indices, probs, perm):
    """Links of the same points listed in the order ``perm`` (new row r = old point perm[r])."""
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size)
    idx = indices[perm]
    return np.where(idx >= 0, inv[np.maximum(idx, 0)], -1), probs[perm]


@pytest.fixture(scope="module")
def separable():
    # identities of at most 25 points and k=30: every point sees its whole identity
    x, y = make_demo_features(1600, 32, seed=11, separable=True, max_size=25)
    lab, unl = split_by_identity(y, 0.5, seed=0)
    il, sl = knn(x[lab], 30)
    iu, su = knn(x[unl], 30)
    return dict(il=il, sl=sl, yl=y[lab], iu=iu, su=su, yu=y[unl])


@pytest.fixture(scope="module")
def noisy():
    x, y = make_demo_features(1500, 32, seed=12, hard_fraction=0.2, noise_fraction=0.1)
    i, s = knn(x, 20)
    return i, s, y


@pytest.fixture(scope="module")
def separable_thresholds(separable):
    return calibrate_thresholds(separable["il"], separable["sl"], separable["yl"])


@pytest.mark.parametrize("method", DECODERS)
def test_separable_set_recovered_exactly(method, separable, separable_thresholds):
    th = separable_thresholds
    extra = dict(intimacy_ratio=th["intimacy_ratio"], peaks_tolerance=th["peaks_tolerance"])
    labels = decode(method, separable["iu"], separable["su"], th[method], **extra)
    assert same_partition(labels, separable["yu"])
    assert pairwise_scores(labels, separable["yu"])["pairwise_f"] == 1.0
    # and regardless of the order of the points
    perm = np.random.default_rng(3).permutation(labels.size)
    pi, pp = permute_links(separable["iu"], separable["su"], perm)
    permuted = decode(method, pi, pp, th[method], **extra)
    assert same_partition(permuted, labels[perm])


@pytest.mark.parametrize("method", ["peaks", "intimacy", "components"])
def test_deterministic_decoders_ignore_point_order_on_noisy_data(method, noisy):
    indices, sims, y = noisy
    t = float(np.quantile(sims[:, 1:], 0.8))
    labels = decode(method, indices, sims, t, max_size=40)
    assert 1 < np.unique(labels).size < labels.size  # a real clustering, not trivial
    for seed in (1, 2):
        perm = np.random.default_rng(seed).permutation(labels.size)
        pi, pp = permute_links(indices, sims, perm)
        assert same_partition(decode(method, pi, pp, t, max_size=40), labels[perm])


def test_union_find_matches_scipy():
    rng = np.random.default_rng(0)
    for n, e in ((1, 0), (50, 10), (500, 400), (2000, 2500)):
        src = rng.integers(0, n, e)
        dst = rng.integers(0, n, e)
        roots = union_find(n, src, dst)
        g = sp.coo_matrix((np.ones(e), (src, dst)), shape=(n, n))
        _, ref = connected_components(g, directed=True, connection="weak")
        assert same_partition(roots, ref)
        # roots are the smallest member of each component
        assert (roots <= np.arange(n)).all()
        assert (roots[roots] == roots).all()


def tiny_links(edges, n, k=None, prob=0.9):
    """Links with the given undirected edges (both directions), self first, -1 padding."""
    nbrs = [[i] for i in range(n)]
    for a, b in edges:
        nbrs[a].append(b)
        nbrs[b].append(a)
    k = k or max(len(r) for r in nbrs)
    idx = np.full((n, k), -1, dtype=np.int64)
    probs = np.zeros((n, k), dtype=np.float32)
    for i, row in enumerate(nbrs):
        idx[i, :len(row)] = row
        probs[i, :len(row)] = prob
        probs[i, 0] = 1.0
    return idx, probs


def test_intimacy_cuts_the_bridge_between_two_cliques():
    def clique(nodes):
        return [(a, b) for i, a in enumerate(nodes) for b in nodes[i + 1:]]

    edges = clique([0, 1, 2, 3, 4]) + clique([5, 6, 7, 8, 9]) + [(4, 5)]
    idx, probs = tiny_links(edges, 10)
    assert np.unique(decode("components", idx, probs, 0.5)).size == 1  # the bridge merges
    labels = decode("intimacy", idx, probs, 0.5, intimacy_ratio=0.5)
    assert same_partition(labels, [0] * 5 + [1] * 5)
    # the bridge's intimacy: N(4) = {0..5}, N(5) = {4..9}, common {4, 5}: 2 / 6
    g = threshold_graph(idx, probs, 0.5)
    inti = intimacy(g)
    src = g.src()
    bridge = (src == 4) & (g.dst == 5)
    assert inti[bridge][0] == pytest.approx(2 / 6)
    inner = (src == 0) & (g.dst == 1)
    assert inti[inner][0] == pytest.approx(1.0)


def test_peaks_confidence_and_links():
    # a star: 0 is linked to 1, 2, 3 strongly; 3 - 4 weakly (below the threshold)
    idx = np.array([[0, 1, 2, 3], [1, 0, -1, -1], [2, 0, -1, -1], [3, 0, 4, -1], [4, 3, -1, -1]])
    p = np.array([[1, .9, .8, .7], [1, .9, 0, 0], [1, .8, 0, 0], [1, .7, .2, 0], [1, .2, 0, 0]],
                 dtype=np.float32)
    conf = confidence(idx, p, 0.5)
    np.testing.assert_allclose(conf, [(.9 + .8 + .7) / 3, .9, .8, (.7 - .2) / 2, -.2], rtol=1e-6)
    labels = decode("peaks", idx, p, 0.5)
    # 0 joins its most probable neighbour of higher confidence (1); 1 and 2 are peaks
    # (their one neighbour, 0, is less confident); 3 joins 0 (conf .8 >= .25); 4 would
    # join 3 but p = .2 < .5.
    assert labels[0] == labels[1] == labels[3]
    assert labels[2] != labels[0] and labels[4] != labels[3]


def test_components_max_size_splits_only_oversized_clusters(noisy):
    indices, sims, _ = noisy
    t = float(np.quantile(sims[:, 1:], 0.7))
    free = decode("components", indices, sims, t)
    capped = decode("components", indices, sims, t, max_size=15)
    assert np.bincount(capped).max() <= 15 < np.bincount(free).max()
    # a refinement: every capped cluster lies inside one free cluster
    pairs = np.unique(np.stack([capped, free]), axis=1)
    assert pairs.shape[1] == np.unique(capped).size
    # clusters that already fitted are untouched
    sizes = np.bincount(free)
    small = sizes[free] <= 15
    assert same_partition(capped[small], free[small])


def test_missing_neighbours_and_self_anywhere_are_ignored():
    idx = np.array([[1, 0, -1], [0, 1, -1], [2, -1, 2]])
    p = np.array([[.9, 1, .99], [.9, 1, .99], [1, .99, 1]], dtype=np.float32)
    for method in DECODERS:
        labels = decode(method, idx, p, 0.5)
        assert labels[0] == labels[1] != labels[2], method


def test_bad_links_refused():
    with pytest.raises(ValueError, match="neighbour ids"):
        decode("components", np.array([[0, 5]]), np.ones((1, 2), np.float32), 0.5)
    with pytest.raises(ValueError, match="same shape"):
        decode("components", np.zeros((2, 2), np.int64), np.ones((2, 3), np.float32), 0.5)
    with pytest.raises(ValueError, match="unknown decoder"):
        decode("louvain", np.zeros((2, 2), np.int64), np.ones((2, 2), np.float32), 0.5)


def test_singleton_policies():
    # 0-1-2 a cluster; 3 a singleton whose best link (.6) goes to 2; 4 a singleton linked to 3
    idx = np.array([[0, 1, 2], [1, 0, 2], [2, 0, 3], [3, 2, 4], [4, 3, -1]])
    p = np.array([[1, .9, .9], [1, .9, .9], [1, .9, .6], [1, .6, .7], [1, .7, 0]],
                 dtype=np.float32)
    labels = decode("components", idx, p, 0.8)
    assert np.bincount(labels).tolist() == [3, 1, 1]
    kept, c = apply_singletons(labels, idx, p, "keep")
    assert same_partition(kept, labels) and c["singletons"] == c["kept"] == 2
    un, c = apply_singletons(labels, idx, p, "unassign")
    assert (un[3:] == -1).all() and (un[:3] >= 0).all() and c["unassigned"] == 2
    att, c = apply_singletons(labels, idx, p, "attach", attach_threshold=0.5)
    # 3 attaches to 2's cluster; 4's only neighbour (3) was a singleton, so 4 stays alone
    assert att[3] == att[0] and att[4] != att[0]
    assert c["attached"] == 1 and c["kept"] == 1
    att, c = apply_singletons(labels, idx, p, "attach", attach_threshold=0.65)
    assert c["attached"] == 0 and c["kept"] == 2


def test_calibration_picks_the_best_threshold_of_its_grid(noisy):
    indices, sims, y = noisy
    th, scores = calibrate_thresholds(indices, sims, y, return_scores=True)
    assert set(th) >= set(DECODERS) | {"link", "intimacy_ratio", "peaks_tolerance"}
    tol = th["peaks_tolerance"]

    def objective(pred):
        return calibration_score(pred, y)

    for method in ("components", "peaks", "infomap"):
        best = objective(decode(method, indices, sims, th[method], peaks_tolerance=tol))
        assert best == pytest.approx(scores[method])
        for q in (0.5, 0.8, 0.95):
            other = float(np.quantile(sims[:, 1:], q))
            assert best >= objective(decode(method, indices, sims, other, peaks_tolerance=tol))
    # the link threshold is the best F1 cut of same-identity links
    valid = indices[:, 1:]
    same = (y[valid] == y[:, None]).ravel()
    pos = sims[:, 1:].ravel()

    def f1(t):
        return 2 * (same & (pos >= t)).sum() / ((pos >= t).sum() + same.sum())

    assert f1(th["link"]) >= max(f1(t) for t in np.quantile(pos, [0.3, 0.6, 0.9]))


def reciprocal_by_hand(indices, probs):
    """w_ij = (p_ij + p_ji) / 2 from a dict, p_ji = the first i in row j, else 0."""
    n = indices.shape[0]
    first = {}
    for i in range(n):
        for c, j in enumerate(indices[i]):
            if j >= 0 and j != i:
                first.setdefault((i, int(j)), probs[i, c])
    out = probs.astype(np.float32).copy()
    for i in range(n):
        for c, j in enumerate(indices[i]):
            if j >= 0 and j != i:
                out[i, c] = (probs[i, c] + first.get((int(j), i), np.float32(0))) * np.float32(0.5)
    return out


@pytest.mark.parametrize("k", [1, 3, 8, 13])
def test_reciprocal_weights_match_a_dict(k):
    """Random links with missing entries (-1), self links anywhere and repeated ids."""
    rng = np.random.default_rng(k)
    n = 60
    idx = rng.integers(0, n, (n, k))
    idx[rng.random((n, k)) < 0.15] = -1
    rows, cols = np.nonzero(rng.random((n, k)) < 0.05)
    idx[rows, cols] = rows  # self links off position 0 too
    idx[:, 0] = np.where(rng.random(n) < 0.8, np.arange(n), idx[:, 0])
    p = rng.random((n, k), dtype=np.float32)
    got = reciprocal(idx, p, block_rows=7)
    assert got.dtype == np.float32
    assert np.allclose(got, reciprocal_by_hand(idx, p), atol=1e-7)


def test_reciprocal_is_symmetric_and_halves_one_way_links():
    idx = np.array([[0, 1, 2], [1, 0, -1], [2, 1, -1]])
    p = np.array([[1.0, 0.8, 0.6], [1.0, 0.4, 0.0], [1.0, 0.9, 0.0]], dtype=np.float32)
    w = reciprocal(idx, p)
    assert w[0, 1] == w[1, 1] == pytest.approx(0.6)  # 0 <-> 1: (0.8 + 0.4) / 2
    assert w[0, 2] == pytest.approx(0.3)  # 0 -> 2 only (2 does not list 0)
    assert w[2, 1] == pytest.approx(0.45)  # 2 -> 1 only
    assert w[0, 0] == 1.0 and w[1, 2] == 0.0  # self and missing untouched
    assert link_weights(idx, p, "directed") is p
    with pytest.raises(ValueError):
        link_weights(idx, p, "sideways")


def test_cluster_summary():
    s = cluster_summary(np.array([0, 0, 1, -1, 2, 2, 2]))
    assert s == {"n_points": 7, "n_clusters": 3, "n_singletons": 1, "n_unassigned": 1,
                 "largest": 3, "clustered_points": 5}


def test_real_faces_infomap_over_cosine(celeba):
    """Thresholds from the labelled half only; the unlabelled half is clustered and scored."""
    x = np.load(celeba / "features.npy")
    y = np.load(celeba / "labels.npy")
    lab, unl = np.load(celeba / "labelled_idx.npy"), np.load(celeba / "unlabelled_idx.npy")
    il, sl = knn(x[lab], 30)
    iu, su = knn(x[unl], 30)
    th = calibrate_thresholds(il, sl, y[lab], decoders=("infomap", "components"))
    info = evaluate(decode("infomap", iu, su, th["infomap"]), y[unl])
    comp = evaluate(decode("components", iu, su, th["components"]), y[unl])
    assert info["pairwise_f"] > 0.9 and info["bcubed_f"] > 0.9
    assert info["pairwise_f"] > comp["pairwise_f"]
