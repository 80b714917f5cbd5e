"""core.recognition: the backbone, the ArcFace head, the backbone's model file (never
unpickled), and the identification and verification scores of a features file."""

from __future__ import annotations

import json
import math
import pickle

import h5py
import numpy as np
import pytest
import torch
from conftest import run_cmd, unit_rows

from cftools.core.recognition.arcface import ArcFace
from cftools.core.recognition.backbone import (
    Backbone,
    BackboneConfig,
    load_backbone,
    save_backbone,
)
from cftools.core.recognition.identification import (
    identification_split,
    recognition,
    top1_identification,
    verification,
)
from cftools.errors import CfError

# --------------------------------------------------------------------------- backbone


@pytest.mark.parametrize("depth,size", [(18, 16), (34, 40), (50, 112), (18, 224)])
def test_backbone_embeds_any_size(depth, size):
    cfg = BackboneConfig(depth=depth, width=4, dim=24, image_size=size)
    m = Backbone(cfg).eval()
    with torch.no_grad():
        y = m(torch.randn(2, 3, size, size))
    assert y.shape == (2, 24) and torch.isfinite(y).all()
    blocks = [type(b).__name__ for b in m.stages[0]]
    assert blocks[0] == ("Bottleneck" if depth == 50 else "BasicBlock")
    assert sum(len(s) for s in m.stages) == {18: 8, 34: 16, 50: 16}[depth]


def test_backbone_rejects_unknown_depth():
    with pytest.raises(CfError, match="depth"):
        BackboneConfig(depth=20)


# --------------------------------------------------------------------------- ArcFace


def test_arcface_margin_on_target_only_with_threshold_rule():
    head = ArcFace(2, 3, s=10.0, m=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    angles = torch.tensor([0.3, 1.2, 3.0])  # the last one: theta + m > pi
    emb = torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    labels = torch.tensor([0, 0, 0])
    logits, cosine = head(emb, labels)
    assert torch.allclose(cosine[:, 0], torch.cos(angles), atol=1e-6)
    for i, t in enumerate(angles.tolist()):
        want = math.cos(t + 0.5) if math.cos(t) > math.cos(math.pi - 0.5) else \
            math.cos(t) - math.sin(math.pi - 0.5) * 0.5
        assert logits[i, 0].item() == pytest.approx(10 * want, abs=1e-4)
    assert torch.allclose(logits[:, 1:], 10 * cosine[:, 1:])  # other classes: no margin
    easy = ArcFace(2, 3, s=10.0, m=0.5, easy_margin=True)
    easy.weight.data.copy_(head.weight.data)
    logits, _ = easy(emb, labels)
    assert logits[2, 0].item() == pytest.approx(10 * math.cos(3.0), abs=1e-4)  # cos < 0: none
    assert logits[0, 0].item() == pytest.approx(10 * math.cos(0.8), abs=1e-4)


# --------------------------------------------------------------------------- model file


@pytest.fixture()
def model_file(tmp_path):
    torch.manual_seed(0)
    m = Backbone(BackboneConfig(depth=18, width=4, dim=8, image_size=16)).eval()
    path = tmp_path / "m.h5"
    save_backbone(path, m)
    return path, m


def test_model_file_round_trip(model_file):
    path, m = model_file
    loaded, cfg, art = load_backbone(path)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))
    assert cfg.dim == 8 and cfg.image_size == 16 and cfg.mean == [0.5, 0.5, 0.5]
    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["config"])
        assert f.attrs["cftools_kind"] == "model" and config["arch"] == "resnet-backbone"
        assert config["depth"] == 18 and config["width"] == 4 and "std" in config


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


