"""Bad input, third pass (issue 28): every case refused as cftools(7) promises (one line on
stderr naming the file and the problem, exit 2 for usage, no output, no temporary, inputs
unchanged), and the behaviours that were wrong (huge values, labels, the add's twins
excepted) right. The classes behind them, each tested as a class where it can be: every
float and integer option and every seed (test_every_number_option_*), one reader of root
attributes, one policy for special files, one check of an input in two roles.

Cases that need a process of their own (signals, kill -9, a full disk, a read-only
mount) run the command as a real process; the others in this process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import call, edited_copy, one_line_error, replaced_dataset, run_cmd, run_ok

from cftools.data.demo import make_demo_features
from cftools.formats.artifacts import open_artifact
from cftools.formats.features import load_features, write_features
from cftools.formats.writing import write_artifact

N, D, K, L = 600, 16, 12, 8
COMMANDS = ("data", "knn", "seq", "train", "link", "merge", "eval", "embed")


def _snapshot(folder: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")
            if p.is_file() and not p.is_fifo()}


def _set_attr(name, value):
    def edit(f):
        f.attrs[name] = value
    return edit


def _model_config(**changes):
    def edit(f):
        config = json.loads(f.attrs["config"])
        config.update(changes)
        f.attrs["config"] = json.dumps(config)
    return edit


def _thresholds(**changes):
    def edit(f):
        t = json.loads(f.attrs["thresholds"])
        t.update(changes)
        f.attrs["thresholds"] = json.dumps(t)
    return edit


@pytest.fixture(scope="module")
def T(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield _files(tmp_path_factory.mktemp("bad28"))
    finally:
        torch.set_num_threads(threads)


def _files(t: Path) -> dict:  # noqa: PLR0915 - one fixture, many small files
    p: dict = {"dir": t}
    x, y = make_demo_features(N, D, seed=0)
    x2, y2 = make_demo_features(N, D, seed=9)
    write_features(t / "f.h5", x, labels=y)
    write_features(t / "f2.h5", x2, labels=y2)
    np.save(t / "x.npy", x)
    shutil.copyfile(t / "x.npy", t / "x_copy.npy")
    np.save(t / "y.npy", y)
    p.update(feats=t / "f.h5", f2=t / "f2.h5", npy=t / "x.npy", npy_copy=t / "x_copy.npy",
             labels=t / "y.npy")
    run_ok("knn", t / "f.h5", "-o", t / "k.h5", "-k", K, "-q")
    run_ok("seq", t / "k.h5", "--features", t / "f.h5", "-o", t / "s.h5", "-L", L, "-q")
    run_ok("train", t / "s.h5", "--features", t / "f.h5", "-o", t / "m.h5", "--epochs", 1,
         "--width", 32, "--ffn", 64, "--batch-size", 64, "--device", "cpu", "-L", L, "-q")
    (t / "m.h5.ckpt").unlink(missing_ok=True)
    run_ok("link", t / "s.h5", "--features", t / "f.h5", "--model", t / "m.h5", "-o",
         t / "l.h5", "--method", "model", "--device", "cpu", "-q")
    run_ok("link", t / "s.h5", "--features", t / "f.h5", "--method", "cosine", "-o",
         t / "lc.h5", "-q")
    run_ok("knn", t / "f2.h5", "-o", t / "k2.h5", "-k", K, "-q")
    run_ok("seq", t / "k2.h5", "--features", t / "f2.h5", "-o", t / "s2.h5", "-L", L, "-q")
    run_ok("link", t / "s2.h5", "--features", t / "f2.h5", "--method", "cosine", "-o",
         t / "lc2.h5", "-q")
    run_ok("merge", t / "l.h5", "-o", t / "c.h5", "--method", "peaks", "--threshold", 0.5, "-q")
    run_ok("knn", t / "f.h5", "--queries", t / "f2.h5", "-o", t / "kq.h5", "-k", K, "-q")
    p.update(knn=t / "k.h5", seq=t / "s.h5", model=t / "m.h5", links=t / "l.h5",
             clinks=t / "lc.h5", clinks2=t / "lc2.h5", clusters=t / "c.h5",
             knn_queries=t / "kq.h5")
    # values: float64 past float32, labels past int64, float labels past 2^53
    big = x.astype(np.float64)
    big[2, 0] = 1e300
    np.save(t / "f64_huge.npy", big)
    np.save(t / "u64.npy", np.where(np.arange(N) == 4, np.uint64(2 ** 63), y.astype(np.uint64)))
    np.save(t / "f20.npy", np.where(np.arange(N) == 5, 1e20, y.astype(np.float64)))
    (t / "big.meta").write_text("\n".join(["3"] * (N - 1) + [str(2 ** 64 - 1)]) + "\n")
    np.save(t / "labels_max.npy", np.where(np.arange(N) == 0, 2 ** 63 - 1, y).astype(np.int64))
    np.save(t / "distinct.npy", np.arange(N, dtype=np.int64))
    p.update({k: t / f"{k}.npy" for k in ("f64_huge", "u64", "f20", "labels_max", "distinct")})
    p["big_meta"] = t / "big.meta"
    # JSON side files
    (t / "ok.json").write_text('{"a": 1}')
    (t / "list.json").write_text("[1, 2]")
    (t / "nan.json").write_text('{"a": NaN}')
    (t / "notjson.json").write_text("{'a': 1")
    (t / "sweep_bad.json").write_text('{"rows": [{"threshold": "x"}]}')
    (t / "knn_bad.json").write_text('{"precision_at_rank": [0.5], "recall_at_rank": "x"}')
    p.update({k: t / f"{k}.json" for k in ("ok", "list", "nan", "notjson", "sweep_bad",
                                           "knn_bad")})
    # thresholds in links files and models that are not numbers of their range
    p["links_peaks_nan"] = edited_copy(t / "l.h5", t / "lpn.h5", _thresholds(peaks=float("nan")))
    p["links_peaks_str"] = edited_copy(t / "l.h5", t / "lps.h5", _thresholds(peaks="0.5"))
    p["links_peaks_big"] = edited_copy(t / "l.h5", t / "lpb.h5", _thresholds(peaks=2.5))
    p["links_mode_bad"] = edited_copy(t / "l.h5", t / "lmb.h5", _thresholds(link_mode_peaks="both"))
    p["model_thr_nan"] = edited_copy(t / "m.h5", t / "mtn.h5", _thresholds(link=float("nan")))
    # hostile model configs
    p["m_seq_huge"] = edited_copy(t / "m.h5", t / "msh.h5", _model_config(seq_len=10 ** 9))
    p["m_width_huge"] = edited_copy(t / "m.h5", t / "mwh.h5", _model_config(width=2 ** 40))
    p["m_width_other"] = edited_copy(t / "m.h5", t / "mwo.h5", _model_config(width=64, heads=4))
    p["m_bool_dim"] = edited_copy(t / "m.h5", t / "mbd.h5", _model_config(dim=True))
    p["m_history"] = edited_copy(t / "m.h5", t / "mhist.h5", _set_attr("training",
                                                                '{"history": "x"}'))
    # root attributes
    p["fmt_array"] = edited_copy(t / "f.h5", t / "fa.h5", _set_attr("cftools_format", np.array([1, 1])))
    p["kind_array"] = edited_copy(t / "f.h5", t / "ka.h5", _set_attr(
        "cftools_kind", np.array([b"features", b"knn"])))
    p["prov_json"] = edited_copy(t / "f.h5", t / "pj.h5", _set_attr("cftools_provenance", "[{"))
    p["prov_obj"] = edited_copy(t / "f.h5", t / "po.h5", _set_attr("cftools_provenance", "{}"))
    p["fmt0"] = edited_copy(t / "f.h5", t / "f0.h5", _set_attr("cftools_format", np.int64(0)))
    p["fmt_neg"] = edited_copy(t / "f.h5", t / "fn.h5", _set_attr("cftools_format", np.int64(-3)))
    p["thr_nan"] = edited_copy(t / "c.h5", t / "ctn.h5", _set_attr("threshold", np.nan))
    p["self_first_arr"] = edited_copy(t / "k.h5", t / "ksf.h5", _set_attr("self_first", np.arange(3)))
    # data that declares more than the file holds
    with open(t / "huge_header.npy", "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (10 ** 12, D)})
        fh.write(b"\0" * 64)
    p["huge_header"] = t / "huge_header.npy"
    with h5py.File(t / "sparse.h5", "w") as f:
        f.attrs.update({"cftools_kind": "features", "cftools_format": np.int64(1),
                        "cftools_id": "0" * 32, "cftools_provenance": "[]"})
        ds = f.create_dataset("features", shape=(10 ** 8, D), dtype=np.float32,
                              chunks=(1024, D))
        ds[:10] = x[:10]
    p["sparse"] = t / "sparse.h5"
    # archives under the wrong names, a .npz that is no zip
    (t / "notzip.npz").write_text("not a zip archive")
    np.savez(t / "arch.npz", a=x)
    shutil.copyfile(t / "arch.npz", t / "zip.npy")
    p.update(notzip=t / "notzip.npz", zip_npy=t / "zip.npy")
    # knn and sequences that break their format
    with h5py.File(t / "k.h5", "r") as f:
        idx, sim = f["indices"][()], f["similarities"][()]
    low, inf, five = idx.copy(), sim.copy(), sim.copy()
    low[3, 4] = -5
    inf[6, 2] = np.inf
    five[7, 1] = 5.0
    p["knn_low"] = edited_copy(t / "k.h5", t / "klow.h5", replaced_dataset("indices", low))
    p["knn_inf"] = edited_copy(t / "k.h5", t / "kinf.h5", replaced_dataset("similarities", inf))
    p["knn_five"] = edited_copy(t / "k.h5", t / "kfive.h5", replaced_dataset("similarities", five))
    with h5py.File(t / "s.h5", "r") as f:
        order, targets = f["order"][()], f["targets"][()]
    t7 = targets.copy()
    t7[9, 3] = 7
    rolled = order.copy()
    rolled[11] = np.roll(rolled[11], 1)
    p["seq_t7"] = edited_copy(t / "s.h5", t / "st7.h5", replaced_dataset("targets", t7))
    p["seq_centre"] = edited_copy(t / "s.h5", t / "sctr.h5", replaced_dataset("order", rolled))
    # rows of a split that leave a side empty
    np.save(t / "rows_empty.npy", np.zeros(0, np.int64))
    np.save(t / "rows_all.npy", np.arange(N))
    p.update(rows_empty=t / "rows_empty.npy", rows_all=t / "rows_all.npy")
    # names: latin-1 bytes and a NUL
    (t / "names_nul.txt").write_bytes(b"".join(b"n%d\n" % i for i in range(N - 1)) + b"a\0b\n")
    p["names_nul"] = t / "names_nul.txt"
    # a round's work folder with an eval.json of the wrong shape
    (t / "work" / "round1").mkdir(parents=True)
    (t / "work" / "round1" / "eval.json").write_text('{"pairwise_f": "high", "recognition": 3}')
    p["work"] = t / "work"
    # special files
    os.mkfifo(t / "fifo.npy")
    p["fifo"] = t / "fifo.npy"
    # image folders: one set, and the folder above it
    from cftools.data.demo_images import make_demo

    make_demo(t / "img", identities=4, image_size=16, seed=1, mean_images=4)
    p.update(images=t / "img" / "labelled", images_root=t / "img")
    return p


# (command, arguments, expected text of the one line, placeholder it names, exit status)
CASES = [
    # 2: float64 values a float32 cannot hold
    ("data", "import {f64_huge} -o {out}", "row 2 holds values beyond float32's range",
     "f64_huge", 1),
    # 3: labels past int64, float labels past 2^53, a .meta label past int64
    ("data", "import {npy} --labels {u64} -o {out}", "label 9223372036854775808 at row 4 is "
     "beyond int64", "u64", 1),
    ("data", "import {npy} --labels {f20} -o {out}", "label 1e+20 at row 5 is too large",
     "f20", 1),
    ("seq", "{knn} --features {feats} --labels {big_meta} -o {out}", "outside [-1, 2^63 - 1]",
     "big_meta", 1),
    ("merge", "labels {clusters} --unlabelled-features {feats} --labelled-features {npy} "
     "--labelled-labels {labels_max} -o {out}", "leaves no room for the pseudo-identities",
     "labels_max", 1),
    # 5: --attach never replaces a metric; an object, without NaN, from a regular file
    ("eval", "{clusters} --truth {feats} --json --attach pairwise_f={ok}", "is a metric",
     None, 2),
    ("eval", "{clusters} --truth {feats} --json --attach a={ok} --attach a={ok}",
     "attached twice", None, 2),
    ("eval", "{clusters} --truth {feats} --json --attach r={list}",
     "holds a JSON list, expected an object", "list", 1),
    ("eval", "{clusters} --truth {feats} --json --attach r={nan}", "holds NaN", "nan", 1),
    ("eval", "{clusters} --truth {feats} --json --attach r={notjson}", "is not valid JSON",
     "notjson", 1),
    ("eval", "{clusters} --truth {feats} --json --attach r=/dev/zero",
     "is a device, not a regular file", None, 1),
    # 6: one input in two roles (the same path), or the same values under two names
    ("embed", "train {images} {images} -o {out}", "is given as both IMAGES (1 of 2) and "
     "IMAGES (2 of 2)", "images", 2),
    ("embed", "train {images_root} {images} -o {out}", "lies inside", "images", 2),
    ("knn", "{feats} --queries {feats} -o {out} -k 5", "is given as both FEATURES and "
     "--queries", "feats", 2),
    ("knn", "{npy} --queries {npy_copy} -o {out} -k 5", "queries are the features",
     "npy_copy", 1),
    ("eval", "identify {feats} --distractors {feats}", "is given as both FEATURES and "
     "--distractors", "feats", 2),
    ("eval", "{clusters} --truth {clusters}", "is given as both PRED and --truth", "clusters",
     2),
    ("merge", "labels {clusters} --unlabelled-features {npy} --labelled-features {npy} "
     "--labelled-labels {labels} -o {out}", "is given as both --unlabelled-features and "
     "--labelled-features", "npy", 2),
    ("merge", "labels {clusters} --unlabelled-features {npy} --labelled-features {npy_copy} "
     "--labelled-labels {labels} -o {out}", "labelled features are the unlabelled features",
     "npy_copy", 1),
    ("merge", "{links} -o {out} --calibrate {links} --calibrate-truth {feats}",
     "is given as both LINKS and --calibrate", "links", 2),
    ("data", "split {feats} -L {out} -U {dir}/never.h5 --labels {labels} --rows {labels}",
     "is given as both --labels and --rows", "labels", 2),
    ("eval", "gallery {clusters} -f {feats} --truth {clusters} -o {dir}/gal",
     "is given as both CLUSTERS and --truth", "clusters", 2),
    # 7: thresholds a links file or a model carries, and those given, are of their range
    ("merge", "{links_peaks_nan} -o {out} --method peaks",
     "thresholds['peaks'] is nan, expected a number in [0, 1]", "links_peaks_nan", 1),
    ("merge", "{links_peaks_str} -o {out} --method peaks", "thresholds['peaks'] is '0.5'",
     "links_peaks_str", 1),
    ("merge", "{links_peaks_big} -o {out} --method peaks", "thresholds['peaks'] is 2.5",
     "links_peaks_big", 1),
    ("merge", "{links_mode_bad} -o {out} --method peaks", "thresholds['link_mode_peaks']",
     "links_mode_bad", 1),
    ("link", "{seq} --features {feats} --model {model_thr_nan} -o {out}",
     "thresholds['link'] is nan", "model_thr_nan", 1),
    ("merge", "{links} -o {out} --threshold 2.5", "must be a finite number in [-1, 1]",
     None, 2),
    ("merge", "{links} -o {out} --threshold -0.5", "lies outside [0, 1], where the model "
     "links' values lie", None, 2),
    ("merge", "{links} -o {out} --threshold 0.5 --singletons attach --attach-threshold -0.2",
     "lies outside [0, 1]", None, 2),
    # 8: calibration needs two points of one identity
    ("merge", "{clinks} -o {out} --calibrate {clinks2} --calibrate-truth {distinct}",
     "no two points share an identity", "distinct", 1),
    # 12: a model's config is checked before anything is allocated
    ("link", "{seq} --features {feats} --model {m_seq_huge} -o {out}",
     "seq_len must be an integer in [1, 4096], got 1000000000", "m_seq_huge", 1),
    ("link", "{seq} --features {feats} --model {m_width_huge} -o {out}",
     "width must be an integer in [1, 8192]", "m_width_huge", 1),
    ("link", "{seq} --features {feats} --model {m_width_other} -o {out}",
     "but the model config asks for", "m_width_other", 1),
    ("link", "{seq} --features {feats} --model {m_bool_dim} -o {out}",
     "dim must be an integer", "m_bool_dim", 1),
    # 13: special files, named as data, a side file or a JSON to attach
    ("knn", "{fifo} -o {out} -k 5", "is a FIFO, not a regular file", "fifo", 1),
    ("data", "import /dev/zero -o {out}", "is a device, not a regular file", None, 1),
    ("data", "import {npy} --names /dev/zero -o {out}", "is a device, not a regular file",
     None, 1),
    ("eval", "gallery {clusters} -f {feats} -o {dir}/gal --sweep /dev/zero",
     "is a device", None, 1),
    # 16: root attributes
    ("knn", "{fmt_array} -o {out} -k 5", "invalid cftools_format", "fmt_array", 1),
    ("knn", "{kind_array} -o {out} -k 5", "'cftools_kind' must be a string", "kind_array", 1),
    ("knn", "{prov_json} -o {out} -k 5", "'cftools_provenance' is not valid JSON",
     "prov_json", 1),
    ("data", "import {prov_obj} -o {out}", "holds a JSON dict, expected a list", "prov_obj", 1),
    ("knn", "{fmt0} -o {out} -k 5", "format version 0 does not exist", "fmt0", 1),
    ("knn", "{fmt_neg} -o {out} -k 5", "format version -3 does not exist", "fmt_neg", 1),
    ("merge", "add {thr_nan} --new {npy} --links {links} --features {feats} --model {model} "
     "-o {out} --links-out {out}.l.h5 --features-out {out}.f.h5",
     "attribute 'threshold' must be a finite number", "thr_nan", 1),
    ("eval", "knn {self_first_arr} --truth {feats}", "attribute 'self_first' must be true or "
     "false", "self_first_arr", 1),
    # 17: a name holding a NUL
    ("data", "import {npy} --names {names_nul} -o {out}", "line 600 holds a NUL byte",
     "names_nul", 1),
    # 19: side inputs of the wrong shape
    ("eval", "report {work}", "'pairwise_f' must be a number", None, 1),
    ("eval", "knn {notzip} --truth {feats}", "not a readable .npz file", "notzip", 1),
    ("knn", "{zip_npy} -o {out} -k 5", "is a .npz (zip) archive, not a .npy array", "zip_npy",
     1),
    # 21: sizes a file declares but does not hold, named before anything is allocated
    ("knn", "{huge_header} -o {out} -k 5", "its header declares shape (1000000000000, 16)",
     "huge_header", 1),
    ("knn", "{sparse} -o {out} -k 5", "dataset 'features' declares 100000000 x 16 float32 but "
     "only 1 of its 97657 chunks are stored", "sparse", 1),
    ("eval", "{clusters} --truth {sparse}", "chunks are stored", "sparse", 1),
    # 24: the cause, not a rescaled copy; --rows, not --fraction
    ("seq", "{knn_queries} --features {feats} -o {out}", "queries searched in another set",
     "knn_queries", 1),
    ("data", "split {feats} -L {out} -U {dir}/never.h5 --rows {rows_empty}",
     "leaves the labelled part empty: --rows must name some rows", "rows_empty", 1),
    ("data", "split {feats} -L {out} -U {dir}/never.h5 --rows {rows_all}",
     "leaves the unlabelled part empty", "rows_all", 1),
    # 25: knn and sequences that break their format; companions; pairs; output names
    ("seq", "{knn_low} --features {feats} -o {out} -L 8", "holds -5 at row 3", "knn_low", 1),
    ("seq", "{knn_inf} --features {feats} -o {out} -L 8", "holds Inf (first at row 6)", "knn_inf",
     1),
    ("seq", "{knn_five} --features {feats} -o {out} -L 8", "holds 5 at row 7, not a cosine",
     "knn_five", 1),
    ("train", "{seq_t7} --features {feats} -o {out} -L 8", "dataset 'targets' holds 7 at "
     "row 9", "seq_t7", 1),
    ("train", "{seq_centre} --features {feats} -o {out} -L 8", "row 11 of dataset 'order' "
     "starts with", "seq_centre", 1),
    ("link", "{seq_centre} --features {feats} --method cosine -o {out}",
     "column 0 must be the centre", "seq_centre", 1),
    ("merge", "{links} -o {out} --calibrate {clinks2}", "--calibrate needs --calibrate-truth",
     None, 2),
    ("merge", "{links} -o {out} --calibrate-truth {feats}", "--calibrate-truth needs "
     "--calibrate", None, 2),
    ("link", "{seq} --features {feats} --method model -o {out}", "--method model needs --model",
     None, 2),
    ("merge", "{links} -o {out} --threshold 0.5 --reciprocal --directed",
     "--reciprocal and --directed exclude each other", None, 2),
    ("eval", "sweep {links} -t {feats} --directed --reciprocal", "--reciprocal and "
     "--directed exclude each other", None, 2),
    ("merge", "labels {clusters} --unlabelled-features {feats} --labelled-features {f2} "
     "-o {out} --meta {dir}/x.bin --bin {dir}/x.meta", "name it .meta (not '.bin')", None, 1),
    ("data", "export {feats} --npy {dir}/x.txt", "name it .npy (not '.txt')", None, 1),
    ("eval", "gallery {clusters} -f {feats} -o {dir}/gal --sweep {sweep_bad}",
     "not the output of cf-eval sweep --json", "sweep_bad", 1),
    ("eval", "gallery {clusters} -f {feats} -o {dir}/gal --knn-eval {knn_bad}",
     "not the output of cf-eval knn --json", "knn_bad", 1),
    ("eval", "gallery {clusters} -f {feats} -o {dir}/gal --model {m_history}",
     "'history' must be a list", "m_history", 1),
]


@pytest.mark.parametrize("module,template,expect,names,status", CASES,
                         ids=[f"{c[0]}:{c[1].split()[0]}:{c[2][:30]}" for c in CASES])
def test_refused_in_one_line_with_nothing_written(T, tmp_path, capsys, module, template,
                                                 expect, names, status):
    paths = {**T, "out": tmp_path / "out.h5"}
    before = _snapshot(T["dir"])
    args = [a.format(**paths) for a in template.split()]
    r = call(capsys, module, *args, "-q")
    line = one_line_error(r)
    assert r.returncode == status, line
    assert line.startswith(f"cf-{module}: error: "), line
    assert expect in line, line
    if names is not None:
        assert str(paths[names]) in line, line
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert list(tmp_path.iterdir()) == [], "an output or a temporary was left"
    assert not list(T["dir"].rglob(".*cf-*")), "a temporary or a journal was left"
    assert not (T["dir"] / "gal").exists() and not (T["dir"] / "never.h5").exists()
    assert _snapshot(T["dir"]) == before, "an input was changed or a file was added"


# --------------------------------------------------------------------------- the classes


def _leaves():
    """Every (command path, click command) of the eight commands, subcommands included."""
    import importlib

    import click

    out = []
    for module in COMMANDS:
        main = importlib.import_module(f"cftools.commands.{module}").main
        if isinstance(main, click.Group):
            out += [((module, name), sub) for name, sub in sorted(main.commands.items())]
        else:
            out.append(((module,), main))
    return out


def test_every_number_option_has_the_checked_types():
    """The class behind case 4 and 18: every float option of every command is a
    FiniteFloat, every integer option a Count, every --seed a Seed; a raw float or int
    (NaN passes a FloatRange, 2^64 an IntRange) cannot come back unnoticed."""
    import click

    from cftools.cli import Count, FiniteFloat, Seed

    raw = []
    for path, cmd in _leaves():
        for p in cmd.params:
            if p.name == "seed":
                ok = isinstance(p.type, Seed)
            elif isinstance(p.type, (click.types.FloatParamType, click.FloatRange)):
                ok = isinstance(p.type, FiniteFloat)
            elif isinstance(p.type, (click.types.IntParamType, click.IntRange)):
                ok = isinstance(p.type, (Count, Seed))
            else:
                continue
            if not ok:
                raw.append(f"{' '.join(path)} {p.opts[0]}")
    assert not raw, raw


def _number_options():
    from cftools.cli import Count, FiniteFloat, Seed

    for path, cmd in _leaves():
        for p in cmd.params:
            if isinstance(p.type, (FiniteFloat, Count, Seed)) and not p.hidden and p.opts[0] \
                    .startswith("-"):
                yield path, p


BAD_VALUES = {"float": ["nan", "inf", "-inf", "1e999"], "count": ["99999999999999999999"],
              "seed": ["-1", str(2 ** 31), str(2 ** 64)]}


@pytest.mark.parametrize("path,option", [(path, p.opts[0]) for path, p in _number_options()],
                         ids=[f"{' '.join(path)}:{p.opts[0]}" for path, p in _number_options()])
def test_every_number_option_refuses_nan_inf_and_overflow_with_2(capsys, path, option):
    """Cases 4 and 18 as classes: each float option given NaN or Inf, each integer option
    2^66, each --seed -1 or 2^64, exits 2 in one line naming the option, before any work
    (the option comes first on the command line, so nothing else is read)."""
    from cftools.cli import Count, FiniteFloat, Seed

    param = next(p for q, p in _number_options() if q == path and p.opts[0] == option)
    kind = "seed" if isinstance(param.type, Seed) else \
        "float" if isinstance(param.type, FiniteFloat) else "count"
    assert isinstance(param.type, (Count, FiniteFloat, Seed))
    for value in BAD_VALUES[kind]:
        r = call(capsys, path[0], *path[1:], option, value)
        line = one_line_error(r)
        assert r.returncode == 2, (option, value, line)
        assert option in line, line


def test_seeds_at_the_ends_of_their_range_run(tmp_path, capsys):
    """Case 18: a seed of 0 and of 2^31 - 1 are both taken (by numpy, torch and faiss)."""
    for seed in (0, 2 ** 31 - 1):
        r = call(capsys, "data", "demo", tmp_path / f"d{seed}.h5", "-n", 300, "-d", 8, "--seed",
                 seed, "-q")
        assert r.returncode == 0, r.stderr
        r = call(capsys, "knn", tmp_path / f"d{seed}.h5", "-o", tmp_path / f"k{seed}.h5", "-k",
                 5, "--method", "ivf", "--nlist", 4, "--seed", seed, "-q")
        assert r.returncode == 0, r.stderr


def test_one_check_of_an_input_in_two_roles(tmp_path):
    """Case 6's class: the same path, a link to it, the same dataset of one HDF5 file, or
    a folder inside another, in two roles: refused; two datasets of one file, or roles
    allowed to share, pass."""
    from cftools.errors import CfUsageError
    from cftools.formats.inputs import check_distinct_inputs

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b").mkdir()
    (tmp_path / "f.npy").write_bytes(b"")
    os.symlink(tmp_path / "f.npy", tmp_path / "link.npy")
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["p"] = np.zeros(3)
        f["q"] = np.zeros(3)
    for a, b in ((tmp_path / "f.npy", tmp_path / "link.npy"), (tmp_path / "a", tmp_path / "a/b"),
                 (f"{tmp_path}/x.h5:/p", f"{tmp_path}/x.h5:/p")):
        with pytest.raises(CfUsageError):
            check_distinct_inputs({"--one": a, "--two": b})
    check_distinct_inputs({"--one": f"{tmp_path}/x.h5:/p", "--two": f"{tmp_path}/x.h5:/q"})
    check_distinct_inputs({"--one": tmp_path / "f.npy", "--two": tmp_path / "f.npy"},
                          may_share=[("--one", "--two")])
    check_distinct_inputs({"--one": tmp_path / "f.npy", "--two": None})


def test_a_path_under_a_folder_named_like_a_dataset_path_is_a_path(T, tmp_path, capsys):
    """Case 25: run.h5:old/x.npy is a file under the folder 'run.h5:old', not the dataset
    old/x.npy of run.h5; FILE.h5:/path still splits."""
    from cftools.formats.inputs import split_spec

    folder = tmp_path / "run.h5:old"
    folder.mkdir()
    shutil.copyfile(T["npy"], folder / "x.npy")
    assert split_spec(folder / "x.npy") == (folder / "x.npy", None)
    assert split_spec(f"{T['feats']}:/features") == (T["feats"], "/features")
    assert split_spec(f"{tmp_path}/gone.h5:/a") == (tmp_path / "gone.h5", "/a")
    r = call(capsys, "knn", folder / "x.npy", "-o", tmp_path / "k.h5", "-k", 5, "-q")
    assert r.returncode == 0, r.stderr
    r = call(capsys, "knn", folder / "y.npy", "-o", tmp_path / "k2.h5", "-k", 5, "-q")
    assert "no such file" in one_line_error(r) and str(folder / "y.npy") in r.stderr


# --------------------------------------------------------------------------- behaviours


def test_huge_finite_values_keep_their_direction(T, tmp_path, capsys):
    """Case 2: a row of values near float32's largest (3e38) is normalised, not turned into
    zeros by an overflowing norm; cf-knn finds it first in its own row, at similarity 1."""
    x = np.load(T["npy"])
    x[3] = x[3] / np.abs(x[3]).max() * np.float32(3e38)
    np.save(tmp_path / "huge.npy", x)
    f = load_features(tmp_path / "huge.npy")
    assert np.allclose(f.features[3], np.load(T["npy"])[3], atol=1e-6)
    r = call(capsys, "knn", tmp_path / "huge.npy", "-o", tmp_path / "k.h5", "-k", 5, "-q")
    assert r.returncode == 0 and "overflow" not in r.stderr, r.stderr
    assert "1 of 600 rows were not of unit norm; normalised them" in r.stderr
    with open_artifact(tmp_path / "k.h5", "knn") as a:
        assert a.read("indices")[3, 0] == 3 and abs(a.read("similarities")[3, 0] - 1) < 1e-5
    r = call(capsys, "data", "import", tmp_path / "huge.npy", "-o", tmp_path / "i.h5", "-q")
    assert r.returncode == 0, r.stderr
    with open_artifact(tmp_path / "i.h5", "features") as a:
        assert np.allclose(np.linalg.norm(a.read("features"), axis=1), 1.0, atol=1e-5)


def test_labels_from_every_source_keep_their_value(tmp_path):
    """Case 3: large labels are kept exactly (uint64 up to 2^63 - 1, .meta, float labels up
    to 2^53), never wrapped."""
    from cftools.formats.features import load_labels

    top = np.array([0, 2 ** 63 - 1, 5], dtype=np.uint64)
    np.save(tmp_path / "u.npy", top)
    assert load_labels(tmp_path / "u.npy").tolist() == [0, 2 ** 63 - 1, 5]
    (tmp_path / "l.meta").write_text(f"{2 ** 63 - 1}\n-1\n3\n")
    assert load_labels(tmp_path / "l.meta").tolist() == [2 ** 63 - 1, -1, 3]
    np.save(tmp_path / "f.npy", np.array([2.0 ** 53, -1.0, 7.0]))
    assert load_labels(tmp_path / "f.npy").tolist() == [2 ** 53, -1, 7]


def test_identity_folders_of_one_number_are_refused(tmp_path):
    """Case 6's kin: folders '17' and '017' would be one identity."""
    from cftools.data.images import from_folder
    from cftools.errors import CfError

    for name in ("17", "017"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.png").write_bytes(b"")
    with pytest.raises(CfError, match="name the same identity 17"):
        from_folder(tmp_path)


def test_the_gallery_refuses_inputs_inside_the_folder_it_replaces(T, tmp_path, capsys):
    """Case 9: inputs copied into an earlier gallery DIR and the gallery run again into
    DIR: refused before any work, the inputs still there."""
    gal = tmp_path / "gal"
    r = call(capsys, "eval", "gallery", T["clusters"], "-f", T["feats"], "-o", gal, "-q")
    assert r.returncode == 0, r.stderr
    for name in ("clusters", "feats", "links"):
        shutil.copyfile(T[name], gal / Path(T[name]).name)
    inside = {name: gal / Path(T[name]).name for name in ("clusters", "feats", "links")}
    before = _snapshot(gal)
    r = call(capsys, "eval", "gallery", inside["clusters"], "-f", inside["feats"], "--links",
             inside["links"], "-o", gal, "-q")
    line = one_line_error(r)
    assert r.returncode == 1 and "lies inside the output folder" in line, line
    assert _snapshot(gal) == before
    assert not list(tmp_path.glob(".*cf-*"))


def _labels_run(t: Path, T, extra=(), env=None):
    args = ["labels", T["clusters"], "--unlabelled-features", T["feats"],
            "--labelled-features", T["f2"], "-o", t / "lab.h5", "--meta", t / "lab.meta",
            "--bin", t / "lab.bin", *extra, "-q"]
    return run_cmd("merge", *args, env=env)


def _consistent(t: Path) -> bool:
    """lab.h5, lab.meta and lab.bin of one run: the same labels and features."""
    with h5py.File(t / "lab.h5", "r") as f:
        labels, feats = f["labels"][()], f["features"][()]
    meta = np.loadtxt(t / "lab.meta", dtype=np.int64).reshape(-1)
    raw = np.fromfile(t / "lab.bin", dtype="<f4")
    return meta.shape == labels.shape and (meta == labels).all() and \
        raw.size == feats.size and (raw.reshape(feats.shape) == feats).all()


def _digest(t: Path) -> dict:
    return {n: (t / n).read_bytes() for n in ("lab.h5", "lab.meta", "lab.bin")}


def test_a_failed_rename_changes_no_output(T, tmp_path, capsys, monkeypatch):
    """Case 10: with old outputs present, a rename that fails (EBUSY, as on a bind mount)
    at the last output leaves every old output as it was (today's code removed the old
    lab.h5 and lab.meta), says which output, exits 1, leaves no temporary or journal."""
    import errno

    from cftools.formats import commit

    assert _labels_run(tmp_path, T).returncode == 0
    old = _digest(tmp_path)
    real = os.rename

    def busy(src, dst, *a, **kw):
        if str(dst).endswith("lab.bin") or str(src).endswith("lab.bin"):
            raise OSError(errno.EBUSY, "Device or resource busy", str(dst))
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(commit.os, "rename", busy)
    r = call(capsys, "merge", "labels", T["clusters"], "--unlabelled-features", T["feats"],
             "--labelled-features", T["f2"], "-o", tmp_path / "lab.h5", "--meta",
             tmp_path / "lab.meta", "--bin", tmp_path / "lab.bin", "--min-size", 3, "-q")
    line = one_line_error(r)
    assert r.returncode == 1 and "cannot replace it (Device or resource busy)" in line, line
    assert str(tmp_path / "lab.bin") in line and "nothing was changed" in line
    assert _digest(tmp_path) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.bin", "lab.h5", "lab.meta"]


@pytest.mark.slow
def test_a_bind_mount_over_an_output_changes_nothing(T, tmp_path):
    """Case 10 as reported: a bind mount over lab.bin (rename fails with EBUSY)."""
    assert _labels_run(tmp_path, T).returncode == 0
    old = _digest(tmp_path)
    (tmp_path / "other").write_bytes(b"x")
    if subprocess.run(["mount", "--bind", str(tmp_path / "other"), str(tmp_path / "lab.bin")],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here (needs root)")
    try:
        r = _labels_run(tmp_path, T, ["--min-size", 3])
    finally:
        subprocess.run(["umount", str(tmp_path / "lab.bin")], check=True)
    line = one_line_error(r)
    assert r.returncode == 1 and "cannot replace it" in line and "lab.bin" in line, line
    assert _digest(tmp_path) == old


@pytest.mark.slow
@pytest.mark.parametrize("after", [1, 2])
def test_a_kill_between_renames_is_completed_by_the_next_reader(T, tmp_path, after):
    """Case 10: kill -9 after the first (or second) rename of three: on disk a mix; the
    next cftools command that reads any one of the outputs first completes the commit, so
    it and every later reader see the whole new set; no journal, backup or temporary is
    left. (Today's code left a new lab.h5 beside the old .meta and .bin.)"""
    assert _labels_run(tmp_path, T).returncode == 0
    old = _digest(tmp_path)
    r = _labels_run(tmp_path, T, ["--min-size", 3], env={"CFTOOLS_TEST_DIE_AFTER_RENAMES":
                                                          str(after)})
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert list(tmp_path.glob(".lab.*.cf-commit")), "the crash left no journal"
    assert _digest(tmp_path) != old and not _consistent(tmp_path)  # a mix on disk
    reader = "lab.meta" if after == 1 else "lab.h5"
    if reader == "lab.h5":
        run_cmd("data", "export", tmp_path / "lab.h5", "--npy", tmp_path / "x.npy", "-q",
                check=True)
        (tmp_path / "x.npy").unlink()
    else:
        run_cmd("eval", tmp_path / "lab.meta", "--truth", tmp_path / "lab.meta2", "-q")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.bin", "lab.h5", "lab.meta"]
    assert _consistent(tmp_path)
    new = _digest(tmp_path)
    assert all(new[n] != old[n] for n in new)


def test_a_crash_before_the_commit_point_leaves_the_old_set(T, tmp_path):
    """Case 10: journals of the other outputs written, the first output's not (the crash
    came before the commit point): the next reader removes the temporaries and journals;
    the old outputs are untouched."""
    from cftools.formats import commit

    assert _labels_run(tmp_path, T).returncode == 0
    old = _digest(tmp_path)
    entries = []
    for name in ("lab.h5", "lab.meta", "lab.bin"):
        tmp = tmp_path / f".{name}.cf-tmp-1-abc"
        tmp.write_bytes(b"half")
        entries.append({"tmp": str(tmp), "out": str(tmp_path / name), "had_old": True,
                        "backup": str(tmp_path / f".{name}.cf-old-abc")})
    record = {"version": 1, "state": "commit", "pid": 2 ** 22 + 7, "host": "elsewhere",
              "time": time.time() - 3600, "primary": str(commit.journal_of(tmp_path / "lab.h5")),
              "entries": entries}
    for name in ("lab.meta", "lab.bin"):
        commit.journal_of(tmp_path / name).write_text(json.dumps(record))
    assert load_features(tmp_path / "lab.h5").n > 0  # the old set, whole
    for name in ("lab.meta", "lab.bin"):  # a reader of an output settles its leftovers
        commit.settle(tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.bin", "lab.h5", "lab.meta"]
    assert _digest(tmp_path) == old


def test_an_undo_a_crash_interrupted_is_finished(T, tmp_path):
    """Case 10: a rename failed, the undo began (journal state 'undo') and the process
    died: the next reader puts the old files back."""
    from cftools.formats import commit

    assert _labels_run(tmp_path, T).returncode == 0
    old = _digest(tmp_path)
    entries = []
    for i, name in enumerate(("lab.h5", "lab.meta", "lab.bin")):
        out, backup = tmp_path / name, tmp_path / f".{name}.cf-old-abc"
        tmp = tmp_path / f".{name}.cf-tmp-1-abc"
        if i == 0:  # moved aside and replaced by a new file
            os.rename(out, backup)
            out.write_bytes(b"new")
        else:
            tmp.write_bytes(b"new, never renamed")
        entries.append({"tmp": str(tmp), "out": str(out), "had_old": True,
                        "backup": str(backup)})
    record = {"version": 1, "state": "undo", "pid": 1, "host": "elsewhere",
              "time": time.time() - 3600, "primary": str(commit.journal_of(tmp_path / "lab.h5")),
              "entries": entries}
    for name in ("lab.h5", "lab.meta", "lab.bin"):
        commit.journal_of(tmp_path / name).write_text(json.dumps(record))
    commit.settle(tmp_path / "lab.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.bin", "lab.h5", "lab.meta"]
    assert _digest(tmp_path) == old


@pytest.mark.slow
@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_clean_up_like_ctrl_c(tmp_path, sig, status):
    """Case 11: SIGTERM (timeout, Slurm, docker stop) and SIGHUP end a command with
    128 + the signal, one line, and no .NAME.cf-tmp-* left (today: 143/129 and the
    temporary left behind)."""
    proc = subprocess.Popen([sys.executable, "-m", "cftools.commands.data", "demo",
                             str(tmp_path / "big.h5"), "-n", "20000000", "-d", "64", "-q"],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not list(tmp_path.glob(".big.h5.cf-tmp-*")) and time.time() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob(".big.h5.cf-tmp-*")), "the temporary never appeared"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert err.strip() == f"cf-data: terminated by {signal.Signals(sig).name}", err
    assert list(tmp_path.iterdir()) == []


def test_a_signal_during_an_import_ends_the_command_after_it(tmp_path, monkeypatch):
    """Case 11, the flaky half: SIGTERM landing while a module was being imported (cf-data
    demo imports numpy.random lazily) raised Terminated inside the extension module's
    initialisation, which dropped it: the command ran on and exited 0. The signal is now
    delivered again once no import is under way, and Terminated comes from there."""
    from cftools.process import Terminated, command_process

    (tmp_path / "cf_signal_probe.py").write_text(
        "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n"
        "for _ in range(10000):  # the handler runs here, inside the import\n"
        "    pass\nDONE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    raised, imported = None, False
    with command_process("cf-test"):
        try:
            import cf_signal_probe  # noqa: F401
            imported = True
            deadline = time.time() + 10
            while time.time() < deadline:
                time.sleep(0.01)
        except Terminated as err:
            raised = err
    sys.modules.pop("cf_signal_probe", None)
    assert imported, "Terminated was raised inside the import"
    assert raised is not None and raised.signum == signal.SIGTERM


def test_a_device_named_as_an_image_is_skipped_not_read(T, tmp_path, capsys):
    """Case 13: /dev/zero among a features file's image names: the gallery says it could
    not be read (a device, not a regular file) and goes on; nothing is read until memory
    runs out. A PNG past Pillow's pixel limit is unreadable too, said in one line."""
    from PIL import Image

    pngs = sorted(Path(T["images"]).rglob("*.png"))[:5]
    bomb = tmp_path / "bomb.png"  # 144M pixels: past Pillow's limit of 89M
    Image.new("1", (12000, 12000)).save(bomb)
    os.symlink("/dev/zero", tmp_path / "zero.png")  # an image name that is a device
    names = [str(tmp_path / "zero.png"), str(bomb)] + [str(p) for p in pngs]
    x, y = make_demo_features(len(names), D, seed=3)
    write_features(tmp_path / "f.h5", x, labels=y, names=names)
    np.save(tmp_path / "c.npy", np.zeros(len(names), np.int64))
    r = call(capsys, "eval", "gallery", tmp_path / "c.npy", "-f", tmp_path / "f.h5", "-o",
             tmp_path / "gal", "--workers", 1)
    assert r.returncode == 0, r.stderr
    warn = [line for line in r.stderr.splitlines() if "warning" in line]
    assert len(warn) == 1 and "2 of 7 images could not be read" in warn[0], r.stderr
    assert "zero.png: is a device, not a regular file" in warn[0], warn
    assert "BytesIO" not in r.stderr and "DecompressionBomb" not in r.stderr


def test_non_utf8_names_pass_through_every_command(T, tmp_path, capsys):
    """Case 17: latin-1 names (old face sets' file names) in a features file: cf-knn works,
    the gallery shows them (U+FFFD for the bytes), cf-merge labels carries them byte for
    byte, cf-data import --names takes a latin-1 names file."""
    names = [b"caf\xe9_%d.png" % i for i in range(N)]
    (tmp_path / "names.txt").write_bytes(b"\n".join(names) + b"\n")
    r = call(capsys, "data", "import", T["npy"], "--labels", T["labels"], "--names",
             tmp_path / "names.txt", "-o", tmp_path / "f.h5", "-q")
    assert r.returncode == 0, r.stderr
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert f["names"][()].tolist() == names
    assert call(capsys, "knn", tmp_path / "f.h5", "-o", tmp_path / "k.h5", "-k", 5,
                "-q").returncode == 0
    with open_artifact(T["clusters"], "clusters") as a:
        labels = a.read("labels")
    with write_artifact(tmp_path / "c.h5", "clusters") as f:  # of these features
        f.create_dataset("labels", data=labels)
    r = call(capsys, "eval", "gallery", tmp_path / "c.h5", "-f", tmp_path / "f.h5", "-o",
             tmp_path / "gal", "-q")
    assert r.returncode == 0, r.stderr
    pages = " ".join(p.read_text(encoding="utf-8") for p in (tmp_path / "gal").rglob("*.html"))
    assert "caf\ufffd_1.png" in pages
    r = call(capsys, "merge", "labels", tmp_path / "c.h5", "--unlabelled-features",
             tmp_path / "f.h5", "--labelled-features", T["f2"], "-o", tmp_path / "r.h5", "-q")
    assert r.returncode == 0, r.stderr
    with h5py.File(tmp_path / "r.h5", "r") as f:
        kept = [n for n in f["names"][()].tolist() if n.startswith(b"caf")]
    assert kept and set(kept) <= set(names)


def test_model_config_is_checked_before_anything_is_allocated(T):
    """Case 12: a config asking for 136 TB is refused in well under a second, and the
    process's memory hardly moves (nothing was allocated for it)."""
    import resource

    from cftools.core.clusformer.model import load_model
    from cftools.errors import CfError

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    for name in ("m_seq_huge", "m_width_huge", "m_width_other"):
        with pytest.raises(CfError):
            load_model(T[name])
    assert time.perf_counter() - t < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024


def test_the_recall_samples_exact_search_holds_a_bounded_block(monkeypatch):
    """Case 15: the exact search of a sample of S queries held 16 x S x 131072 bytes of
    temporaries whatever d (2 GB at S = 1000): now at most EXACT_STEP_BYTES (plus the
    queries' k best), measured with tracemalloc (numpy reports its buffers to it). The ids
    are those of a plain exact search."""
    import tracemalloc

    from cftools.core.neighbours.exact import EXACT_STEP_BYTES, exact_of

    rng = np.random.default_rng(0)
    base = rng.standard_normal((60000, 8)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    rows = np.sort(rng.choice(60000, 1000, replace=False))
    tracemalloc.start()
    ids = exact_of(base, base[rows], 10, centres=rows)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < EXACT_STEP_BYTES + (4 << 20), peak
    sims = base[rows] @ base.T
    want = np.argsort(-sims, axis=1, kind="stable")[:, :10]
    assert (ids[:, 0] == rows).all()
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, want)]) > 0.999


def test_unfilled_slots_are_written_as_the_format_says(T, tmp_path, capsys):
    """Case 22: IVF that leaves slots unfilled writes id -1 and similarity -1 into a .h5
    (finite, as the format says; cf-seq and cf-eval knn take it), and refuses a .npz, whose
    layout cannot mark them."""
    args = [T["feats"], "-k", 40, "--method", "ivf", "--nlist", 60, "--nprobe", 1,
            "--recall-sample", 0]
    r = call(capsys, "knn", *args, "-o", tmp_path / "k.h5")
    assert r.returncode == 0 and "could not be filled" in r.stderr, r.stderr
    with open_artifact(tmp_path / "k.h5", "knn") as a:
        idx, sim = a.read("indices"), a.read("similarities")
    assert (idx < 0).any() and np.isfinite(sim).all() and (sim[idx < 0] == -1).all()
    assert call(capsys, "seq", tmp_path / "k.h5", "--features", T["feats"], "-o",
                tmp_path / "s.h5", "-L", 8, "-q").returncode == 0
    assert call(capsys, "eval", "knn", tmp_path / "k.h5", "--truth", T["feats"],
                "-q").returncode == 0
    r = call(capsys, "knn", *args, "-o", tmp_path / "k.npz", "-q")
    line = one_line_error(r)
    assert "cannot mark a missing neighbour" in line and str(tmp_path / "k.npz") in line
    assert not (tmp_path / "k.npz").exists() and not list(tmp_path.glob(".*cf-tmp*"))


def test_out_of_memory_names_batch_size_only_where_there_is_one():
    """Case 21: the hint to lower --batch-size only for commands that take it."""
    from cftools.cli import _has_batch_size
    from cftools.commands.eval import main as cf_eval
    from cftools.commands.knn import main as cf_knn

    assert _has_batch_size(cf_knn, ["x.h5"]) and not _has_batch_size(cf_eval, ["p", "-t", "t"])
    assert not _has_batch_size(cf_eval, ["knn", "k.h5"])


def test_one_line_warnings_and_a_read_only_home(tmp_path):
    """Case 25: matplotlib with a HOME it cannot write warns nothing (cftools gives it a
    folder of its own); a warning is one line, "PROG: warning: TEXT"."""
    x, y = make_demo_features(200, 8, seed=1)
    write_features(tmp_path / "f.h5", x, labels=y)
    run_cmd("knn", tmp_path / "f.h5", "-o", tmp_path / "k.h5", "-k", 6, "-q", check=True)
    run_cmd("seq", tmp_path / "k.h5", "--features", tmp_path / "f.h5", "-o",
            tmp_path / "s.h5", "-L", 6, "-q", check=True)
    run_cmd("link", tmp_path / "s.h5", "--features", tmp_path / "f.h5", "--method", "cosine",
            "-o", tmp_path / "l.h5", "-q", check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME")}
    env["HOME"] = str(tmp_path / "no" / "home")  # matplotlib cannot make its folder there
    r = subprocess.run([sys.executable, "-m", "cftools.commands.eval", "sweep",
                        str(tmp_path / "l.h5"), "-t", str(tmp_path / "f.h5"), "--png",
                        str(tmp_path / "s.png"), "-q"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert all(line.startswith("cf-eval") and "warning" in line for line in lines), lines
    assert "Matplotlib" not in r.stderr and "mkdir" not in r.stderr


@pytest.mark.slow
def test_a_full_disk_is_one_line_naming_the_output(T, tmp_path):
    """Case 14: on a 3 MB file system, HDF5 writers (cf-data demo, cf-knn, cf-merge labels)
    and the others (cf-data export, a .npz) end with exit 1 and "no space left on device
    writing FILE" (no segmentation fault, no traceback), leaving nothing partial."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        big = tmp_path / "big.h5"
        run_cmd("data", "demo", big, "-n", 20000, "-d", 32, "-q", check=True)
        runs = [
            (("data", "demo", mnt / "d.h5", "-n", 40000, "-d", 32), mnt / "d.h5"),
            (("knn", big, "-o", mnt / "k.h5", "-k", 40), mnt / "k.h5"),
            (("knn", big, "-o", mnt / "k.npz", "-k", 40), mnt / "k.npz"),
            (("data", "export", big, "--npy", mnt / "x.npy", "--bin", mnt / "x.bin"), None),
            (("merge", "labels", T["clusters"], "--unlabelled-features", T["feats"],
              "--labelled-features", T["f2"], "-o", mnt / "lab.h5", "--meta", mnt / "lab.meta",
              "--bin", mnt / "lab.bin"), None),
        ]
        (mnt / "fill").write_bytes(b"\0" * (3000 << 10))
        for args, out in runs:
            r = run_cmd(args[0], *args[1:], "-q")
            line = one_line_error(r)
            assert r.returncode == 1, (args, r.returncode, r.stderr)
            assert "no space left on device writing " + str(mnt) in line, line
            if out is not None:
                assert str(out) in line, line
            assert sorted(p.name for p in mnt.iterdir()) == ["fill"], list(mnt.iterdir())
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.slow
def test_a_read_only_gallery_folder_is_refused_up_front(T, tmp_path):
    """Case 20: -o under a read-only mount is refused before any work (as cf-knn's)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only file system here (needs root)")
    try:
        r = run_cmd("eval", "gallery", T["clusters"], "-f", T["feats"], "-o", ro / "gal", "-q")
        line = one_line_error(r)
        assert r.returncode == 1 and f"output directory {ro} is not writable" in line, line
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_a_diverged_backbone_is_not_written(tmp_path):
    """Case 4's kin: a learning rate that is finite but far too high makes NaN weights,
    which cf-embed extract would refuse: cf-embed train refuses to write them."""
    import torch

    from cftools.commands.embed import _save
    from cftools.core.recognition.backbone import Backbone, BackboneConfig
    from cftools.errors import CfError

    model = Backbone(BackboneConfig(depth=18, width=4, dim=8, image_size=16))
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    result = type("R", (), {"model": model, "history": [], "classes": 2, "images": 4})()
    image_set = type("S", (), {"artifact": None, "source": tmp_path})()
    with pytest.raises(CfError, match="training diverged"):
        _save(tmp_path / "bb.h5", result, [tmp_path], image_set, None, None, 0, 0, epochs=1,
              scale=64.0, margin=0.5, easy_margin=False, seed=0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("module,args", [
    ("train", ["{seq}", "--features", "{feats}", "-o", "{dir}/m.npy"]),
    ("link", ["{seq}", "--features", "{feats}", "--method", "cosine", "-o", "{dir}/l.npy"]),
    ("embed", ["train", "{images}", "-o", "{dir}/b.bin"]),
])
def test_hdf5_outputs_named_for_another_format_are_refused(T, capsys, module, args):
    """Case 25's class: every HDF5 output (now cf-train, cf-link and cf-embed's too)."""
    r = call(capsys, module, *[a.format(**T) for a in args], "-q")
    assert "name it .h5" in one_line_error(r)
