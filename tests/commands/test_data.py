"""cf-data: demo, split, export and import through the command, and the standard split of
the real faces."""

import numpy as np
from conftest import CELEBA, one_line_error, run_cmd, unit_rows

from cftools.formats.artifacts import open_artifact
from cftools.formats.features import load_features


def test_cf_data_demo_split_export_round_trip(tmp_path):
    run_cmd("data", "demo", tmp_path / "d.h5", "-n", 5000, "-d", 16, "-q", check=True)
    run_cmd("data", "split", tmp_path / "d.h5", "-L", tmp_path / "l.h5", "-U", tmp_path / "u.h5",
            "-q", check=True)
    with open_artifact(tmp_path / "d.h5", "features") as d, \
            open_artifact(tmp_path / "l.h5", "features") as lab, \
            open_artifact(tmp_path / "u.h5", "features") as u:
        assert d.dims == {"N": 5000, "d": 16}
        assert lab.dims["N"] + u.dims["N"] == 5000
        assert not set(lab.read("labels")) & set(u.read("labels"))
        assert lab.provenance[0]["output"] == d.id  # the history travels with the split
    run_cmd("data", "export", tmp_path / "u.h5", "--bin", tmp_path / "u.bin", "--meta",
            tmp_path / "u.meta", check=True)
    back = load_features(tmp_path / "u.bin", labels=tmp_path / "u.meta")
    with open_artifact(tmp_path / "u.h5", "features") as u:
        np.testing.assert_array_equal(back.features, u.read("features"))
        np.testing.assert_array_equal(back.labels, u.read("labels"))


def test_cf_data_import_with_labels_and_errors(tmp_path):
    np.save(tmp_path / "x.npy", unit_rows(10, 4))
    np.save(tmp_path / "y.npy", np.arange(10))
    run_cmd("data", "import", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "-o",
            tmp_path / "x.h5", check=True)
    with open_artifact(tmp_path / "x.h5", "features") as art:
        assert art.read("labels").tolist() == list(range(10))
    np.save(tmp_path / "y9.npy", np.arange(9))
    line = one_line_error(run_cmd("data", "import", tmp_path / "x.npy", "--labels",
                                  tmp_path / "y9.npy", "-o", tmp_path / "z.h5"))
    assert "has 9 labels" in line and not (tmp_path / "z.h5").exists()


def test_the_standard_split_of_the_real_faces(tmp_path, celeba):
    run_cmd("data", "import", celeba / "features.npy", "--labels", celeba / "labels.npy", "-o",
            tmp_path / "c.h5", "-q", check=True)
    run_cmd("data", "split", tmp_path / "c.h5", "--rows", celeba / "labelled_idx.npy",
            "-L", tmp_path / "l.h5", "-U", tmp_path / "u.h5", "-q", check=True)
    with open_artifact(tmp_path / "l.h5", "features") as lab, \
            open_artifact(tmp_path / "u.h5", "features") as u:
        assert len(np.unique(lab.read("labels"))) == 149 == len(np.unique(u.read("labels")))
        assert lab.dims["N"] == len(np.load(CELEBA / "labelled_idx.npy"))
