"""Shared test helpers: run a command as a user would, find ../shared, small data.

tests/ mirrors cftools/ (commands/, core/, data/, formats/, report/) in folders without
__init__.py, under pytest's default (prepend) import mode: every test file's name must be
unique across tests/, and the helpers here import as ``from conftest import ...`` from any
folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CELEBA = SHARED / "data" / "celeba-dlib128"
ATT = SHARED / "data" / "att-faces"


def run_cmd(module: str, *args, check: bool = False, timeout: float = 600, env=None
            ) -> subprocess.CompletedProcess:
    """Run ``python -m cftools.commands.<module> args...``; returns the completed process."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    proc = subprocess.run([sys.executable, "-m", f"cftools.commands.{module}", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """Assert a failed run said exactly one line on stderr, and return it."""
    assert proc.returncode != 0, f"expected failure, got success:\n{proc.stderr}"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{proc.stderr}"
    assert "error" in lines[0]
    return lines[0]


def write_demo_sequences(tmp: Path, n: int, *, seed: int = 3, dim: int = 16, k: int = 10,
                         length: int = 8, min_sim: float = 0.2) -> tuple:
    """tmp/f.h5 (n demo features with labels) and tmp/seq.h5 (their labelled sequences of
    ``length`` positions): the inputs of cf-link tests. Returns (features, labels, order,
    mask, targets)."""
    from cftools.core.clusformer.grammar import build_sequences
    from cftools.core.neighbours.index import knn
    from cftools.data.demo import make_demo_features
    from cftools.formats.features import load_features, write_features
    from cftools.formats.writing import create_rows, write_artifact

    f, labels = make_demo_features(n, dim, seed=seed)
    write_features(tmp / "f.h5", f, labels=labels)
    fid = load_features(tmp / "f.h5").id
    idx, sim = knn(f, k)
    order, mask, targets = build_sequences(idx, sim, length, min_sim=min_sim, labels=labels)
    with write_artifact(tmp / "seq.h5", "sequences", attrs={"knn_id": "x", "features_id": fid}) as h:
        create_rows(h, "order", order.shape, np.int64, data=order)
        create_rows(h, "mask", mask.shape, bool, data=mask)
        create_rows(h, "targets", targets.shape, np.int8, data=targets)
    return f, labels, order, mask, targets


def unit_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def celeba():
    if not (CELEBA / "features.npy").exists():
        pytest.skip(f"real face features not found at {CELEBA} (../shared absent)")
    return CELEBA


@pytest.fixture(scope="session")
def _torch_threads_at_start():
    """torch's thread count before any test ran (None without torch)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


@pytest.fixture(autouse=True)
def _restore_torch_threads(_torch_threads_at_start):
    """Tests and fixtures that set torch's thread count (tiny models spin on more) must not
    leave it set: an in-process run then differs in the last bits from a subprocess run at
    the default count (test_embed's resume test compares the two exactly)."""
    yield
    torch = sys.modules.get("torch")
    if torch is not None and _torch_threads_at_start is not None \
            and torch.get_num_threads() != _torch_threads_at_start:
        torch.set_num_threads(_torch_threads_at_start)


def assert_same_neighbours(ids, sims, ref_ids, ref_sims, tol=1e-5):
    """Two kNN results hold the same neighbours: similarities within ``tol``, and ids
    equal wherever the reference similarity is not tied (within ``tol``) with its
    neighbours in the row; the last column may also tie with a point beyond the row, so
    its ids may differ where the similarities agree."""
    np.testing.assert_allclose(sims, ref_sims, atol=tol, rtol=0)
    gaps = np.abs(np.diff(ref_sims, axis=1)) > tol
    clear = np.ones(ids.shape, bool)
    clear[:, 1:] &= gaps
    clear[:, :-1] &= gaps
    clear[:, -1] = False
    assert clear.mean() > 0.5  # a test of mostly ties would test nothing
    assert (ids[clear] == ref_ids[clear]).all()
    # among ties the two hold the same points, row by row, except at the row's end
    for r in np.flatnonzero((ids != ref_ids).any(axis=1)):
        inner = ref_sims[r] > ref_sims[r, -1] + tol
        assert set(ids[r, inner]) == set(ref_ids[r, inner])
    assert (np.diff(sims[:, 1:], axis=1) <= 1e-6).all()  # falling (after the centre)
