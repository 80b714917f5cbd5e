"""Recognition as the round's final score: the demo's test identities, verification,
step-matched training, and the report's arithmetic (cf-eval report)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import run_cmd, unit_rows

from cftools.commands.eval.report import collect, gain_recovered, markdown, recovered
from cftools.core.recognition.identification import recognition, verification
from cftools.core.recognition.training import steps_of
from cftools.data.demo_images import make_demo


def _tree(root: Path, part: str) -> dict:
    return {str(p.relative_to(root / part)): p.read_bytes()
            for p in sorted((root / part).rglob("*.png"))}


def test_demo_test_identities_are_in_neither_d_l_nor_d_u(tmp_path):
    with_test, without = tmp_path / "a", tmp_path / "b"
    summary = make_demo(with_test, identities=10, image_size=12, seed=3, mean_images=3,
                        test_identities=4)
    make_demo(without, identities=10, image_size=12, seed=3, mean_images=3, test_identities=0)
    ids = {part: {p.name for p in (with_test / part).iterdir()}
           for part in ("labelled", "unlabelled", "test")}
    assert len(ids["test"]) == 4 == summary["test_identities"]
    assert not ids["test"] & ids["labelled"] and not ids["test"] & ids["unlabelled"]
    assert sorted(int(i) for i in ids["test"]) == [10, 11, 12, 13]  # ids after the others'
    assert summary["test_images"] == len(list((with_test / "test").rglob("*.png")))
    # the test part is drawn beside D_L and D_U, which stay what they were without it
    assert not (without / "test").exists()
    for part in ("labelled", "unlabelled"):
        assert _tree(with_test, part) == _tree(without, part)
    # and its images are no copies of any D_L or D_U image
    seen = set(_tree(with_test, "labelled").values()) | set(_tree(with_test, "unlabelled").values())
    assert not seen & set(_tree(with_test, "test").values())
    # by default a fifth as many test identities, at least 2
    assert make_demo(tmp_path / "c", identities=6, image_size=8, mean_images=1)[
        "test_identities"] == 2


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


def test_gain_recovered_arithmetic():
    assert gain_recovered(0.634, 0.607, 0.699) == pytest.approx(0.027 / 0.092)
    assert gain_recovered(0.699, 0.607, 0.699) == pytest.approx(1.0)
    assert gain_recovered(0.607, 0.607, 0.699) == 0.0
    assert gain_recovered(0.5, 0.6, 0.7) == pytest.approx(-1.0)  # worse than the baseline
    assert gain_recovered(0.5, 0.6, 0.6) is None  # no gain to recover: undefined
    assert gain_recovered(0.5, 0.7, 0.6) is None
    assert gain_recovered(None, 0.6, 0.7) is None


def _rec(top1, tar):
    return {"top1": top1, "probes": 10,
            "verification": {"tar_at_far": {"0.001": tar, "0.01": None}, "auc": 0.9}}


def test_report_reads_a_work_folder_and_computes_the_shares(tmp_path):
    work = tmp_path / "work"
    for folder, top1, tar, fp in (("round1", 0.55, 0.30, 0.70), ("round2", 0.634, 0.40, 0.80),
                                  ("baseline", 0.607, 0.35, None), ("upper-bound", 0.699, 0.45, None)):
        (work / folder).mkdir(parents=True)
        if fp is None:
            (work / folder / "recognition.json").write_text(json.dumps(_rec(top1, tar)))
        else:
            (work / folder / "eval.json").write_text(json.dumps(
                {"pairwise_f": fp, "bcubed_f": fp - 0.1, "recognition": _rec(top1, tar)}))
    (work / "round10").mkdir()  # an unscored round is left out; rounds sort by number
    rows = collect(work)
    assert [r["name"] for r in rows] == ["round 1", "round 2", "baseline", "upper bound"]
    shares = {s["name"]: s for s in recovered(rows)}
    assert shares["round 2"]["top1"] == pytest.approx((0.634 - 0.607) / (0.699 - 0.607))
    assert shares["round 2"]["tar_at_far"]["0.001"] == pytest.approx(0.5)
    assert shares["round 1"]["tar_at_far"]["0.001"] == pytest.approx(-0.5)
    assert shares["round 2"]["tar_at_far"]["0.01"] is None
    text = markdown(rows, list(shares.values()))
    assert "| round 2 | D_L + round-1 pseudo-labels | - | 80.0 | 70.0 | 63.4 | 40.0 | - |" in text
    assert "| round 2 | 29% | 50% | - |" in text

    png = tmp_path / "report.png"
    r = run_cmd("eval", "report", work, "--png", png)
    assert r.returncode == 0, r.stderr
    assert r.stdout == text and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # without the references: the rounds alone, and a hint on stderr
    for folder in ("baseline", "upper-bound"):
        (work / folder / "recognition.json").unlink()
    r = run_cmd("eval", "report", work)
    assert r.returncode == 0 and "baseline" not in r.stdout and "Share" not in r.stdout
    assert "make baseline upper-bound" in r.stderr
    # with leave-one-out top-1 scored: a column of its own, and its share
    rows[1]["top1_loo"], rows[2]["top1_loo"], rows[3]["top1_loo"] = 0.7, 0.6, 0.8
    text = markdown(rows, recovered(rows))
    assert "| round 2 | D_L + round-1 pseudo-labels | - | 80.0 | 70.0 | 63.4 | 70.0 | 40.0 | - |" in text
    assert "| round 2 | 29% | 50% | 50% | - |" in text
    rows[1]["top1_e"], rows[2]["top1_e"], rows[3]["top1_e"] = 0.65, 0.6, 0.7
    text = markdown(rows, recovered(rows))
    assert "| round 2 | D_L + round-1 pseudo-labels | - | 80.0 | 70.0 | 63.4 | 65.0 | 70.0 | 40.0 | - |" in text
    assert "| round 2 | 29% | 50% | 50% | 50% | - |" in text


def test_identify_writes_verification_and_clusters_attach_it(tmp_path):
    from cftools.formats.features import write_features

    x = unit_rows(60, 8, seed=2)
    y = np.repeat(np.arange(15), 4)
    feats = tmp_path / "t.h5"
    write_features(feats, x, labels=y)
    out = tmp_path / "rec.json"
    r = run_cmd("eval", "identify", feats, "-o", out, "--far", "0.01,0.1", "-q")
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    assert set(rec["verification"]["tar_at_far"]) == {"0.01", "0.1"} and rec["probes"] == 45
    # leave-one-out: every image a probe against all the others
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    assert rec["leave_one_out"] == {"top1": float((y[s.argmax(1)] == y).mean()), "probes": 60}
    assert rec["expected"]["probes"] == 45 and 0 <= rec["expected"]["top1"] <= 1
    write_features(tmp_path / "c.h5", x, labels=y)
    clusters = tmp_path / "labels.npy"
    np.save(clusters, y)
    r = run_cmd("eval", clusters, "--truth", feats, "--json", "-q",
                "--attach", f"recognition={out}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["recognition"] == rec


def _tiny_demo(tmp_path):
    """A 6-identity demo of 12-pixel images, cf-embed train's arguments for a tiny backbone
    on it, and the environment to run it in: (folder, args, env)."""
    demo = tmp_path / "demo"
    make_demo(demo, identities=6, image_size=12, seed=1, mean_images=5, test_identities=0)
    args = ["--width", "4", "--dim", "8", "--image-size", "12", "--batch-size", "4",
            "--workers", "0", "--epochs", "2", "-q"]
    return demo, args, {"OMP_NUM_THREADS": "1"}


def test_train_steps_and_match_steps(tmp_path):
    demo, args, env = _tiny_demo(tmp_path)
    model = tmp_path / "m.h5"
    r = run_cmd("embed", "train", demo / "labelled", "-o", model, "--steps", "5", *args, env=env)
    assert r.returncode == 0, r.stderr
    with h5py.File(model, "r") as f:
        cfg = json.loads(f.attrs["config"])
    assert cfg["steps"] == 5 == sum(h["steps"] for h in cfg["history"])
    # as many steps as 2 epochs over D_L + D_U would take, trained on D_L alone
    both = tmp_path / "both.h5"
    r = run_cmd("embed", "train", demo / "labelled", demo / "unlabelled", "-o", both, *args, env=env)
    assert r.returncode == 0, r.stderr
    matched = tmp_path / "matched.h5"
    listing = tmp_path / "all.txt"
    n_all = len(list((demo / "labelled").rglob("*.png"))) + len(list((demo / "unlabelled").rglob("*.png")))
    listing.write_text("".join(f"{p}\t{i}\n" for i, p in enumerate(sorted(demo.rglob("*.png")))))
    r = run_cmd("embed", "train", demo / "labelled", "-o", matched, "--match-steps", listing,
                *args, env=env)
    assert r.returncode == 0, r.stderr
    with h5py.File(both, "r") as f:
        cfg_both = json.loads(f.attrs["config"])
    with h5py.File(matched, "r") as f:
        cfg_matched = json.loads(f.attrs["config"])
    assert cfg_both["steps"] == steps_of(n_all, 4, 2) == cfg_matched["steps"]
    assert cfg_both["classes"] == 6  # two folders, one label space each, none merged
    assert cfg_matched["train_images"] == len(list((demo / "labelled").rglob("*.png")))


def test_init_fine_tunes_a_backbone_with_an_imprinted_head(tmp_path):
    import torch

    from cftools.core.recognition.backbone import load_backbone
    from cftools.core.recognition.extraction import extract_features
    from cftools.core.recognition.training import imprint_head

    demo, args, env = _tiny_demo(tmp_path)
    start, tuned = tmp_path / "start.h5", tmp_path / "tuned.h5"
    assert run_cmd("embed", "train", demo / "labelled", "-o", start, "--steps", "3", *args,
                   env=env).returncode == 0
    r = run_cmd("embed", "train", demo / "unlabelled", "--init", start, "-o", tuned,
                "--steps", "4", *args, env=env)
    assert r.returncode == 0, r.stderr
    with h5py.File(tuned, "r") as f:
        cfg = json.loads(f.attrs["config"])
        prov = json.loads(f.attrs["cftools_provenance"])
    # this run's steps, and the steps from random weights that the report counts
    assert cfg["steps"] == 4 and cfg["total_steps"] == 7 and cfg["init"] == str(start)
    assert "init" in prov[-1]["inputs"]
    # the imprinted head: each class's normalised mean embedding under the start
    model, conf, _ = load_backbone(start)
    paths = sorted(str(p) for p in (demo / "labelled").rglob("*.png"))
    targets = np.array([int(Path(p).parent.name) for p in paths])
    _, targets = np.unique(targets, return_inverse=True)
    w = imprint_head(model, conf, paths, targets, int(targets.max()) + 1,
                     device=torch.device("cpu"))
    feats, _ = extract_features(model, conf, paths)
    for c in range(int(targets.max()) + 1):
        mean = feats[targets == c].mean(0)
        np.testing.assert_allclose(w[c].numpy(), mean / np.linalg.norm(mean), atol=1e-5)
    # a start of another shape is refused in one line, before any training
    r = run_cmd("embed", "train", demo / "labelled", "--init", start, "-o", tmp_path / "x.h5",
                *[a if a != "8" else "16" for a in args], env=env)
    assert r.returncode != 0 and "--dim 8" in r.stderr and not (tmp_path / "x.h5").exists()
