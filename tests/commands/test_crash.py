"""Crash safety: a command killed with SIGKILL at a random moment leaves under its output
name either nothing or a complete, valid file, and a rerun succeeds."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cftools.formats.artifacts import check_finite, open_artifact

# every test here runs commands in processes it kills and reruns: seconds each
pytestmark = pytest.mark.slow

KIND_OF_DATASET = {"features": "features", "knn": "similarities", "links": "probabilities"}


def start(module, *args):
    return subprocess.Popen([sys.executable, "-m", f"cftools.commands.{module}", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def assert_nothing_or_complete(out, kind, rows):
    if not out.exists():
        return False
    with open_artifact(out, kind) as art:
        assert art.dims["N"] == rows
        if kind in KIND_OF_DATASET:
            check_finite(art, KIND_OF_DATASET[kind])
    return True


def kill_at_random_moments(tmp_path, module, args, out, kind, rows, seconds, tries=3, seed=0):
    """Kill the command `tries` times at random moments within `seconds`, check the output
    each time, then run it to the end and check again."""
    rng = random.Random(seed)
    for _ in range(tries):
        if out.exists():
            out.unlink()
        proc = start(module, *args)
        time.sleep(rng.uniform(0.05, seconds))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert_nothing_or_complete(out, kind, rows)
    for leftover in tmp_path.glob(".*.cf-tmp-*"):  # hidden temporaries of killed runs
        leftover.unlink()
    if out.exists():
        out.unlink()
    done = subprocess.run([sys.executable, "-m", f"cftools.commands.{module}", *map(str, args)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert assert_nothing_or_complete(out, kind, rows)


def test_cf_data_demo_survives_sigkill(tmp_path):
    out = tmp_path / "demo.h5"
    kill_at_random_moments(tmp_path, "data", ["demo", out, "-n", 300000, "-d", 32, "-q"], out,
                           "features", 300000, seconds=2.0)


def test_cf_knn_survives_sigkill(tmp_path):
    from cftools.data.demo import make_demo_features

    x, _ = make_demo_features(40000, 32, seed=1)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "knn.h5"
    kill_at_random_moments(tmp_path, "knn", [tmp_path / "x.npy", "-o", out, "-k", 30, "-q"], out,
                           "knn", 40000, seconds=3.0)


# --------------------------------------------------------------------------- seq, link, merge

# one thread: on a busy 2-core machine two spinning OpenMP threads run up to ~10x slower
ENV = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Features, kNN, sequences and cosine links of 40K points, made once."""
    from cftools.data.demo import make_demo_features
    from cftools.formats.features import write_features

    tmp = tmp_path_factory.mktemp("chain")
    x, y = make_demo_features(40000, 32, seed=2)
    write_features(tmp / "f.h5", x, labels=y)
    for module, args in (("knn", [tmp / "f.h5", "-o", tmp / "k.h5", "-k", 24]),
                         ("seq", [tmp / "k.h5", "--features", tmp / "f.h5", "-o", tmp / "s.h5",
                                  "-L", 16]),
                         ("link", [tmp / "s.h5", "--features", tmp / "f.h5", "--method", "cosine",
                                   "-o", tmp / "l.h5", "--device", "cpu"])):
        done = subprocess.run([sys.executable, "-m", f"cftools.commands.{module}",
                               *map(str, args), "-q"], capture_output=True, text=True, env=ENV)
        assert done.returncode == 0, done.stderr
    return tmp


def test_cf_seq_survives_sigkill(chain, tmp_path):
    out = tmp_path / "s.h5"
    kill_at_random_moments(tmp_path, "seq", [chain / "k.h5", "--features", chain / "f.h5",
                                             "-o", out, "-L", 16, "-q"],
                           out, "sequences", 40000, seconds=2.5, tries=2, seed=1)


def test_cf_link_survives_sigkill(chain, tmp_path):
    out = tmp_path / "l.h5"
    kill_at_random_moments(tmp_path, "link", [chain / "s.h5", "--features", chain / "f.h5",
                                              "--method", "cosine", "--device", "cpu",
                                              "--batch-size", 512, "-o", out, "-q"],
                           out, "links", 40000, seconds=3.0, tries=2, seed=2)


