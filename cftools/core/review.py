"""Review questions: the decisions of a clustering most likely wrong, as yes/no questions
a person answers at a glance ("is this the same person as that?").

Every decision the decoder made about a pair of groups of points is a candidate:

- join: two clusters it kept apart though links cross between them (a cluster of one is
  a singleton: a singleton with a strong link just under the threshold is one of these).
  The evidence is the strongest link across; a "yes" joins them.
- split: a cluster holds together through the links of its maximum spanning tree (the
  strongest links that connect it); every tree link cuts the cluster in two. The evidence
  is that link; a "no" splits the cluster there. A member with the weakest ties to its
  cluster is the cut that takes it alone; a cluster of a size out of line with the rest
  most often hangs on a weak tree link between two large parts.

Each candidate is scored by the expected gain of an answer: the point pairs the answer
decides (|A| x |B|) times the probability that the decoder decided them wrong, read from
the links: p(same) = 1 / (1 + exp(-(w - t) / s)) at the decoder's threshold t, with s a
spread of the link weights (``link_scale``); a join is wrong with probability p, a split
with 1 - p. One scale for every kind of question: large uncertain decisions first, not a
fixed order of kinds. Each side is shown by its most central member (highest mean link
weight to the rest of its cluster; the answer is recorded about these two points) and
the link's own end.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .corrections import Constraints, answered_pairs

KINDS = ("join", "split")
NO_LINK = -1.0  # the weight of a "link" between parts of a cluster no link joins


@dataclass
class Question:
    kind: str  # join or split
    rule: str  # what asked it: join, member (a member's ties), cut (a cluster in two)
    a: list[int]  # rows shown for side a; the answer is about a[0] and b[0]
    b: list[int]
    cluster_a: int  # the cluster label of each side (a split: the same)
    cluster_b: int
    size_a: int  # points on each side
    size_b: int
    weight: float  # the link the decision turned on
    p_same: float  # the probability, from the links, that the sides are one identity
    gain: float  # expected pairs an answer corrects: size_a * size_b * P(decided wrong)
    why: str

    @property
    def pairs(self) -> int:
        return self.size_a * self.size_b

    def to_json(self, number: int) -> dict:
        return {"id": number, **asdict(self), "pairs": self.pairs}


def link_scale(weights: np.ndarray, threshold: float) -> float:
    """The spread s of p(same) around the threshold: a quarter of the interquartile range
    of the link weights (no labels read)."""
    w = weights[np.isfinite(weights)]
    if w.size < 4:
        return 0.05
    q1, q3 = np.quantile(w, [0.25, 0.75])
    return float(max((q3 - q1) / 4, 1e-3))


def p_same(w, threshold: float, scale: float):
    return 1.0 / (1.0 + np.exp(-np.clip((np.asarray(w, np.float64) - threshold) / scale, -50, 50)))


def _dense(labels: np.ndarray):
    """(cluster of every point, sizes, label of each cluster): unassigned points are
    clusters of their own (label -1)."""
    labels = np.asarray(labels, np.int64)
    assigned = labels >= 0
    uniq, inv = np.unique(labels[assigned], return_inverse=True)
    cid = np.empty(labels.size, np.int64)
    cid[assigned] = inv
    cid[~assigned] = uniq.size + np.arange(int((~assigned).sum()))
    label_of = np.r_[uniq, np.full(int((~assigned).sum()), -1, np.int64)]
    return cid, np.bincount(cid, minlength=label_of.size), label_of


def _pairs(indices: np.ndarray, weights: np.ndarray):
    """Every linked point pair once (u < v) with the larger of its two weights."""
    n, k = indices.shape
    src = np.repeat(np.arange(n), k)
    dst = indices.ravel()
    w = np.asarray(weights, np.float64).ravel()
    ok = (dst >= 0) & (dst != src) & np.isfinite(w)
    u, v, w = np.minimum(src[ok], dst[ok]), np.maximum(src[ok], dst[ok]), w[ok]
    order = np.lexsort((-w, v, u))
    u, v, w = u[order], v[order], w[order]
    first = np.r_[True, (u[1:] != u[:-1]) | (v[1:] != v[:-1])]
    return u[first], v[first], w[first]


def _strength(cid, sizes, u, v, w):
    """Mean weight of each point's links to the rest of its cluster (0 for singletons)."""
    inside = cid[u] == cid[v]
    total = np.bincount(u[inside], w[inside], cid.size) + np.bincount(v[inside], w[inside],
                                                                      cid.size)
    count = np.bincount(u[inside], minlength=cid.size) + np.bincount(v[inside],
                                                                    minlength=cid.size)
    return np.divide(total, np.maximum(count, 1))


