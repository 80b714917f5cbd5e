"""cf-train end to end (knn -> seq -> train -> link), resume, DDP, calibration."""

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from cftools.core.metrics import link_scores, roc_auc
from cftools.data.demo import make_demo_features, split_by_identity
from cftools.formats.artifacts import open_artifact
from cftools.formats.features import write_features

# one OpenMP thread per process: on a shared 2-core machine two spinning threads per process
# slowed training ~20x (measured); CF_TEST_THREADS overrides
ENV = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": os.environ.get("CF_TEST_THREADS", "1")}


def _cmd(*args, env=None):
    r = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env or ENV)
    assert r.returncode == 0, f"{args[0]} failed:\n{r.stderr[-3000:]}"
    return r


def _prepare(tmp, name, feats, labels, k, L):
    write_features(tmp / f"{name}.h5", feats, labels=labels)
    _cmd("cftools.commands.knn", str(tmp / f"{name}.h5"), "-o", str(tmp / f"knn{name}.h5"), "-k", str(k),
         "-q")
    _cmd("cftools.commands.seq", str(tmp / f"knn{name}.h5"), "--features", str(tmp / f"{name}.h5"),
         "-o", str(tmp / f"seq{name}.h5"), "-L", str(L), "-q")


def _scored(tmp, links, seq, length=None):
    """Scored positions of a links file; ``length``: the first positions only (a model's L)."""
    with open_artifact(tmp / links, "links") as a, open_artifact(tmp / seq, "sequences") as s:
        p, t, m = a.read("probabilities"), s.read("targets"), s.read("mask")
    length = length or p.shape[1]
    p, t, m = p[:, :length], t[:, :length], m[:, :length].copy()
    use = m & (t >= 0)
    use[:, 0] = False
    return p[use], t[use] == 1


@pytest.mark.slow
def test_end_to_end_model_beats_cosine_on_held_out_identities(tmp_path):
    """knn -> seq -> train -> link through the commands, on a demo set with hard and noisy
    samples; identities of the unlabelled half are never seen in training."""
    f, y = make_demo_features(6000, 32, seed=0, hard_fraction=0.1, noise_fraction=0.05)
    li, ui = split_by_identity(y, 0.5, seed=0)
    _prepare(tmp_path, "L", f[li], y[li], 32, 24)
    _prepare(tmp_path, "U", f[ui], y[ui], 32, 24)
    r = _cmd("cftools.commands.train", str(tmp_path / "seqL.h5"), "--features", str(tmp_path / "L.h5"),
             "-o", str(tmp_path / "model.h5"), "--epochs", "3", "--lr", "1e-3", "--batch-size", "32")
    print("\n".join(x for x in r.stderr.replace("\r", "\n").splitlines()
                    if ("epoch" in x and "loss" in x) or "cosine" in x))
    assert "raw cosine: ROC-AUC" in r.stderr and "calibrated link threshold" in r.stderr
    with open_artifact(tmp_path / "model.h5", "model") as m:
        summary = m.json_attr("training")
        thresholds = m.json_attr("thresholds")
    val = summary["validation"]
    assert val["model"]["roc_auc"] > val["cosine"]["roc_auc"]
    assert 0 < thresholds["link"] < 1
    assert len(thresholds) > 1, thresholds  # the decoders' thresholds beside the link's
    for method in ("model", "cosine"):
        extra = ["--model", str(tmp_path / "model.h5")] if method == "model" else []
        # --method model: the model's links even where cf-train's guard preferred cosine
        # ones (the default, --method auto, would then write cosine links)
        _cmd("cftools.commands.link", str(tmp_path / "seqU.h5"), "--features", str(tmp_path / "U.h5"),
             "-o", str(tmp_path / f"links_{method}.h5"), "--method", method, "-q", *extra)
    pm, truth = _scored(tmp_path, "links_model.h5", "seqU.h5")
    # the model reads the L its -L auto chose; cosine over the same positions
    pc, truth_c = _scored(tmp_path, "links_cosine.h5", "seqU.h5",
                          length=summary["length_selection"]["length"])
    assert (truth == truth_c).all()
    auc_m, auc_c = roc_auc(pm, truth), roc_auc(pc, truth)
    print(f"unlabelled half: ROC-AUC model {auc_m:.4f} cosine {auc_c:.4f}")
    assert auc_m > auc_c
    # the threshold calibrated on held-out labelled identities transfers
    assert link_scores(pm, truth, thresholds["link"])["f1"] > 0.8


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny")
    f, y = make_demo_features(800, 16, seed=5)
    _prepare(tmp, "T", f, y, 12, 8)
    return tmp


TINY = ["--width", "32", "--ffn", "64", "--batch-size", "32", "--lr", "1e-3", "-q"]


