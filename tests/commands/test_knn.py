"""cf-knn: exact search equals brute force, the centre comes first, approximate methods
report their recall, bad input is refused with one line and no output."""

import json

import h5py
import numpy as np
import pytest
import torch
from conftest import assert_same_neighbours, one_line_error, run_cmd, unit_rows

from cftools.core.neighbours.exact import recall_at_k
from cftools.data.demo import make_demo_features
from cftools.formats.artifacts import open_artifact
from cftools.formats.features import load_features
from cftools.formats.interop import read_knn_npz


def brute_force(base, queries, k):
    sims = queries.astype(np.float64) @ base.astype(np.float64).T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


def test_exact_command_equals_numpy_brute_force(tmp_path):
    x = unit_rows(1500, 24, seed=1)
    np.save(tmp_path / "x.npy", x)
    run_cmd("knn", tmp_path / "x.npy", "-o", tmp_path / "k.h5", "-k", 12, "-q", check=True)
    ref_i, ref_s = brute_force(x, x, 12)
    with open_artifact(tmp_path / "k.h5", "knn") as art:
        idx, sims = art.read("indices"), art.read("similarities")
        assert art.attrs["self_first"] and art.attrs["method"] == "exact"
        assert art.attrs["query_id"] == art.attrs["base_id"] == load_features(tmp_path / "x.npy").id
    assert (idx[:, 0] == np.arange(len(x))).all()
    np.testing.assert_allclose(sims, ref_s, atol=1e-5)
    # ids agree wherever the similarity is not tied (within float32 noise) with a neighbour
    gaps = np.diff(ref_s, axis=1)
    clear = np.ones_like(idx, dtype=bool)
    clear[:, 1:] &= np.abs(gaps) > 1e-5
    clear[:, :-1] &= np.abs(gaps) > 1e-5
    assert clear.mean() > 0.99
    assert (idx[clear] == ref_i[clear]).all()
    assert (np.diff(sims, axis=1) <= 1e-6).all()  # falling


def test_queries_against_another_set(tmp_path):
    base, queries = unit_rows(800, 16, seed=2), unit_rows(50, 16, seed=3)
    np.save(tmp_path / "b.npy", base)
    np.save(tmp_path / "q.npy", queries)
    run_cmd("knn", tmp_path / "b.npy", "--queries", tmp_path / "q.npy", "-o", tmp_path / "k.h5",
            "-k", 7, "-q", check=True)
    ref_i, ref_s = brute_force(base, queries, 7)
    with open_artifact(tmp_path / "k.h5", "knn") as art:
        assert not art.attrs["self_first"] and art.attrs["query_id"] != art.attrs["base_id"]
        assert art.dims["N"] == 50
        np.testing.assert_allclose(art.read("similarities"), ref_s, atol=1e-5)
        assert (art.read("indices")[:, 0] == ref_i[:, 0]).all()


@pytest.mark.parametrize("method", ["ivf", pytest.param("hnsw", marks=pytest.mark.slow)])
def test_approximate_methods_report_recall_above_095_on_the_demo_set(tmp_path, method):
    x, _ = make_demo_features(20000, 256, seed=5)
    np.save(tmp_path / "x.npy", x)
    proc = run_cmd("knn", tmp_path / "x.npy", "-o", tmp_path / "k.h5", "-k", 40,
                   "--method", method, "--recall-sample", 500, check=True)
    assert "recall@40 against exact search on 500 queries" in proc.stderr
    with open_artifact(tmp_path / "k.h5", "knn") as art:
        recall = art.attrs["recall_at_k"]
        assert art.attrs["recall_sample"] == 500
        assert (art.read("indices")[:, 0] == np.arange(len(x))).all()
    assert recall > 0.95, recall


def test_npz_output_in_learn_to_cluster_layout(tmp_path):
    x = unit_rows(200, 8)
    np.save(tmp_path / "x.npy", x)
    run_cmd("knn", tmp_path / "x.npy", "-o", tmp_path / "k.npz", "-k", 5, "-q", check=True)
    idx, sims = read_knn_npz(tmp_path / "k.npz")
    ref_i, ref_s = brute_force(x, x, 5)
    np.testing.assert_allclose(sims, ref_s, atol=1e-5)
    assert (idx[:, 0] == np.arange(200)).all()