def _cores(cid, strength, n_clusters: int) -> np.ndarray:
    """The most central member of every cluster (ties: the smallest row)."""
    order = np.lexsort((np.arange(cid.size), -strength, cid))
    first = np.r_[True, cid[order][1:] != cid[order][:-1]]
    core = np.empty(n_clusters, np.int64)
    core[cid[order][first]] = order[first]
    return core


def _best_into(cid, u, v, w):
    """For every point and every other cluster it links to: its strongest link there
    (point, other cluster, weight, the link's other end), sorted by point."""
    pt, other, ww = np.r_[u, v], np.r_[v, u], np.r_[w, w]
    oc = cid[other]
    cross = cid[pt] != oc
    pt, other, ww, oc = pt[cross], other[cross], ww[cross], oc[cross]
    order = np.lexsort((-ww, oc, pt))
    pt, other, ww, oc = pt[order], other[order], ww[order], oc[order]
    first = np.r_[True, (pt[1:] != pt[:-1]) | (oc[1:] != oc[:-1])] if pt.size else \
        np.zeros(0, bool)
    return pt[first], oc[first], ww[first], other[first]


def _median_with_missing(values_sorted: np.ndarray, size: int) -> float:
    """The median of ``size`` values of which those not given are NO_LINK."""
    missing = size - values_sorted.size
    pos = (size - 1) // 2
    return NO_LINK if pos < missing else float(values_sorted[pos - missing])


def join_questions(cid, sizes, label_of, core, u, v, w, threshold) -> list[Question]:
    """One question per pair of clusters with a link across. The evidence is the median,
    over the smaller cluster's members, of each one's strongest link into the other
    (NO_LINK where it has none): one close pair of look-alikes is not two clusters of one
    identity, while the halves of one identity link across member after member."""
    pt, oc, bw, end = _best_into(cid, u, v, w)
    cp = cid[pt]
    small = (sizes[cp] < sizes[oc]) | ((sizes[cp] == sizes[oc]) & (cp < oc))
    pt, oc, bw, end, cp = pt[small], oc[small], bw[small], end[small], cp[small]
    order = np.lexsort((bw, oc, cp))
    pt, oc, bw, end, cp = pt[order], oc[order], bw[order], end[order], cp[order]
    cuts = np.flatnonzero((cp[1:] != cp[:-1]) | (oc[1:] != oc[:-1])) + 1
    starts, stops = np.r_[0, cuts], np.r_[cuts, cp.size]
    out = []
    for a0, a1 in zip(starts.tolist(), stops.tolist()):
        if a0 == a1:
            continue
        ca, cb = int(cp[a0]), int(oc[a0])
        sa, sb = int(sizes[ca]), int(sizes[cb])
        med = _median_with_missing(bw[a0:a1], sa)
        top = a1 - 1  # the strongest link across
        what = ("two singletons" if sa == sb == 1 else
                "a singleton and a cluster" if min(sa, sb) == 1 else "two clusters")
        out.append(Question(
            "join", "join", _shown(core[ca], pt[top]), _shown(core[cb], end[top]),
            int(label_of[ca]), int(label_of[cb]), sa, sb, med, 0.0, 0.0,
            f"{what} kept apart ({sa} and {sb} points); median strongest link across "
            f"{med:.3f}, strongest {bw[top]:.3f} (threshold {threshold:.3f})"))
    return out


def _shown(first: int, other: int) -> list[int]:
    return [int(first)] if first == other else [int(first), int(other)]


def _adjacency(cid, u, v, w, n):
    """The links inside clusters as a symmetric CSR matrix of weight + 3: every stored
    value positive (a sparse matrix drops zeros), cosine weights of -1 included."""
    import scipy.sparse as sp

    inside = cid[u] == cid[v]
    a, b, x = u[inside], v[inside], w[inside] + 3.0
    return sp.coo_matrix((np.r_[x, x], (np.r_[a, b], np.r_[b, a])), shape=(n, n)).tocsr()


def member_questions(cid, sizes, label_of, core, adj, threshold) -> list[Question]:
    """A member's ties to the rest of its cluster (of 3 or more): its strongest link
    there. A "no" takes it out."""
    n = cid.size
    deg = np.diff(adj.indptr)
    best = np.full(n, NO_LINK)
    has = deg > 0
    best[has] = np.maximum.reduceat(adj.data, adj.indptr[:-1][has]) - 3.0
    xs = np.flatnonzero((sizes[cid] >= 3) & (np.arange(n) != core[cid]))
    out = []
    for x in xs.tolist():
        c = int(cid[x])
        size = int(sizes[c])
        link = f"strongest link {best[x]:.3f}" if best[x] > NO_LINK else "no link at all"
        out.append(Question("split", "member", [x], [int(core[c])], int(label_of[c]),
                            int(label_of[c]), 1, size - 1, float(best[x]), 0.0, 0.0,
                            f"member {x} has the weakest ties to its cluster of {size} "
                            f"({link} to the rest, threshold {threshold:.3f})"))
    return out