def test_cf_merge_survives_sigkill(chain, tmp_path):
    out = tmp_path / "c.h5"
    kill_at_random_moments(tmp_path, "merge", ["decode", chain / "l.h5", "-o", out, "--method",
                                               "intimacy", "--threshold", 0.6, "-q"],
                           out, "clusters", 40000, seconds=2.5, tries=2, seed=3)


# --------------------------------------------------------------------------- training




def model_datasets(path):
    """Every dataset of a model file (weights and any other), by name."""
    import h5py

    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return found


def assert_same_datasets(a, b):
    da, db = model_datasets(a), model_datasets(b)
    assert da.keys() == db.keys() and da
    for name in da:
        assert np.array_equal(da[name], db[name]), name


def full_run_then_killed_and_resumed(base, tmp_path):
    """Train ``base`` (ending in -q) uninterrupted, then again SIGKILLed after its first
    checkpoint and resumed (not quiet); the two models must hold equal datasets. Returns
    the resumed run's stderr and the checkpoint path (the default name)."""
    full = subprocess.run(base + ["-o", str(tmp_path / "full.h5")], capture_output=True,
                          text=True, env=ENV)
    assert full.returncode == 0, full.stderr
    out, ckpt = tmp_path / "part.h5", tmp_path / "part.h5.ckpt"
    kill_after_checkpoint(base + ["-o", str(out)], ckpt)
    assert not out.exists() and ckpt.exists()
    done = subprocess.run(base[:-1] + ["-o", str(out), "--resume"], capture_output=True,
                          text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    assert_same_datasets(tmp_path / "full.h5", out)
    return done.stderr, ckpt


def kill_after_checkpoint(argv, checkpoint, timeout=120.0):
    """Start a training run and SIGKILL it as soon as its first checkpoint appears."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=ENV)
    t0 = time.monotonic()
    while not checkpoint.exists():
        if proc.poll() is not None:
            raise AssertionError(f"finished before it could be killed:\n{proc.stderr.read()}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("no checkpoint appeared")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before the kill"


def test_cf_train_resumes_after_sigkill_to_the_same_weights(tmp_path):
    from cftools.data.demo import make_demo_features
    from cftools.formats.features import write_features

    x, y = make_demo_features(400, 16, seed=5)
    write_features(tmp_path / "f.h5", x, labels=y)
    for module, args in (("knn", [tmp_path / "f.h5", "-o", tmp_path / "k.h5", "-k", 8]),
                         ("seq", [tmp_path / "k.h5", "--features", tmp_path / "f.h5", "-o",
                                  tmp_path / "s.h5", "-L", 6])):
        done = subprocess.run([sys.executable, "-m", f"cftools.commands.{module}",
                               *map(str, args), "-q"], capture_output=True, text=True, env=ENV)
        assert done.returncode == 0, done.stderr
    base = [sys.executable, "-m", "cftools.commands.train", str(tmp_path / "s.h5"), "--features",
            str(tmp_path / "f.h5"), "--epochs", "3", "--width", "16", "--heads", "2", "--ffn", "32",
            "--batch-size", "32", "--lr", "1e-3", "--device", "cpu", "--seed", "3", "-q"]
    stderr, ckpt = full_run_then_killed_and_resumed(base, tmp_path)
    assert f"resumed from {ckpt} after epoch" in stderr, stderr[-2000:]


def test_cf_embed_train_resumes_after_sigkill_to_the_same_weights(tmp_path):
    from cftools.data.demo_images import make_demo

    make_demo(tmp_path / "img", identities=4, image_size=16, seed=1, mean_images=4)
    base = [sys.executable, "-m", "cftools.commands.embed", "train", str(tmp_path / "img" / "labelled"),
            "--epochs", "3", "--width", "4", "--dim", "16", "--image-size", "16", "--batch-size",
            "8", "--workers", "0", "--scale", "16", "--margin", "0.2", "--lr", "0.05",
            "--milestones", "2", "--device", "cpu", "--seed", "4", "-q"]
    stderr, _ = full_run_then_killed_and_resumed(base, tmp_path)
    assert "resuming after epoch" in stderr, stderr[-2000:]
