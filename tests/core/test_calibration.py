"""Choices cf-train makes on D_L (core.calibration): the best-F link threshold, the
calibration objective that one giant identity cannot dominate, the sequence length, and the
guard that sends a model which lost to cosine links back to cosine links in cf-link and says
so in cf-merge."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from cftools.core.calibration import thresholds as thresholds_module
from cftools.core.calibration.guard import GUARD_CONFIDENCE, guard, recorded_cosine_length
from cftools.core.calibration.jury import Contender, HeldOut, decode_contender
from cftools.core.calibration.length import choose_length, choose_model_length, model_lengths
from cftools.core.calibration.objective import IDENTITY_CAP, best_f1_threshold, calibration_score
from cftools.core.calibration.thresholds import (
    COSINE_MODES,
    calibrate_links,
    calibrate_thresholds,
    local_links,
)
from cftools.core.clusformer.grammar import build_sequences, centre_cosine
from cftools.core.clusformer.model import Clusformer, make_config, save_model
from cftools.core.metrics import (
    bcubed_scores,
    capped_pairwise_f,
    link_scores,
    pairwise_scores,
    roc_auc,
)
from cftools.core.neighbours.index import knn
from cftools.formats.artifacts import open_artifact
from cftools.formats.features import load_features, write_features
from cftools.formats.writing import create_rows, write_artifact

# A giant identity holding a sixth of D_L (lfw-dev's largest holds 530 of 3,161) moves the
# calibrated Infomap threshold by at most this much, and by at most half of what plain
# pairwise F lets it move.
GIANT_SHIFT_BOUND = 0.04


def _identities(rng, sizes, spread, d=32):
    xs, ys = [], []
    for i, n in enumerate(sizes):
        c = rng.standard_normal(d)
        x = c / np.linalg.norm(c) + spread * rng.standard_normal((n, d)) / np.sqrt(d)
        xs.append(x / np.linalg.norm(x, axis=1, keepdims=True))
        ys.append(np.full(n, i))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


def _infomap_threshold(x, y, plain=False, monkeypatch=None):
    i, s = knn(x, 21)
    if plain:
        monkeypatch.setattr(thresholds_module, "calibration_score",
                            lambda p, t: float(pairwise_scores(p, t)["pairwise_f"]))
        # the same links calibrated by the capped objective are memoised: calibrate afresh
        monkeypatch.setattr(thresholds_module, "_CALIBRATED", {})
    t = calibrate_thresholds(i, s, y, decoders=("infomap",))["infomap"]
    monkeypatch.undo() if plain else None
    return t


def test_roc_auc_and_best_threshold():
    s = np.array([0.1, 0.4, 0.35, 0.8])
    t = np.array([0, 0, 1, 1])
    assert roc_auc(s, t) == pytest.approx(0.75)
    assert roc_auc(np.ones(4), t) == pytest.approx(0.5)
    th = best_f1_threshold(s, t)
    assert link_scores(s, t, th)["f1"] == pytest.approx(max(
        link_scores(s, t, x)["f1"] for x in (0.1, 0.35, 0.4, 0.8)))


def test_capped_pairwise_f_is_pairwise_f_below_the_cap_and_caps_above():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 40, 300)
    pred = np.where(rng.random(300) < 0.8, truth, rng.integers(0, 40, 300))
    assert capped_pairwise_f(pred, truth, 1000) == pytest.approx(
        pairwise_scores(pred, truth)["pairwise_f"])
    # one identity of 500 split in two: plain F counts ~half of all pairs lost, capped F
    # weighs it as one identity of 30 beside 1,000 perfect pairs
    truth = np.r_[np.zeros(500, int), np.repeat(np.arange(1, 1001), 2)]
    pred = truth.copy()
    pred[:250] = 10_000
    assert pairwise_scores(pred, truth)["pairwise_f"] < 0.7
    assert capped_pairwise_f(pred, truth, 30) > 0.9


def test_the_calibration_objective_is_the_mean_of_capped_pairwise_f_and_bcubed_f():
    rng = np.random.default_rng(2)
    truth = np.r_[np.zeros(200, int), rng.integers(1, 60, 400)]
    pred = np.where(rng.random(600) < 0.7, truth, rng.integers(0, 80, 600))
    want = 0.5 * (capped_pairwise_f(pred, truth, IDENTITY_CAP)
                  + bcubed_scores(pred, truth)["bcubed_f"])
    assert calibration_score(pred, truth) == pytest.approx(want)
    # points of unknown truth are not scored; none known scores 1
    hidden = truth.copy()
    hidden[:100] = -1
    assert calibration_score(pred, hidden) == pytest.approx(calibration_score(pred[100:],
                                                                                truth[100:]))
    assert calibration_score(pred, np.full(600, -1)) == 1.0
    # the points a clustering leaves alone count: one identity of 30 and a hundred pairs,
    # every pair split, against three pairs merged into the 30 (pairwise F prefers the split)
    truth = np.r_[np.zeros(30, int), np.repeat(np.arange(1, 101), 2)]
    split = np.where(truth == 0, 0, 1000 + np.arange(230))
    merged = np.where(truth <= 3, 0, truth)
    assert capped_pairwise_f(split, truth, IDENTITY_CAP) > \
        capped_pairwise_f(merged, truth, IDENTITY_CAP)
    assert calibration_score(split, truth) < calibration_score(merged, truth)


def test_a_giant_identity_does_not_move_the_calibrated_threshold_far(monkeypatch):
    rng = np.random.default_rng(1)
    small_x, small_y = _identities(rng, rng.integers(1, 7, 600), 0.5)
    giant_x, _ = _identities(rng, [500], 1.0)
    both_x = np.concatenate([small_x, giant_x])
    both_y = np.r_[small_y, np.full(500, small_y.max() + 1)]
    alone = _infomap_threshold(small_x, small_y)
    capped = _infomap_threshold(both_x, both_y)
    plain = _infomap_threshold(both_x, both_y, plain=True, monkeypatch=monkeypatch)
    assert abs(capped - alone) <= GIANT_SHIFT_BOUND, (alone, capped, plain)
    assert abs(capped - alone) <= 0.5 * abs(plain - alone), (alone, capped, plain)


def test_calibration_in_worker_processes_finds_the_thresholds_of_one_process(monkeypatch):
    """Large links are calibrated decoder by decoder in worker processes: the thresholds,
    link modes and scores are exactly those one process finds."""
    from cftools.core.runtime import workers

    rng = np.random.default_rng(5)
    x, y = _identities(rng, rng.integers(1, 9, 150), 0.6)
    i, s = knn(x, 11)
    links = (i, s, y, ("infomap", "components", "peaks"), 0, ("directed", "reciprocal"))
    monkeypatch.setattr(thresholds_module, "_CALIBRATED", {})
    serial = thresholds_module.calibrate_links_many([links])
    monkeypatch.setattr(thresholds_module, "_CALIBRATED", {})
    monkeypatch.setattr(thresholds_module, "PARALLEL_LINKS", 0)
    monkeypatch.setattr(workers, "cpu_workers", lambda: 2)
    calls = []
    real_map = workers.parallel_map
    monkeypatch.setattr(thresholds_module, "parallel_map",
                        lambda fn, items, parallel, cost=None: calls.append(parallel) or
                        real_map(fn, items, parallel=parallel, cost=cost))
    assert thresholds_module.calibrate_links_many([links]) == serial
    assert calls == [True]


def test_links_that_cannot_be_calibrated_are_refused_apart_from_the_others():
    """Several link sets calibrated together: one that cannot be (no label known) is
    recorded as refused and gets no thresholds, the others get what they get alone; with
    nowhere to record it, the refusal raises."""
    rng = np.random.default_rng(6)
    x, y = _identities(rng, rng.integers(1, 8, 60), 0.6)
    i, s = knn(x, 9)
    good = (i, s, y, ("infomap", "components"), 0, ("directed", "reciprocal"))
    unlabelled = (i, s, np.full_like(y, -1), ("infomap",), 0, ("directed",))
    refused: dict = {}
    found = thresholds_module.calibrate_links_many([unlabelled, good], refused)
    assert list(refused) == [0] and "labels" in str(refused[0])
    assert found[0] == ({}, {})
    assert found[1] == calibrate_links(*good[:4], seed=0, modes=good[5])
    with pytest.raises(ValueError, match="labels"):
        thresholds_module.calibrate_links_many([unlabelled, good])


def test_parallel_map_keeps_the_order_of_its_items(monkeypatch):
    from cftools.core.runtime import workers

    monkeypatch.setattr(workers, "cpu_workers", lambda: 2)
    items = [(n, 10 - n) for n in range(7)]
    assert workers.parallel_map(divmod, items) == [divmod(a, b) for a, b in items]
    assert workers.parallel_map(divmod, items, parallel=False) == [divmod(a, b)
                                                                    for a, b in items]
    assert workers.parallel_map(divmod, items, cost=lambda a, b: a) == [divmod(a, b)
                                                                        for a, b in items]


def test_parallel_map_hands_out_the_costliest_items_first(monkeypatch):
    """With a cost estimate the workers get the items by falling cost (a long calibration
    never starts last); the results still come back in the items' order."""
    from cftools.core.runtime import workers

    handed: list = []

    class Pool:  # the executor, run in this process, recording what it was handed
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def map(self, fn, jobs):
            handed.extend(job[1] for job in jobs)
            return [fn(job) for job in jobs]

    monkeypatch.setattr(workers, "cpu_workers", lambda: 2)
    monkeypatch.setattr(workers, "ProcessPoolExecutor", Pool)
    items = [(3, 1), (9, 2), (1, 1), (27, 4), (5, 3)]
    found = workers.parallel_map(divmod, items, cost=lambda a, b: a)
    assert handed == sorted(items, key=lambda t: -t[0])
    assert found == [divmod(a, b) for a, b in items]