def _bad(tmp_path, case):
    x = unit_rows(30, 4)
    feats = tmp_path / "x.npy"
    args = ["-k", 5]
    if case == "k_too_big":
        args = ["-k", 30]
    elif case == "k_zero":
        args = ["-k", 0]
    elif case == "empty":
        x = np.zeros((0, 4), np.float32)
    elif case == "nan":
        x[3, 2] = np.nan
    elif case == "zero_row":
        x[4] = 0
    elif case == "missing":
        feats = tmp_path / "nothing.npy"
    elif case == "not_hdf5":
        feats = tmp_path / "x.h5"
        feats.write_text("not hdf5")
    elif case == "wrong_kind":
        feats = tmp_path / "x.h5"
        with h5py.File(feats, "w") as f:
            f.attrs.update(cftools_kind="clusters", cftools_format=1, cftools_id="z")
            f.create_dataset("labels", data=np.zeros(3, np.int64))
    elif case == "bad_dim_queries":
        np.save(tmp_path / "q.npy", unit_rows(3, 5))
        args += ["--queries", tmp_path / "q.npy"]
    elif case == "unnormalised_strict":
        x *= 2
        args += ["--strict"]
    if case not in ("missing", "not_hdf5", "wrong_kind"):
        np.save(feats, x)
    return feats, args


@pytest.mark.parametrize("case, message", [
    ("k_too_big", "k=30 needs more than 30 points"),
    ("k_zero", "k must be at least 1"),
    ("empty", "empty features"),
    ("nan", "NaN or Inf"),
    ("zero_row", "all-zero vector"),
    ("missing", "no such file"),
    ("not_hdf5", "not an HDF5 file"),
    ("wrong_kind", "is a clusters file, expected features"),
    ("bad_dim_queries", "queries have dimension 5"),
    ("unnormalised_strict", "not 1"),
])
def test_bad_input_one_line_error_and_no_output(tmp_path, case, message):
    feats, args = _bad(tmp_path, case)
    out = tmp_path / "out.h5"
    line = one_line_error(run_cmd("knn", feats, "-o", out, *args))
    assert message in line
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if "cf-tmp" in p.name]


def test_output_path_problems(tmp_path):
    np.save(tmp_path / "x.npy", unit_rows(30, 4))
    assert "does not exist" in one_line_error(
        run_cmd("knn", tmp_path / "x.npy", "-o", tmp_path / "no" / "k.h5", "-k", 3))
    run_cmd("data", "import", tmp_path / "x.npy", "-o", tmp_path / "x.h5", check=True)
    assert "also an input" in one_line_error(
        run_cmd("knn", tmp_path / "x.h5", "-o", tmp_path / "x.h5", "-k", 3))
    assert ".h5/.hdf5" in one_line_error(
        run_cmd("knn", tmp_path / "x.npy", "-o", tmp_path / "k.txt", "-k", 3))


def test_auto_is_exact_on_small_data(tmp_path):
    x = unit_rows(600, 16, seed=7)
    np.save(tmp_path / "x.npy", x)
    proc = run_cmd("knn", tmp_path / "x.npy", "-o", tmp_path / "k.h5", "-k", 8, check=True)
    assert "auto" in proc.stderr and "exact search" in proc.stderr
    ref_i, ref_s = brute_force(x, x, 8)
    with open_artifact(tmp_path / "k.h5", "knn") as art:
        assert art.attrs["method"] == "exact" and art.attrs["method_requested"] == "auto"
        assert art.json_attr("auto")["chosen"] == "exact"
        assert "recall_at_k" not in art.attrs  # exact: nothing to measure
        np.testing.assert_allclose(art.read("similarities"), ref_s, atol=1e-5)


