"""core.clusformer.training: the held-out identities of the validation split never reach
training, and the decoders' thresholds are calibrated on all of D_L or on whole identities
up to a cap."""

import numpy as np

from cftools.data.demo import make_demo_features


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
    assert abs(val_ids.size - 0.25 * ids.size) <= 1
    order, mask, targets = training_view(data, train_rows, val_ids)
    seen = y[order][mask]
    assert not np.isin(seen, val_ids).any()
    assert (targets[~mask] == -1).all()
    # same seed, same split
    assert np.array_equal(split_rows(data, 0.25, seed=1)[2], val_ids)


def test_decoder_thresholds_calibrated_on_all_of_dl_or_a_subset_of_identities():
    """The decoders' thresholds come from the whole labelled set (both link modes); past
    calibration_points rows, from whole identities holding up to that many."""
    import torch

    from cftools.core.clusformer.grammar import build_sequences
    from cftools.core.clusformer.model import make_config
    from cftools.core.clusformer.sequences import SequenceData
    from cftools.core.clusformer.training import TrainConfig, train
    from cftools.core.clusformer.training import (
        calibrate_decoders as decoding_thresholds,
    )
    from cftools.core.decoding.decoders import DECODERS
    from cftools.core.neighbours.index import knn
    from cftools.formats.thresholds import LINK_MODES, threshold_key

    torch.set_num_threads(1)
    f, y = make_demo_features(800, 16, seed=4, max_size=40)
    idx, sim = knn(f, 10)
    data = SequenceData(*build_sequences(idx, sim, 10, labels=y), y)
    config = make_config("small", 16, 10, width=16, heads=2, encoder_layers=1,
                         decoder_layers=1, ffn=32)
    logs = []
    res = train(data, f, config, TrainConfig(epochs=1, lr=1e-3, batch_size=64, seed=0),
                device=torch.device("cpu"), log=logs.append)
    for mode in LINK_MODES:
        for name in DECODERS:
            assert threshold_key(name, mode) in res.thresholds, (mode, name)
    assert not any("calibrating the decoders on" in m for m in logs)  # 800 rows: all of them
    logs.clear()
    ft = torch.from_numpy(f)
    sub, cosine = decoding_thresholds(data, res.model, ft, None, logs.append, max_points=300,
                                      seed=0)
    note = [m for m in logs if "calibrating the decoders on" in m]
    assert len(note) == 1, logs
    used = int(note[0].split(" on ")[1].split(" of ")[0])
    assert 300 - 40 < used <= 300  # whole identities (at most 40 points each), up to the cap
    assert set(sub) == {k for k in res.thresholds if k != "link"}
    # the cosine links' thresholds, for cf-link's cosine links: directed only
    assert set(cosine) == {k for k in sub if k.startswith(("directed_", "link_mode_"))}
    assert all(cosine[f"link_mode_{name}"] == "directed" for name in DECODERS)
