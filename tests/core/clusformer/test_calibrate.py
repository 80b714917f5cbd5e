"""The guard's contenders among distractors (core.clusformer.calibrate.crowded_contenders):
the labelled points and the unlabelled ones searched together, the held-out identities'
neighbourhood linked, each distractor its own identity, so that one joining a held-out
identity's cluster counts against the links that put it there."""

import numpy as np
import pytest
import torch

from cftools.core.calibration import thresholds as thresholds_module
from cftools.core.calibration.guard import guard
from cftools.core.calibration.jury import Contender
from cftools.core.clusformer.calibrate import calibrate_decoders, crowded_contenders
from cftools.core.clusformer.gate import Gate
from cftools.core.clusformer.grammar import build_sequences
from cftools.core.clusformer.inference import LinkStats, link_array
from cftools.core.clusformer.model import Clusformer, make_config, unit_rows
from cftools.core.clusformer.sequences import SequenceData
from cftools.core.neighbours.index import knn
from cftools.data.demo import make_demo_features

T = {"infomap": 0.5, "link_mode_infomap": "directed", "directed_infomap": 0.5}


def _unit(rng, n, d=16):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_crowded_contenders_link_the_held_out_neighbourhood_of_both_sets():
    """The rows are the held-out identities' points and every point in their lists, each
    searched among both sets; each distractor is its own identity."""
    rng = np.random.default_rng(0)
    labelled, unlabelled = _unit(rng, 60), _unit(rng, 40)
    labels = rng.integers(0, 12, 60)
    held_ids = np.array([2, 7])
    torch.manual_seed(0)
    model = Clusformer(make_config("small", 16, 8, width=32, ffn=64)).eval()
    m, c, truth = crowded_contenders(model, labelled, labels, unlabelled, held_ids, (T, T),
                                     (8, 5))
    both = np.vstack([labelled, unlabelled])
    everyone = knn(both, 8)[0]
    held = np.flatnonzero(np.isin(labels, held_ids))
    rows = np.union1d(held, everyone[held])
    assert held.size < rows.size < 100  # more than the held-out points, fewer than all
    assert (rows >= 60).any()  # distractors among them
    assert m.order.shape == (rows.size, 8) and c.order.shape == (rows.size, 5)
    assert (m.order == everyone[rows]).all() and (c.order == m.order[:, :5]).all()
    assert m.mask.all() and c.mask.all()
    cosine = np.einsum("nd,nkd->nk", both[rows], both[c.order])
    assert np.allclose(c.weights, cosine, atol=1e-5)
    assert ((m.weights >= 0) & (m.weights <= 1)).all()
    assert truth.shape == (100,) and (truth[:60] == labels).all()
    assert np.unique(truth[60:]).size == 40 and truth[60:].min() > labels.max()
    assert (m.thresholds, c.thresholds) == (T, T)


def test_a_distractor_that_joins_a_held_out_identity_counts_against_it():
    """Cosine links that join each held-out identity to an unlabelled look-alike, and
    model links that do not, score alike among the labelled rows (the guard keeps cosine)
    and apart once the look-alikes are rows of their own identities (the model wins)."""
    y = np.repeat(np.arange(60), 4)  # 60 held-out identities of 4
    n = y.size
    order = np.empty((n + 60, 5), np.int64)
    for row in range(n):
        same = np.flatnonzero(y == y[row])
        order[row] = np.r_[row, same[same != row], n + y[row]]  # its look-alike last
    for d in range(60):  # each look-alike's own list: itself, then the identity it mimics
        order[n + d] = np.r_[n + d, np.flatnonzero(y == d)]
    mask = np.ones(order.shape, dtype=bool)
    apart = np.zeros(order.shape, np.float32)
    apart[:n, :4] = 1.0
    joined = apart.copy()
    joined[:n, 4] = 0.9
    joined[n:, 1:] = 0.9
    held = np.arange(60)
    truth = np.r_[y, 60 + np.arange(60)]
    alone = guard(Contender("model", order[:n, :4], mask[:n, :4], apart[:n, :4], T),
                  Contender("cosine", order[:n, :4], mask[:n, :4], joined[:n, :4], T),
                  y, held)
    assert alone.winner == "cosine" and alone.model == alone.cosine, alone
    crowded = guard(Contender("model", order, mask, apart, T),
                    Contender("cosine", order, mask, joined, T), truth, held, distractors=60)
    assert crowded.winner == "model" and crowded.model_ahead == 1.0, crowded
    # each identity's cluster of 4 holds its look-alike: 6 true pairs of the 10
    assert crowded.cosine["pairwise_f"] == pytest.approx(2 * 0.6 / 1.6)
    assert crowded.model["pairwise_f"] == 1.0
    assert (crowded.points, crowded.distractors, crowded.held_out) == (n + 60, 60, n)
    assert crowded.as_dict()["distractors"] == 60


