"""Progress on stderr: a bar on a terminal, a line per tenth of the work elsewhere."""

from __future__ import annotations

import subprocess
import sys

from cftools.cli import LineProgress, Reporter


def test_line_progress_prints_a_line_per_tenth_and_no_carriage_return(capsys):
    rep = Reporter(prog="cf-x")
    with rep.progress(total=1000, desc="work", unit="pt") as bar:  # stderr is captured: no tty
        assert isinstance(bar, LineProgress)
        for _ in range(100):
            bar.update(10)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 10 and lines[0].startswith("cf-x: work: 10% (100/1000 pt")
    assert lines[-1].startswith("cf-x: work: 100% (1000/1000 pt")


def test_quiet_progress_says_nothing(capsys):
    with Reporter(quiet=True, prog="cf-x").progress(total=10, desc="w") as bar:
        bar.update(10)
    assert capsys.readouterr().err == ""


def test_unknown_total_ends_with_one_line(capsys):
    bar = Reporter(prog="cf-x").progress(desc="w", unit="it")
    bar.update(3)
    bar.set_postfix(loss="0.5")
    bar.close()
    bar.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [lines[0]] and "done (3 it" in lines[0] and "loss=0.5" in lines[0]


def test_a_command_logging_to_a_file_writes_lines_not_frames(tmp_path):
    import numpy as np

    x = np.random.default_rng(0).standard_normal((60, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x / np.linalg.norm(x, axis=1, keepdims=True))
    with open(tmp_path / "log", "w") as log:
        subprocess.run([sys.executable, "-m", "cftools.commands.knn", str(tmp_path / "x.npy"),
                        "-k", "5", "-o", str(tmp_path / "k.h5")], stderr=log, check=True)
    text = (tmp_path / "log").read_text()
    assert "\r" not in text and "searching: 100%" in text
