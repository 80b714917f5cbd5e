"""A miniature semi-supervised round, end to end through the real console scripts and the
Makefile: demo images -> backbone -> features -> knn -> seq -> train -> link -> merge ->
eval -> retrain, then round 2 with the retrained backbone, and the recognition of the
held-out test part by each backbone; the test part never reaches training or calibration."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from conftest import REPO

from cftools.formats.artifacts import open_artifact

# whole rounds through make: a couple of minutes in all
pytestmark = pytest.mark.slow

TINY = {
    "DEMO_ARGS": "--identities 16 --image-size 24 --mean-images 6",
    "EMBED_ARGS": "--depth 18 --width 4 --image-size 24 --dim 16 --epochs 1 --workers 0 "
                  "--batch-size 16",
    "TRAIN_EPOCHS": "1", "K": "8", "L": "6",
}


def make_round(work: Path, round_no: int, *targets: str, **extra) -> subprocess.CompletedProcess:
    venv = Path(sys.prefix)
    args = ["make", "-s", "-C", str(REPO), *(targets or ["round"]), f"WORK={work}",
            f"ROUND={round_no}", f"VENV={venv}", "-o", f"{venv}/.installed",  # already set up
            *[f"{k}={v}" for k, v in {**TINY, **extra}.items()]]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(args, capture_output=True, text=True, timeout=900, env=env)


needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@pytest.fixture(scope="module")
def rounds(tmp_path_factory) -> SimpleNamespace:
    """The built-in demo through make, once for the whole module: round 1; round 1 again
    (nothing to redo); round 1 with its model deleted; round 2 with both references and
    the report. A marker identity is planted in the demo's test part before round 1 (the
    test part must never reach training or calibration). Each run's CompletedProcess and
    round 1's file times around the reruns are kept for the tests to read."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    work = tmp_path_factory.mktemp("round") / "work"
    images = make_round(work, 1, str(work / "images" / ".done"))
    assert images.returncode == 0, images.stderr[-3000:]
    first = sorted((work / "images" / "test").iterdir())[0]
    first.rename(first.parent / "zz_marker_identity")
    r1 = work / "round1"

    def times() -> dict:
        return {p.name: p.stat().st_mtime_ns for p in r1.iterdir()}

    one = make_round(work, 1)
    assert one.returncode == 0, one.stderr[-3000:]
    before = times()
    again = make_round(work, 1)
    after_again = times()
    (r1 / "model.h5").unlink()
    redo = make_round(work, 1)
    two = make_round(work, 2, "round", "baseline", "upper-bound")
    report = make_round(work, 2, "report") if two.returncode == 0 else two
    return SimpleNamespace(work=work, images=work / "images", one=one, again=again, redo=redo,
                           two=two, report=report, before=before, after_again=after_again,
                           after_redo=times())


@needs_make
def test_a_miniature_round(rounds):
    one, r1 = rounds.one, rounds.work / "round1"
    for name in ("backbone.h5", "labelled.h5", "unlabelled.h5", "knn_labelled.h5",
                 "seq_unlabelled.h5", "model.h5", "links.h5", "clusters.h5",
                 "pseudo_clusters.h5", "retrain.h5", "retrain.meta"):
        assert (r1 / name).is_file(), name
    with open_artifact(r1 / "clusters.h5", "clusters") as c, \
            open_artifact(r1 / "pseudo_clusters.h5", "clusters") as strict, \
            open_artifact(r1 / "retrain.h5", "features") as t:
        # the retraining labels are the round's clusters, each cut to its core
        assert t.attrs["clusters_id"] == c.id and t.attrs["cores_id"] == strict.id
    metrics = json.loads((r1 / "eval.json").read_text())
    assert 0.0 <= metrics["pairwise_f"] <= 1.0 and metrics["n_points"] > 0
    # beside the clusters, the backbone's recognition of the demo's held-out identities
    rec = metrics["recognition"]
    assert 0.0 <= rec["top1"] <= 1.0 and rec["probes"] > 0 and rec["features"].endswith("test.h5")
    assert set(rec["verification"]["tar_at_far"]) == {"0.001", "0.01"}
    assert "pairwise F" in one.stderr  # the round prints its metrics
    # every step says what it did (progress is on by default), and the round ends with
    # the path of the gallery of D_U's clusters
    for summary in ("cf-knn: wrote", "cf-train: wrote", "cf-merge: wrote", "cf-eval gallery:"):
        assert summary in one.stderr, summary
    gallery = r1 / "gallery" / "index.html"
    assert gallery.is_file() and (r1 / "gallery" / "plots" / "training.png").is_file()
    assert one.stderr.strip().splitlines()[-1].endswith(str(gallery))


