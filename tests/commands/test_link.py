"""cf-link: streaming inference, cosine baseline, refusals."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import write_demo_sequences

from cftools.core.clusformer import inference
from cftools.core.clusformer.inference import link_blocks
from cftools.core.clusformer.model import Clusformer, make_config, save_model
from cftools.data.demo import make_demo_features
from cftools.formats.artifacts import open_artifact
from cftools.formats.features import write_features


def _cmd(*args):
    # one OpenMP thread: on a shared 2-core machine two spinning threads per process
    # slowed these runs ~20x (measured)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("CF_TEST_THREADS", "1")}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("link")
    f, _, order, mask, _ = write_demo_sequences(tmp, 300)
    torch.manual_seed(0)
    model = Clusformer(make_config("small", 16, 8, width=32, ffn=64))
    save_model(tmp / "m.h5", model, thresholds={"link": 0.3, "infomap": 0.6})
    save_model(tmp / "m_L12.h5", Clusformer(make_config("small", 16, 12, width=32, ffn=64)))
    save_model(tmp / "m_L6.h5", Clusformer(make_config("small", 16, 6, width=32, ffn=64)))
    save_model(tmp / "m_d8.h5", Clusformer(make_config("small", 8, 8, width=32, ffn=64)))
    cosine_t = {"infomap": 0.7, "link_mode_infomap": "reciprocal"}
    save_model(tmp / "m_lost.h5", Clusformer(make_config("small", 16, 8, width=32, ffn=64)),
               thresholds={"link": 0.5, "infomap": 0.5},
               training={"guard": {"winner": "cosine", "model_length": 8, "cosine_length": 5},
                         "cosine_thresholds": cosine_t})
    gate = {"decoder": "infomap", "mode": "reciprocal", "threshold": 0.6, "reach": 0.5,
            "flip_distance": 0.3}
    with torch.no_grad():
        model.skip.copy_(torch.tensor([12.0, -9.0]))  # calibrated cosine: 0.6 at cos 0.78
    save_model(tmp / "m_gate.h5", model, thresholds={"link": 0.3, "infomap": 0.6},
               training={"gate": {"infomap": gate}})
    return tmp, f, order, mask


def test_links_from_the_model(files):
    tmp, f, order, mask = files
    r = _cmd("cftools.commands.link", str(tmp / "seq.h5"), "--features", str(tmp / "f.h5"),
             "--model", str(tmp / "m.h5"), "-o", str(tmp / "links.h5"), "--batch-size", "64")
    assert r.returncode == 0, r.stderr
    with open_artifact(tmp / "links.h5", "links") as a, open_artifact(tmp / "m.h5", "model") as m:
        idx, p = a.read("indices"), a.read("probabilities")
        assert a.attrs["method"] == "model" and a.attrs["model_id"] == m.id
        assert a.json_attr("thresholds") == {"link": 0.3, "infomap": 0.6}
    assert (idx == order).all()
    assert (p[~mask] == 0).all() and (p[mask] > 0).all() and (p <= 1).all()


def test_links_by_cosine_need_no_model(files):
    tmp, f, order, mask = files
    r = _cmd("cftools.commands.link", str(tmp / "seq.h5"), "--features", str(tmp / "f.h5"),
             "--method", "cosine", "-o", str(tmp / "cos.h5"), "-q")
    assert r.returncode == 0, r.stderr
    with open_artifact(tmp / "cos.h5", "links") as a:
        p = a.read("probabilities")
    want = np.einsum("nd,nld->nl", f, f[order]) * mask
    assert np.allclose(p, want, atol=1e-5)


def test_streaming_in_small_blocks_gives_the_same_links(files, monkeypatch):
    tmp, f, order, mask = files
    from cftools.core.clusformer.model import load_model

    model, _ = load_model(tmp / "m.h5")
    feats = torch.from_numpy(f)

    def run():
        with open_artifact(tmp / "seq.h5", "sequences") as s:
            blocks = list(link_blocks(s, feats, model=model, batch_size=16))
        return blocks, np.concatenate([b[3] for b in blocks])

    whole_blocks, whole = run()
    real = inference.row_blocks
    monkeypatch.setattr(inference, "row_blocks", lambda ds: real(ds, target_bytes=50 * 8 * 8))
    small_blocks, small = run()
    assert len(whole_blocks) == 1 and len(small_blocks) == 6
    assert np.allclose(whole, small, atol=1e-6)


@pytest.mark.parametrize("name,word", [("m_L12.h5", "L=12"), ("m_d8.h5", "dimension 8")])
def test_refuses_a_model_that_does_not_fit(files, name, word):
    tmp, *_ = files
    r = _cmd("cftools.commands.link", str(tmp / "seq.h5"), "--features", str(tmp / "f.h5"),
             "--model", str(tmp / name), "-o", str(tmp / "x.h5"))
    assert r.returncode != 0 and word in r.stderr and name in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp / "x.h5").exists()


def test_refuses_a_pickled_model_in_one_line(files):
    tmp, *_ = files
    (tmp / "evil.h5").write_bytes(pickle.dumps({"a": 1}))
    r = _cmd("cftools.commands.link", str(tmp / "seq.h5"), "--features", str(tmp / "f.h5"),
             "--model", str(tmp / "evil.h5"), "-o", str(tmp / "x.h5"))
    assert r.returncode == 1 and "evil.h5: not an HDF5 file" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_refuses_sequences_of_other_features(files, tmp_path):
    tmp, *_ = files
    g, _ = make_demo_features(300, 16, seed=9)
    write_features(tmp_path / "g.h5", g)
    r = _cmd("cftools.commands.link", str(tmp / "seq.h5"), "--features", str(tmp_path / "g.h5"),
             "--method", "cosine", "-o", str(tmp_path / "x.h5"))
    assert r.returncode != 0 and "seq.h5" in r.stderr and "g.h5" in r.stderr


def test_a_shorter_model_reads_the_first_positions(files):
    """A model of L 6 (cf-train -L chose it) over sequences of L 8: the links are those of
    the first 6 positions, the centre and its 5 nearest neighbours."""
    tmp, *_ = files
    r = _cmd("cftools.commands.link", str(tmp / "seq.h5"), "--features", str(tmp / "f.h5"),
             "--model", str(tmp / "m_L6.h5"), "-o", str(tmp / "short.h5"), "--method", "model")
    assert r.returncode == 0, r.stderr
    assert "cut to the model's length 6" in r.stderr
    with open_artifact(tmp / "short.h5", "links") as a, open_artifact(tmp / "seq.h5", "sequences") as s:
        assert a.read("indices").shape == (300, 6)
        assert np.array_equal(a.read("indices"), s.read("order")[:, :6])


def test_cosine_links_of_a_model_that_lost_take_cosine_s_own_length(files):
    """cf-train chose cosine's length apart from the model's and the guard recorded both:
    where the model lost, --method auto writes cosine links at cosine's length with
    cosine's thresholds; --method model writes the model's at the model's length."""
    tmp, f, order, _ = files
    base = ["cftools.commands.link", str(tmp / "seq.h5"), "--features", str(tmp / "f.h5"),
            "--model", str(tmp / "m_lost.h5")]
    r = _cmd(*base, "-o", str(tmp / "lost_auto.h5"))
    assert r.returncode == 0, r.stderr
    assert "cut to cosine links' length 5" in r.stderr and "lost to cosine" in r.stderr
    with open_artifact(tmp / "lost_auto.h5", "links") as a:
        assert a.attrs["method"] == "cosine" and a.read("indices").shape == (300, 5)
        assert np.array_equal(a.read("indices"), order[:, :5])
        assert a.json_attr("thresholds") == {"infomap": 0.7, "link_mode_infomap": "reciprocal"}
    r = _cmd(*base, "-o", str(tmp / "lost_model.h5"), "--method", "model")
    assert r.returncode == 0, r.stderr
    with open_artifact(tmp / "lost_model.h5", "links") as a:
        assert a.attrs["method"] == "model" and a.read("indices").shape == (300, 8)