def _weights(path):
    with h5py.File(path) as f:
        return {k: f["weights"][k][()] for k in f["weights"]}


@pytest.mark.slow
def test_resume_gives_the_same_weights(tiny):
    base = ["cftools.commands.train", str(tiny / "seqT.h5"), "--features", str(tiny / "T.h5"),
            "--epochs", "3", *TINY]
    _cmd(*base, "-o", str(tiny / "full.h5"))
    r = _cmd(*base, "-o", str(tiny / "part.h5"), "--stop-after-epoch", "2",
             "--checkpoint", str(tiny / "part.ckpt"))
    assert not (tiny / "part.h5").exists() and (tiny / "part.ckpt").exists()
    # a changed training option is refused, named, and leaves no model
    changed = [a if a != "1e-3" else "2e-3" for a in base]
    r = subprocess.run([sys.executable, "-m", *changed, "-o", str(tiny / "resumed.h5"),
                        "--checkpoint", str(tiny / "part.ckpt"), "--resume"],
                       capture_output=True, text=True, env=ENV)
    assert r.returncode == 1 and "--lr" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tiny / "resumed.h5").exists()
    _cmd(*base, "-o", str(tiny / "resumed.h5"), "--checkpoint", str(tiny / "part.ckpt"),
         "--resume")
    full, resumed = _weights(tiny / "full.h5"), _weights(tiny / "resumed.h5")
    assert full.keys() == resumed.keys()
    for k in full:
        assert np.array_equal(full[k], resumed[k]), k
    with open_artifact(tiny / "full.h5", "model") as a, open_artifact(tiny / "resumed.h5", "model") as b:
        assert a.json_attr("thresholds") == b.json_attr("thresholds")


@pytest.fixture(scope="module")
def crowded(tiny):
    """A model of ``tiny`` trained with --distractors, --decoders peaks and
    --pseudo-threshold (one training for the tests that read it)."""
    f, _ = make_demo_features(300, 16, seed=9)
    write_features(tiny / "D.h5", f)
    _cmd("cftools.commands.train", str(tiny / "seqT.h5"), "--features", str(tiny / "T.h5"),
         "--epochs", "2", *TINY, "-o", str(tiny / "crowded.h5"), "--distractors",
         str(tiny / "D.h5"), "--decoders", "peaks", "--pseudo-threshold")
    with open_artifact(tiny / "crowded.h5", "model") as m:
        return m.json_attr("thresholds"), m.json_attr("training")


@pytest.mark.slow
def test_the_guard_judges_among_the_distractors_given(tiny, crowded):
    """--distractors: the guard decodes the held-out identities' neighbourhood among the
    labelled points and these, searched together, and records how many of its rows they
    are; features of another width are refused before training, in one line naming the
    file."""
    f, _ = make_demo_features(300, 16, seed=9)
    args = ["cftools.commands.train", str(tiny / "seqT.h5"), "--features", str(tiny / "T.h5"),
            "--epochs", "2", *TINY]
    g = crowded[1]["guard"]
    assert g["held_out"] < g["points"] < 800 + 300 and 0 < g["distractors"] < 300, g
    write_features(tiny / "narrow.h5", f[:, :8] / np.linalg.norm(f[:, :8], axis=1, keepdims=True))
    r = subprocess.run([sys.executable, "-m", *args, "-o", str(tiny / "refused.h5"),
                        "--distractors", str(tiny / "narrow.h5")],
                       capture_output=True, text=True, env=ENV)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "narrow.h5" in r.stderr and "8-dimensional" in r.stderr, r.stderr
    assert not (tiny / "refused.h5").exists()
    r = _cmd(*args, "-o", str(tiny / "unjudged.h5"), "--distractors", str(tiny / "D.h5"),
             "--val-fraction", "0", "--pseudo-threshold")
    assert "--distractors unused" in r.stderr, r.stderr
    # nothing held out to measure precision on: the pseudo-labels keep the calibrated cut
    with open_artifact(tiny / "unjudged.h5", "model") as m:
        t, summary = m.json_attr("thresholds"), m.json_attr("training")["pseudo_labels"]
    mode = t["link_mode_infomap"]
    assert t["pseudo_infomap"] == t["infomap" if mode == "reciprocal" else f"{mode}_infomap"]
    assert summary["precision"] is None and summary["threshold"] == summary["calibrated"]