def test_length_reaches_identities_larger_than_short_sequences():
    """Identities of 150 loose points fall apart through 10 neighbours a point: the chosen
    length is one that reaches them."""
    rng = np.random.default_rng(2)
    x, y = _identities(rng, [150] * 6 + list(rng.integers(1, 5, 100)), 1.0)
    idx, sim = knn(x, 51)
    order, mask, _ = build_sequences(idx, sim, 51, labels=y)
    import torch

    cos = centre_cosine(torch.from_numpy(x)[torch.from_numpy(order)]).numpy() * mask
    logs = []
    found = choose_length(order, mask, cos, y, log=logs.append)
    assert found["candidates"] == [11, 21, 31, 51]
    assert found["length"] >= 31, found
    assert max(found["scores"]["11"].values()) < max(found["scores"][str(found["length"])].values())
    assert set(found["scores"]) == {"11", "21", "31", "51"}
    assert "-> L" in logs[0]


def test_length_choice_scans_the_coarse_grid_and_the_chosen_length_is_refined_after(
        monkeypatch):
    """Cosine's length choice scores each length on the coarse grid alone; the decoders'
    calibration at the chosen length then scores only the fine grid's points, and finds
    what a calibration from scratch finds."""
    rng = np.random.default_rng(4)
    x, y = _identities(rng, [40] * 4 + list(rng.integers(1, 6, 60)), 0.9)
    idx, sim = knn(x, 31)
    order, mask, _ = build_sequences(idx, sim, 31, labels=y)
    cos = (sim * mask).astype(np.float32)
    scored = []
    real = thresholds_module.calibration_score
    monkeypatch.setattr(thresholds_module, "calibration_score",
                        lambda p, t: scored.append(1) or real(p, t))
    monkeypatch.setattr(thresholds_module, "_CALIBRATED", {})
    monkeypatch.setattr(thresholds_module, "_SCANNED", {})
    found = choose_length(order, mask, cos, y, log=lambda m: None)
    n = found["length"]
    per_length = len(scored)
    assert per_length <= len(found["candidates"]) * (thresholds_module.COARSE_GRID + 2)
    links = (*local_links(order[:, :n], mask[:, :n], cos[:, :n], y.size), y[order[:, 0]],
             ("infomap",), 0, COSINE_MODES)
    scored.clear()
    refined = thresholds_module.calibrate_links_many([links])[0]
    assert 0 < len(scored) <= thresholds_module.FINE_GRID
    assert refined[1]["infomap"]["directed"] >= max(found["scores"][str(n)].values())
    monkeypatch.setattr(thresholds_module, "_CALIBRATED", {})
    monkeypatch.setattr(thresholds_module, "_SCANNED", {})
    scored.clear()
    assert thresholds_module.calibrate_links_many([links])[0] == refined
    assert len(scored) > thresholds_module.FINE_GRID


