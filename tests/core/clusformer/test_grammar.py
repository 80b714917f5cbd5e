"""cf-seq and the visual grammar: centre first, masking, targets, the CDE."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from cftools.core.clusformer.grammar import (
    build_sequences,
    cosine_encoding,
    make_targets,
)
from cftools.data.demo import make_demo_features
from cftools.formats.artifacts import open_artifact
from cftools.formats.features import write_features


def test_centre_first_even_when_a_duplicate_comes_first():
    # row 0: its twin 5 ties and comes first, the centre itself is at position 2
    idx = np.array([[5, 3, 0, 7], [1, 2, 3, 4]])
    sim = np.array([[1.0, 0.9, 1.0, 0.5], [1.0, 0.8, 0.7, 0.6]], dtype=np.float32)
    order, mask, _ = build_sequences(idx, sim, 4)
    assert order[0].tolist() == [0, 5, 3, 7]
    assert order[1].tolist() == [1, 2, 3, 4]
    assert mask.all()


def test_centre_missing_from_its_row_is_inserted():
    idx = np.array([[4, 3, 2]])
    sim = np.array([[0.9, 0.8, 0.7]], dtype=np.float32)
    order, mask, _ = build_sequences(idx, sim, 3, centres=np.array([9]))
    assert order[0].tolist() == [9, 4, 3]


def test_neighbours_sorted_by_falling_similarity():
    idx = np.array([[0, 1, 2, 3]])
    sim = np.array([[1.0, 0.2, 0.9, 0.5]], dtype=np.float32)
    order, _, _ = build_sequences(idx, sim, 4)
    assert order[0].tolist() == [0, 2, 3, 1]


def test_min_sim_masks_without_dropping_and_padding_is_masked():
    idx = np.array([[0, 1, 2, -1]])
    sim = np.array([[1.0, 0.9, 0.3, -np.inf]], dtype=np.float32)
    order, mask, _ = build_sequences(idx, sim, 4, min_sim=0.5)
    assert order[0].tolist() == [0, 1, 2, 0]  # 2 kept (masked), padding holds the centre
    assert mask[0].tolist() == [True, True, False, False]


def test_targets_one_zero_unknown():
    labels = np.array([7, 7, 8, -1, 7])
    order = np.array([[0, 1, 2, 3, 4], [3, 0, 1, 2, 4]])
    mask = np.array([[True, True, True, True, False], [True] * 5])
    t = make_targets(order, mask, labels)
    assert t[0].tolist() == [1, 1, 0, -1, -1]  # unknown neighbour, masked position
    assert t[1].tolist() == [-1] * 5  # unknown centre
    assert t.dtype == np.int8


def test_cosine_encoding_is_the_gram_matrix_with_masked_columns_zero():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(3, 5, 8, generator=g), dim=-1)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 3:] = False
    cde = cosine_encoding(x, mask)
    for b in range(3):
        for i in range(5):
            for j in range(5):
                want = float(x[b, i] @ x[b, j]) if mask[b, i] and mask[b, j] else 0.0
                assert abs(float(cde[b, i, j]) - want) < 1e-5
    assert torch.allclose(torch.diagonal(cde[0]), torch.ones(5))


def _cmd(*args):
    # one OpenMP thread: on a shared 2-core machine two spinning threads per process
    # slowed these runs ~20x (measured)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("CF_TEST_THREADS", "1")}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env)


@pytest.fixture()
def demo_files(tmp_path):
    f, l = make_demo_features(400, 16, seed=1)
    write_features(tmp_path / "f.h5", f, labels=l)
    g, _ = make_demo_features(400, 16, seed=2)
    write_features(tmp_path / "g.h5", g)
    r = _cmd("cftools.commands.knn", str(tmp_path / "f.h5"), "-o", str(tmp_path / "knn.h5"), "-k", "12", "-q")
    assert r.returncode == 0, r.stderr
    return tmp_path, f, l


def test_cf_seq_writes_sequences_with_targets(demo_files):
    tmp, f, l = demo_files
    r = _cmd("cftools.commands.seq", str(tmp / "knn.h5"), "--features", str(tmp / "f.h5"),
             "-o", str(tmp / "seq.h5"), "-L", "8", "--min-sim", "0.3", "-q")
    assert r.returncode == 0, r.stderr
    with open_artifact(tmp / "seq.h5", "sequences") as s, open_artifact(tmp / "knn.h5", "knn") as k:
        order, mask, targets = s.read("order"), s.read("mask"), s.read("targets")
        assert order.shape == (400, 8)
        assert (order[:, 0] == np.arange(400)).all()
        assert s.attrs["knn_id"] == k.id
        idx, sim = k.read("indices"), k.read("similarities")
    cos = np.einsum("nd,nld->nl", f, f[order])
    assert (mask[:, 1:] == (cos[:, 1:] >= 0.3 - 1e-6)).all()
    assert ((targets == 1) == (mask & (l[order] == l[:, None]))).all()
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
