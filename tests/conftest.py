"""Shared test helpers: run a command as a user would, find ../shared, small data."""

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


def unit_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def celeba():
    if not (CELEBA / "features.npy").exists():
        pytest.skip(f"real face features not found at {CELEBA} (../shared absent)")
    return CELEBA