def test_a_replayed_coarse_scan_gives_the_same_search():
    """_grid_search with an earlier scan of the grid scores only what the scan lacks."""
    grid = np.linspace(0.1, 0.9, 17)
    calls = []

    def score(t):
        calls.append(t)
        return 1.0 - abs(t - 0.42)

    scan: list = []
    first = thresholds_module._grid_search(score, grid, 0, scan)
    coarse_calls = len(calls)
    assert len(scan) == coarse_calls
    calls.clear()
    again = thresholds_module._grid_search(score, grid, 4, list(scan))
    assert len(calls) == 4 and again[1] >= first[1]
    calls.clear()
    assert thresholds_module._grid_search(score, grid, 4) == again
    assert len(calls) == coarse_calls + 4


def _contenders(order, mask, model_probs, model_t, cos, cos_t):
    return (Contender("model", order, mask, model_probs, model_t),
            Contender("cosine", order, mask, cos, cos_t))


def test_guard_prefers_cosine_over_a_model_that_guesses():
    rng = np.random.default_rng(3)
    x, y = _identities(rng, rng.integers(2, 12, 80), 1.0)
    idx, sim = knn(x, 16)
    order, mask, targets = build_sequences(idx, sim, 16, labels=y)
    cos = (sim * mask).astype(np.float32)
    (ci, cw) = local_links(order, mask, cos, y.size)
    cos_t = calibrate_links(ci, cw, y[order[:, 0]], ("infomap",))[0]
    noise = rng.random(order.shape).astype(np.float32) * mask
    verdict = guard(*_contenders(order, mask, noise, cos_t, cos, cos_t), y, np.unique(y))
    assert verdict.winner == "cosine", verdict
    perfect = (targets == 1).astype(np.float32) * mask
    verdict = guard(*_contenders(order, mask, perfect, {"infomap": 0.5, "link_mode_infomap":
                                                        "directed", "directed_infomap": 0.5},
                                 cos, cos_t), y, np.unique(y))
    assert verdict.winner == "model" and verdict.model["pairwise_f"] > 0.99, verdict
    assert verdict.model_ahead >= GUARD_CONFIDENCE


