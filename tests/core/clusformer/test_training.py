"""core.clusformer.training: the held-out identities of the validation split never reach
training, the decoders' thresholds are calibrated on all of D_L or on whole identities up
to a cap, an epoch reads a fixed budget of centres stratified by identity, and training
stops when the held-out AUC stops rising."""

import numpy as np
import pytest

from cftools.data.demo import make_demo_features


def _small_set(n: int, seed: int, max_size: int, length: int = 10):
    """(features, labels, sequences of ``length``, a tiny model config) of a small demo set."""
    import torch

    from cftools.core.clusformer.grammar import build_sequences
    from cftools.core.clusformer.model import make_config
    from cftools.core.clusformer.sequences import SequenceData
    from cftools.core.neighbours.index import knn

    torch.set_num_threads(1)
    f, y = make_demo_features(n, 16, seed=seed, max_size=max_size)
    idx, sim = knn(f, length)
    data = SequenceData(*build_sequences(idx, sim, length, labels=y), y)
    config = make_config("small", 16, length, width=16, heads=2, encoder_layers=1,
                         decoder_layers=1, ffn=32)
    return f, y, data, config


def test_split_holds_out_identities_and_hides_them_from_training():
    from cftools.core.clusformer.grammar import build_sequences
    from cftools.core.clusformer.sequences import (
        SequenceData,
        split_rows,
        training_view,
    )
    from cftools.core.neighbours.index import knn

    f, y = make_demo_features(1500, 16, seed=2)
    y = y.copy()
    y[::17] = -1  # some unknown labels
    idx, sim = knn(f, 12)
    data = SequenceData(*build_sequences(idx, sim, 10, labels=y), y)
    train_rows, val_rows, val_ids = split_rows(data, 0.25, seed=1)
    assert np.intersect1d(train_rows, val_rows).size == 0
    assert (y[data.order[val_rows, 0]][:, None] == val_ids[None]).any(axis=1).all()
    assert not np.isin(y[data.order[train_rows, 0]], val_ids).any()
    assert (y[data.order[np.r_[train_rows, val_rows], 0]] >= 0).all()
    ids = np.unique(y[y >= 0])
    # the fraction, and the largest identity where the draw held out none half its size
    assert 0 <= val_ids.size - int(round(0.25 * ids.size)) <= 1
    order, mask, targets = training_view(data, train_rows, val_ids)
    seen = y[order][mask]
    assert not np.isin(seen, val_ids).any()
    assert (targets[~mask] == -1).all()
    # same seed, same split
    assert np.array_equal(split_rows(data, 0.25, seed=1)[2], val_ids)


def test_held_out_identities_include_a_large_one():
    """The jury (guard, calibration) holds out an identity at least half the size of the
    largest: short link lists split large identities, and a jury of small ones cannot see
    it. The random draw stands where it has one; otherwise the largest joins it."""
    from cftools.core.clusformer.sequences import SequenceData, split_rows, with_a_large_identity

    ids = np.arange(6)
    sizes = np.array([100, 3, 3, 60, 3, 3])
    assert np.array_equal(with_a_large_identity(np.array([1, 2]), ids, sizes), [0, 1, 2])
    assert np.array_equal(with_a_large_identity(np.array([2, 3]), ids, sizes), [2, 3])
    assert np.array_equal(with_a_large_identity(np.array([0, 4]), ids, sizes), [0, 4])
    # through split_rows: one identity of 40 rows among 30 of 3; whichever seed, it is held
    # out, and its rows are validation rows
    y = np.r_[np.zeros(40, np.int64), np.repeat(np.arange(1, 31), 3)]
    order = np.arange(y.size)[:, None]
    data = SequenceData(order, np.ones(order.shape, bool), np.zeros(order.shape, np.int8), y)
    missed = 0
    for seed in range(8):
        plain = np.random.default_rng(seed).permutation(np.arange(31))[:6]
        missed += 0 not in plain
        train_rows, val_rows, val_ids = split_rows(data, 0.2, seed)
        assert 0 in val_ids and np.isin(np.arange(40), val_rows).all()
        assert val_ids.size == 6 + (0 not in plain) and not np.isin(y[train_rows], val_ids).any()
    assert missed  # the draw alone would have left it out on some seeds