@pytest.mark.slow
def test_the_pseudo_label_threshold_is_chosen_on_the_crowded_jury(tiny, crowded):
    """--pseudo-threshold: the winner's links carry pseudo_infomap, at or above their
    calibrated Infomap threshold, and the training summary what the jury measured there;
    without --distractors, on a labelled set whose every label is known, it is a usage
    error, before any training."""
    thresholds, training = crowded
    found = training["pseudo_labels"]
    stored = thresholds if training["guard"]["winner"] == "model" \
        else training["cosine_thresholds"]
    mode = stored["link_mode_infomap"]
    calibrated = stored["infomap" if mode == "reciprocal" else f"{mode}_infomap"]
    assert stored["pseudo_infomap"] == found["threshold"] >= calibrated == found["calibrated"]
    assert found["mode"] == mode and found["decoder"] == "infomap"
    assert 0 <= found["precision_at_calibrated"] <= 1 and 0 <= found["precision"] <= 1
    other = training["cosine_thresholds"] if stored is thresholds else thresholds
    assert "pseudo_infomap" not in other
    r = subprocess.run([sys.executable, "-m", "cftools.commands.train", str(tiny / "seqT.h5"),
                        "--features", str(tiny / "T.h5"), *TINY, "-o", str(tiny / "np.h5"),
                        "--pseudo-threshold"], capture_output=True, text=True, env=ENV)
    assert r.returncode == 2 and "--distractors" in r.stderr, r.stderr
    assert not (tiny / "np.h5").exists()


@pytest.mark.slow
def test_the_labelled_sets_unknown_points_crowd_the_pseudo_label_jury(tiny):
    """--pseudo-threshold without --distractors, on a labelled set that holds points of
    unknown label (the round's second pass trains on all of D_U, pseudo-labelled in part): precision is
    measured among them, and the threshold is stored as with --distractors."""
    with open_artifact(tiny / "T.h5", "features") as t:
        labels = t.read("labels")
    ids = np.unique(labels)
    unknown = np.where(np.isin(labels, ids[::3]), -1, labels)  # a third of the identities
    np.save(tiny / "partial.npy", unknown)
    r = _cmd("cftools.commands.train", str(tiny / "seqT.h5"), "--features", str(tiny / "T.h5"),
             "--labels", str(tiny / "partial.npy"), "--epochs", "2", *TINY[:-1],
             "-o", str(tiny / "partial.h5"), "--pseudo-threshold")
    assert "pseudo-labels:" in r.stderr and "--distractors" not in r.stderr, r.stderr
    with open_artifact(tiny / "partial.h5", "model") as m:
        thresholds, training = m.json_attr("thresholds"), m.json_attr("training")
    found = training["pseudo_labels"]
    assert 0 <= found["precision"] <= 1 and found["threshold"] >= found["calibrated"]
    stored = thresholds if training["guard"]["winner"] == "model" \
        else training["cosine_thresholds"]
    assert stored["pseudo_infomap"] == found["threshold"]


@pytest.mark.slow
def test_only_the_decoders_asked_and_the_guards_are_calibrated(tiny, crowded):
    """--decoders peaks: the model's thresholds, cosine links' and the gate cover peaks and
    Infomap (the guard decodes with it), no other decoder; an unknown name is a usage
    error."""
    args = ["cftools.commands.train", str(tiny / "seqT.h5"), "--features", str(tiny / "T.h5"),
            "--epochs", "2", *TINY]
    thresholds, training = crowded
    for found in (thresholds, training["cosine_thresholds"]):
        modes = {k[len("link_mode_"):] for k in found if k.startswith("link_mode_")}
        assert modes == {"peaks", "infomap"}, found
        assert not any(k.endswith(("intimacy", "components", "propagation")) for k in found)
    assert set(training["gate"]) <= {"peaks", "infomap"} and "infomap" in training["gate"]
    r = subprocess.run([sys.executable, "-m", *args, "-o", str(tiny / "bad.h5"),
                        "--decoders", "infomap,louvain"], capture_output=True, text=True, env=ENV)
    assert r.returncode == 2 and "louvain" in r.stderr, r.stderr
    assert not (tiny / "bad.h5").exists()


@pytest.mark.slow
def test_torchrun_two_processes_trains_as_well_as_one(tiny):
    args = [str(tiny / "seqT.h5"), "--features", str(tiny / "T.h5"), "--epochs", "3",
            "--patience", "0", "--dropout", "0", "--no-bf16", *TINY]
    env = {**ENV, "OMP_NUM_THREADS": "1"}
    _cmd("cftools.commands.train", *args, "-o", str(tiny / "single.h5"), env=env)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node=2", "-m", "cftools.commands.train", *args,
                        "-o", str(tiny / "ddp.h5")], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    with open_artifact(tiny / "single.h5", "model") as a, open_artifact(tiny / "ddp.h5", "model") as b:
        sa, sb = a.json_attr("training"), b.json_attr("training")
    assert sb["world_size"] == 2 and sa["world_size"] == 1
    auc_a = sa["validation"]["model"]["roc_auc"]
    auc_b = sb["validation"]["model"]["roc_auc"]
    assert abs(auc_a - auc_b) < 0.01, (auc_a, auc_b)
    # the whole loss is recorded, not rank 0's share of it (#28, case 23)
    loss_a = [h["loss"] for h in sa["history"]]
    loss_b = [h["loss"] for h in sb["history"]]
    assert len(loss_a) == len(loss_b) == 3
    # (before the fix rank 0 recorded about half). The epochs' means still differ by up to
    # 6% between one process and two, even with the weights held still (--lr 1e-12): not
    # explained yet, so only the scale is checked here
    assert np.allclose(loss_a, loss_b, rtol=0.1), (loss_a, loss_b)
    # same global batches and a loss normalised over both ranks: nearly the same weights
    wa, wb = _weights(tiny / "single.h5"), _weights(tiny / "ddp.h5")
    worst = max(float(np.abs(wa[k] - wb[k]).max()) for k in wa)
    assert worst < 1e-3, worst


