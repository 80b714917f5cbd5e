"""cf-eval review end to end: the questions file, calibration on a labelled set, answers
already given left out, inputs that do not belong together refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import one_line_error, run_cmd

from cftools.data.demo import make_demo_features
from cftools.formats.features import load_features, write_features
from cftools.formats.writing import write_artifact


def links_of(d, name, x, labels, k=10):
    write_features(d / f"{name}.h5", x, labels=labels, names=[f"{name}-{i}.jpg"
                                                             for i in range(len(x))])
    sim = x @ x.T
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    order[:, 0] = np.arange(len(x))
    with write_artifact(d / f"links_{name}.h5", "links", attrs={
            "features_id": load_features(d / f"{name}.h5").id, "method": "cosine"}) as f:
        f.create_dataset("indices", data=order.astype(np.int64))
        f.create_dataset("probabilities", data=np.take_along_axis(sim, order, 1)
                         .astype(np.float32))


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    d = tmp_path_factory.mktemp("review")
    x, y = make_demo_features(600, 16, seed=2)
    links_of(d, "u", x[:300], y[:300])
    links_of(d, "l", x[300:], y[300:])
    run_cmd("merge", d / "links_u.h5", "-o", d / "c.h5", "--method", "infomap", "--threshold",
            0.5, "-q", check=True)
    return d


@pytest.mark.slow
def test_questions_file(sets, tmp_path):
    d = sets
    res = run_cmd("eval", "review", d / "c.h5", "--links", d / "links_u.h5", "-o",
                  tmp_path / "q.json", "--top", 20, "--features", d / "u.h5")
    assert res.returncode == 0, res.stderr
    doc = json.loads((tmp_path / "q.json").read_text())
    assert doc["cftools_kind"] == "questions" and doc["n_points"] == 300
    assert doc["features_id"] == load_features(d / "u.h5").id
    qs = doc["questions"]
    assert len(qs) == 20 and [q["id"] for q in qs] == list(range(1, 21))
    assert [q["gain"] for q in qs] == sorted((q["gain"] for q in qs), reverse=True)
    assert doc["pool"] >= 20 and doc["calibration"]["source"] == "links"
    assert set(doc["point_names"]) == {str(r) for q in qs for r in q["a"] + q["b"]}
    assert "20 of" in res.stderr and "candidate questions" in res.stderr
    # answers already given: their questions are left out
    (tmp_path / "c.json").write_text(json.dumps({
        "cftools_kind": "corrections", "cftools_format": 1, "features_id": doc["features_id"],
        "n_points": 300, "answers": [{"kind": "different", "a": [q["a"][0]], "b": [q["b"][0]]}
                                     for q in qs[:5]]}))
    run_cmd("eval", "review", d / "c.h5", "--links", d / "links_u.h5", "-o", tmp_path / "q2.json",
            "--top", 20, "--corrections", tmp_path / "c.json", check=True)
    again = json.loads((tmp_path / "q2.json").read_text())
    asked = {(q["a"][0], q["b"][0]) for q in qs[:5]}
    assert not asked & {(q["a"][0], q["b"][0]) for q in again["questions"]}
    assert again["pool"] == doc["pool"] - 5


@pytest.mark.slow
def test_calibration_on_a_labelled_set(sets, tmp_path):
    d = sets
    res = run_cmd("eval", "review", d / "c.h5", "--links", d / "links_u.h5", "-o",
                  tmp_path / "q.json", "--calibrate", d / "links_l.h5", "--calibrate-truth",
                  d / "l.h5")
    assert res.returncode == 0, res.stderr
    cal = json.loads((tmp_path / "q.json").read_text())["calibration"]
    assert cal["source"].endswith("links_l.h5") and sum(cal["counts"].values()) > 0
    line = one_line_error(run_cmd("eval", "review", d / "c.h5", "--links", d / "links_u.h5",
                                  "-o", tmp_path / "q2.json", "--calibrate", d / "links_u.h5",
                                  "--calibrate-truth", d / "u.h5"))
    assert "never on the set reviewed" in line and not (tmp_path / "q2.json").exists()


def test_links_that_did_not_make_the_clusters_are_refused(sets, tmp_path):
    d = sets
    line = one_line_error(run_cmd("eval", "review", d / "c.h5", "--links", d / "links_l.h5",
                                  "-o", tmp_path / "q.json"))
    assert "other links" in line and not (tmp_path / "q.json").exists()
    res = run_cmd("eval", "review", d / "c.h5", "--links", d / "links_u.h5", "-o",
                  tmp_path / "q.txt")
    assert res.returncode != 0 and "ending in .json" in res.stderr
