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

from cftools.artifacts import check_finite, open_artifact

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