def test_guard_keeps_cosine_on_too_few_held_out_identities():
    """A model that links perfectly wins the guard on 80 held-out identities, but not on
    fewer than GUARD_MIN_IDENTITIES of them, however far it leads there."""
    from cftools.core.calibration.guard import GUARD_MIN_IDENTITIES

    rng = np.random.default_rng(3)
    x, y = _identities(rng, rng.integers(2, 12, 80), 1.0)
    idx, sim = knn(x, 16)
    order, mask, targets = build_sequences(idx, sim, 16, labels=y)
    cos = (sim * mask).astype(np.float32)
    cos_t = calibrate_links(*local_links(order, mask, cos, y.size), y[order[:, 0]],
                            ("infomap",))[0]
    perfect = (targets == 1).astype(np.float32) * mask
    t = {"infomap": 0.5, "link_mode_infomap": "directed", "directed_infomap": 0.5}
    few = np.unique(y)[:GUARD_MIN_IDENTITIES - 1]
    verdict = guard(*_contenders(order, mask, perfect, t, cos, cos_t), y, few)
    assert verdict.model_ahead >= GUARD_CONFIDENCE and verdict.winner == "cosine", verdict
    assert verdict.identities == GUARD_MIN_IDENTITIES - 1
    verdict = guard(*_contenders(order, mask, perfect, t, cos, cos_t), y, few, min_identities=0)
    assert verdict.winner == "model"


def test_guard_keeps_cosine_when_the_model_leads_by_luck():
    """A model whose links equal cosine's except on one held-out identity, where they are
    perfect, leads on the whole set but not on most halves of it: cosine stays."""
    rng = np.random.default_rng(5)
    x, y = _identities(rng, rng.integers(2, 12, 80), 0.6)
    idx, sim = knn(x, 16)
    order, mask, targets = build_sequences(idx, sim, 16, labels=y)
    cos = (sim * mask).astype(np.float32)
    ci, cw = local_links(order, mask, cos, y.size)
    cos_t = calibrate_links(ci, cw, y[order[:, 0]], ("infomap",), modes=COSINE_MODES)[0]
    lucky = cos.copy()
    worst = max(np.unique(y), key=lambda i: (sim[y == i, 1:] * (targets[y == i, 1:] == 1)).sum())
    rows = y[order[:, 0]] == worst
    lucky[rows] = (targets[rows] == 1) * mask[rows]  # perfect on one identity only
    verdict = guard(*_contenders(order, mask, lucky, cos_t, cos, cos_t), y, np.unique(y))
    both = {k: (getattr(verdict, k)["pairwise_f"] + getattr(verdict, k)["bcubed_f"]) / 2
            for k in ("model", "cosine")}
    assert both["model"] >= both["cosine"], verdict
    assert verdict.model_ahead < GUARD_CONFIDENCE and verdict.winner == "cosine", verdict


