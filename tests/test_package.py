"""What importing cftools does to its process."""

from __future__ import annotations

import os
import subprocess
import sys


def test_importing_cftools_makes_openmp_threads_sleep_unless_told_otherwise():
    """OMP_WAIT_POLICY defaults to PASSIVE in any process that imports cftools (spinning
    OpenMP threads made cf-train many times slower beside other work); the user's own
    setting is kept."""
    code = "import cftools, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "PASSIVE", out.stderr
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True)
    assert out.stdout.strip() == "ACTIVE", out.stderr