def test_auto_picks_ivf_above_the_switch_point_and_reaches_the_target(tmp_path):
    # clustered demo features, with the switch point lowered below their size
    x, _ = make_demo_features(12000, 128, seed=5)
    np.save(tmp_path / "x.npy", x)
    proc = run_cmd("knn", tmp_path / "x.npy", "-o", tmp_path / "k.h5", "-k", 20,
                   "--exact-below", 4000, "--recall-sample", 400, check=True)
    assert "IVF nlist=" in proc.stderr, proc.stderr
    with open_artifact(tmp_path / "k.h5", "knn") as art:
        auto = art.json_attr("auto")
        assert art.attrs["method"] == "ivf" and auto["chosen"] == "ivf"
        assert auto["exact_below"] == 4000 and auto["recall_target"] == 0.95
        recall = art.attrs["recall_at_k"]
        nprobe = art.json_attr("params")["nprobe"]
        idx = art.read("indices")
    assert recall >= 0.95, recall
    # the smallest nprobe that reached the target: the trial below it did not
    trials = {t[0]: t[1] for t in auto["trials"]}
    assert trials[nprobe] >= 0.95 and trials.get(nprobe - 1, 0) < 0.95
    assert "recall@20 against exact search on 400 queries: " in proc.stderr
    assert (idx[:, 0] == np.arange(len(x))).all()
    # an independent check on other queries than the tuning sample
    ref_i, _ = brute_force(x, x[5000:5300], 20)
    assert recall_at_k(idx[5000:5300], ref_i) > 0.93


# ----------------------------------------------------------------------- --backend torch


def _knn_arrays(path):
    with open_artifact(path, "knn") as art:
        return art.read("indices"), art.read("similarities"), dict(art.attrs)


@pytest.mark.slow
def test_torch_backend_equals_faiss_exact_on_clustered_data(tmp_path):
    x, _ = make_demo_features(2001, 32, seed=9)  # 2001 points: not a multiple of the tile
    np.save(tmp_path / "x.npy", x)
    run_cmd("knn", tmp_path / "x.npy", "-o", tmp_path / "f.h5", "-k", 15, "--backend",
            "faiss", "--method", "exact", "-q", check=True)
    proc = run_cmd("knn", tmp_path / "x.npy", "-o", tmp_path / "t.h5", "-k", 15, "--backend",
                   "torch", "--tile", 500, "--batch-size", 300, check=True)
    assert "(torch)" in proc.stderr
    ref_i, ref_s, _ = _knn_arrays(tmp_path / "f.h5")
    ids, sims, attrs = _knn_arrays(tmp_path / "t.h5")
    assert (ids[:, 0] == np.arange(len(x))).all()
    assert_same_neighbours(ids, sims, ref_i, ref_s)
    params = json.loads(attrs["params"])
    assert attrs["method"] == "exact" and attrs["device"] == "CPU"
    assert params["backend"] == "torch" and params["tile"] == 500
    assert params["precision"] == "fp32" and params["query_block"] == 300
    assert json.loads(attrs["auto"]) == {"chosen": "exact", "backend": "torch"}


@pytest.mark.slow
def test_torch_backend_with_queries_equals_faiss(tmp_path):
    base, _ = make_demo_features(1500, 24, seed=10)
    queries, _ = make_demo_features(77, 24, seed=11)
    np.save(tmp_path / "b.npy", base)
    np.save(tmp_path / "q.npy", queries)
    for backend in ("faiss", "torch"):
        run_cmd("knn", tmp_path / "b.npy", "--queries", tmp_path / "q.npy", "-o",
                tmp_path / f"{backend}.h5", "-k", 9, "--backend", backend, "--tile", 400,
                "--precision", "auto" if backend == "faiss" else "fp16", "-q", check=True)
    ref_i, ref_s, _ = _knn_arrays(tmp_path / "faiss.h5")
    ids, sims, attrs = _knn_arrays(tmp_path / "torch.h5")
    assert not attrs["self_first"] and ids.shape == (77, 9)
    assert_same_neighbours(ids, sims, ref_i, ref_s)
    assert json.loads(attrs["params"])["precision"] == "fp16"


def test_torch_backend_refuses_approximate_methods(tmp_path):
    np.save(tmp_path / "x.npy", unit_rows(100, 8))
    proc = run_cmd("knn", tmp_path / "x.npy", "-o", tmp_path / "k.h5", "--backend", "torch",
                   "--method", "ivf", "-k", 5)
    assert proc.returncode == 2 and "--backend torch searches exactly" in proc.stderr
    assert not (tmp_path / "k.h5").exists()


def test_auto_backend_on_a_cpu_host_is_faiss(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA host: auto may pick torch")
    np.save(tmp_path / "x.npy", unit_rows(300, 8))
    run_cmd("knn", tmp_path / "x.npy", "-o", tmp_path / "k.h5", "-k", 5, "-q", check=True)
    _, _, attrs = _knn_arrays(tmp_path / "k.h5")
    assert json.loads(attrs["params"])["backend"] == "faiss"
