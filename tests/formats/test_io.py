"""Importers and exporters of external formats."""

import numpy as np
import pytest
from conftest import unit_rows

from cftools.errors import CfError
from cftools.formats.features import load_features, load_labels
from cftools.formats.interop import read_knn_npz, write_bin, write_knn_npz, write_meta


def test_npy_bin_and_hdf5_path_give_the_same_features(tmp_path):
    x = unit_rows(50, 8)
    np.save(tmp_path / "x.npy", x)
    write_bin(tmp_path / "x.bin", x)
    write_meta(tmp_path / "x.meta", np.arange(50) % 5)
    import h5py
    with h5py.File(tmp_path / "raw.h5", "w") as f:
        f.create_dataset("emb/vectors", data=x.astype(np.float64))
    a = load_features(tmp_path / "x.npy")
    b = load_features(tmp_path / "x.bin")  # dimension from the .meta line count
    c = load_features(f"{tmp_path / 'raw.h5'}:/emb/vectors")
    d = load_features(tmp_path / "x.bin", dim=8, labels=tmp_path / "x.meta")
    for f in (a, b, c, d):
        np.testing.assert_allclose(f.features, x, atol=1e-6)
    assert a.id == b.id == d.id  # same content, same fingerprint
    assert d.labels.tolist() == (np.arange(50) % 5).tolist()


def test_unnormalised_rows_are_normalised_with_a_warning_or_refused(tmp_path):
    x = unit_rows(20, 4) * 3.0
    np.save(tmp_path / "x.npy", x)
    warnings = []

    class Rep:
        def warn(self, m):
            warnings.append(m)

    f = load_features(tmp_path / "x.npy", reporter=Rep())
    np.testing.assert_allclose(np.linalg.norm(f.features, axis=1), 1, atol=1e-6)
    assert warnings and "20 of 20 rows" in warnings[0]
    with pytest.raises(CfError, match="norm 3"):
        load_features(tmp_path / "x.npy", strict=True)


@pytest.mark.parametrize("array, message", [
    (np.zeros((0, 4), np.float32), "empty"),
    (np.ones(4, np.float32), "2-D"),
    (np.array([[1, 0], [np.inf, 0]], np.float32), "NaN or Inf (first at row 1)"),
    (np.array([[1, 0], [0, 0]], np.float32), "row 1 is an all-zero vector"),
    (np.array([[1, 0]], np.int32), "floating point"),
])
def test_bad_arrays_are_refused(tmp_path, array, message):
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(CfError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_features(tmp_path / "x.npy")


def test_labels_of_the_wrong_length_or_kind_are_refused(tmp_path):
    np.save(tmp_path / "x.npy", unit_rows(5, 3))
    np.save(tmp_path / "l.npy", np.arange(4))
    with pytest.raises(CfError, match="has 4 labels but the features"):
        load_features(tmp_path / "x.npy", labels=tmp_path / "l.npy")
    (tmp_path / "l.meta").write_text("1\n2\nbob\n")
    with pytest.raises(CfError, match="line 3"):
        load_labels(tmp_path / "l.meta")
    np.save(tmp_path / "neg.npy", np.array([0, -2]))
    with pytest.raises(CfError, match=">= 0"):
        load_labels(tmp_path / "neg.npy")


def test_bin_without_dimension_is_refused(tmp_path):
    write_bin(tmp_path / "x.bin", unit_rows(4, 3))
    with pytest.raises(CfError, match="--dim"):
        load_features(tmp_path / "x.bin")
    with pytest.raises(CfError, match="rows of dimension 5"):
        load_features(tmp_path / "x.bin", dim=5)


def test_knn_npz_round_trip_in_learn_to_cluster_layout(tmp_path):
    idx = np.array([[0, 2, 1], [1, 0, 2], [2, 0, 1]])
    sims = np.array([[1, .8, .5], [1, .7, .2], [1, .8, .1]], np.float32)
    write_knn_npz(tmp_path / "k.npz", idx, sims)
    raw = np.load(tmp_path / "k.npz")["data"]
    assert raw.shape == (3, 2, 3)
    np.testing.assert_allclose(raw[:, 1], 1 - sims, atol=1e-6)  # cosine distance, ascending
    i2, s2 = read_knn_npz(tmp_path / "k.npz")
    assert (i2 == idx).all() and np.allclose(s2, sims)
    np.savez(tmp_path / "bad.npz", data=np.zeros((3, 3, 2)))
    with pytest.raises(CfError, match=r"\(N, 2, k\)"):
        read_knn_npz(tmp_path / "bad.npz")
