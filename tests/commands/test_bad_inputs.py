"""Bad input through every command: each case is refused with one line on stderr naming
the file and the problem, a non-zero exit, no output file and no temporary left behind;
nothing is unpickled. Duplicate points and a corrupt image are not errors.

Most cases run the command in this process (``main.main(args)``, exactly what the console
script runs, minus interpreter start-up); the missing-file row runs every command as a
real process too."""

from __future__ import annotations

import os
import pickle
import shlex
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import call, edited_copy, one_line_error, replaced_dataset, run_cmd

from cftools.data.demo import make_demo_features
from cftools.formats.artifacts import open_artifact
from cftools.formats.features import write_features

N, D, K, L = 600, 16, 12, 8
COMMANDS = ("data", "knn", "seq", "train", "link", "merge", "eval", "embed")


def _ok(capsys, module, *args):
    r = call(capsys, module, *args)
    assert r.returncode == 0, f"cf-{module} {args}: {r.stderr}"
    return r


class Payload:
    """Unpickling this would create the marker file: proof that nothing unpickles."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


@pytest.fixture(scope="module")
def F(tmp_path_factory):
    """Every good and bad file, built once. Returns {placeholder: path}."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only spin on a busy machine
    try:
        yield _make_files(tmp_path_factory)
    finally:
        torch.set_num_threads(threads)