@needs_make
def test_make_redoes_nothing_unchanged_and_all_that_follows_a_deleted_step(rounds):
    assert rounds.again.returncode == 0, rounds.again.stderr[-3000:]
    assert rounds.after_again == rounds.before
    assert rounds.redo.returncode == 0, rounds.redo.stderr[-3000:]
    assert "model.h5" in rounds.after_redo
    assert rounds.after_redo["links.h5"] > rounds.before["links.h5"]
    assert rounds.after_redo["backbone.h5"] == rounds.before["backbone.h5"]


@needs_make
def test_round_two_ends_with_every_backbone_s_recognition(rounds):
    two = rounds.two
    assert two.returncode == 0, two.stderr[-3000:]
    assert (rounds.work / "round2" / "backbone.h5").is_file()
    # the round ends with the recognition table of every backbone on the test part (then
    # the gallery's path)
    table = two.stdout[two.stdout.index("| backbone |"):].splitlines()
    assert table[2].startswith("| round 1 | D_L |") and table[3].startswith("| round 2 |")
    assert "recognition of the test part" in two.stderr
    assert "recognition" in json.loads((rounds.work / "round2" / "eval.json").read_text())


def _names(path: Path) -> list[str]:
    with h5py.File(path, "r") as f:
        return [n.decode() if isinstance(n, bytes) else str(n) for n in f["names"][()]]


def _provenance_inputs(path: Path) -> set[str]:
    with h5py.File(path, "r") as f:
        steps = json.loads(f.attrs["cftools_provenance"])
    return {str(v) for step in steps for v in step.get("inputs", {}).values()}


@needs_make
def test_the_test_part_never_reaches_training_or_calibration(rounds):
    """The marker identity planted in the test part is scored, and nothing else sees it,
    through rounds 1 and 2 and both references."""
    work, data = rounds.work, rounds.images
    assert rounds.two.returncode == 0, rounds.two.stderr[-3000:]
    files = [p for p in work.rglob("*.h5")]
    tests = [p for p in files if p.name == "test.h5"]
    assert {p.parent.name for p in tests} == {"round1", "round2", "baseline", "upper-bound"}
    for t in tests:  # the marker is in the test part (so the check below means something)
        assert any("zz_marker_identity" in n for n in _names(t))
    test_ids = set()
    for t in tests:
        with h5py.File(t, "r") as f:
            test_ids.add(str(f.attrs["cftools_id"]))
    for p in files:
        if p.name == "test.h5":
            continue
        # no file is made from a test part, directly or through any of its inputs ...
        assert not _provenance_inputs(p) & test_ids, p
        with h5py.File(p, "r") as f:
            has_names = "names" in f
            config = json.loads(f.attrs["config"]) if "config" in f.attrs else {}
        # ... no features file (D_L, D_U, the retraining set) holds a marker image ...
        if has_names:
            assert not any("zz_marker" in n for n in _names(p)), p
        # ... and every backbone trained on D_L (and D_U) images alone
        if "train_images" in config:
            n_l = len(list((data / "labelled").rglob("*.png")))
            n_u = len(list((data / "unlabelled").rglob("*.png")))
            assert config["train_images"] <= n_l + n_u, p
    for meta in work.rglob("*.meta"):
        assert "zz_marker" not in meta.read_text()
    for r in ("round1", "round2"):
        assert "recognition" in json.loads((work / r / "eval.json").read_text())


