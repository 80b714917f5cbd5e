"""Commands with several outputs (cf-data export, cf-merge labels): a failure while writing
the second output leaves neither (property-based, hypothesis)."""

import itertools
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cftools.data.demo import make_demo_features
from cftools.formats.features import write_features

_WRITERS = {  # output option -> the name its writer has in the command module
    "data": {"--npy": "np", "--bin": "write_bin", "--meta": "write_meta"},
    "merge": {"-o": "write_features", "--meta": "write_meta", "--bin": "write_bin"},
}
_WRITER_MODULES = {"data": "cftools.commands.data", "merge": "cftools.commands.merge.labels"}
_PAIRS = [(cmd, a, b) for cmd, w in _WRITERS.items() for a, b in itertools.permutations(w, 2)]


def _run(module, args):
    import importlib

    main = importlib.import_module(f"cftools.commands.{module}").main
    with pytest.raises(SystemExit) as info:
        main.main(args=[str(a) for a in args], prog_name=f"cf-{module}")
    return info.value.code


@settings(max_examples=12, deadline=None)
@given(pair=st.sampled_from(_PAIRS), partial=st.integers(0, 64))
def test_a_failure_writing_the_second_output_leaves_neither(pair, partial):
    import importlib

    cmd, first, second = pair
    module = importlib.import_module(_WRITER_MODULES[cmd])
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        x, y = make_demo_features(60, 8, seed=0)
        write_features(d / "f.h5", x, labels=y)
        outs = {"--npy": d / "o.npy", "--bin": d / "o.bin", "--meta": d / "o.meta",
                "-o": d / "o.h5"}
        if cmd == "data":
            args = ["export", d / "f.h5"]
        else:
            write_features(d / "g.h5", x, labels=y)
            from cftools.formats.writing import write_artifact
            with write_artifact(d / "c.h5", "clusters") as f:
                f.create_dataset("labels", data=y)
            args = ["labels", d / "c.h5", "--unlabelled-features", d / "f.h5",
                    "--labelled-features", d / "g.h5"]
            if "-o" not in (first, second):
                args += ["-o", outs["-o"]]
        args += [first, outs[first], second, outs[second], "-q"]
        name = _WRITERS[cmd][second]
        real = getattr(module, name)

        def fail_after_a_part(path, *a, **kw):  # write some bytes of the second, then fail
            Path(path).write_bytes(b"\0" * partial)
            raise OSError(28, "No space left on device")

        mp = pytest.MonkeyPatch()
        if name == "np":
            fake = type("np", (), {"save": staticmethod(fail_after_a_part),
                                   "__getattr__": lambda self, k: getattr(np, k)})()
            mp.setattr(module, "np", fake)
        elif name == "write_features":
            def failing(path, *a, **kw):  # the whole file written, then the failure
                real(path, *a, **kw)
                raise OSError(28, "No space left on device")
            mp.setattr(module, name, failing)
        else:
            mp.setattr(module, name, fail_after_a_part)
        try:
            code = _run(cmd, args)
        finally:
            mp.undo()
        assert code == 1
        left = sorted(p.name for p in d.iterdir())
        assert left == sorted(n for n in ("f.h5", "g.h5", "c.h5") if (d / n).exists()), left
