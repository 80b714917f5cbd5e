"""cf-data: demo, split, export and import through the command, and the standard split of
the real faces."""

import h5py
import numpy as np
from conftest import CELEBA, one_line_error, run_cmd, unit_rows

from cftools.formats.artifacts import open_artifact
from cftools.formats.features import load_features, write_features


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


def _retrain(path, feats, labels, source, source_rows, names=None):
    """A retraining set as cf-merge labels writes one."""
    from cftools.formats.writing import write_strings
    write_features(path, feats, labels=labels)
    with h5py.File(path, "a") as f:
        f.create_dataset("source", data=np.asarray(source, np.int8))
        f.create_dataset("source_rows", data=np.asarray(source_rows, np.int64))
        if names is not None:
            write_strings(f, "names", names)


def test_carry_labels_gives_new_features_the_retraining_sets_labels(tmp_path):
    """cf-data carry-labels: every row of the new labelled and unlabelled features, in that
    order, with the label the retraining set gave that point (-1 where it gave none); rows
    that name other points, or a file that is no retraining set, are refused in one line."""
    old_l, old_u = unit_rows(4, 8, seed=1), unit_rows(5, 8, seed=2)
    new_l, new_u = unit_rows(4, 8, seed=3), unit_rows(5, 8, seed=4)
    names_l, names_u = [f"l/{i}.png" for i in range(4)], [f"u/{i}.png" for i in range(5)]
    # D_L row 2 was unknown (dropped); D_U rows 0 and 3 form pseudo-identity 7, row 4 is 8
    source, rows = [0, 0, 0, 1, 1, 1], [0, 1, 3, 0, 3, 4]
    carried = [5, 6, 5, 7, 7, 8]
    _retrain(tmp_path / "retrain.h5", np.vstack([old_l[[0, 1, 3]], old_u[[0, 3, 4]]]),
             carried, source, rows, [names_l[i] for i in (0, 1, 3)] +
             [names_u[i] for i in (0, 3, 4)])
    write_features(tmp_path / "l.h5", new_l, labels=np.array([5, 6, -1, 5]), names=names_l)
    write_features(tmp_path / "u.h5", new_u, names=names_u)
    run_cmd("data", "carry-labels", tmp_path / "retrain.h5", "--labelled", tmp_path / "l.h5",
            "--unlabelled", tmp_path / "u.h5", "-o", tmp_path / "out.h5", "-q", check=True)
    out = load_features(tmp_path / "out.h5")
    np.testing.assert_array_equal(out.features, np.vstack([new_l, new_u]))
    assert out.labels.tolist() == [5, 6, -1, 5, 7, -1, -1, 7, 8]
    assert list(out.names) == names_l + names_u
    with open_artifact(tmp_path / "out.h5", "features") as a:
        assert a.read("source").tolist() == [0] * 4 + [1] * 5
        assert a.read("source_rows").tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4]

    write_features(tmp_path / "shuffled.h5", new_u[::-1], names=names_u[::-1])
    line = one_line_error(run_cmd("data", "carry-labels", tmp_path / "retrain.h5", "--labelled",
                                  tmp_path / "l.h5", "--unlabelled", tmp_path / "shuffled.h5",
                                  "-o", tmp_path / "bad.h5"))
    assert "retrain.h5" in line and "not the same points" in line
    write_features(tmp_path / "short.h5", new_u[:3], names=names_u[:3])
    line = one_line_error(run_cmd("data", "carry-labels", tmp_path / "retrain.h5", "--labelled",
                                  tmp_path / "l.h5", "--unlabelled", tmp_path / "short.h5",
                                  "-o", tmp_path / "bad.h5"))
    assert "retrain.h5" in line and "which has 3 rows" in line
    write_features(tmp_path / "plain.h5", old_l, labels=np.arange(4))
    line = one_line_error(run_cmd("data", "carry-labels", tmp_path / "plain.h5", "--labelled",
                                  tmp_path / "l.h5", "--unlabelled", tmp_path / "u.h5",
                                  "-o", tmp_path / "bad.h5"))
    assert "plain.h5" in line and "not a retraining set" in line
    assert not (tmp_path / "bad.h5").exists()
