"""cf-seq: sequences with targets from a kNN file, and its refusals."""

import os
import subprocess
import sys

import numpy as np
import pytest

from cftools.data.demo import make_demo_features
from cftools.formats.artifacts import open_artifact
from cftools.formats.features import write_features


def _cmd(*args):
    # one OpenMP thread: on a shared 2-core machine two spinning threads per process
    # slowed these runs ~20x (measured)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("CF_TEST_THREADS", "1")}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env)


@pytest.fixture()
def demo_files(tmp_path):
    f, y = make_demo_features(400, 16, seed=1)
    write_features(tmp_path / "f.h5", f, labels=y)
    g, _ = make_demo_features(400, 16, seed=2)
    write_features(tmp_path / "g.h5", g)
    r = _cmd("cftools.commands.knn", str(tmp_path / "f.h5"), "-o", str(tmp_path / "knn.h5"), "-k", "12", "-q")
    assert r.returncode == 0, r.stderr
    return tmp_path, f, y


def test_cf_seq_writes_sequences_with_targets(demo_files):
    tmp, f, y = demo_files
    r = _cmd("cftools.commands.seq", str(tmp / "knn.h5"), "--features", str(tmp / "f.h5"),
             "-o", str(tmp / "seq.h5"), "-L", "8", "--min-sim", "0.3", "-q")
    assert r.returncode == 0, r.stderr
    with open_artifact(tmp / "seq.h5", "sequences") as s, open_artifact(tmp / "knn.h5", "knn") as k:
        order, mask, targets = s.read("order"), s.read("mask"), s.read("targets")
        assert order.shape == (400, 8)
        assert (order[:, 0] == np.arange(400)).all()
        assert s.attrs["knn_id"] == k.id
        idx = k.read("indices")
    cos = np.einsum("nd,nld->nl", f, f[order])
    assert (mask[:, 1:] == (cos[:, 1:] >= 0.3 - 1e-6)).all()
    assert ((targets == 1) == (mask & (y[order] == y[:, None]))).all()
    # the sequence's neighbours are the kNN row's, in the same (falling) order
    assert (order[:, 1:] == idx[:, 1:8]).all()


def test_cf_seq_refuses_knn_of_other_features(demo_files):
    tmp, _, _ = demo_files
    r = _cmd("cftools.commands.seq", str(tmp / "knn.h5"), "--features", str(tmp / "g.h5"),
             "-o", str(tmp / "seq.h5"))
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1
    assert "knn.h5" in r.stderr and "g.h5" in r.stderr
    assert not (tmp / "seq.h5").exists()


def test_cf_seq_refuses_L_longer_than_k(demo_files):
    tmp, _, _ = demo_files
    r = _cmd("cftools.commands.seq", str(tmp / "knn.h5"), "--features", str(tmp / "f.h5"),
             "-o", str(tmp / "seq.h5"), "-L", "13")
    assert r.returncode != 0 and "-L 13" in r.stderr


def test_for_model_searches_and_cuts_to_the_longest_length_the_links_read(tmp_path, capsys):
    """cf-knn and cf-seq --for-model: k and L are the longer of the model's own length and
    cosine links' length (as cf-train recorded them), not -k / -L; a file that is not a
    cf-train model is refused in one line."""
    from cftools.core.clusformer.model import Clusformer, make_config, save_model
    from tests.conftest import call, run_ok

    f, y = make_demo_features(300, 16, seed=4)
    write_features(tmp_path / "f.h5", f, labels=y)
    cases = {"own": (6, None, 6), "cosine_longer": (6, 9, 9), "model_longer": (8, 5, 8)}
    for name, (model_len, cosine_len, want) in cases.items():
        training = {} if cosine_len is None else {
            "guard": {"winner": "cosine", "cosine_length": cosine_len, "model_length": model_len}}
        model = tmp_path / f"{name}.h5"
        save_model(model, Clusformer(make_config("small", 16, model_len, width=32, ffn=64)),
                   training=training)
        knn, seq = tmp_path / f"knn_{name}.h5", tmp_path / f"seq_{name}.h5"
        run_ok("knn", tmp_path / "f.h5", "-o", knn, "-k", 40, "--for-model", model, "-q")
        run_ok("seq", knn, "--features", tmp_path / "f.h5", "-o", seq, "-L", 30,
               "--for-model", model, "-q")
        with open_artifact(knn, "knn") as k, open_artifact(seq, "sequences") as s:
            assert k.read("indices").shape == (300, want), name
            assert s.read("order").shape == (300, want), name
    res = call(capsys, "knn", tmp_path / "f.h5", "-o", tmp_path / "bad.h5",
               "--for-model", tmp_path / "f.h5", "-q")
    assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "f.h5" in res.stderr and not (tmp_path / "bad.h5").exists()