def test_with_the_gate_the_model_contender_holds_the_links_cf_link_writes():
    """Given the model's gate, the jury reads the gated links (calibrated cosine where the
    model cannot change a decision), not links cf-link would never write."""
    rng = np.random.default_rng(1)
    labelled, unlabelled = _unit(rng, 80), _unit(rng, 40)
    labels = rng.integers(0, 16, 80)
    torch.manual_seed(1)
    model = Clusformer(make_config("small", 16, 8, width=32, ffn=64)).eval()
    with torch.no_grad():  # calibrated cosine crosses 0.5 at cosine 0.2; a random correction
        model.skip.copy_(torch.tensor([20.0, -4.0]))
        model.head.weight.normal_(0, 0.5)
    gate = Gate("infomap", "directed", 0.5, reach=2.0, flip_distance=1.0)
    every = np.unique(labels)
    full, _, _ = crowded_contenders(model, labelled, labels, unlabelled, every, (T, T), (8, 5))
    gated, _, _ = crowded_contenders(model, labelled, labels, unlabelled, every, (T, T), (8, 5),
                                     gate=gate)
    both = torch.from_numpy(np.vstack([labelled, unlabelled]))
    stats = LinkStats()
    written = link_array(gated.order, gated.mask, model.prepare(both), model=model,
                         unit=unit_rows(both), gate=gate, stats=stats)
    assert 0 < stats.model_rows < stats.rows  # some rows skipped: the case is not vacuous
    np.testing.assert_allclose(gated.weights, written, rtol=0, atol=1e-6)
    assert not np.allclose(gated.weights, full.weights, atol=1e-3)


def test_decoders_calibrated_without_cosine_links_leave_them_out(monkeypatch):
    """calibrate_decoders with cosine=False calibrates the model's links alone (cf-train
    calibrates cosine links where they are used, at cosine's own length), and the model's
    thresholds are those found beside cosine's."""
    f, y = make_demo_features(300, 16, seed=2)
    idx, sim = knn(f, 11)
    order, mask, targets = build_sequences(idx, sim, 11, labels=y)
    data = SequenceData(order, mask, targets, y)
    torch.manual_seed(0)
    model = Clusformer(make_config("small", 16, 11)).eval()
    calls = []
    real = thresholds_module.calibrate_links_many
    monkeypatch.setattr(thresholds_module, "_CALIBRATED", {})
    monkeypatch.setattr(thresholds_module, "calibrate_links_many",
                        lambda sets, *a, **k: calls.append(len(sets)) or real(sets, *a, **k))
    alone = calibrate_decoders(data, model, torch.from_numpy(f), None, lambda m: None,
                               cosine=False)
    both = calibrate_decoders(data, model, torch.from_numpy(f), None, lambda m: None)
    assert alone[1] is None and both[1] and calls == [1, 2]
    assert alone[0] == both[0] and np.array_equal(alone[2][1], both[2][1])
