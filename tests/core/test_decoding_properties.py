"""Property-based tests (hypothesis) of the decoders (core.decoding): valid labels on any
graph, clusters that follow the points, identities recovered from perfect links, singleton
policies and reciprocal weights."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cftools.core.decoding.decoders import DECODERS, decode
from cftools.core.decoding.singletons import apply_singletons
from cftools.core.decoding.weights import reciprocal

ORDER_FREE = ("peaks", "intimacy", "components")  # infomap's search may depend on the order


@st.composite
def link_graphs(draw, max_n=24, max_k=6):
    """Any small links pair: ids in [-1, n) (padding and self-loops included), p in [0, 1]."""
    n = draw(st.integers(1, max_n))
    k = draw(st.integers(1, max_k))
    indices = draw(arrays(np.int64, (n, k), elements=st.integers(-1, n - 1)))
    probs = draw(arrays(np.float32, (n, k),
                        elements=st.floats(0, 1, width=32, allow_nan=False)))
    threshold = draw(st.floats(0, 1, width=32))
    return indices, probs, float(threshold)


def same_partition(a, b) -> bool:
    """True when a and b group the points alike (ids may differ; -1 must match -1)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or not np.array_equal(a == -1, b == -1):
        return False
    pairs = {(x, y) for x, y in zip(a.tolist(), b.tolist())}
    return len({x for x, _ in pairs}) == len(pairs) == len({y for _, y in pairs})


def assert_valid(labels, n):
    assert labels.shape == (n,) and np.issubdtype(labels.dtype, np.integer)
    assert (labels >= -1).all()
    used = np.unique(labels[labels >= 0])
    assert np.array_equal(used, np.arange(used.size)), "cluster ids are not 0..C-1"


def kept_components(indices, probs, threshold):
    """Weakly connected components of the kept links, by a plain BFS (the reference)."""
    n = indices.shape[0]
    adj = [set() for _ in range(n)]
    for i in range(n):
        for j, p in zip(indices[i].tolist(), probs[i].tolist()):
            if j >= 0 and j != i and p >= np.float32(threshold):
                adj[i].add(j)
                adj[j].add(i)
    comp = np.full(n, -1)
    c = 0
    for s in range(n):
        if comp[s] >= 0:
            continue
        stack, comp[s] = [s], c
        while stack:
            u = stack.pop()
            for v in adj[u]:
                if comp[v] < 0:
                    comp[v] = c
                    stack.append(v)
        c += 1
    return comp


@settings(max_examples=60, deadline=None)
@given(link_graphs())
def test_every_decoder_gives_valid_labels_on_any_graph(graph):
    indices, probs, threshold = graph
    n = indices.shape[0]
    comp = kept_components(indices, probs, threshold)
    for method in DECODERS:
        labels = decode(method, indices, probs, threshold, seed=0)
        assert_valid(labels, n)
        assert (labels >= 0).all(), f"{method} left points unassigned"
        if method == "components":
            assert same_partition(labels, comp)
        elif method != "infomap":
            # the others only ever join points through kept links: a refinement
            for c in np.unique(labels):
                assert np.unique(comp[labels == c]).size == 1, method


@settings(max_examples=60, deadline=None)
@given(link_graphs(), st.randoms(use_true_random=False))
def test_permuting_the_points_permutes_the_clusters(graph, rnd):
    indices, probs, threshold = graph
    n = indices.shape[0]
    perm = np.array(rnd.sample(range(n), n))  # old point i becomes point perm[i]
    moved_idx = np.empty_like(indices)
    moved_probs = np.empty_like(probs)
    moved_idx[perm] = np.where(indices >= 0, perm[np.maximum(indices, 0)], -1)
    moved_probs[perm] = probs
    for method in ORDER_FREE:
        before = decode(method, indices, probs, threshold)
        after = decode(method, moved_idx, moved_probs, threshold)
        assert same_partition(before, after[perm]), method


@st.composite
def identities_and_rows(draw):
    """Identities, and rows each holding the point first, then the others in any order."""
    y = draw(arrays(np.int64, st.integers(1, 20), elements=st.integers(0, 5)))
    rnd = draw(st.randoms(use_true_random=False))
    n = y.size
    rows = [[i] + rnd.sample([j for j in range(n) if j != i], n - 1) for i in range(n)]
    return y, np.array(rows, dtype=np.int64).reshape(n, n)


