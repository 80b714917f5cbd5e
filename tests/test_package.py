"""What importing cftools does to its process."""

from __future__ import annotations

import os
import subprocess
import sys


def _env_after_import(**given) -> tuple[str, str]:
    code = ("import cftools, os; print(os.environ.get('GOMP_SPINCOUNT', '-'), "
            "os.environ.get('OMP_WAIT_POLICY', '-'))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], env={**env, **given},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    spin, policy = out.stdout.split()
    return spin, policy


def test_importing_cftools_shortens_the_openmp_spin_unless_told_otherwise():
    """GOMP_SPINCOUNT defaults to a short spin in any process that imports cftools
    (threads spinning long made cf-train many times slower beside other work); the user's
    own GOMP_SPINCOUNT or OMP_WAIT_POLICY is kept as given."""
    assert _env_after_import() == ("1000", "-")
    assert _env_after_import(GOMP_SPINCOUNT="50000") == ("50000", "-")
    assert _env_after_import(OMP_WAIT_POLICY="ACTIVE") == ("-", "ACTIVE")
