"""Answers are never violated: random consistent must/cannot-links and names on random
graphs, for every decoder, for cf-merge add (keeping old clusters whole or re-decoding
where the new links land) and for re-runs that keep the previous ids."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cftools.core.corrections import constraints_from
from cftools.core.decoding.constrained import enforce, link_edges
from cftools.core.decoding.decoders import DECODERS
from cftools.core.decoding.identities import carry_ids
from cftools.core.decoding.setting import DecoderSetting
from cftools.core.decoding.weights import link_weights
from cftools.formats.corrections import Answer

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def graph(seed: int, n: int, k: int = 6):
    """Unit features of a few look-alike groups and their cosine kNN links (self first)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(2, n // 6), 4))
    x = centres[rng.integers(0, centres.shape[0], n)] + 0.6 * rng.standard_normal((n, 4))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    sim = x @ x.T
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    order[:, 0] = np.arange(n)  # the centre first
    return x, order.astype(np.int64), np.take_along_axis(sim, order, 1).astype(np.float32)


def consistent_answers(seed: int, n: int, n_answers: int, rows=None) -> list[Answer]:
    """Answers a person who knew a random partition would give: never contradictory."""
    rng = np.random.default_rng(seed + 7)
    truth = rng.integers(0, max(2, n // 4), n)
    rows = np.arange(n) if rows is None else rows
    out = []
    for i in range(n_answers):
        a, b = (int(r) for r in rng.choice(rows, 2, replace=False))
        if rng.random() < 0.15:
            out.append(Answer(i + 1, "name", (a,) + ((b,) if truth[a] == truth[b] else ()),
                              name=f"person {truth[a]}"))
        else:
            out.append(Answer(i + 1, "same" if truth[a] == truth[b] else "different", (a,), (b,)))
    return out


def violations(labels: np.ndarray, answers: list[Answer]) -> list:
    bad = []
    names: dict = {}
    for ans in answers:
        if ans.kind == "same":
            rows = ans.a + ans.b
            if labels[rows[0]] < 0 or len({int(labels[r]) for r in rows}) > 1:
                bad.append(ans)
        elif ans.kind == "different":
            if any(labels[x] >= 0 and labels[x] == labels[y] for x in ans.a for y in ans.b):
                bad.append(ans)
        else:
            names.setdefault(ans.name, set()).update(int(labels[r]) for r in ans.a)
    for name, labs in names.items():
        if len(labs) > 1 or -1 in labs:
            bad.append(name)
    named = list(names.values())
    for i in range(len(named)):
        for j in range(i + 1, len(named)):
            if named[i] & named[j]:
                bad.append(("two names, one cluster", named[i]))
    return bad


def setting_for(method: str, mode: str, singletons: str = "keep") -> DecoderSetting:
    return DecoderSetting(method, 0.55, mode, intimacy_ratio=0.3, max_size=8,
                          singletons=singletons, attach_threshold=0.6)


@pytest.mark.parametrize("method", DECODERS)
@SETTINGS
@given(seed=st.integers(0, 10_000), n=st.integers(6, 40), n_answers=st.integers(1, 25),
       mode=st.sampled_from(("directed", "reciprocal")),
       singletons=st.sampled_from(("keep", "unassign", "attach")))
def test_every_decoder_honours_every_answer(method, seed, n, n_answers, mode, singletons):
    _, idx, sim = graph(seed, n)
    w = link_weights(idx, sim, mode)
    answers = consistent_answers(seed, n, n_answers)
    labels, _ = setting_for(method, mode, singletons).decode(idx, w, seed)
    out = enforce(labels, constraints_from(answers, n), link_edges(idx, w))
    assert not violations(out.labels, answers)
    # points no answer names and no split or merge touched keep their cluster
    touched = {lab for lab, _ in out.merges} | {s[0] for s in out.splits}
    keep = ~np.isin(labels, list(touched) + [g for _, g in out.merges])
    keep &= ~np.isin(np.arange(n), [r for a in answers for r in a.rows()])
    assert (out.labels[keep] == labels[keep]).all()


@SETTINGS
@given(seed=st.integers(0, 10_000), n=st.integers(6, 40), n_answers=st.integers(1, 25),
       method=st.sampled_from(DECODERS))
def test_re_runs_keep_answers_and_ids(seed, n, n_answers, method):
    """A re-run of the same decoding under --previous gives the same ids, answers kept."""
    _, idx, sim = graph(seed, n)
    w = link_weights(idx, sim, "directed")
    answers = consistent_answers(seed, n, n_answers)
    cons = constraints_from(answers, n)
    labels, _ = setting_for(method, "directed").decode(idx, w, seed)
    first = enforce(labels, cons, link_edges(idx, w)).labels
    again = carry_ids(enforce(labels, cons, link_edges(idx, w)).labels, first,
                      int(first.max()) + 1)
    assert (again.labels == first).all() and not again.changes.size
    assert not violations(again.labels, answers)


@pytest.mark.slow
@pytest.mark.parametrize("method", DECODERS)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(12, 40), n_answers=st.integers(1, 20),
       redecode=st.booleans())
def test_adds_honour_every_answer(method, seed, n, n_answers, redecode):
    """Answers about the old points hold after an add, whether it keeps old clusters
    whole or decodes again where the new links land."""
    from cftools.core.incremental.add import add_points

    x, _, _ = graph(seed, n)
    n0 = n * 3 // 4
    old_idx, old_sim = _links_of(x[:n0])
    s = setting_for(method, "directed")
    old_labels, _ = s.decode(old_idx, old_sim, seed)
    answers = consistent_answers(seed, n0, n_answers)
    cons_old = constraints_from(answers, n0)
    old_labels = enforce(old_labels, cons_old, link_edges(old_idx, old_sim)).labels
    res = add_points(x[:n0], x[n0:], old_idx, old_sim, old_labels, link_method="cosine",
                     decoder=method, threshold=s.threshold, mode=s.mode,
                     intimacy_ratio=s.intimacy_ratio, max_size=s.max_size,
                     singletons=s.singletons, redecode=redecode, seed=seed)
    out = enforce(res.labels, constraints_from(answers, n), link_edges(res.indices,
                                                                       res.probabilities))
    assert not violations(out.labels, answers)


def _links_of(x, k: int = 6):
    sim = x @ x.T
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    order[:, 0] = np.arange(x.shape[0])
    return order.astype(np.int64), np.take_along_axis(sim, order, 1).astype(np.float32)