@needs_make
def test_the_references_train_as_round_two_and_the_report_compares_them(rounds):
    work = rounds.work
    assert rounds.two.returncode == 0, rounds.two.stderr[-3000:]
    # the references trained for as many steps as round 2's backbone
    # and, like it, fine-tuned round 1's backbone: same start, same steps in all
    steps, starts = {}, {}
    for folder in ("round2", "baseline", "upper-bound"):
        with h5py.File(work / folder / "backbone.h5", "r") as f:
            cfg = json.loads(f.attrs["config"])
        steps[folder] = (cfg["steps"], cfg["total_steps"])
        starts[folder] = cfg["init"]
    assert steps["baseline"] == steps["round2"] == steps["upper-bound"]
    assert set(starts.values()) == {str(work / "round1" / "backbone.h5")}
    report = rounds.report
    assert report.returncode == 0, report.stderr
    assert "| baseline |" in report.stdout and "| upper bound |" in report.stdout
    assert "Share of the upper bound's gain" in report.stdout
    assert (work / "report.png").is_file()


@needs_make
def test_the_link_model_learns_again_from_the_round_s_own_draft_labels(rounds, tmp_path):
    """On images (LINK_SELF=yes) each round's link side runs twice: a draft from D_L (with
    D_U as the guard's distractors), then the model again from link_labelled.h5, the
    round's features of D_L then D_U with the labels the draft's retraining set gave them
    (-1 where it gave none), with no --distractors (D_U is inside) and the pseudo-label
    threshold measured among D_U's unknown points; the second pass makes the round's
    clusters. LINK_SELF=no runs the draft's pass alone, under the round's names."""
    work = rounds.work
    assert rounds.two.returncode == 0, rounds.two.stderr[-3000:]
    for r in (work / "round1", work / "round2"):
        with open_artifact(r / "link_labelled.h5", "features") as a, \
                open_artifact(r / "draft_retrain.h5", "features") as t, \
                open_artifact(r / "labelled.h5", "features") as fl, \
                open_artifact(r / "unlabelled.h5", "features") as fu:
            n_l = fl.dims["N"]
            expected = np.full(n_l + fu.dims["N"], -1)
            expected[np.where(t.read("source") == 1, n_l, 0) + t.read("source_rows")] = \
                t.read("labels")
            labels = a.read("labels")
            assert labels.tolist() == expected.tolist()
            assert (labels[n_l:] >= 0).any() and (labels[n_l:] == -1).any()
            np.testing.assert_array_equal(a.read("features"),
                                          np.vstack([fl.read("features"), fu.read("features")]))
            link_set, draft_clusters = a.id, t.attrs["clusters_id"]
        with open_artifact(r / "draft_clusters.h5", "clusters") as c:
            assert c.id == draft_clusters  # the draft's clusters labelled the second pass
        assert link_set in _provenance_inputs(r / "model.h5")
        with open_artifact(r / "model.h5", "model") as m:
            training = m.json_attr("training")
        assert training["pseudo_labels"]["precision"] is not None
        assert training["guard"].get("distractors", 0) == 0  # no --distractors: D_U is inside
        with open_artifact(r / "draft_model.h5", "model") as m:
            assert m.json_attr("training")["guard"]["distractors"] > 0
    fresh = tmp_path / "work"  # the plan of a round not run yet: every step
    plan = make_round(fresh, 1, "-n", "round", LINK_SELF="no", QUIET="-q")
    assert plan.returncode == 0, plan.stderr[-2000:]
    r1 = fresh / "round1"
    assert f"cf-train {r1 / 'seq_labelled.h5'} --features {r1 / 'labelled.h5'} -o " \
           f"{r1 / 'model.h5'} " in plan.stdout
    assert f"--distractors {r1 / 'unlabelled.h5'}" in plan.stdout
    assert "carry-labels" not in plan.stdout and "draft_" not in plan.stdout