def cut_questions(cid, sizes, label_of, core, strength, adj, threshold, scale,
                  top: int = 3000) -> list[Question]:
    """Cuts of a cluster into two parts of 2 or more along a link of its maximum spanning
    tree (the strongest links that connect it). The ``top`` cuts by their own link are
    scored, like joins, by the median over the smaller part of each member's strongest
    link into the other part."""
    from scipy.sparse.csgraph import depth_first_order, minimum_spanning_tree

    n = cid.size
    cost = adj.copy()
    cost.data = 5.0 - cost.data  # weight w + 3 in (2, 4]: the cost 2 - w > 0 falls as w rises
    tree = minimum_spanning_tree(cost)
    tree = (tree + tree.T).tocsr()
    parent = np.full(n, -1, np.int64)
    pos = np.zeros(n, np.int64)
    order_of: dict[int, np.ndarray] = {}
    for c in np.flatnonzero(sizes >= 4).tolist():
        r = int(core[c])
        order, pred = depth_first_order(tree, r, directed=False)
        parent[order[1:]] = pred[order[1:]]
        pos[order] = np.arange(order.size)
        order_of[c] = order
    sub = np.ones(n, np.int64)
    for order in order_of.values():
        for x in order[:0:-1].tolist():  # leaves first
            sub[parent[x]] += sub[x]
    xs = np.flatnonzero(parent >= 0)
    size_c = sizes[cid[xs]]
    ok = (sub[xs] >= 2) & (size_c - sub[xs] >= 2)
    xs = xs[ok]
    if not xs.size:
        return []
    cost_up = np.asarray(tree[xs, parent[xs]]).ravel()
    link_w = np.where(cost_up > 0, 2.0 - cost_up, NO_LINK)  # back from the cost 2 - w
    rough = sub[xs] * (sizes[cid[xs]] - sub[xs]) * (1.0 - p_same(link_w, threshold, scale))
    out = []
    for i in np.argsort(-rough, kind="stable")[:top].tolist():
        x = int(xs[i])
        c = int(cid[x])
        order = order_of[c]
        inner = order[pos[x]:pos[x] + sub[x]]  # the subtree: contiguous in depth-first order
        side = np.zeros(n, bool)
        side[inner] = True
        small = inner if inner.size * 2 <= order.size else order[~side[order]]
        med = _median_best_across(adj, small, side)
        a_rep = int(inner[np.argmax(strength[inner])])
        size = int(order.size)
        out.append(Question("split", "cut", _shown(a_rep, x), _shown(core[c], parent[x]),
                            int(label_of[c]), int(label_of[c]), int(inner.size),
                            size - int(inner.size), med, 0.0, 0.0,
                            f"a cluster of {size} whose parts of {inner.size} and "
                            f"{size - inner.size} hold together through a median strongest "
                            f"link of {med:.3f} (threshold {threshold:.3f})"))
    return out


def _median_best_across(adj, rows: np.ndarray, side: np.ndarray) -> float:
    """The median over ``rows`` of each one's strongest link to the other side."""
    starts, stops = adj.indptr[rows], adj.indptr[rows + 1]
    lens = stops - starts
    flat = np.concatenate([np.arange(a, b) for a, b in zip(starts.tolist(), stops.tolist())]) \
        if lens.sum() else np.zeros(0, np.int64)
    owner = np.repeat(np.arange(rows.size), lens)
    across = side[adj.indices[flat]] != side[rows[owner]]
    best = np.full(rows.size, NO_LINK)
    np.maximum.at(best, owner[across], adj.data[flat[across]] - 3.0)
    return float(np.median(best))


RULES = ("join", "member", "cut")


@dataclass
class Calibration:
    """p(same) = 1 / (1 + exp(-(alpha (e - t) + beta))) per rule, for evidence e."""

    alpha: dict
    beta: dict
    source: str  # "links" (no labels: alpha = 1 / scale, beta = 0) or what it was fitted on
    counts: dict | None = None  # questions fitted on, per rule

    def p(self, rule: str, evidence, threshold: float):
        x = self.alpha[rule] * (np.asarray(evidence, np.float64) - threshold) + self.beta[rule]
        return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))

    def to_json(self) -> dict:
        return {"alpha": self.alpha, "beta": self.beta, "source": self.source,
                "counts": self.counts}


def from_links(scale: float) -> Calibration:
    return Calibration({r: 1.0 / scale for r in RULES}, {r: 0.0 for r in RULES}, "links")


