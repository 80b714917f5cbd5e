"""Image discovery, decoding (Pillow), corrupt-image handling and the synthetic demo set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cftools.data.demo_images import identity_counts, make_demo
from cftools.data.images import BadImages, ImageDataset, decode, open_images
from cftools.errors import CfError
from cftools.formats.features import write_features


def _png(path: Path, colour=(10, 200, 30), size=(20, 16), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour if mode == "RGB" else colour[0]).save(path)
    return path


def test_folder_labels_from_identity_subfolders(tmp_path):
    _png(tmp_path / "bob" / "a.png")
    _png(tmp_path / "bob" / "deeper" / "b.jpg")
    _png(tmp_path / "alice" / "c.png")
    _png(tmp_path / "loose.png")
    (tmp_path / "alice" / "notes.txt").write_text("not an image")
    s = open_images(tmp_path)
    names = {Path(p).name: int(y) for p, y in zip(s.paths, s.labels)}
    assert set(names) == {"a.png", "b.jpg", "c.png", "loose.png"}
    assert names["a.png"] == names["b.jpg"] != names["c.png"]
    assert names["loose.png"] == -1
    assert s.label_names[names["c.png"]] == "alice"


def test_numeric_identity_folders_keep_their_ids(tmp_path):
    _png(tmp_path / "00017" / "x.png")
    _png(tmp_path / "00003" / "y.png")
    s = open_images(tmp_path)
    assert sorted(s.labels.tolist()) == [3, 17]


def test_list_file_with_and_without_labels(tmp_path):
    a = _png(tmp_path / "img" / "a.png")
    b = _png(tmp_path / "img" / "b.png")
    lst = tmp_path / "list.txt"
    lst.write_text(f"img/a.png\t4\n# comment\n\n{b}\n")
    s = open_images(lst)
    assert [Path(p).resolve() for p in s.paths] == [a.resolve(), b.resolve()]
    assert s.labels.tolist() == [4, -1]
    lst.write_text("img/a.png\tx\n")
    with pytest.raises(CfError, match="line 1"):
        open_images(lst)


def test_features_file_names_as_images(tmp_path):
    a = _png(tmp_path / "a.png")
    f = tmp_path / "f.h5"
    write_features(f, np.eye(2, dtype=np.float32), labels=[0, -1], names=["a.png", str(a)])
    s = open_images(f)
    assert s.labels.tolist() == [0, -1]
    assert all(Path(p).exists() for p in s.paths)  # relative names found beside the file
    write_features(f, np.eye(2, dtype=np.float32), labels=[0, 1])
    with pytest.raises(CfError, match="names"):
        open_images(f)


def test_missing_and_empty_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(CfError, match="no such file"):
        open_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CfError, match="no images"):
        open_images(tmp_path / "empty")
    _png(tmp_path / "unl" / "a.png")
    with pytest.raises(CfError, match="no labelled images"):
        open_images(tmp_path / "unl", require_labels=True)  # images but no identity folders


def test_decode_grey_pgm_as_rgb(tmp_path):
    p = tmp_path / "g.pgm"
    Image.new("L", (23, 31), 77).save(p)
    x = decode(str(p), 12)
    assert x.shape == (12, 12, 3) and x.dtype == np.uint8
    assert (x == 77).all()


def test_corrupt_images_yield_errors_not_exceptions(tmp_path):
    good = _png(tmp_path / "good.png", colour=(255, 0, 0))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(good.read_bytes()[:40])
    ds = ImageDataset([str(good), str(bad), str(trunc), str(tmp_path / "gone.png")],
                      [0, 1, 2, 3], 8, [0.5] * 3, [0.5] * 3)
    x, y, i, err = ds[0]
    assert err == "" and x.shape == (3, 8, 8)
    assert float(x[0, 0, 0]) == pytest.approx(1.0) and float(x[1, 0, 0]) == pytest.approx(-1.0)
    for k in (1, 2, 3):
        x, y, i, err = ds[k]
        assert err and i == k and float(x.abs().sum()) == 0.0


def test_bad_images_warn_up_to_a_cap(capsys):
    from cftools.cli import Reporter

    bad = BadImages(Reporter(prog="t"), cap=2)
    for k in range(5):
        bad.add(f"/x/{k}.png", "broken")
    bad.add("/x/0.png", "broken")  # the same image twice counts once
    bad.summary()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(bad) == 5
    assert len(err) == 3 and "5 unreadable image(s) skipped (3 not listed)" in err[-1]


def test_identity_counts_are_long_tailed():
    counts = identity_counts(np.random.default_rng(0), 2000, 12.0)
    assert counts.min() >= 1 and abs(counts.mean() - 12) < 1.5
    assert counts.max() >= 3 * np.median(counts)  # a long tail, not a uniform count


def test_demo_set_layout_split_and_determinism(tmp_path):
    s1 = make_demo(tmp_path / "d1", identities=12, image_size=24, seed=3, mean_images=4)
    s2 = make_demo(tmp_path / "d2", identities=12, image_size=24, seed=3, mean_images=4)
    assert s1 == s2
    for part in ("labelled", "unlabelled"):
        a = sorted(p.relative_to(tmp_path / "d1") for p in (tmp_path / "d1" / part).rglob("*.png"))
        b = sorted(p.relative_to(tmp_path / "d2") for p in (tmp_path / "d2" / part).rglob("*.png"))
        assert a == b and a
        assert (tmp_path / "d1" / a[0]).read_bytes() == (tmp_path / "d2" / b[0]).read_bytes()
    lab = {p.name for p in (tmp_path / "d1" / "labelled").iterdir()}
    unl = {p.name for p in (tmp_path / "d1" / "unlabelled").iterdir()}
    assert not lab & unl and len(lab | unl) == 12 and len(lab) == 6  # split by identity
    img = Image.open(next((tmp_path / "d1" / "labelled").rglob("*.png")))
    assert img.size == (24, 24) and img.mode == "RGB"
    assert json.loads((tmp_path / "d1" / "demo.json").read_text())["identities"] == 12
    # images of one identity vary (pose, light, noise) but stay closer than other identities'
    ids = sorted(lab)
    x = {i: [np.asarray(Image.open(p), dtype=np.float32)
             for p in sorted((tmp_path / "d1" / "labelled" / i).glob("*.png"))] for i in ids}
    assert any(len(v) > 1 and not np.array_equal(v[0], v[1]) for v in x.values())
    with pytest.raises(CfError, match="not an empty folder"):
        make_demo(tmp_path / "d1", identities=4)


def _tree(root: Path, part: str) -> dict:
    return {str(p.relative_to(root / part)): p.read_bytes()
            for p in sorted((root / part).rglob("*.png"))}


def test_demo_test_identities_are_in_neither_d_l_nor_d_u(tmp_path):
    with_test, without = tmp_path / "a", tmp_path / "b"
    summary = make_demo(with_test, identities=10, image_size=12, seed=3, mean_images=3,
                        test_identities=4)
    make_demo(without, identities=10, image_size=12, seed=3, mean_images=3, test_identities=0)
    ids = {part: {p.name for p in (with_test / part).iterdir()}
           for part in ("labelled", "unlabelled", "test")}
    assert len(ids["test"]) == 4 == summary["test_identities"]
    assert not ids["test"] & ids["labelled"] and not ids["test"] & ids["unlabelled"]
    assert sorted(int(i) for i in ids["test"]) == [10, 11, 12, 13]  # ids after the others'
    assert summary["test_images"] == len(list((with_test / "test").rglob("*.png")))
    # the test part is drawn beside D_L and D_U, which stay what they were without it
    assert not (without / "test").exists()
    for part in ("labelled", "unlabelled"):
        assert _tree(with_test, part) == _tree(without, part)
    # and its images are no copies of any D_L or D_U image
    seen = set(_tree(with_test, "labelled").values()) | set(_tree(with_test, "unlabelled").values())
    assert not seen & set(_tree(with_test, "test").values())
    # by default a fifth as many test identities, at least 2
    assert make_demo(tmp_path / "c", identities=6, image_size=8, mean_images=1)[
        "test_identities"] == 2