def test_decoder_thresholds_calibrated_on_all_of_dl_or_a_subset_of_identities():
    """The decoders' thresholds come from the whole labelled set (both link modes); past
    calibration_points rows, from whole identities holding up to that many."""
    import torch

    from cftools.core.clusformer.calibrate import calibrate_decoders as decoding_thresholds
    from cftools.core.clusformer.training import TrainConfig, train
    from cftools.core.decoding.decoders import DECODERS
    from cftools.formats.thresholds import LINK_MODES, threshold_key

    f, y, data, config = _small_set(800, 4, 40)
    logs = []
    res = train(data, f, config, TrainConfig(epochs=1, lr=1e-3, batch_size=64, seed=0),
                device=torch.device("cpu"), log=logs.append)
    for mode in LINK_MODES:
        for name in DECODERS:
            assert threshold_key(name, mode) in res.thresholds, (mode, name)
    assert not any("calibrating the decoders on" in m for m in logs)  # 800 rows: all of them
    logs.clear()
    ft = torch.from_numpy(f)
    sub, cosine, (rows, probs) = decoding_thresholds(data, res.model, ft, None, logs.append,
                                                     max_points=300, seed=0)
    note = [m for m in logs if "calibrating the decoders on" in m]
    assert len(note) == 1, logs
    used = int(note[0].split(" on ")[1].split(" of ")[0])
    assert 300 - 40 < used <= 300  # whole identities (at most 40 points each), up to the cap
    assert rows.size == used and probs.shape == (used, data.order.shape[1])  # for the jury
    assert set(sub) == {k for k in res.thresholds if k != "link"}
    # the cosine links' thresholds, for cf-link's cosine links: directed only
    assert set(cosine) == {k for k in sub if k.startswith(("directed_", "link_mode_"))}
    assert all(cosine[f"link_mode_{name}"] == "directed" for name in DECODERS)
    # rows whose probabilities are known already (validation's) are taken, not predicted
    known = rows[::3]
    _, _, (rows2, probs2) = decoding_thresholds(
        data, res.model, ft, None, logs.append, max_points=300, seed=0,
        known=(np.r_[known, -5], np.full((known.size + 1, data.order.shape[1]), 0.25,
                                         dtype=np.float32)))
    assert np.array_equal(rows2, rows)
    assert (probs2[::3] == 0.25).all()
    others = np.setdiff1d(np.arange(rows.size), np.arange(0, rows.size, 3))
    np.testing.assert_allclose(probs2[others], probs[others], atol=1e-5)


def test_an_epoch_reads_its_budget_stratified_by_identity():
    """With a budget, an epoch draws every identity's first centre before any identity's
    second (and never more than the cap of one identity): the counts per identity differ
    by at most one, except for identities that gave all they had."""
    from cftools.core.clusformer.sequences import capped_epoch_rows

    sizes = np.r_[np.full(50, 1), np.full(30, 3), np.full(10, 12), [200, 400]]
    labels = np.repeat(np.arange(sizes.size), sizes)
    rng = np.random.default_rng(0)
    for budget in (40, 90, 150, 300, 10_000):
        rows = capped_epoch_rows(labels, 30, rng, budget)
        counts = np.bincount(labels[rows], minlength=sizes.size)
        assert rows.size == min(budget, np.minimum(sizes, 30).sum())
        assert np.unique(rows).size == rows.size  # a centre at most once an epoch
        assert (counts <= np.minimum(sizes, 30)).all()
        short = counts < np.minimum(sizes, 30)  # identities the budget cut short
        if short.any():
            assert counts.max() - counts[short].min() <= 1, (budget, counts)
    # no budget: every identity up to the cap, as before
    rows = capped_epoch_rows(labels, 30, rng)
    assert np.array_equal(np.bincount(labels[rows]), np.minimum(sizes, 30))


def test_a_budgeted_epoch_reads_the_rows_given_first_before_any_other():
    """With ``first`` (the rows cosine decides wrongly or nearly), a budgeted epoch takes
    all of those it can before any other row, still stratified by identity among them;
    without a budget ``first`` changes nothing."""
    from cftools.core.clusformer.sequences import capped_epoch_rows

    sizes = np.r_[np.full(40, 2), np.full(20, 10), [30]]  # none above the cap of 30
    labels = np.repeat(np.arange(sizes.size), sizes)
    rng = np.random.default_rng(3)
    first = rng.random(labels.size) < 0.3
    n_first = int(first.sum())
    for budget in (20, n_first - 5, n_first + 40):
        rows = capped_epoch_rows(labels, 30, np.random.default_rng(1), budget, first)
        assert rows.size == budget and np.unique(rows).size == budget
        assert first[rows].sum() == min(budget, n_first), budget
        counts = np.bincount(labels[rows][first[rows]], minlength=sizes.size)
        if budget < n_first:  # among the first rows: every identity's first before seconds
            avail = np.bincount(labels[first], minlength=sizes.size)
            short = counts < np.minimum(avail, 30)
            assert counts.max() - counts[short].min() <= 1
    plain = capped_epoch_rows(labels, 30, np.random.default_rng(1))
    same = capped_epoch_rows(labels, 30, np.random.default_rng(1), None, first)
    assert np.array_equal(plain, same)


def test_hard_rows_are_those_cosine_decides_wrongly_or_nearly():
    """A row is hard when one of its scored pairs falls on the wrong side of cosine's cut,
    or within the margin of it; unscored positions (padding, unknown) never count."""
    from cftools.core.clusformer.sequences import hard_rows

    cos = np.array([[1.0, 0.9, 0.1], [1.0, 0.3, 0.7], [1.0, 0.52, 0.1], [1.0, 0.49, 0.1],
                    [1.0, 0.9, 0.45]])
    truth = np.array([[1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 0, 0], [1, 1, 1]], bool)
    use = np.ones_like(truth)
    use[:, 0] = False
    use[4, 2] = False  # an unscored pair cosine gets wrong
    assert hard_rows(cos, use, truth, 0.5, 0.05).tolist() == [False, True, True, True, False]
    assert hard_rows(cos, use, truth, 0.5, 0.0).tolist() == [False, True, False, False, False]


