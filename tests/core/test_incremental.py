"""core.incremental: new points join an old cluster or form a new one, a split identity is
merged and recorded, the cosine floor read from the links, and the search of the new
points by inverted lists."""

import numpy as np

from cftools.data.demo import make_demo_features

D, K, L = 16, 10, 8


def test_new_points_only_join_or_form(tmp_path):
    """Unit check of the core: two well-separated identities, one new point near each and
    one far from both: the two join, the third forms a new cluster above the old ids."""
    from cftools.core.clusformer.grammar import build_sequences
    from cftools.core.decoding.decoders import decode
    from cftools.core.incremental.add import add_points
    from cftools.core.neighbours.index import knn

    rng = np.random.default_rng(0)
    centres = np.eye(4, dtype=np.float32)
    old = np.concatenate([centres[0] + 0.05 * rng.standard_normal((6, 4)),
                          centres[1] + 0.05 * rng.standard_normal((6, 4))]).astype(np.float32)
    new = np.stack([centres[0], centres[1], centres[2]]).astype(np.float32)
    old /= np.linalg.norm(old, axis=1, keepdims=True)
    i, s = knn(old, 5)
    order, mask, _ = build_sequences(i, s, 5)
    probs = (np.einsum("nd,nld->nl", old, old[order]) * mask).astype(np.float32)
    labels = decode("components", order, probs, 0.8)
    assert labels.max() == 1
    res = add_points(old, new, order, probs, labels, link_method="cosine",
                     decoder="components", threshold=0.8, mode="directed")
    assert (res.labels[:12] == labels).all()
    assert res.labels[12] == labels[0] and res.labels[13] == labels[6]
    assert res.labels[14] == 2 and res.counts["new_clusters"] == 1


def test_a_split_identity_is_merged_and_recorded():
    """One identity decoded as two old clusters; new images of it link to all members of
    both: the two merge (the smaller id kept at equal size), recorded; nothing else moves."""
    from cftools.core.clusformer.grammar import build_sequences
    from cftools.core.incremental.add import add_points
    from cftools.core.neighbours.index import knn

    rng = np.random.default_rng(1)
    e = np.eye(4, dtype=np.float32)
    old = np.concatenate([e[0] + 0.05 * rng.standard_normal((8, 4)),
                          e[1] + 0.05 * rng.standard_normal((8, 4))]).astype(np.float32)
    new = (e[0] + 0.05 * rng.standard_normal((3, 4))).astype(np.float32)
    old /= np.linalg.norm(old, axis=1, keepdims=True)
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    i, s = knn(old, 9)
    order, mask, _ = build_sequences(i, s, 9)
    probs = (np.einsum("nd,nld->nl", old, old[order]) * mask).astype(np.float32)
    labels = np.repeat([0, 1, 2], [4, 4, 8]).astype(np.int64)  # identity 0 split in two
    res = add_points(old, new, order, probs, labels, link_method="cosine",
                     decoder="components", threshold=0.8, mode="directed")
    assert res.merges == [(0, 1, 4)]
    assert (res.labels[:8] == 0).all() and (res.labels[8:16] == 2).all()
    assert (res.labels[16:] == 0).all()
    # without the evidence (a bar above the clusters' size) nothing old moves
    res = add_points(old, new, order, probs, labels, link_method="cosine",
                     decoder="components", threshold=0.8, mode="directed",
                     merge_links=5)
    assert res.merges == [] and (res.labels[:16] == labels).all()


def test_cosine_floor_read_from_the_links():
    """With links that are the cosine itself, the kept links (p >= t) have cosine >= t: the
    floor at quantile 0 is the smallest kept cosine, never below t; too few kept: None."""
    from cftools.core.clusformer.grammar import build_sequences
    from cftools.core.incremental.links import kept_cosine_floor
    from cftools.core.neighbours.index import knn

    x, _ = make_demo_features(600, D, seed=3)
    i, s = knn(x, K)
    order, mask, _ = build_sequences(i, s, L)
    probs = (np.einsum("nd,nld->nl", x, x[order]) * mask).astype(np.float32)
    valid = order != np.arange(600)[:, None]
    valid[:, 0] = True
    t = float(np.median(probs[:, 1:]))
    got = kept_cosine_floor(x, order, probs, valid, t, "directed", 0.0)
    kept = probs[:, 1:][valid[:, 1:] & (probs[:, 1:] >= t)]
    assert got["floor"] >= t - 1e-5 and np.isclose(got["floor"], kept.min(), atol=1e-5)
    assert got["kept_links"] == kept.size and got["sample_rows"] == 600
    assert kept_cosine_floor(x, order, probs, valid, 2.0, "directed", 0.0) is None


def test_new_points_searched_by_inverted_lists_reach_the_recall_target():
    """The add's IVF search (what auto picks at scale): the smallest nprobe whose recall@L
    on a sample of the new points reaches the target; over all new points the first L
    neighbours then agree with exact search about as well, each new point is its own
    first neighbour, and similarities fall along each row. Exact search where IVF would
    need more probes than exact search costs."""
    from cftools.core.incremental.search import search_new
    from cftools.core.neighbours.exact import exact_of, recall_at_k

    # tight identities: their neighbours share coarse lists, so IVF pays below exact cost
    rng = np.random.default_rng(6)
    centres_ = rng.standard_normal((400, 32))
    x = centres_[rng.integers(0, 400, 20_000)] + 0.35 * rng.standard_normal((20_000, 32))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    n_new, k, length = 300, 40, 10
    centres = np.arange(x.shape[0] - n_new, x.shape[0])
    idx, sim, info = search_new(x, x[-n_new:], k, method="ivf", seed=0, recall_k=length)
    assert info["method"] == "ivf" and info["recall_at_k"] >= 0.95
    # the smallest nprobe tried that reaches the target, every smaller one tried missing it
    assert [info["nprobe"], round(info["recall_at_k"], 4)] in info["trials"]
    assert all(r < 0.95 for p, r in info["trials"] if p < info["nprobe"])
    assert info["nprobe"] - 1 in [p for p, _ in info["trials"]] or info["nprobe"] == 1
    exact = exact_of(x, x[-n_new:], length, centres=centres)
    assert recall_at_k(idx[:, :length], exact) >= 0.9
    assert (idx[:, 0] == centres).all()
    assert (np.diff(sim[:, 1:], axis=1) <= 1e-6).all()
    # where no nprobe cheaper than exact search reaches the target, the search is exact
    y, _ = make_demo_features(20_000, 32, seed=6)
    idx, _, info = search_new(y, y[-n_new:], k, method="ivf", seed=0, recall_k=length)
    assert info["method"] == "exact" and "nprobe" not in info and info["trials"]
    assert all(r < 0.95 for _, r in info["trials"])
    assert recall_at_k(idx[:, :length], exact_of(y, y[-n_new:], length, centres=centres)) > 0.999