@needs_make
def test_guard_distractors_hands_the_unlabelled_part_to_cf_train(tmp_path):
    """By default (GUARD_DISTRACTORS=yes) cf-train's guard judges among D_U's points
    (--distractors); GUARD_DISTRACTORS=no keeps it among D_L's."""
    def train_line(**extra):
        r = make_round(tmp_path / "work", 1, "-n", "round", **extra)
        assert r.returncode == 0, r.stderr[-2000:]
        at = r.stdout.index("cf-train ")
        return r.stdout[at:r.stdout.index(" -q", at)]  # QUIET=-q ends every recipe

    crowded = train_line(QUIET="-q")
    assert f"--distractors {tmp_path / 'work' / 'round1' / 'unlabelled.h5'}" in crowded
    assert "--distractors" not in train_line(GUARD_DISTRACTORS="no", QUIET="-q")


@needs_make
def test_pseudo_threshold_jury_cuts_the_retraining_labels_on_images_only(tmp_path):
    """By default (PSEUDO_THRESHOLD=jury) on images cf-train chooses the pseudo-label
    threshold and each of the round's clusters keeps its core at D_U's links cut there
    (cf-merge labels --cores); PSEUDO_THRESHOLD=calibrated keeps the clusters whole; on
    fixed features (no backbone to retrain), or without the crowded guard, jury asks for
    nothing, but for the second pass of the link side, whose jury D_U crowds."""
    def plan(**extra):
        r = make_round(tmp_path / "work", 1, "-n", "round", QUIET="-q", **extra)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout

    r1 = tmp_path / "work" / "round1"
    jury = plan()
    assert "--pseudo-threshold" in jury and "--method infomap --pseudo" in jury
    assert f"cf-merge labels {r1 / 'clusters.h5'} " in jury
    assert f"--cores {r1 / 'pseudo_clusters.h5'} " in jury
    assert plan(PSEUDO_THRESHOLD="jury") == jury
    calibrated = plan(PSEUDO_THRESHOLD="calibrated")
    assert "--pseudo" not in calibrated and "--cores" not in calibrated
    assert f"cf-merge labels {r1 / 'clusters.h5'} " in calibrated
    # no crowded jury: neither the pass from D_L alone nor a draft cuts at a jury's threshold
    assert "--pseudo" not in plan(GUARD_DISTRACTORS="no", LINK_SELF="no")
    uncrowded = plan(GUARD_DISTRACTORS="no")
    assert "--cores" not in uncrowded.split("cf-data carry-labels")[0]
    assert "--pseudo-threshold" in uncrowded.split("cf-data carry-labels")[1]
    data = tmp_path / "data" / "feats"
    data.mkdir(parents=True)
    for part in ("labelled.h5", "unlabelled.h5"):
        (data / part).touch()
    features = plan(DATA="feats", DATADIR=str(data))
    assert "--pseudo" not in features
    # fixed features: the link side runs once, from D_L, whatever LINK_SELF says
    assert "carry-labels" not in features and "draft_" not in features
    assert plan(DATA="feats", DATADIR=str(data), LINK_SELF="yes") == features


@needs_make
def test_a_user_image_folder_feeds_the_round_in_place_of_the_demo(tmp_path):
    """DATA=<name> with images: the backbone trains on its labelled/ part, the test part
    comes from its test/ folder, and no demo is drawn (what the module's rounds run on the
    built-in demo, planned with make -n on a user's folder)."""
    data = tmp_path / "data" / "mine"
    for part in ("labelled/a", "unlabelled", "test/b"):
        (data / part).mkdir(parents=True)
    plan = make_round(tmp_path / "work", 1, "-n", "round", DATA="mine", DATADIR=str(data),
                      QUIET="-q")
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert "cf-embed demo" not in plan.stdout
    assert f"cf-embed train {data / 'labelled'} " in plan.stdout
    assert f" {data / 'test'} -o {tmp_path / 'work' / 'round1' / 'test.h5'}" in plan.stdout