def fit_calibration(pool: list[Question], truth: np.ndarray, threshold: float, scale: float,
                    source: str, min_questions: int = 20) -> Calibration:
    """p(same) per rule fitted by logistic regression on questions of a labelled set
    (answers from its truth); a rule with fewer than ``min_questions`` answerable
    questions, or answers all alike, keeps the links' own scale."""
    cal = from_links(scale)
    cal.source, cal.counts = source, {}
    for rule in RULES:
        qs = [q for q in pool if q.rule == rule and truth[q.a[0]] >= 0 and truth[q.b[0]] >= 0]
        cal.counts[rule] = len(qs)
        if len(qs) < min_questions:
            continue
        x = np.array([q.weight - threshold for q in qs])
        y = np.array([truth[q.a[0]] == truth[q.b[0]] for q in qs], np.float64)
        if y.min() == y.max():
            continue
        cal.alpha[rule], cal.beta[rule] = _logistic(x, y, 1.0 / scale)
    return cal


def _logistic(x: np.ndarray, y: np.ndarray, alpha0: float, prior: float = 1.0):
    """(alpha, beta) of p = sigmoid(alpha x + beta) by Newton's method, in units of the
    links' scale (x alpha0) and drawn towards the links' own model (alpha0, 0) by a
    Gaussian prior of weight ``prior``: separable answers (every "yes" above every "no")
    give a steep, finite slope instead of an infinite one."""
    z = x * alpha0
    theta0 = np.array([1.0, 0.0])
    theta = theta0.copy()
    design = np.column_stack([z, np.ones_like(z)])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ theta, -30, 30)))
        grad = design.T @ (p - y) + prior * (theta - theta0)
        hess = (design * (p * (1 - p))[:, None]).T @ design + prior * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta = theta - step
        if np.abs(step).max() < 1e-9:
            break
    return float(theta[0] * alpha0), float(theta[1])


OBJECTIVES = ("bcubed", "pairs")


def score(pool: list[Question], threshold: float, cal: Calibration,
          objective: str = OBJECTIVES[0]) -> None:
    """p(same) and the expected gain of every question: what it decides x P(decided
    wrong). What it decides: the point pairs (|A| |B|: pairwise F counts pairs), or under
    "bcubed" each point's share of them, 2 |A| |B| / (|A| + |B|) (BCubed F averages over
    points: a singleton joining a cluster of 300 changes one point's recall a lot and the
    300 others' a little)."""
    for rule in RULES:
        qs = [q for q in pool if q.rule == rule]
        if not qs:
            continue
        p = cal.p(rule, [q.weight for q in qs], threshold)
        for q, pi in zip(qs, p.tolist()):
            q.p_same = pi
            wrong = pi if q.kind == "join" else 1.0 - pi
            decided = q.pairs if objective == "pairs" else 2.0 * q.pairs / (q.size_a + q.size_b)
            q.gain = decided * wrong


def candidates(labels: np.ndarray, indices: np.ndarray, weights: np.ndarray,
               threshold: float, scale: float | None = None) -> tuple[list[Question], float]:
    """Every candidate question, unscored, and the links' scale."""
    cid, sizes, label_of = _dense(labels)
    u, v, w = _pairs(indices, weights)
    s = link_scale(w, threshold) if scale is None else float(scale)
    strength = _strength(cid, sizes, u, v, w)
    core = _cores(cid, strength, sizes.size)
    adj = _adjacency(cid, u, v, w, cid.size)
    pool = (join_questions(cid, sizes, label_of, core, u, v, w, threshold)
            + member_questions(cid, sizes, label_of, core, adj, threshold)
            + cut_questions(cid, sizes, label_of, core, strength, adj, threshold, s))
    return pool, s


def review(labels: np.ndarray, indices: np.ndarray, weights: np.ndarray, threshold: float,
           *, calibration: Calibration | None = None, scale: float | None = None,
           answered: Constraints | None = None, objective: str = OBJECTIVES[0]
           ) -> tuple[list[Question], Calibration]:
    """Every candidate question, best first (falling expected gain; ties: kind, rows), and
    the calibration used (default: the links' own scale). ``answered``: constraints
    already known; questions they decide are left out."""
    pool, s = candidates(labels, indices, weights, threshold, scale)
    cal = calibration or from_links(s)
    score(pool, threshold, cal, objective)
    if answered is not None and pool:
        first_a = np.array([q.a[0] for q in pool])
        first_b = np.array([q.b[0] for q in pool])
        known = answered_pairs(answered, first_a, first_b)
        pool = [q for q, k in zip(pool, known.tolist()) if k < 0]
    pool.sort(key=lambda q: (-q.gain, q.kind, q.a[0], q.b[0]))
    return pool, cal