@pytest.mark.parametrize("damage,message", [
    ("pickle", "non-numeric dtype"),
    ("pickle-str", "non-numeric dtype"),
    ("missing", "lack"),
    ("extra", "model does not have"),
    ("shape", "shape"),
    ("nan", "NaN"),
    ("arch", "arch"),
    ("truncated", "truncated|corrupt|not an HDF5"),
    ("whole-pickle", "not an HDF5"),
])
def test_model_file_damage_refused_in_one_line(model_file, damage, message):
    path, _ = model_file
    name = "fc.weight"
    blob = pickle.dumps({"weights": np.zeros(3)})
    if damage == "pickle":
        def fn(f):
            del f["weights"][name]
            f["weights"][name] = np.void(blob)
        _edit(path, fn)
    elif damage == "pickle-str":
        def fn(f):
            del f["weights"][name]
            f["weights"].create_dataset(name, data=blob.hex())
        _edit(path, fn)
    elif damage == "missing":
        _edit(path, lambda f: f["weights"].__delitem__(name))
    elif damage == "extra":
        _edit(path, lambda f: f["weights"].create_dataset("evil.weight", data=np.zeros(2)))
    elif damage == "shape":
        def fn(f):
            del f["weights"][name]
            f["weights"][name] = np.zeros((3, 3), np.float32)
        _edit(path, fn)
    elif damage == "nan":
        def fn(f):
            f["weights"][name][0, 0] = np.nan
        _edit(path, fn)
    elif damage == "arch":
        def fn(f):
            f.attrs["config"] = json.dumps({"arch": "clusformer"})
        _edit(path, fn)
    elif damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "whole-pickle":
        path.write_bytes(blob)
    with pytest.raises(CfError, match=message) as info:
        load_backbone(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    if damage not in ("pickle", "truncated"):
        return
    # the command says the same in one line on stderr, exit status 1
    r = run_cmd("embed", "extract", path, path.parent, "-o", path.parent / "o.h5")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "error:" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- identification


def test_identification_split_and_top1():
    labels = np.array([0, 0, 0, 1, 1, 2, -1, 3])
    mates, probes, singles = identification_split(labels)
    assert mates.tolist() == [0, 3] and probes.tolist() == [1, 2, 4] and singles.tolist() == [5, 7]
    e = np.eye(4, dtype=np.float32)
    feats = np.stack([e[0], e[0], e[1], e[2], e[2], e[1], e[3], e[3]])
    r = top1_identification(feats, labels)
    # probe 1 -> gallery 0 (right); probe 2 = e1 -> distractor 5 (wrong); probe 4 -> 3 (right)
    assert r["probes"] == 3 and r["gallery"] == 4 and r["distractors"] == 2
    assert r["top1"] == pytest.approx(2 / 3) and r["unknown"] == 1
    # a distractor closer than the true mate takes the probe away
    r = top1_identification(feats, labels, distractors=np.array([[1, 0.01, 0, 0]], np.float32))
    assert r["distractors"] == 3 and r["top1"] == pytest.approx(2 / 3)


def test_verification_tar_at_far_and_auc_against_brute_force():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(40), 4)
    x = rng.normal(size=(160, 8)) + 1.5 * rng.normal(size=(40, 8))[y]
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    y = y.copy()
    y[::17] = -1  # unknown rows take no part
    r = verification(x, y, fars=(1e-3, 1e-2, 0.1), batch_size=7)
    keep = np.flatnonzero(y >= 0)
    s = (x[keep] @ x[keep].T)[np.triu_indices(len(keep), 1)]
    same = (y[keep][:, None] == y[keep][None])[np.triu_indices(len(keep), 1)]
    gen, imp = s[same], s[~same]
    assert r["genuine_pairs"] == gen.size and r["impostor_pairs"] == imp.size
    assert r["auc"] == pytest.approx(roc_auc_score(same, s), abs=1e-9)
    for f in (1e-3, 1e-2, 0.1):
        tar = r["tar_at_far"][f"{f:g}"]
        # the threshold lets through at most f of the impostors, and TAR is what passes it
        allowed = int(np.floor(f * imp.size))
        threshold = np.sort(imp)[imp.size - allowed - 1]
        assert (imp > threshold).sum() <= allowed
        assert tar == pytest.approx((gen > threshold).mean())
    # a FAR finer than one impostor pair cannot be resolved
    small = verification(x[:12], np.repeat(np.arange(3), 4), fars=(1e-3,))
    assert small["tar_at_far"] == {"0.001": None}
    full = recognition(x, y)
    assert 0 <= full["top1"] <= 1 and full["verification"]["auc"] == r["auc"]


def test_expected_top1_is_the_mean_over_every_gallery_draw():
    import itertools

    from cftools.core.recognition.identification import top1_expected

    for seed in range(3):
        y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4])  # 3 and 4: single-image distractors
        rng = np.random.default_rng(seed)
        x = unit_rows(11, 4, seed=seed) + rng.normal(size=(5, 4))[y]
        x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
        groups = [np.flatnonzero(y == c) for c in range(5)]
        singles = [g[0] for g in groups if len(g) == 1]
        hits = []
        for choice in itertools.product(*[g for g in groups if len(g) >= 2]):
            gallery = list(choice) + singles
            gal_y = np.array([y[i] if len(groups[y[i]]) >= 2 else -1 for i in gallery])
            hits += [gal_y[np.argmax(x[gallery] @ x[p])] == y[p] for p in range(11)
                     if p not in gallery and len(groups[y[p]]) >= 2]
        r = top1_expected(x, y)
        assert r["top1"] == pytest.approx(np.mean(hits)) and r["probes"] == 6
