"""A miniature semi-supervised round, end to end through the real console scripts and the
Makefile: demo images -> backbone -> features -> knn -> seq -> train -> link -> merge ->
eval -> retrain, then round 2 with the retrained backbone and identification of both."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

TINY = {
    "DEMO_ARGS": "--identities 16 --image-size 24 --mean-images 6",
    "EMBED_ARGS": "--depth 18 --width 4 --image-size 24 --dim 16 --epochs 1 --workers 0 "
                  "--batch-size 16",
    "TRAIN_EPOCHS": "1", "K": "8", "L": "6",
}


def make_round(work: Path, round_no: int) -> subprocess.CompletedProcess:
    venv = Path(sys.prefix)
    args = ["make", "-s", "-C", str(REPO), "round", f"WORK={work}", f"ROUND={round_no}",
            f"VENV={venv}", "-o", f"{venv}/.installed",  # this environment is already set up
            *[f"{k}={v}" for k, v in TINY.items()]]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(args, capture_output=True, text=True, timeout=900, env=env)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_a_miniature_round_and_round_two(tmp_path):
    work = tmp_path / "work"
    one = make_round(work, 1)
    assert one.returncode == 0, one.stderr[-3000:]
    r1 = work / "round1"
    for name in ("backbone.h5", "labelled.h5", "unlabelled.h5", "knn_labelled.h5",
                 "seq_unlabelled.h5", "model.h5", "links.h5", "clusters.h5", "retrain.h5",
                 "retrain.meta"):
        assert (r1 / name).is_file(), name
    metrics = json.loads((r1 / "eval.json").read_text())
    assert 0.0 <= metrics["pairwise_f"] <= 1.0 and metrics["n_points"] > 0
    assert "pairwise F" in one.stderr  # the round prints its metrics
    # every step says what it did (progress is on by default), and the round ends with
    # the path of the gallery of D_U's clusters
    for summary in ("cf-knn: wrote", "cf-train: wrote", "cf-merge: wrote", "cf-eval gallery:"):
        assert summary in one.stderr, summary
    gallery = r1 / "gallery" / "index.html"
    assert gallery.is_file() and (r1 / "gallery" / "plots" / "training.png").is_file()
    assert one.stderr.strip().splitlines()[-1].endswith(str(gallery))

    stamps = {p.name: p.stat().st_mtime_ns for p in r1.iterdir()}
    again = make_round(work, 1)  # nothing changed: Make redoes nothing
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in r1.iterdir()} == stamps
    (r1 / "model.h5").unlink()  # a deleted step is redone, and what follows it
    assert make_round(work, 1).returncode == 0
    assert (r1 / "model.h5").is_file()
    assert (r1 / "links.h5").stat().st_mtime_ns > stamps["links.h5"]

    two = make_round(work, 2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert (work / "round2" / "backbone.h5").is_file()
    assert two.stderr.count("top-1 identification") == 2  # both backbones