def test_training_stops_when_the_held_out_auc_stops_rising():
    from cftools.core.clusformer.sequences import AUC_RISE, plateaued

    assert not plateaued([0.90], 2)
    assert not plateaued([0.90, 0.91, 0.92], 2)  # still rising
    assert plateaued([0.90, 0.91, 0.905, 0.91], 2)  # two epochs without a rise
    assert not plateaued([0.90, 0.91, 0.905, 0.91 + 2 * AUC_RISE], 2)
    assert plateaued([0.90, 0.90 + AUC_RISE / 2, 0.90], 2)  # a rise under AUC_RISE is noise
    assert not plateaued([0.90, 0.89, 0.88, 0.87], None)  # no patience: never
    # not before `at_least` epochs, whatever the AUC does while the learning rate peaks
    assert not plateaued([0.90, 0.91, 0.905, 0.91], 2, at_least=4)
    assert plateaued([0.90, 0.91, 0.905, 0.91, 0.90], 2, at_least=4)


def _small_run(n: int, seed: int, **cfg):
    import torch

    from cftools.core.clusformer.training import TrainConfig, train

    f, _, data, config = _small_set(n, seed, 40, length=8)
    logs: list = []
    res = train(data, f, config, TrainConfig(batch_size=32, seed=0, **cfg),
                device=torch.device("cpu"), log=logs.append)
    return res, logs


@pytest.mark.slow
def test_an_epoch_reads_the_same_rows_whatever_the_labelled_set_size():
    """At a fixed budget an epoch trains on the same number of centres (so costs the
    same) on a labelled set four times larger."""
    small, _ = _small_run(600, 1, epochs=2, lr=1e-3, epoch_budget=64, patience=None)
    large, _ = _small_run(2400, 2, epochs=2, lr=1e-3, epoch_budget=64, patience=None)
    for res in (small, large):
        assert [h["centres"] for h in res.history] == [64, 64]
    assert large.summary["train_rows"] > 3 * small.summary["train_rows"]
    unbudgeted, _ = _small_run(600, 1, epochs=1, lr=1e-3, epoch_budget=None, patience=None)
    assert unbudgeted.history[0]["centres"] > 64


@pytest.mark.slow
def test_epochs_stop_early_on_a_plateau():
    """A model that cannot learn (learning rate ~0) keeps the untrained held-out AUC:
    training stops once half the epochs are done (the learning rate has fallen by half)
    and `patience` epochs did not rise, keeps epoch 0, and says so."""
    res, logs = _small_run(600, 1, epochs=10, lr=1e-12, patience=2)
    assert len(res.history) == 5
    assert res.summary["stopped_early"] and res.summary["epochs_run"] == 5
    assert res.summary["kept_epoch"] == 0
    assert any("stopped after epoch 5" in m for m in logs)
    res, _ = _small_run(600, 1, epochs=3, lr=1e-12, patience=None)
    assert len(res.history) == 3 and not res.summary["stopped_early"]


def test_epochs_are_scored_on_a_sample_of_held_out_identities_the_thresholds_on_all():
    """With more held-out rows than epoch_val_rows, each epoch's ROC-AUC reads whole
    held-out identities up to that many rows; the kept epoch's link threshold and its
    scores read every held-out row, and the decoders are calibrated as before."""
    import torch

    from cftools.core.clusformer.sequences import scored_positions, split_rows
    from cftools.core.clusformer.training import TrainConfig, _Run
    from cftools.core.runtime.distributed import Dist

    f, y, data, config = _small_set(900, 5, 20)
    cfg = TrainConfig(epochs=2, lr=1e-3, batch_size=64, seed=0, epoch_val_rows=60)
    logs: list = []
    run = _Run(data, f, config, cfg, torch.device("cpu"), Dist(), logs.append, None)
    _, val_rows, val_ids = split_rows(data, cfg.val_fraction, cfg.seed)
    assert val_rows.size > 60
    sampled = data.labels[data.order[val_rows[run.e_rows], 0]]
    assert 40 < run.e_rows.size <= 60  # whole identities of at most 20 rows, up to 60
    held = data.labels[data.order[val_rows, 0]]
    for i in np.unique(sampled):  # whole identities
        assert (sampled == i).sum() == (held == i).sum()
    run.score_cosine_and_epoch_zero()
    assert any(f"each epoch scored on {run.e_rows.size} of the rows" in m for m in logs)
    assert run.epochs(None)
    res = run.finish()
    every = scored_positions(data.mask[val_rows], data.targets[val_rows]).sum()
    assert res.summary["validation"]["model"]["pairs"] == every
    assert res.summary["epochs_run"] == 2 and "infomap" in res.thresholds
    # without a cap (or with one above the held-out rows) every row scores every epoch
    full = _Run(data, f, config, TrainConfig(epochs=1, seed=0, epoch_val_rows=None),
                torch.device("cpu"), Dist(), logs.append, None)
    assert full.e_all and full.e_rows.size == val_rows.size