def test_the_jury_scores_held_out_identities_as_pairwise_and_bcubed_f():
    """With every identity held out the jury's scores are pairwise and BCubed F; with some,
    a held-out point merged into another identity's cluster costs precision, merges among
    the other identities cost nothing, and unassigned points (-1) are singletons."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 30, 600)
    pred = np.where(rng.random(600) < 0.7, truth, rng.integers(0, 40, 600))
    pred[rng.random(600) < 0.05] = -1
    s = HeldOut(truth, np.unique(truth)).scores(pred)
    assert s["pairwise_f"] == pytest.approx(pairwise_scores(pred, truth)["pairwise_f"])
    assert s["bcubed_f"] == pytest.approx(bcubed_scores(pred, truth)["bcubed_f"])
    truth = np.repeat([0, 1, 2], 4)  # identity 0 held out; 1 and 2 are distractors
    jury = HeldOut(truth, [0])
    clean = np.repeat([0, 1, 1], 4)  # the distractors merged with each other: no cost
    assert jury.scores(clean) == {"pairwise_f": 1.0, "bcubed_f": 1.0}
    merged = np.repeat([0, 0, 1], 4)  # the held-out identity merged with a distractor
    s = jury.scores(merged)
    # pairs touching identity 0: 6 true of the 28 - 6 pairs of its cluster that touch it
    assert s["pairwise_f"] == pytest.approx(2 * (6 / 22) / (6 / 22 + 1))
    assert s["bcubed_f"] == pytest.approx(2 * 0.5 / 1.5)


def test_the_jury_scores_any_subset_of_its_identities_from_one_decoding():
    """The random halves the guard scores: a subset of the held-out identities scored from
    the jury's one decoding is scored as a jury of that subset alone would score it, and
    an identity no row holds changes nothing."""
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 50, 900)
    pred = np.where(rng.random(900) < 0.6, truth // 2, rng.integers(-1, 30, 900))
    held = np.unique(truth)[::2]
    jury = HeldOut(truth, held)
    for half in (held[:5], held[5:], held[[0]], np.r_[held[:7], 999]):
        assert jury.scores(pred, half) == HeldOut(truth, half).scores(pred), half


def test_the_guard_judges_held_out_identities_among_distractors():
    """Links that keep the held-out identities apart from each other but join each to a
    trained identity look perfect decoded among the held-out rows alone, and are caught
    inside all of the rows; each contender is decoded at its own length."""
    y = np.repeat(np.arange(40), 6)
    held = np.arange(0, 40, 4)
    rng = np.random.default_rng(7)
    order = np.empty((240, 12), np.int64)
    leaky = np.zeros((240, 12), np.float32)
    for row in range(240):
        c = y[row]
        partner = c + 1 if c in held else c - 1 if c - 1 in held else rng.integers(40)
        same = np.flatnonzero(y == c)
        order[row] = np.r_[row, same[same != row], np.flatnonzero(y == partner)]
        leaky[row, :6] = 1.0
        leaky[row, 6:] = 0.9 if (c in held or c - 1 in held) else 0.0
    mask = np.ones_like(order, dtype=bool)
    perfect = np.where(np.arange(12) < 6, 1.0, 0.0).astype(np.float32)[None].repeat(240, 0)
    t = {"infomap": 0.5, "link_mode_infomap": "directed", "directed_infomap": 0.5}
    rows = np.isin(y, held)
    alone = HeldOut(y[rows], held)
    sub = Contender("model", order[rows], mask[rows], leaky[rows], t)
    assert alone.scores(decode_contender(sub, y.size))["pairwise_f"] == pytest.approx(1.0)
    verdict = guard(Contender("model", order, mask, leaky, t),
                    Contender("cosine", order[:, :6], mask[:, :6], perfect[:, :6], t), y, held)
    assert verdict.model["pairwise_f"] < 0.6 and verdict.cosine["pairwise_f"] == 1.0, verdict
    assert verdict.winner == "cosine" and verdict.held_out == 60 and verdict.points == 240
    assert (verdict.model_length, verdict.cosine_length) == (12, 6)
    assert recorded_cosine_length({"guard": verdict.as_dict()}, 12) == 6
    assert recorded_cosine_length({}, 12) == 12
    # no guard (no held-out identity): the length cosine's thresholds were calibrated at
    assert recorded_cosine_length({"length_selection": {"cosine": {"length": 11}}}, 12) == 11


def test_the_model_length_is_the_jury_s_best_ties_to_the_shorter():
    logs = []
    scores = {21: {"pairwise_f": 0.5, "bcubed_f": 0.6}, 31: {"pairwise_f": 0.6, "bcubed_f": 0.7},
              51: {"pairwise_f": 0.6004, "bcubed_f": 0.7}}
    assert choose_model_length(scores, logs.append) == 31 and "-> L 31" in logs[0]
    # by default one length, 31; those asked for that the sequences hold; else their own
    assert model_lengths(81) == [31] and model_lengths(20) == [20]
    assert model_lengths(81, [51, 21, 31]) == [21, 31, 51]
    assert model_lengths(32, [21, 31, 51]) == [21, 31] and model_lengths(8, [21, 31]) == [8]


def _cmd(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True,
                          text=True, env=env)


@pytest.fixture(scope="module")
def losing_model(tmp_path_factory):
    """Features, sequences and a model file whose guard verdict is that cosine won."""
    tmp = tmp_path_factory.mktemp("guard")
    rng = np.random.default_rng(4)
    x, y = _identities(rng, rng.integers(2, 10, 40), 0.6, d=16)
    write_features(tmp / "f.h5", x, labels=y)
    fid = load_features(tmp / "f.h5").id
    idx, sim = knn(x, 10)
    order, mask, targets = build_sequences(idx, sim, 10, labels=y)
    with write_artifact(tmp / "seq.h5", "sequences", attrs={"knn_id": "x", "features_id": fid}) as h:
        create_rows(h, "order", order.shape, np.int64, data=order)
        create_rows(h, "mask", mask.shape, bool, data=mask)
        create_rows(h, "targets", targets.shape, np.int8, data=targets)
    cosine_t = {"infomap": 0.61, "directed_infomap": 0.6, "link_mode_infomap": "directed"}
    save_model(tmp / "m.h5", Clusformer(make_config("small", 16, 10, width=32, ffn=64)),
               thresholds={"link": 0.5, "infomap": 0.5},
               training={"guard": {"winner": "cosine"}, "cosine_thresholds": cosine_t})
    return tmp, sim * mask


@pytest.mark.slow
def test_a_model_that_lost_is_reported_and_not_used(losing_model):
    tmp, cos = losing_model
    r = _cmd("cftools.commands.link", tmp / "seq.h5", "--features", tmp / "f.h5", "--model",
             tmp / "m.h5", "-o", tmp / "auto.h5")
    assert r.returncode == 0, r.stderr
    assert "lost to cosine links" in r.stderr
    with open_artifact(tmp / "auto.h5", "links") as a:
        assert a.attrs["method"] == "cosine" and a.attrs["guard_winner"] == "cosine"
        assert np.allclose(a.read("probabilities"), cos, atol=1e-6)
        # the cosine links carry the thresholds calibrated for cosine links on D_L
        assert a.json_attr("thresholds")["directed_infomap"] == 0.6
    r = _cmd("cftools.commands.merge", tmp / "auto.h5", "-o", tmp / "c.h5", "--method", "infomap",
             "-q")
    assert r.returncode == 0, r.stderr
    with h5py.File(tmp / "c.h5") as f:
        assert f.attrs["link_mode"] == "directed" and f.attrs["threshold"] == pytest.approx(0.6)
    # asked for, the model's links are written, and both cf-link and cf-merge warn
    r = _cmd("cftools.commands.link", tmp / "seq.h5", "--features", tmp / "f.h5", "--model",
             tmp / "m.h5", "-o", tmp / "model.h5", "--method", "model")
    assert r.returncode == 0 and "lost to cosine links" in r.stderr, r.stderr
    r = _cmd("cftools.commands.merge", tmp / "model.h5", "-o", tmp / "c2.h5", "--method",
             "infomap")
    assert r.returncode == 0 and "lost to cosine links" in r.stderr, r.stderr
    assert json.loads(h5py.File(tmp / "c2.h5").attrs["cftools_provenance"])