@pytest.mark.slow
def test_undefined_validation_is_refused(tmp_path):
    """Held-out identities whose links are all of one kind leave ROC-AUC, the kept epoch and
    the link threshold undefined: cf-train refuses in one line and writes no model."""
    rng = np.random.default_rng(0)
    centres = np.eye(16, dtype=np.float32)[:4]  # orthogonal identities: every neighbour agrees
    f = np.repeat(centres, 20, axis=0) + 0.01 * rng.standard_normal((80, 16)).astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    _prepare(tmp_path, "S", f, np.repeat(np.arange(4), 20), 6, 6)
    r = subprocess.run([sys.executable, "-m", "cftools.commands.train", str(tmp_path / "seqS.h5"),
                        "--features", str(tmp_path / "S.h5"), "-o", str(tmp_path / "m.h5"),
                        "--epochs", "1", "-q"], capture_output=True, text=True)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "validation is undefined" in lines[0] and "0 other-identity links" in lines[0]
    assert "seqS.h5" in lines[0]
    assert not (tmp_path / "m.h5").exists()


def _judged(monkeypatch, good_length: int, cosine_length: int):
    """cf-train's jury and guard over two trained lengths (21, 31), the model at
    ``good_length`` linking perfectly and the other guessing, with cosine's own length
    choice ``cosine_length``: the model's training summary."""
    from cftools.core.clusformer import inference
    from cftools.core.clusformer.judge import judge
    from cftools.core.clusformer.sequences import SequenceData
    from cftools.core.clusformer.training import TrainConfig, TrainResult
    from cftools.core.neighbours.index import knn

    f, y = make_demo_features(600, 16, seed=3)
    order = knn(f, 32)[0].astype(np.int64)
    mask = order >= 0
    same = (y[order] == y[order[:, :1]]) & mask
    data = SequenceData(order, mask, np.where(same, 1, 0).astype(np.int8), y)

    def fake_predict(model, features, o, m, **kw):
        if model == "good":  # the truth, wherever the rows and length
            return ((y[o] == y[o[:, :1]]) & m).astype(np.float32)
        return np.random.default_rng(o.shape[1]).random(o.shape).astype(np.float32) * m

    monkeypatch.setattr(inference, "predict", fake_predict)
    from cftools.core.calibration import guard as guard_module

    monkeypatch.setattr(guard_module, "GUARD_MIN_IDENTITIES", 0)  # a small set's jury
    t = {"infomap": 0.5, "link_mode_infomap": "directed", "directed_infomap": 0.5}
    results = {n: TrainResult("good" if n == good_length else "guess", dict(t), {"seconds": 1.0})
               for n in (21, 31)}
    result = judge(results, data, f, {"length": cosine_length}, TrainConfig(), lambda m: None)
    assert result is results[good_length]
    return result.summary


def test_the_model_length_and_cosine_length_are_chosen_apart(monkeypatch):
    """The model's length is the one whose model the jury scores best, whatever length
    cosine links chose; the guard links cosine at cosine's own length, whatever length the
    model chose; the jury's scores of the models do not move with cosine's length."""
    seen = {}
    for good in (21, 31):
        for cos_len in (11, 21):
            s = _judged(monkeypatch, good, cos_len)
            sel, verdict = s["length_selection"], s["guard"]
            assert sel["length"] == good and sel["candidates"] == [21, 31]
            assert sel["cosine"] == {"length": cos_len}
            assert (verdict["model_length"], verdict["cosine_length"]) == (good, cos_len)
            assert verdict["winner"] == "model"  # perfect links beat cosine's
            # no trained model had them: cosine's thresholds calibrated at cosine's length
            assert s["cosine_thresholds"]["link_mode_infomap"] == "directed"
            seen[good, cos_len] = sel["jury"]
    assert seen[21, 11] == seen[21, 21] and seen[31, 11] == seen[31, 21]