def _make_files(tmp_path_factory):
    import torch

    capsys = _NoCapture()
    t = tmp_path_factory.mktemp("bad")
    p = {"dir": t, "missing": t / "missing.h5", "missingdir": t / "nodir" / "out.h5",
         "marker": t / "UNPICKLED"}
    x, y = make_demo_features(N, D, seed=0)
    write_features(t / "f.h5", x, labels=y)
    x2, y2 = make_demo_features(N, D, seed=9)
    write_features(t / "f2.h5", x2, labels=y2)
    p.update(feats=t / "f.h5", f2=t / "f2.h5")
    np.save(t / "x.npy", x)
    p["npy"] = t / "x.npy"
    # the pipeline through the commands themselves
    capsys.run("knn", t / "f.h5", "-o", t / "k.h5", "-k", K, "-q")
    capsys.run("seq", t / "k.h5", "--features", t / "f.h5", "-o", t / "s.h5", "-L", L, "-q")
    capsys.run("train", t / "s.h5", "--features", t / "f.h5", "-o", t / "m.h5", "--epochs", 1,
               "--width", 32, "--ffn", 64, "--batch-size", 64, "--device", "cpu", "-q")
    capsys.run("link", t / "s.h5", "--features", t / "f.h5", "--model", t / "m.h5", "-o",
               t / "l.h5", "--method", "model", "--device", "cpu", "-q")
    capsys.run("merge", "decode", t / "l.h5", "-o", t / "c.h5", "--method", "peaks",
               "--threshold", 0.5, "-q")
    p.update(knn=t / "k.h5", seq=t / "s.h5", model=t / "m.h5", links=t / "l.h5",
             clusters=t / "c.h5")
    # models of another feature dimension / sequence length
    from cftools.core.clusformer.model import Clusformer, make_config, save_model

    torch.manual_seed(0)
    save_model(t / "m_d8.h5", Clusformer(make_config("small", 8, L, width=32, ffn=64)))
    save_model(t / "m_L99.h5", Clusformer(make_config("small", D, 99, width=32, ffn=64)))
    p.update(m_d8=t / "m_d8.h5", m_L99=t / "m_L99.h5")
    # pickles: a pickle named .h5, and HDF5 models hiding pickle bytes in their weights
    blob = pickle.dumps(Payload(p["marker"]))
    (t / "pickle.h5").write_bytes(blob)
    with h5py.File(t / "m.h5", "r") as f:
        first = sorted(f["weights"].keys())[0]
    opaque = np.void(blob)
    p["pickle"] = t / "pickle.h5"
    p["opaque"] = edited_copy(t / "m.h5", t / "opaque.h5", replaced_dataset(f"weights/{first}", opaque))
    p["extra"] = edited_copy(t / "m.h5", t / "extra.h5",
                            lambda f: f["weights"].create_dataset("payload", data=opaque))
    p["bytes_w"] = edited_copy(t / "m.h5", t / "bytesw.h5", replaced_dataset(
        f"weights/{first}", np.frombuffer(blob, dtype=np.uint8)))
    # broken files
    (t / "notes.h5").write_text("just some text, not HDF5\n")
    raw = (t / "f.h5").read_bytes()
    (t / "trunc.h5").write_bytes(raw[: len(raw) // 2])
    p.update(notes=t / "notes.h5", trunc=t / "trunc.h5")

    def future(f):
        f.attrs["cftools_format"] = np.int64(99)

    p["future"] = edited_copy(t / "f.h5", t / "future.h5", future)
    p["knn_future"] = edited_copy(t / "k.h5", t / "kfuture.h5", future)
    p["links_future"] = edited_copy(t / "l.h5", t / "lfuture.h5", future)
    p["nofeat"] = edited_copy(t / "f.h5", t / "nofeat.h5", lambda f: f.__delitem__("features"))
    p["knn_noidx"] = edited_copy(t / "k.h5", t / "knoidx.h5", lambda f: f.__delitem__("indices"))
    p["f64"] = edited_copy(t / "f.h5", t / "f64.h5", replaced_dataset("features", x.astype(np.float64)))
    p["rank3"] = edited_copy(t / "f.h5", t / "rank3.h5", replaced_dataset("features", x[:, :, None]))
    with h5py.File(t / "k.h5", "r") as f:
        kidx, ksim = f["indices"][()], f["similarities"][()]

    def shorten(f):  # a knn file of 599 rows that claims to be of f.h5
        replaced_dataset("indices", kidx[:-1])(f)
        replaced_dataset("similarities", ksim[:-1])(f)

    p["knn_short"] = edited_copy(t / "k.h5", t / "kshort.h5", shorten)
    p["knn_f64"] = edited_copy(t / "k.h5", t / "kf64.h5", replaced_dataset("similarities",
                                                                 ksim.astype(np.float64)))
    with h5py.File(t / "s.h5", "r") as f:
        order = f["order"][()]
    p["seq_f64"] = edited_copy(t / "s.h5", t / "sf64.h5", replaced_dataset("order", order.astype(np.float64)))
    p["seq_short"] = edited_copy(t / "s.h5", t / "sshort.h5",
                                 replaced_dataset("mask", np.ones((N - 1, L), bool)))
    with h5py.File(t / "l.h5", "r") as f:
        probs = f["probabilities"][()]
    probs_nan = probs.copy()
    probs_nan[7, 3] = np.nan
    p["links_nan"] = edited_copy(t / "l.h5", t / "lnan.h5", replaced_dataset("probabilities", probs_nan))
    p["links_rank"] = edited_copy(t / "l.h5", t / "lrank.h5", replaced_dataset("probabilities", probs[:, 0]))
    p["clusters_short"] = edited_copy(t / "c.h5", t / "cshort.h5",
                                     replaced_dataset("labels", np.arange(N - 1, dtype=np.int64)))
    p["empty_h5"] = edited_copy(t / "f.h5", t / "empty.h5", lambda f: [
        f.__delitem__("features"), f.__delitem__("labels"),
        f.create_dataset("features", shape=(0, D), dtype=np.float32)])
    # bad arrays
    for name, arr in {
        "nan": np.where(np.arange(N)[:, None] == 5, np.nan, x),
        "inf": np.where(np.arange(N)[:, None] == 6, np.inf, x),
        "zero": np.where(np.arange(N)[:, None] == 7, 0.0, x),
        "unnorm": x * 3.0,
        "empty": np.zeros((0, D), np.float32),
        "ints": (x * 100).astype(np.int32),
        "rank1": x[:, 0].copy(),
    }.items():
        np.save(t / f"{name}.npy", np.asarray(arr, dtype=arr.dtype if name == "ints" else np.float32))
        p[name] = t / f"{name}.npy"
    np.save(t / "labels599.npy", y[:-1])
    p["labels599"] = t / "labels599.npy"
    # images and a tiny backbone for cf-embed
    from cftools.core.recognition.backbone import (
        Backbone,
        BackboneConfig,
        save_backbone,
    )
    from cftools.data.demo_images import make_demo

    make_demo(t / "img", identities=4, image_size=16, seed=1, mean_images=4)
    p["images"] = t / "img" / "labelled"
    save_backbone(t / "bb.h5", Backbone(BackboneConfig(depth=18, width=4, dim=16, image_size=16)))
    p["backbone"] = t / "bb.h5"
    p["out"] = t / "out.h5"  # replaced per test by a fresh path
    return p


class _NoCapture:
    """Run a command in this process while building fixtures (no capsys in module scope)."""

    def run(self, module, *args):
        import contextlib
        import importlib
        import io

        main = importlib.import_module(f"cftools.commands.{module}").main
        err = io.StringIO()
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
            main.main(args=[str(a) for a in args], prog_name=f"cf-{module}")
        assert info.value.code in (0, None), f"cf-{module} {args}: {err.getvalue()}"


# (command, arguments, expected substring of the error, placeholder of the file it names)
CASES = [
    # ---- cf-data
    ("data", "import {missing} -o {out}", "no such file", "missing"),
    ("data", "import {notes} -o {out}", "not an HDF5 file", "notes"),
    ("data", "import {trunc} -o {out}", "truncated", "trunc"),
    ("data", "import {knn} -o {out}", "is a knn file, expected features", "knn"),
    ("data", "import {future} -o {out}", "newer than", "future"),
    ("data", "import {nofeat} -o {out}", "missing dataset 'features'", "nofeat"),
    ("data", "import {f64} -o {out}", "has dtype float64, expected float32", "f64"),
    ("data", "import {rank3} -o {out}", "rank 3", "rank3"),
    ("data", "import {nan} -o {out}", "NaN or Inf (first at row 5)", "nan"),
    ("data", "import {inf} -o {out}", "NaN or Inf (first at row 6)", "inf"),
    ("data", "import {zero} -o {out}", "row 7 is an all-zero vector", "zero"),
    ("data", "import {unnorm} -o {out} --strict", "not 1", "unnorm"),
    ("data", "import {empty} -o {out}", "empty features", "empty"),
    ("data", "import {empty_h5} -o {out}", "0 rows", "empty_h5"),
    ("data", "import {ints} -o {out}", "floating point", "ints"),
    ("data", "import {rank1} -o {out}", "2-D", "rank1"),
    ("data", "import {npy} --labels {labels599} -o {out}", "has 599 labels", "labels599"),
    ("data", "import {npy} -o {missingdir}", "does not exist", "missingdir"),
    ("data", "import {npy} -o {npy}", "also an input", "npy"),
    ("data", "demo {missingdir} -n 10", "does not exist", "missingdir"),
    ("data", "split {feats} -L {feats} -U {out}", "also an input", "feats"),
    # ---- cf-knn
    ("knn", "{missing} -o {out} -k 5", "no such file", "missing"),
    ("knn", "{clusters} -o {out} -k 5", "is a clusters file, expected features", "clusters"),
    ("knn", "{trunc} -o {out} -k 5", "truncated", "trunc"),
    ("knn", "{nan} -o {out} -k 5", "NaN or Inf", "nan"),
    ("knn", "{zero} -o {out} -k 5", "all-zero", "zero"),
    ("knn", "{unnorm} -o {out} -k 5 --strict", "not 1", "unnorm"),
    ("knn", "{empty} -o {out} -k 5", "empty features", "empty"),
    ("knn", "{feats} -o {out} -k 600", "k=600 needs more than 600 points", "feats"),
    ("knn", "{feats} -o {out} -k 0", "k must be at least 1", None),
    ("knn", "{feats} -o {out} -k 5 --queries {m_d8}", "is a model file, expected features", "m_d8"),
    ("knn", "{feats} -o {missingdir} -k 5", "does not exist", "missingdir"),
    ("knn", "{feats} -o {feats} -k 5", "also an input", "feats"),
    # ---- cf-seq
    ("seq", "{missing} --features {feats} -o {out}", "no such file", "missing"),
    ("seq", "{feats} --features {feats} -o {out}", "is a features file, expected knn", "feats"),
    ("seq", "{knn} --features {f2} -o {out}", "made from other features", "knn"),
    ("seq", "{knn} --features {missing} -o {out}", "no such file", "missing"),
    ("seq", "{knn_future} --features {feats} -o {out}", "newer than", "knn_future"),
    ("seq", "{knn_noidx} --features {feats} -o {out}", "missing dataset 'indices'", "knn_noidx"),
    ("seq", "{knn} --features {feats} -o {out} -L 20", "longer than the k=12", "knn"),
    ("seq", "{knn_short} --features {feats} -o {out}", "has 599 rows but the features", "knn_short"),
    ("seq", "{knn_f64} --features {feats} -o {out}", "'similarities' has dtype float64", "knn_f64"),
    ("seq", "{knn} --features {feats} -o {out} --labels {labels599}", "has 599 labels",
     "labels599"),
    ("seq", "{knn} --features {feats} -o {missingdir}", "does not exist", "missingdir"),
    ("seq", "{knn} --features {feats} -o {knn}", "also an input", "knn"),
    # ---- cf-train
    ("train", "{missing} --features {feats} -o {out}", "no such file", "missing"),
    ("train", "{knn} --features {feats} -o {out}", "is a knn file, expected sequences", "knn"),
    ("train", "{seq} --features {f2} -o {out}", "made from other features", "seq"),
    ("train", "{seq_f64} --features {feats} -o {out}", "dtype float64, expected int64", "seq_f64"),
    ("train", "{seq_short} --features {feats} -o {out}", "'mask' has N=599", "seq_short"),
    ("train", "{seq} --features {feats} --labels {labels599} -o {out}", "has 599 labels",
     "labels599"),
    ("train", "{seq} --features {feats} -o {missingdir}", "does not exist", "missingdir"),
    ("train", "{seq} --features {feats} -o {seq}", "also an input", "seq"),
    # ---- cf-link
    ("link", "{missing} --features {feats} --model {model} -o {out}", "no such file", "missing"),
    ("link", "{links} --features {feats} --model {model} -o {out}",
     "is a links file, expected sequences", "links"),
    ("link", "{seq} --features {f2} --model {model} -o {out}", "made from other features", "seq"),
    ("link", "{seq} --features {feats} --model {missing} -o {out}", "no such file", "missing"),
    ("link", "{seq} --features {feats} --model {feats} -o {out}",
     "is a features file, expected model", "feats"),
    ("link", "{seq} --features {feats} --model {m_d8} -o {out}", "dimension 8", "m_d8"),
    ("link", "{seq} --features {feats} --model {m_L99} -o {out}", "L=99", "m_L99"),
    ("link", "{seq} --features {feats} --model {pickle} -o {out}", "not an HDF5 file", "pickle"),
    ("link", "{seq} --features {feats} --model {opaque} -o {out}", "non-numeric", "opaque"),
    ("link", "{seq} --features {feats} --model {bytes_w} -o {out}", "dtype uint8", "bytes_w"),
    ("link", "{seq} --features {feats} --model {extra} -o {out}", "unexpected entries", "extra"),
    ("link", "{seq} --features {feats} --model {backbone} -o {out}", "config", "backbone"),
    ("link", "{seq} --features {feats} --model {model} -o {missingdir}", "does not exist",
     "missingdir"),
    ("link", "{seq} --features {feats} --model {model} -o {model}", "also an input", "model"),
    # ---- cf-merge
    ("merge", "{missing} -o {out} --threshold 0.5", "no such file", "missing"),
    ("merge", "{seq} -o {out} --threshold 0.5", "is a sequences file, expected links", "seq"),
    ("merge", "{links_nan} -o {out} --threshold 0.5", "NaN or Inf (first at row 7)", "links_nan"),
    ("merge", "{links_future} -o {out} --threshold 0.5", "newer than", "links_future"),
    ("merge", "{links_rank} -o {out} --threshold 0.5", "rank 1", "links_rank"),
    ("merge", "{notes} -o {out} --threshold 0.5", "not an HDF5 file", "notes"),
    ("merge", "{links} -o {missingdir} --threshold 0.5", "does not exist", "missingdir"),
    ("merge", "{links} -o {links} --threshold 0.5", "also an input", "links"),
    ("merge", "labels {clusters_short} --unlabelled-features {feats} --labelled-features {f2} "
              "-o {out}", "has 599 labels", "clusters_short"),
    ("merge", "labels {knn} --unlabelled-features {feats} --labelled-features {f2} -o {out}",
     "is a knn file, expected clusters", "knn"),
    ("merge", "labels {clusters} --unlabelled-features {feats} --labelled-features {f2} "
              "-o {feats}", "also an input", "feats"),
    # ---- cf-eval (writes no file: its inputs only)
    ("eval", "{missing} --truth {feats}", "no such file", "missing"),
    ("eval", "{links} --truth {feats}", "is a links file, expected clusters", "links"),
    ("eval", "{clusters} --truth {missing}", "no such file", "missing"),
    ("eval", "{clusters_short} --truth {feats}", "has 599 labels but the truth", "clusters_short"),
    ("eval", "{clusters} --truth {labels599}", "has 600 labels but the truth", "clusters"),
    ("eval", "{clusters} --truth {trunc}", "truncated", "trunc"),
    ("eval", "knn {seq} --truth {feats}", "is a sequences file, expected knn", "seq"),
    ("eval", "knn {knn} --truth {labels599}", "599", None),
    # ---- cf-embed
    ("embed", "train {missing} -o {out}", "no such file", "missing"),
    ("embed", "train {images} -o {missingdir}", "does not exist", "missingdir"),
    ("embed", "train {images} -o {out} --checkpoint {missingdir}", "does not exist", "missingdir"),
    ("embed", "extract {missing} {images} -o {out}", "no such file", "missing"),
    ("embed", "extract {feats} {images} -o {out}", "is a features file, expected model", "feats"),
    ("embed", "extract {model} {images} -o {out}", "arch", "model"),
    ("embed", "extract {pickle} {images} -o {out}", "not an HDF5 file", "pickle"),
    ("embed", "extract {backbone} {missing} -o {out}", "no such file", "missing"),
    ("embed", "extract {backbone} {images} -o {missingdir}", "does not exist", "missingdir"),
    ("embed", "extract {backbone} {images} -o {backbone}", "also an input", "backbone"),
]


def _snapshot(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("module,template,expect,names", CASES,
                         ids=[f"{c[0]}:{c[1].split()[0]}:{c[2][:28]}" for c in CASES])
def test_refused_in_one_line_with_nothing_written(F, tmp_path, capsys, module, template, expect,
                                                 names):
    paths = {**F, "out": tmp_path / "out.h5"}
    before = _snapshot(F["dir"])
    args = [a.format(**paths) for a in template.split()]
    r = call(capsys, module, *args, "-q")
    line = one_line_error(r)
    assert line.startswith(f"cf-{module}: error: "), line
    assert expect in line, line
    if names is not None:
        assert str(paths[names]) in line, line
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out.h5").exists()
    assert not list(tmp_path.glob(".*cf-tmp*")) and not list(F["dir"].glob(".*cf-tmp*"))
    assert _snapshot(F["dir"]) == before, "an input was changed or a file was added"
    assert not F["marker"].exists(), "a pickle was loaded"


MISSING = {
    "data": "import {missing} -o {out}", "knn": "{missing} -o {out}",
    "seq": "{missing} --features {feats} -o {out}", "train": "{missing} --features {feats} -o {out}",
    "link": "{missing} --features {feats} --model {model} -o {out}",
    "merge": "{missing} -o {out} --threshold 0.5", "eval": "{missing} --truth {feats}",
    "embed": "extract {backbone} {missing} -o {out}",
}


@pytest.mark.parametrize("module", COMMANDS)
def test_a_real_process_exits_1_with_one_line(F, tmp_path, module):
    paths = {**F, "out": tmp_path / "out.h5"}
    r = run_cmd(module, *[a.format(**paths) for a in MISSING[module].split()], "-q")
    assert r.returncode == 1, r.stderr
    line = one_line_error(r)
    assert "no such file" in line and str(F["missing"]) in line, line
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.parametrize("module", COMMANDS)
def test_errors_name_the_command_also_under_python_m(module):
    r = run_cmd(module, "--no-such-option")
    assert r.returncode == 2
    assert one_line_error(r).startswith(f"cf-{module}: error: "), r.stderr


def test_every_command_is_in_the_matrix():
    seen = {c[0] for c in CASES}
    assert seen == set(COMMANDS)
    for module in COMMANDS:
        rows = [c for c in CASES if c[0] == module]
        assert any(c[2] == "no such file" for c in rows), module
        assert any(" file, expected " in c[2] for c in rows), module
        if module != "eval":  # cf-eval writes nothing
            assert any(c[2] in ("does not exist", "also an input") for c in rows), module


# --------------------------------------------------------------------------- not errors


def test_unnormalised_features_are_normalised_with_a_warning(F, tmp_path, capsys):
    r = _ok(capsys, "knn", F["unnorm"], "-o", tmp_path / "k.h5", "-k", 5, "-q")
    warn = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(warn) == 1 and "warning" in warn[0] and "normalised" in warn[0], r.stderr
    with open_artifact(tmp_path / "k.h5", "knn") as a:
        sims = a.read("similarities")
    assert np.allclose(sims[:, 0], 1.0, atol=1e-5) and (sims <= 1.0 + 1e-5).all()


def test_exact_duplicates_keep_the_centre_first(tmp_path, capsys):
    """Twins and triplets: every row of the kNN and of the sequences starts with the point
    itself, and its copies follow at similarity 1 (not an error, and no copy mistaken for
    the centre)."""
    x, y = make_demo_features(300, D, seed=4)
    twins = np.arange(0, 60, 2)
    x = np.concatenate([x, x[twins], x[:10]])  # rows 0..9 have two copies, the other twins one
    y = np.concatenate([y, y[twins], y[:10]])
    n = x.shape[0]
    write_features(tmp_path / "d.h5", x, labels=y)
    _ok(capsys, "knn", tmp_path / "d.h5", "-o", tmp_path / "k.h5", "-k", 6, "-q")
    _ok(capsys, "seq", tmp_path / "k.h5", "--features", tmp_path / "d.h5", "-o", tmp_path / "s.h5",
        "-L", 4, "-q")
    with open_artifact(tmp_path / "k.h5", "knn") as a:
        idx, sim = a.read("indices"), a.read("similarities")
    with open_artifact(tmp_path / "s.h5", "sequences") as s:
        order, mask, targets = s.read("order"), s.read("mask"), s.read("targets")
    rows = np.arange(n)
    assert (idx[:, 0] == rows).all() and np.allclose(sim[:, 0], 1.0, atol=1e-5)
    assert (order[:, 0] == rows).all() and mask[:, 0].all()
    for r in range(n):
        copies = set(np.flatnonzero((x == x[r]).all(axis=1)).tolist()) - {r}
        assert len(set(idx[r].tolist())) == idx.shape[1], f"row {r} repeats a neighbour"
        # the copies come right after the centre, at similarity 1, with target 1
        assert set(idx[r, 1:1 + len(copies)].tolist()) == copies, (r, idx[r], copies)
        assert np.allclose(sim[r, 1:1 + len(copies)], 1.0, atol=1e-5)
        assert set(order[r, 1:1 + len(copies)].tolist()) == copies
        assert (targets[r, 1:1 + len(copies)] == 1).all()


def test_a_corrupt_image_is_reported_and_skipped(F, tmp_path, capsys):
    images = tmp_path / "img"
    shutil.copytree(F["images"], images)
    first = sorted(images.iterdir())[0]
    (first / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0garbage" * 10)
    (first / "empty.png").write_bytes(b"")
    n_good = len(list(images.rglob("*.png"))) - 2
    r = _ok(capsys, "embed", "extract", F["backbone"], images, "-o", tmp_path / "f.h5",
            "--workers", 0, "--device", "cpu", "-q")
    assert "broken.png" in r.stderr and "empty.png" in r.stderr
    with open_artifact(tmp_path / "f.h5", "features") as a:
        assert a.dims["N"] == n_good and a.attrs["skipped_images"] == 2
        names = a.read("names")
    assert not any("broken" in s or "empty.png" in s for s in names)


# --------------------------------------------------------------------------- issue 15


@pytest.fixture(scope="module")
def G(F, tmp_path_factory):
    """Files of the second pass (issue 15), beside those of F."""
    t = tmp_path_factory.mktemp("bad2")
    x = np.load(F["npy"])
    x.astype("<f4").tofile(t / "s.bin")  # 600 x 16 floats ...
    np.savetxt(t / "s.meta", np.zeros(480, np.int64), fmt="%d")  # ... with a 480-line .meta
    with h5py.File(F["knn"], "r") as f:
        sim = f["similarities"][()]
    sim[4, 2] = np.nan
    knn_nan = edited_copy(F["knn"], t / "knan.h5", replaced_dataset("similarities", sim))
    with h5py.File(F["links"], "r") as f:
        probs = f["probabilities"][()]
    probs[3, 1] = 1.5
    links_big = edited_copy(F["links"], t / "lbig.h5", replaced_dataset("probabilities", probs))
    from cftools.formats.interop import write_knn_npz
    with h5py.File(F["knn"], "r") as f:
        write_knn_npz(t / "k.npz", f["indices"][()], f["similarities"][()])
    np.save(t / "dup_rows.npy", np.array([0, 1, 1, 5]))
    np.save(t / "unknown.npy", np.full(N, -1, np.int64))
    np.save(t / "two_rows.npy", x[:2])
    # the knn of features from outside (.npy), and a copy of them rescaled by 1.0005 (within
    # the unit-norm tolerance, so normalised without a warning)
    _NoCapture().run("knn", F["npy"], "-o", t / "knpy.h5", "-k", K, "-q")
    np.save(t / "rescaled.npy", (x * np.float32(1.0005)).astype(np.float32))
    # a pickle, an object array and an HDF5 file under .npy names
    shutil.copyfile(F["pickle"], t / "pickle.npy")
    np.save(t / "objects.npy", np.array([Payload(F["marker"])], dtype=object), allow_pickle=True)
    shutil.copyfile(F["feats"], t / "hdf5.npy")
    # image folders that cannot train: one image; one readable image among broken ones
    good = sorted(Path(F["images"]).rglob("*.png"))[0]
    (t / "one_image" / "a").mkdir(parents=True)
    shutil.copyfile(good, t / "one_image" / "a" / "1.png")
    for ident in ("a", "b"):
        (t / "one_readable" / ident).mkdir(parents=True)
        (t / "one_readable" / ident / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    shutil.copyfile(good, t / "one_readable" / "a" / "1.png")
    ro = t / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return {"bin": t / "s.bin", "knn_nan": knn_nan, "links_big": links_big,
            "knn_npz": t / "k.npz", "dup_rows": t / "dup_rows.npy", "unknown": t / "unknown.npy",
            "ro": ro, "dir2": t,
            "two_rows": t / "two_rows.npy", "one_image": t / "one_image",
            "one_readable": t / "one_readable", "pickle_npy": t / "pickle.npy",
            "objects_npy": t / "objects.npy", "hdf5_npy": t / "hdf5.npy",
            "knn_npy": t / "knpy.h5", "rescaled": t / "rescaled.npy"}


# (command, arguments, expected substring, placeholder it names, exit status)
CASES_15 = [
    # 1: a .meta whose line count does not fit the .bin
    ("knn", "{bin} -o {out} -k 5", "the .meta may not match", "bin", 1),
    ("data", "import {bin} -o {out}", "the .meta may not match", "bin", 1),
    ("knn", "{bin} -o {out} -k 5 --dim 16", "has 480 lines", "bin", 1),
    # 2: sequences with no usable position, a NaN option
    ("seq", "{knn} --features {feats} -o {out} --min-sim 5", "in [-1, 1]", None, 2),
    ("seq", "{knn} --features {feats} -o {out} --min-sim nan", "in [-1, 1]", None, 2),
    ("seq", "{knn} --features {feats} -o {out} -L 8 --min-sim 1", "every neighbour position is masked",
     "knn", 1),
    # 4: values validated on read
    ("seq", "{knn_nan} --features {feats} -o {out} -L 8", "NaN (first at row 4)", "knn_nan", 1),
    ("merge", "{links_big} -o {out} --threshold 0.5", "outside [0, 1] (first at row 3)",
     "links_big", 1),
    # 6: two outputs naming one file
    ("data", "export {feats} --npy {dir}/same.out --bin {dir}/same.out", "named by two outputs",
     None, 1),
    ("data", "split {feats} -L {out} -U {out}", "named by two outputs", "out", 1),
    # 7: an unwritable output directory, found before any work
    ("knn", "{feats} -o {ro}/o.h5 -k 5", "not writable", "ro", 1),
    ("data", "demo {ro}/d.h5 -n 10", "not writable", "ro", 1),
    ("merge", "{links} -o {ro}/c.h5 --threshold 0.5", "not writable", "ro", 1),
    ("merge", "labels {clusters} --unlabelled-features {feats} --labelled-features {f2} "
              "-o {out} --meta {ro}/rt.meta", "not writable", "ro", 1),
    ("data", "export {feats} --npy {out}.npy --bin {ro}/x.bin", "not writable", "ro", 1),
    ("eval", "sweep {links} -t {feats} --png {ro}/s.png", "not writable", "ro", 1),
    # 8: HDF5 under another format's name
    ("data", "demo {dir2}/d.npy -n 10", "name it .h5", "dir2", 1),
    ("data", "import {npy} -o {dir2}/x.npy", "name it .h5", "dir2", 1),
    # 9: more IVF lists than points
    ("knn", "{feats} -o {out} -k 5 --method ivf --nlist 1000", "lower --nlist", "feats", 1),
    # 11: all labels unknown
    ("train", "{seq} --features {feats} --labels {unknown} -o {out}", "every label is -1",
     "unknown", 1),
    # 12: cf-data split
    ("data", "split {feats} -L {out} -U {dir2}/u.h5 --rows {dup_rows} --fraction 0.3",
     "exclude each other", None, 2),
    ("data", "split {feats} -L {out} -U {dir2}/u.h5 --rows {dup_rows}", "more than once",
     "dup_rows", 1),
    # 13: an image folder that cannot train, refused before any step
    ("embed", "train {one_image} -o {out}", "too few identities to train on", "one_image", 1),
    ("embed", "train {one_readable} -o {out} --workers 0", "too few readable images to train on",
     "one_readable", 1),
    # 14: with --queries k may reach the base size, not beyond
    ("knn", "{two_rows} --queries {npy} -o {out} -k 3", "k=3 needs at least 3 points", "two_rows",
     1),
    # 15: usage errors exit 2; a .npz knn is named as what it is
    ("knn", "{feats} -o {out} -k 0", "k must be at least 1", None, 2),
    ("seq", "{knn_npz} --features {feats} -o {out}", "learn-to-cluster kNN .npz", "knn_npz", 1),
    ("knn", "{pickle_npy} -o {out} -k 5", "holds pickled Python objects, not a plain numeric "
     "array; cftools never unpickles (save a numeric array with np.save)", "pickle_npy", 1),
    ("data", "import {objects_npy} -o {out}", "holds pickled Python objects", "objects_npy", 1),
    ("eval", "{clusters} --truth {pickle_npy}", "holds pickled Python objects", "pickle_npy", 1),
    ("knn", "{hdf5_npy} -o {out} -k 5", "is an HDF5 file, not a .npy array; rename it .h5",
     "hdf5_npy", 1),
    # 15: features from outside are known by their exact values after normalisation
    ("seq", "{knn_npy} --features {rescaled} -o {out}",
     "a rescaled or re-saved copy counts as other features", "knn_npy", 1),
    ("eval", "sweep {links} -t {feats} --thresholds 0.6:0.8", "must be A:B:N", None, 2),
    ("eval", "sweep {links} -t {feats} --thresholds 0.1:0.9:0", "N must be in 1..10000", None, 2),
    ("eval", "sweep {links} -t {feats} --thresholds 0.1:nan:5", "A, B finite", None, 2),
]


@pytest.mark.parametrize("module,template,expect,names,status", CASES_15,
                         ids=[f"{c[0]}:{c[1].split()[0]}:{c[2][:28]}" for c in CASES_15])
def test_issue15_refused_in_one_line_with_nothing_written(F, G, tmp_path, capsys, module,
                                                          template, expect, names, status):
    if "{ro}" in template and os.geteuid() == 0:
        pytest.skip("root writes into a read-only directory: run as a normal user")
    paths = {**F, **G, "out": tmp_path / "out.h5"}
    before, before2 = _snapshot(F["dir"]), _snapshot(G["dir2"])
    args = [a.format(**paths) for a in template.split()]
    r = call(capsys, module, *args, "-q")
    line = one_line_error(r)
    assert r.returncode == status, line
    assert line.startswith(f"cf-{module}: error: "), line
    assert expect in line, line
    if names is not None:
        assert str(paths[names]) in line, line
    assert "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == [], "an output or a temporary was left"
    for d in (F["dir"], G["dir2"]):
        assert not list(d.rglob(".*cf-tmp*"))
    assert _snapshot(F["dir"]) == before and _snapshot(G["dir2"]) == before2
    assert not F["marker"].exists(), "a pickle was loaded"


def test_the_fingerprint_is_of_the_values_after_normalisation(F, G, tmp_path, capsys):
    """Case 15, as cftools(7) words it: features from outside are known by a fingerprint of
    their float32 values after normalisation, bit for bit, whichever format holds them; a
    rescaled copy rounds differently and is other features (refused in the matrix above)."""
    from cftools.formats.features import load_features

    x = np.load(F["npy"])
    np.save(tmp_path / "x64.npy", x.astype(np.float64))
    x.tofile(tmp_path / "x.bin")
    same = [load_features(F["npy"]), load_features(tmp_path / "x64.npy"),
            load_features(tmp_path / "x.bin", dim=D), load_features(f"{F['feats']}:/features")]
    assert len({f.id for f in same}) == 1 and same[0].id.startswith("content:")
    assert (same[0].features == x).all(), "unit rows are kept bit for bit"
    for scale in (2.0, 3.0):
        np.save(tmp_path / "r.npy", x * np.float32(scale))
        r = load_features(tmp_path / "r.npy")
        assert np.allclose(r.features, x, atol=1e-6) and r.id != same[0].id
    # the knn of x.npy goes with the same values in another format
    _ok(capsys, "seq", G["knn_npy"], "--features", tmp_path / "x64.npy", "-o", tmp_path / "s.h5",
        "-L", L, "-q")


def test_foreign_messages_are_cut_between_words():
    """Case 15: an exception's text quoted in an error is cut at a word, never inside one."""
    from cftools.errors import brief

    text = ("This file contains pickled (object) data. If you trust the file you can load it "
            "unsafely using the `allow_pickle=` keyword argument or `pickle.load()`.")
    for limit in range(20, len(text)):
        cut = brief(text, limit)
        assert len(cut) <= limit and cut.endswith("...")
        assert text.startswith(cut[:-3]) and text[len(cut) - 3] in " ,.", (limit, cut)
    assert brief("  one\n  line  ", 40) == "one line"


def test_embed_train_refuses_an_epoch_without_a_step(F, tmp_path, capsys):
    """Case 13, the rest: two readable images of two identities among broken ones pass the
    up-front check, but when no batch holds two of them, no step runs: refused after the
    epoch, naming the folder, with no model, no checkpoint and no raw torch warning."""
    images = tmp_path / "img"
    good = sorted(Path(F["images"]).rglob("*.png"))[0]
    for ident in ("a", "b"):
        (images / ident).mkdir(parents=True)
        shutil.copyfile(good, images / ident / "1.png")
        for i in range(2, 6):
            (images / ident / f"{i}.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    out.mkdir()
    r = call(capsys, "embed", "train", images, "-o", out / "bb.h5", "--epochs", 2, "--width", 4,
             "--dim", 8, "--image-size", 16, "--batch-size", 2, "--workers", 0, "--device", "cpu",
             "--seed", 0, "-q")
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1, r.stderr
    assert lines[-1].startswith(f"cf-embed: error: {images}: epoch 1 ran no training step"), lines
    assert all("unreadable image skipped" in line for line in lines[:-1]), r.stderr
    assert "lr_scheduler" not in r.stderr and "UserWarning" not in r.stderr
    assert list(out.iterdir()) == []


def test_queries_take_k_up_to_the_base_size(F, G, tmp_path, capsys):
    """Case 14: queries are not in the base, so no slot goes to a self-neighbour: a base of
    two rows answers -k 2 for every query."""
    _ok(capsys, "knn", G["two_rows"], "--queries", F["npy"], "-o", tmp_path / "k.h5", "-k", 2,
        "-q")
    with open_artifact(tmp_path / "k.h5", "knn") as a:
        idx, sim = a.read("indices"), a.read("similarities")
    assert idx.shape == (N, 2) and set(idx.ravel().tolist()) <= {0, 1}
    assert (np.sort(idx, axis=1) == [0, 1]).all() and (sim[:, 0] >= sim[:, 1]).all()


def test_sweep_takes_t_for_truth_as_the_other_subcommands(F, capsys):
    """Case 15: cf-eval sweep -t is --truth, as in cf-eval clusters and cf-eval knn."""
    import json

    from cftools.commands.eval import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main.main(args=["sweep", str(F["links"]), "-t", str(F["feats"]), "--thresholds",
                        "0.3:0.7:3", "--json", "-q"], prog_name="cf-eval")
    out = capsys.readouterr()
    assert info.value.code == 0, out.err
    rows = json.loads(out.out)["rows"]
    assert [r["threshold"] for r in rows] == pytest.approx([0.3, 0.5, 0.7])


def test_demo_prints_the_identities_in_the_file(tmp_path, capsys):
    r = _ok(capsys, "data", "demo", tmp_path / "d.h5", "-n", 2000, "-d", 8, "--seed", 1)
    with open_artifact(tmp_path / "d.h5", "features") as a:
        n_ids = np.unique(a.read("labels")).size
    assert f"of {n_ids} identities" in r.stderr, r.stderr


@pytest.mark.parametrize("module", COMMANDS)
def test_version_on_every_command(module):
    from cftools import __version__

    r = run_cmd(module, "--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"cf-{module} (cftools) {__version__}", r.stdout


def test_trainers_help_gives_the_checkpoint_default_the_code_uses():
    for module, name in (("train", "MODEL.h5.ckpt"), ("embed", "OUTPUT.h5.ckpt")):
        args = ["--help"] if module == "train" else ["train", "--help"]
        r = run_cmd(module, *args)
        assert r.returncode == 0 and name in " ".join(r.stdout.split()), r.stdout


# --------------------------------------------------------------------------- issue 14


@pytest.fixture(scope="module")
def H(F, tmp_path_factory):
    """Files for cf-merge add: new features of another dimension, another model of the same
    shape, and the clusters of another set (f2 clustered through the same commands)."""
    import torch

    from cftools.core.clusformer.model import Clusformer, make_config, save_model

    t = tmp_path_factory.mktemp("bad14")
    x8 = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    np.save(t / "new_d8.npy", x8 / np.linalg.norm(x8, axis=1, keepdims=True))
    torch.manual_seed(5)
    save_model(t / "m_other.h5", Clusformer(make_config("small", D, L, width=32, ffn=64)))
    run = _NoCapture().run
    run("knn", F["f2"], "-o", t / "k2.h5", "-k", K, "-q")
    run("seq", t / "k2.h5", "--features", F["f2"], "-o", t / "s2.h5", "-L", L, "-q")
    run("link", t / "s2.h5", "--features", F["f2"], "-o", t / "l2.h5", "--method", "cosine",
        "-q")
    run("merge", t / "l2.h5", "-o", t / "c_other.h5", "--threshold", 0.9, "-q")
    for name in ("k2", "s2", "l2"):
        (t / f"{name}.h5").unlink()
    return {"dir3": t, "new_d8": t / "new_d8.npy", "m_other": t / "m_other.h5",
            "c_other": t / "c_other.h5"}


ADD = ("add {clusters} --new {npy} --links {links} --features {feats} --model {model} "
       "-o {out} --links-out {out}.l.h5 --features-out {out}.f.h5")


# (arguments, expected substring, placeholder it names, exit status): new features of
# another dimension, a model that does not match, clusters of another set, and the rest
CASES_14 = [
    (ADD.replace("{npy}", "{new_d8}"), "new features have dimension 8", "new_d8", 1),
    (ADD.replace("--model {model}", "--model {m_other}"), "is not the model that made the links",
     "m_other", 1),
    (ADD.replace("--model {model}", "--model {m_d8}"), "is not the model that made the links",
     "m_d8", 1),
    (ADD.replace("add {clusters}", "add {c_other}"), "was made from other links than", "c_other",
     1),
    (ADD.replace("--features {feats}", "--features {f2}"), "made from other features", "links", 1),
    (ADD.replace(" --model {model}", ""), "holds model links: give --model", "links", 1),
    (ADD.replace("--links {links}", "--links {knn}"), "is a knn file, expected links", "knn", 1),
    (ADD.replace("{npy}", "{missing}"), "no such file", "missing", 1),
    (ADD.replace("-o {out}", "-o {clusters}"), "also an input", "clusters", 1),
    (ADD.replace("--links-out {out}.l.h5", "--links-out {out}"), "named by two outputs", "out",
     1),
]


@pytest.mark.parametrize("template,expect,names,status", CASES_14,
                         ids=[f"add:{c[1][:32]}" for c in CASES_14])
def test_issue14_add_refused_in_one_line_with_nothing_written(F, H, tmp_path, capsys, template,
                                                              expect, names, status):
    paths = {**F, **H, "out": tmp_path / "out.h5"}
    before, before3 = _snapshot(F["dir"]), _snapshot(H["dir3"])
    args = [a.format(**paths) for a in template.split()]
    r = call(capsys, "merge", *args, "-q")
    line = one_line_error(r)
    assert r.returncode == status, line
    assert line.startswith("cf-merge: error: "), line
    assert expect in line, line
    assert str(paths[names]) in line, line
    assert "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == [], "an output or a temporary was left"
    assert _snapshot(F["dir"]) == before and _snapshot(H["dir3"]) == before3


def test_issue14_the_add_case_itself_runs(F, tmp_path, capsys):
    """The template of the matrix above, unchanged, succeeds: each row fails by its edit."""
    paths = {**F, "out": tmp_path / "out.h5"}
    _ok(capsys, "merge", *[a.format(**paths) for a in ADD.split()], "-q")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5", "out.h5.f.h5", "out.h5.l.h5"]
