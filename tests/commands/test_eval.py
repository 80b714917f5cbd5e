"""cf-eval end to end: run the command on small files, check stdout/stderr/exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cmd, unit_rows

from cftools.commands.eval.report import collect, gain_recovered, markdown, recovered
from cftools.core.metrics import evaluate, nmi
from cftools.core.neighbours.quality import knn_quality
from cftools.formats.features import write_features
from cftools.formats.interop import write_knn_npz, write_meta
from cftools.formats.writing import create_rows, write_artifact

MAN = REPO / "man" / "cf-eval.1"


def cf_eval(*args, cwd=None):
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["COLUMNS"] = "100"
    return subprocess.run([sys.executable, "-m", "cftools.commands.eval", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def one_error_line(res) -> str:
    assert res.returncode != 0, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert res.stdout == ""
    assert lines[0].startswith("cf-eval: error:"), lines[0]
    return lines[0]


def _unit(rng, n, d=8):
    f = rng.normal(size=(n, d)).astype(np.float32)
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def _write_knn(path, indices, *, query_id, base_id, self_first=True):
    sims = np.linspace(1, 0, indices.shape[1], dtype=np.float32)[None, :].repeat(len(indices), 0)
    attrs = dict(query_id=query_id, base_id=base_id, method="exact", self_first=self_first)
    with write_artifact(path, "knn", attrs=attrs) as f:
        create_rows(f, "indices", indices.shape, np.int64, data=indices)
        create_rows(f, "similarities", sims.shape, np.float32, data=sims)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cf_eval")
    rng = np.random.default_rng(0)
    n = 120
    truth = np.repeat(np.arange(30), 4)
    truth[::17] = -1  # some unknown
    pred = np.where(rng.random(n) < 0.8, np.repeat(np.arange(30), 4), rng.integers(0, 40, n))
    pred[rng.random(n) < 0.1] = -1  # some unassigned
    feats = _unit(rng, n)
    write_features(d / "feat.h5", feats, labels=truth)
    write_features(d / "nolabels.h5", feats)
    with write_artifact(d / "pred.h5", "clusters") as f:
        f.create_dataset("labels", data=pred.astype(np.int64))
    np.save(d / "truth.npy", truth)
    np.save(d / "pred.npy", pred)
    np.save(d / "short.npy", truth[:50])
    write_meta(d / "truth.meta", truth)
    import h5py

    with h5py.File(d / "feat.h5") as f:
        fid = f.attrs["cftools_id"]
    sim = feats @ feats.T
    np.fill_diagonal(sim, 2.0)  # self first
    knn = np.argsort(-sim, axis=1)[:, :9]
    _write_knn(d / "knn.h5", knn, query_id=fid, base_id=fid)
    _write_knn(d / "knn_other.h5", knn, query_id="q" * 32, base_id="b" * 32)
    _write_knn(d / "knn_notmine.h5", knn, query_id="c" * 32, base_id="c" * 32)
    write_knn_npz(d / "knn.npz", knn, np.take_along_axis(sim.clip(-1, 1), knn, 1))
    return dict(dir=d, truth=truth, pred=pred, knn=knn)


# ----------------------------------------------------------------------------- clusters


def test_clusters_json_matches_core(files):
    d = files["dir"]
    res = cf_eval("clusters", d / "pred.h5", "--truth", d / "feat.h5", "--json")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)  # stdout holds the JSON and nothing else
    want = evaluate(files["pred"], files["truth"])
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key]), key
    assert got["n_excluded"] == int((files["truth"] == -1).sum()) > 0
    assert got["n_unassigned"] > 0
    # the table went to stderr
    assert "pairwise F" in res.stderr and "Fowlkes-Mallows" in res.stderr
    assert "NMI (arithmetic)" in res.stderr and "noise ratio" in res.stderr


def test_default_subcommand_and_other_sources(files):
    d = files["dir"]
    ref = json.loads(cf_eval("clusters", d / "pred.h5", "-t", d / "truth.npy", "--json", "-q").stdout)
    for pred, truth in [(d / "pred.h5", d / "truth.npy"),  # no subcommand: clusters
                        (d / "pred.npy", d / "truth.meta"),
                        (f"{d / 'pred.h5'}:/labels", f"{d / 'feat.h5'}:/labels")]:
        res = cf_eval(pred, "--truth", truth, "--json", "-q")
        assert res.returncode == 0, res.stderr
        assert res.stderr == ""  # -q: no table
        assert json.loads(res.stdout) == ref


def test_table_only_without_json_and_nmi_average(files):
    d = files["dir"]
    res = cf_eval(d / "pred.h5", "--truth", d / "feat.h5", "--nmi-average", "geometric")
    assert res.returncode == 0 and res.stdout == ""
    assert "NMI (geometric)" in res.stderr
    assert "excluded" in res.stderr
    got = json.loads(cf_eval(d / "pred.h5", "-t", d / "feat.h5", "--nmi-average", "max",
                             "--json", "-q").stdout)
    assert got["nmi_average"] == "max"
    assert got["nmi"] == pytest.approx(nmi(files["pred"], files["truth"], "max"))


def test_clusters_errors_are_one_line(files):
    d = files["dir"]
    line = one_error_line(cf_eval(d / "missing.h5", "-t", d / "truth.npy"))
    assert "missing.h5" in line and "no such file" in line
    line = one_error_line(cf_eval(d / "pred.h5", "-t", d / "missing.npy"))
    assert "missing.npy" in line
    line = one_error_line(cf_eval(d / "pred.h5", "-t", d / "short.npy", "--json"))
    assert "pred.h5" in line and "short.npy" in line and "120" in line and "50" in line
    line = one_error_line(cf_eval(d / "feat.h5", "-t", d / "truth.npy"))  # wrong kind for PRED
    assert "feat.h5" in line and "features" in line and "expected clusters" in line
    line = one_error_line(cf_eval(d / "pred.h5", "-t", d / "knn.h5"))  # wrong kind for TRUTH
    assert "knn.h5" in line and "expected features or clusters" in line
    line = one_error_line(cf_eval(d / "pred.h5", "-t", d / "nolabels.h5"))
    assert "nolabels.h5" in line and "no labels" in line
    np.save(d / "unknown.npy", np.full(120, -1))
    line = one_error_line(cf_eval(d / "pred.h5", "-t", d / "unknown.npy"))
    assert "unknown.npy" in line and "known truth" in line
    res = cf_eval(d / "pred.h5")  # no --truth: usage error
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    res = cf_eval()  # nothing at all: usage error, one line
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1


def test_clusters_from_other_features_refused(files):
    d = files["dir"]
    with write_artifact(d / "pred_other.h5", "clusters", attrs={"features_id": "f" * 32}) as f:
        f.create_dataset("labels", data=files["pred"].astype(np.int64))
    line = one_error_line(cf_eval(d / "pred_other.h5", "-t", d / "feat.h5"))
    assert "pred_other.h5" in line and "feat.h5" in line and "other features" in line
    # labels given without their features file: nothing to check against
    assert cf_eval(d / "pred_other.h5", "-t", d / "truth.npy", "-q").returncode == 0


# ----------------------------------------------------------------------------- knn


def test_knn_json_matches_core(files):
    d = files["dir"]
    res = cf_eval("knn", d / "knn.h5", "--truth", d / "feat.h5", "--json", "--ranks", "1,4,100")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    want = knn_quality(files["knn"], files["truth"])
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key]), key
    assert got["ranks"] == 8 and len(got["same_at_rank"]) == 8
    assert "recall@r" in res.stderr and "upper bound pairwise" in res.stderr
    assert "ranks above 8" in res.stderr  # 100 was skipped, and said so
    # the learn-to-cluster .npz gives the same figures
    res = cf_eval("knn", d / "knn.npz", "-t", d / "truth.npy", "--json", "-q")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == got


def test_knn_errors_are_one_line(files):
    d = files["dir"]
    line = one_error_line(cf_eval("knn", d / "knn_other.h5", "-t", d / "truth.npy"))
    assert "knn_other.h5" in line and "another set" in line
    line = one_error_line(cf_eval("knn", d / "knn_notmine.h5", "-t", d / "feat.h5"))
    assert "knn_notmine.h5" in line and "feat.h5" in line and "other features" in line
    line = one_error_line(cf_eval("knn", d / "pred.h5", "-t", d / "truth.npy"))
    assert "pred.h5" in line and "expected knn" in line
    line = one_error_line(cf_eval("knn", d / "truth.npy", "-t", d / "truth.npy"))
    assert "truth.npy" in line and "knn" in line
    line = one_error_line(cf_eval("knn", d / "knn.h5", "-t", d / "short.npy"))
    assert "knn.h5" in line and "short.npy" in line
    line = one_error_line(cf_eval("knn", d / "nope.npz", "-t", d / "truth.npy"))
    assert "nope.npz" in line
    bad = files["knn"].copy()
    bad[3, 2] = 999
    _write_knn(d / "knn_bad.h5", bad, query_id="x" * 32, base_id="x" * 32)
    line = one_error_line(cf_eval("knn", d / "knn_bad.h5", "-t", d / "truth.npy"))
    assert "knn_bad.h5" in line and "row 3" in line
    _write_knn(d / "knn_k1.h5", files["knn"][:, :1], query_id="x" * 32, base_id="x" * 32)
    line = one_error_line(cf_eval("knn", d / "knn_k1.h5", "-t", d / "truth.npy"))
    assert "k = 1" in line
    res = cf_eval("knn", d / "knn.h5", "-t", d / "truth.npy", "--ranks", "0,x")
    assert res.returncode == 2 and "--ranks" in res.stderr


# ----------------------------------------------------------------------------- help vs man


def _long_options(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text))


def test_help_agrees_with_man_page():
    assert MAN.exists()
    man = MAN.read_text().replace("\\-", "-")
    # the subcommands whose options are documented here (sweep has its own text)
    helps = {sub: cf_eval(*([sub] if sub else []), "--help")
             for sub in ("", "clusters", "knn", "gallery", "identify", "report", "review")}
    for res in helps.values():
        assert res.returncode == 0 and res.stdout.startswith("Usage: cf-eval"), res
    options = set()
    for res in helps.values():
        options |= _long_options(res.stdout)
    man_options = _long_options(man.split(".SH EXAMPLES")[0])
    assert options == man_options
    # every subcommand is documented, and the man page documents no other
    subs = set(re.findall(r"^\s{2}(\w+)\s{2,}", helps[""].stdout.split("Commands:")[1], re.M))
    man_subs = set(re.findall(r'^\.BI "(\w+) ', man, re.M))
    assert {"clusters", "knn", "gallery"} <= man_subs <= subs
    # the defaults the help shows are the man page's
    assert "1,5,10,20,40,80" in helps["knn"].stdout and "Default 1,5,10,20,40,80" in man
    assert "[default: arithmetic]" in helps["clusters"].stdout and "(the default" in man
    for sec in ("NAME", "SYNOPSIS", "DESCRIPTION", "SUBCOMMANDS", "OPTIONS", "METRICS",
                "EXIT STATUS", "EXAMPLES", "SEE ALSO"):
        assert f".SH {sec}" in man, sec
    assert "cftools (7)" in man and "cf-knn (1)" in man


# ----------------------------------------------------------------------------- report and identify


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
    # a fine-tuned backbone's steps count its start's: the column says so
    assert text.startswith("| backbone | trained on | steps from scratch |")

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
    assert ("| round 2 | D_L + round-1 pseudo-labels | - | 80.0 | 70.0 | 63.4 | 65.0 | 70.0 | 40.0 | - |"
            in text)
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


def test_identify_command(tmp_path):
    from cftools.formats.features import write_features

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 8))
    labels = np.repeat(np.arange(5), 4)
    x = centres[labels] + 0.05 * rng.normal(size=(20, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    path = tmp_path / "f.h5"
    write_features(path, x.astype(np.float32), labels=labels)
    d = tmp_path / "d.h5"
    write_features(d, (x[:3] / np.linalg.norm(x[:3], axis=1, keepdims=True)).astype(np.float32))
    r = subprocess.run([sys.executable, "-m", "cftools.commands.eval", "identify", str(path),
                        "--distractors", str(d), "--json", "-q"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["probes"] == 15 and out["gallery"] == 8 and out["distractors"] == 3
    assert out["top1"] < 1.0  # the distractors copy three rows exactly: some probes go astray
    write_features(path, x.astype(np.float32))
    r = subprocess.run([sys.executable, "-m", "cftools.commands.eval", "identify", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "no labels" in r.stderr and len(r.stderr.splitlines()) == 1