def test_the_model_reads_only_the_rows_its_gate_lets_through(files):
    """cf-link --gate (infomap by default) runs the model on the rows with a link within
    the gate of infomap's threshold, says how many in model_rows, and gives the others
    calibrated cosine; --gate none reads every row; cosine links read none."""
    tmp, f, order, mask = files
    out = {}
    for gate in ("infomap", "none"):
        r = _cmd("cftools.commands.link", str(tmp / "seq.h5"), "--features", str(tmp / "f.h5"),
                 "--model", str(tmp / "m_gate.h5"), "-o", str(tmp / f"g_{gate}.h5"),
                 "--method", "model", "--gate", gate, "--no-bf16")
        assert r.returncode == 0, r.stderr
        with open_artifact(tmp / f"g_{gate}.h5", "links") as a:
            out[gate] = (a.read("probabilities"), int(a.attrs["model_rows"]),
                         a.json_attr("gate"))
    (gated, read, used), (full, every, none) = out["infomap"], out["none"]
    assert every == 300 and none == {}
    assert 0 < read < 300 and used["decoder"] == "infomap" and used["reach"] == 0.5
    # rows outside the gate: calibrated cosine, sigmoid(12 cos - 9), masked positions 0
    unit = f / np.linalg.norm(f, axis=1, keepdims=True)
    cos = (unit[order] * unit[order][:, :1]).sum(-1)
    calibrated = 1 / (1 + np.exp(-(12 * cos - 9))) * mask
    centre = np.log(0.6 / 0.4)
    inside = ((np.abs(12 * cos - 9 - centre) <= 0.5) & mask)[:, 1:].any(axis=1)
    assert inside.sum() == read
    np.testing.assert_allclose(gated[~inside], calibrated[~inside], atol=1e-5)
    np.testing.assert_allclose(gated[inside], full[inside], atol=1e-5)
    r = _cmd("cftools.commands.link", str(tmp / "seq.h5"), "--features", str(tmp / "f.h5"),
             "--model", str(tmp / "m_gate.h5"), "-o", str(tmp / "g_cos.h5"), "--method",
             "cosine", "-q")
    assert r.returncode == 0, r.stderr
    with open_artifact(tmp / "g_cos.h5", "links") as a:
        assert int(a.attrs["model_rows"]) == 0
