"""Mixed precision on the CPU (core.runtime.precision): bfloat16 where the CPU computes in
it natively, float32 where it does not, and --bf16 refused there rather than run slowly."""

import pytest
import torch

from cftools.core.runtime import precision
from cftools.errors import CfError

CPU = torch.device("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_the_cpu_autocast_follows_the_cpus_bfloat16_support(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: native)
    assert precision.autocast_dtype(CPU, None) is (torch.bfloat16 if native else None)
    assert precision.autocast_dtype(CPU, False) is None
    if native:
        assert precision.autocast_dtype(CPU, True) is torch.bfloat16
    else:
        with pytest.raises(CfError, match="no bfloat16 support"):
            precision.autocast_dtype(CPU, True)
