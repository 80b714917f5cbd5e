"""The HDF5 artifact layer: stamping, provenance, atomic writes, validation on read."""

import json

import h5py
import numpy as np
import pytest

from cftools.errors import CfError
from cftools.formats.artifacts import check_finite, open_artifact
from cftools.formats.schema import FORMAT_VERSION
from cftools.formats.writing import check_output_path, write_artifact


def write_clusters(path, labels, inputs=None):
    with write_artifact(path, "clusters", inputs=inputs) as f:
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))


def test_roundtrip_stamps_kind_version_id_and_provenance(tmp_path):
    write_clusters(tmp_path / "a.h5", [0, 0, 1])
    with open_artifact(tmp_path / "a.h5", "clusters") as art:
        assert art.kind == "clusters" and art.dims["N"] == 3
        assert len(art.id) == 32
        assert art.attrs["cftools_format"] == FORMAT_VERSION
        (step,) = art.provenance
        assert step["output"] == art.id and "version" in step and "time" in step
        first = art
    write_clusters(tmp_path / "b.h5", [1, 1, 0], inputs={"from": first})
    with open_artifact(tmp_path / "b.h5", "clusters") as art:
        assert [s["output"] for s in art.provenance] == [first.id, art.id]
        assert art.provenance[-1]["inputs"] == {"from": first.id}
        assert art.id != first.id


def test_failed_write_leaves_nothing_and_keeps_old_file(tmp_path):
    out = tmp_path / "c.h5"
    with pytest.raises(RuntimeError):
        with write_artifact(out, "clusters") as f:
            f.create_dataset("labels", data=np.zeros(3, np.int64))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    write_clusters(out, [0, 1])
    with pytest.raises(KeyboardInterrupt):
        with write_artifact(out, "clusters") as f:
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["c.h5"]
    with open_artifact(out, "clusters") as art:
        assert art.read("labels").tolist() == [0, 1]


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("not_hdf5", "not an HDF5 file"),
    ("truncated", "truncated or corrupt"),
    ("no_kind", "not a cftools file"),
    ("wrong_kind", "is a knn file, expected clusters"),
    ("future", "newer than this cftools"),
    ("missing_dataset", "missing dataset 'labels'"),
    ("wrong_dtype", "dtype float32, expected int64"),
    ("wrong_rank", "rank 2"),
    ("empty", "empty clusters file"),
])
def test_bad_files_are_refused_with_the_reason(tmp_path, case, message):
    path = tmp_path / "x.h5"
    if case == "not_hdf5":
        path.write_text("hello")
    elif case == "truncated":
        write_clusters(path, np.arange(100000))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif case != "missing":
        with h5py.File(path, "w") as f:
            if case != "no_kind":
                f.attrs["cftools_kind"] = "knn" if case == "wrong_kind" else "clusters"
            f.attrs["cftools_format"] = np.int64(FORMAT_VERSION + (case == "future"))
            f.attrs["cftools_id"] = "x"
            shape = {"wrong_rank": (3, 2), "empty": (0,)}.get(case, (3,))
            dtype = np.float32 if case == "wrong_dtype" else np.int64
            if case != "missing_dataset":
                f.create_dataset("labels", data=np.zeros(shape, dtype))
    with pytest.raises(CfError) as err:
        open_artifact(path, "clusters").close()
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_shapes_must_agree_across_datasets(tmp_path):
    path = tmp_path / "k.h5"
    with write_artifact(path, "knn", attrs={"query_id": "a", "base_id": "a", "method": "exact",
                                              "self_first": True}) as f:
        f.create_dataset("indices", data=np.zeros((4, 3), np.int64))
        f.create_dataset("similarities", data=np.zeros((5, 3), np.float32))
    with pytest.raises(CfError, match="N=5 but 'indices' has N=4"):
        open_artifact(path, "knn")


def test_check_finite_names_the_row(tmp_path):
    path = tmp_path / "f.h5"
    x = np.ones((10, 2), np.float32)
    x[7, 1] = np.nan
    with write_artifact(path, "features") as f:
        f.create_dataset("features", data=x)
    with open_artifact(path, "features") as art, pytest.raises(CfError, match="row 7"):
        check_finite(art, "features")


def test_output_path_checks(tmp_path):
    (tmp_path / "in.h5").write_text("x")
    with pytest.raises(CfError, match="does not exist"):
        check_output_path(tmp_path / "no" / "out.h5")
    with pytest.raises(CfError, match="also an input"):
        check_output_path(tmp_path / "in.h5", [tmp_path / "." / "in.h5"])
    assert check_output_path(tmp_path / "out.h5", [tmp_path / "in.h5"]).name == "out.h5"


def test_json_attributes_round_trip(tmp_path):
    path = tmp_path / "m.h5"
    with write_artifact(path, "model", attrs={"config": {"width": 8, "layers": [1, 2]}}) as f:
        f.create_group("weights")
    with open_artifact(path, "model") as art:
        assert art.json_attr("config") == {"width": 8, "layers": [1, 2]}
        assert json.loads(art.attrs["cftools_provenance"])[0]["output"] == art.id
