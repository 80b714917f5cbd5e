"""The schema (formats/schema.py) against what the commands write and what cftools(7)
says: every attribute a pipeline writes is declared, and every declared dataset and
attribute is written down in the man page."""

from __future__ import annotations

import re

import h5py
import pytest
from conftest import REPO

from cftools.formats.schema import KINDS, ROOT_ATTRS, model_subtype

MAN = REPO / "man" / "cftools.7"


def _man_section(kind: str) -> str:
    text = MAN.read_text()
    start = text.index(f".SS {kind}\n")
    end = min(i for i in (text.find(".SS ", start + 4), text.find(".SH ", start + 4)) if i > 0)
    return text[start:end]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_dataset_and_attribute_is_in_the_man_page(kind):
    section = _man_section(kind)
    spec = KINDS[kind]
    missing = [d.name for d in spec.datasets if not re.search(rf"^{d.name}\t", section, re.M)]
    missing += [a.name for a in spec.attrs if not re.search(rf"\.I[R]? {a.name}\b", section)]
    assert not missing, f"{kind}: not in man/cftools.7: {missing}"


def test_root_attributes_are_in_the_man_page():
    text = MAN.read_text()
    assert all(f".B {a.name}\n" in text for a in ROOT_ATTRS)


def test_model_subtypes():
    assert model_subtype({"arch": "resnet-backbone", "depth": 18}) == "backbone"
    assert model_subtype({"dim": 32, "seq_len": 8}) == "clusformer"
    assert model_subtype({"width": 8}) is None and model_subtype("x") is None


def _declared(kind: str) -> set[str]:
    return {a.name for a in ROOT_ATTRS} | {a.name for a in KINDS[kind].attrs}


@pytest.mark.slow
def test_every_attribute_a_round_writes_is_declared(tmp_path):
    """A small pipeline through the commands, with an add: each file's root attributes
    are all in the schema of its kind."""
    import numpy as np
    from conftest import run_cmd

    from cftools.data.demo import make_demo_features, split_by_identity
    from cftools.formats.features import write_features

    f, y = make_demo_features(900, 16, seed=4)
    li, ui = split_by_identity(y, 0.5, seed=0)
    write_features(tmp_path / "l.h5", f[li], labels=y[li])
    write_features(tmp_path / "u.h5", f[ui[:-40]], labels=y[ui[:-40]])
    np.save(tmp_path / "new.npy", f[ui[-40:]])
    steps = [
        ("knn", tmp_path / "l.h5", "-k", 16, "-o", tmp_path / "kl.h5"),
        ("knn", tmp_path / "u.h5", "-k", 16, "-o", tmp_path / "ku.h5"),
        ("seq", tmp_path / "kl.h5", "--features", tmp_path / "l.h5", "-L", 16,
         "-o", tmp_path / "sl.h5"),
        ("seq", tmp_path / "ku.h5", "--features", tmp_path / "u.h5", "-L", 16,
         "-o", tmp_path / "su.h5"),
        ("train", tmp_path / "sl.h5", "--features", tmp_path / "l.h5", "--epochs", 1,
         "-o", tmp_path / "m.h5"),
        ("link", tmp_path / "su.h5", "--features", tmp_path / "u.h5", "--model",
         tmp_path / "m.h5", "--method", "model", "-o", tmp_path / "li.h5"),
        ("merge", tmp_path / "li.h5", "--method", "infomap", "-o", tmp_path / "c.h5"),
        ("merge", "labels", tmp_path / "c.h5", "--unlabelled-features", tmp_path / "u.h5",
         "--labelled-features", tmp_path / "l.h5", "-o", tmp_path / "r.h5"),
        ("merge", "add", tmp_path / "c.h5", "--new", tmp_path / "new.npy", "--links",
         tmp_path / "li.h5", "--features", tmp_path / "u.h5", "--model", tmp_path / "m.h5",
         "-o", tmp_path / "c2.h5", "--links-out", tmp_path / "li2.h5", "--features-out",
         tmp_path / "u2.h5"),
        ("data", "demo", tmp_path / "d.h5", "-n", 300, "-d", 8),
    ]
    for step in steps:
        run_cmd(step[0], *step[1:], "-q", check=True)
    for path in sorted(tmp_path.glob("*.h5")):
        with h5py.File(path, "r") as h:
            kind = h.attrs["cftools_kind"]
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            extra = set(h.attrs) - _declared(kind)
        assert not extra, f"{path.name} ({kind}) writes undeclared attributes {sorted(extra)}"
