"""core.incremental.redecode (cf-merge add --redecode): the region decoded again is where new
links join old clusters, and clusters grown by a step of the ladder; a new point whose
links reach one old cluster joins it without a decode; id changes recorded, ids never
reused."""

import numpy as np

from cftools.core.decoding.identities import MERGED

NA, NB, NC, K = 40, 12, 16, 24  # A's, B's and C's points; the links' length
A, B, C = 0, NA, NA + NB  # the first point of each
N0 = NA + NB + NC


def _setup(seed=0):
    """Three old clusters (A at e0, B at b, cosine 0.55 from e0, C at e3, decoded by
    components of cosine links over 0.8) and their links of length K."""
    from cftools.core.clusformer.grammar import build_sequences
    from cftools.core.decoding.decoders import decode
    from cftools.core.neighbours.index import knn

    rng = np.random.default_rng(seed)
    e = np.eye(6, dtype=np.float32)
    b = 0.55 * e[0] + np.sqrt(1 - 0.55**2) * e[1]
    old = np.concatenate([e[0] + 0.05 * rng.standard_normal((NA, 6)),
                          b + 0.05 * rng.standard_normal((NB, 6)),
                          e[3] + 0.05 * rng.standard_normal((NC, 6))]).astype(np.float32)
    old /= np.linalg.norm(old, axis=1, keepdims=True)
    i, s = knn(old, K)
    order, mask, _ = build_sequences(i, s, K)
    probs = (np.einsum("nd,nld->nl", old, old[order]) * mask).astype(np.float32)
    labels = decode("components", order, probs, 0.8)
    assert np.unique(labels).size == 3
    return rng, e, b, old, order, probs, labels


def _add(old, new, order, probs, labels, **kw):
    from cftools.core.incremental.add import add_points

    new = new / np.linalg.norm(new, axis=1, keepdims=True)
    return add_points(old, new.astype(np.float32), order, probs, labels, link_method="cosine",
                      decoder="components", threshold=0.8, mode="directed", redecode=True,
                      **kw)


def test_links_into_one_old_cluster_join_it_without_a_decode():
    """New points near A (linked among themselves too) and one near C: both components hold
    one old cluster each and neither grows by GROWTH (3 of 40, 1 of 16), so nothing is
    decoded again; they join A and C, no id changes."""
    rng, e, b, old, order, probs, labels = _setup()
    new = np.concatenate([e[0] + 0.05 * rng.standard_normal((3, 6)), e[3][None]])
    res = _add(old, new, order, probs, labels)
    assert (res.labels[:N0] == labels).all()
    assert (res.labels[N0:N0 + 3] == labels[A]).all() and res.labels[N0 + 3] == labels[C]
    c = res.counts
    assert c["region_points"] == 0 and c["region_old_clusters"] == 0
    assert c["joined_without_decode"] == 4 and c["joined_existing"] == 4
    assert c["joined_old_clusters"] == 2
    assert res.changes.shape == (0, 5)


def test_links_joining_two_old_clusters_decode_them_again_and_record_the_merge():
    """New points between A and B (cosine 0.88 to both) have kept links into both: A, B and
    those points are the region (C and a new point joining C stay out); decoded again they
    form one cluster, A's id kept (the larger), B's points recorded as merged into it; a
    new point far from all forms a cluster with an id never used."""
    rng, e, b, old, order, probs, labels = _setup(1)
    mid = (e[0] + b) / np.linalg.norm(e[0] + b)  # cosine 0.88 to both
    new = np.concatenate([mid + 0.02 * rng.standard_normal((4, 6)), e[3][None], e[5][None]])
    la, lb, lc = labels[A], labels[B], labels[C]
    res = _add(old, new, order, probs, labels, next_id=int(labels.max()) + 5, step=3)
    c = res.counts
    assert c["region_points"] == NA + NB + 4 + 1  # A, B, the bridging points, the far one
    assert c["region_old_clusters"] == 2 and c["joined_without_decode"] == 1
    assert (res.labels[:C] == la).all() and (res.labels[N0:N0 + 4] == la).all()
    assert (res.labels[C:N0] == lc).all() and res.labels[N0 + 4] == lc
    assert res.labels[N0 + 5] == int(labels.max()) + 5  # never an id given before
    assert res.changes.tolist() == [[3, MERGED, lb, la, NB]]
    assert c["region_points_changed"] == NB and res.next_id == int(labels.max()) + 6


def test_an_unassigned_old_point_joined_puts_its_cluster_in_the_region():
    """A new point joined to an old cluster and to an unassigned old point: the cluster's
    members, the point and the new point are the region; a new point joined to one
    cluster only joins it undecoded."""
    from cftools.core.incremental.redecode import plan_region

    old_labels = np.r_[0, 0, 0, -1, np.ones(20, np.int64)]  # cluster 1: 20, one joins
    n0, n = 24, 26
    region, (joiners, to), plan = plan_region(np.array([24, 24, 25]), np.array([n + 0, 3, n + 1]),
                                              old_labels, n0, n)
    assert region.tolist() == [0, 1, 2, 3, 24]
    assert joiners.tolist() == [25] and to.tolist() == [1]
    assert plan == {"joined_old_clusters": 2, "grown_old_clusters": 0}


def test_a_cluster_grown_by_a_step_of_the_ladder_is_decoded_again():
    """C (16 points) is joined by 2 new points: 18 / 16 crosses 1 + GROWTH, so C is decoded
    again with them (the region), where one new point (17 / 16) would not. Counted from
    the members C had in the original set: when 2 of its 16 came in an add (base 14), one
    new point already crosses the step 17 / 14 >= 1.1 ** 2 from 16 / 14 < 1.1 ** 2."""
    from cftools.core.incremental.redecode import GROWTH

    assert GROWTH == 0.1
    rng, e, b, old, order, probs, labels = _setup(3)
    lc = labels[C]
    one = e[3] + 0.02 * rng.standard_normal((1, 6))
    two = e[3] + 0.02 * rng.standard_normal((2, 6))
    res = _add(old, one, order, probs, labels)
    assert res.counts["region_points"] == 0 and res.counts["grown_old_clusters"] == 0
    res = _add(old, two, order, probs, labels)
    assert res.counts["grown_old_clusters"] == 1 and res.counts["region_points"] == NC + 2
    assert (res.labels[C:] == lc).all() and res.changes.shape == (0, 5)
    batch = np.zeros(N0, np.int32)
    batch[[C, C + 1]] = 1
    res = _add(old, one, order, probs, labels, old_batch=batch)
    assert res.counts["grown_old_clusters"] == 1 and res.counts["region_points"] == NC + 1