@settings(max_examples=60, deadline=None)
@given(identities_and_rows(), st.floats(0.01, 0.99))
def test_perfect_links_recover_the_identities(case, threshold):
    y, indices = case
    probs = (y[indices] == y[:, None]).astype(np.float32)
    for method in ("components", "intimacy"):
        assert same_partition(decode(method, indices, probs, threshold), y), method
    labels = decode("infomap", indices, probs, threshold)  # seeded search: valid output only
    assert_valid(labels, y.size)


def test_peaks_recovers_an_identity_from_perfect_links():
    indices = np.array([[0, 1, 2, 3], [1, 0, 2, 3], [2, 3, 0, 1], [3, 2, 0, 1]])
    probs = np.ones((4, 4), dtype=np.float32)
    assert same_partition(decode("peaks", indices, probs, 0.5), np.zeros(4, np.int64))


@settings(max_examples=60, deadline=None)
@given(link_graphs(), st.floats(0, 1))
def test_isolated_points_are_singletons_and_the_policies_count_them(graph, attach):
    indices, probs, threshold = graph
    n = indices.shape[0]
    # isolate the last point: no kept link out of it nor into it
    indices = indices.copy()
    probs = probs.copy()
    last = n - 1
    indices[last] = -1
    probs[indices == last] = 0.0
    if threshold == 0.0:
        threshold = 1e-3
    for method in DECODERS:
        labels = decode(method, indices, probs, threshold, seed=0)
        assert (labels == labels[last]).sum() == 1, f"{method}: the isolated point has company"
        sizes = np.bincount(labels)
        single = sizes[labels] == 1
        kept, counts = apply_singletons(labels, indices, probs, "keep")
        assert same_partition(kept, labels) and counts["singletons"] == single.sum()
        unassigned, counts = apply_singletons(labels, indices, probs, "unassign")
        assert_valid(unassigned, n)
        assert np.array_equal(unassigned == -1, single) and counts["unassigned"] == single.sum()
        assert same_partition(unassigned[~single], labels[~single])
        attached, counts = apply_singletons(labels, indices, probs, "attach", attach)
        assert_valid(attached, n)
        assert (attached >= 0).all() and attached[last] not in np.delete(attached, last)
        assert counts["attached"] + counts["kept"] == counts["singletons"] == single.sum()
        # points in clusters of 2+ stay together; an attached singleton joined one of them
        # through a link of probability >= the attach threshold
        assert same_partition(attached[~single], labels[~single])
        for i in np.flatnonzero(single & (np.bincount(attached)[attached] > 1)):
            mates = np.flatnonzero((attached == attached[i]) & ~single)
            ok = [(j in mates) and p >= np.float32(attach)
                  for j, p in zip(indices[i].tolist(), probs[i].tolist())]
            assert any(ok), i


@settings(max_examples=60, deadline=None)
@given(link_graphs(), st.randoms(use_true_random=False))
def test_reciprocal_weights_follow_the_points_and_agree_both_ways(graph, rnd):
    """Permuting the points permutes the weights; a link listed in both directions (its
    first occurrence each way) weighs the same both ways; nothing grows past its p."""
    indices, probs, _ = graph
    n, k = indices.shape
    w = reciprocal(indices, probs)
    perm = np.array(rnd.sample(range(n), n))
    moved_idx = np.empty_like(indices)
    moved_probs = np.empty_like(probs)
    moved_idx[perm] = np.where(indices >= 0, perm[np.maximum(indices, 0)], -1)
    moved_probs[perm] = probs
    assert np.array_equal(reciprocal(moved_idx, moved_probs)[perm], w)
    first = {}
    for i in range(n):
        for c, j in enumerate(indices[i].tolist()):
            if j >= 0 and j != i:
                first.setdefault((i, j), c)
    for (i, j), c in first.items():
        back = first.get((j, i))
        if back is not None:
            assert w[i, c] == w[j, back]
        else:
            assert w[i, c] == np.float32(probs[i, c]) * np.float32(0.5)
