"""What a command does to its own process, set up by cli.py around every command and
undone after it: SIGTERM and SIGHUP end it as Ctrl-C does (Terminated: the clean-up on
the way out runs, the exit status is 128 + the signal), warnings are one line each
("PROG: warning: TEXT", third parties' too), and third parties that would complain about
the environment (matplotlib and a read-only HOME) are given what they need."""

from __future__ import annotations

import os
import signal
import warnings
from pathlib import Path

import click

from .errors import brief

# SIGTERM (timeout, Slurm, docker stop) and SIGHUP (a closed terminal) end a command as
# Ctrl-C does, temporaries removed, with the shell's status for that signal: 128 + signal
TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def printable(text: str) -> str:
    """A message as a terminal or log can take it: bytes of a name that are not UTF-8
    (kept as surrogate escapes) shown as \\xNN, never an encoding error."""
    return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class Terminated(BaseException):
    """SIGTERM or SIGHUP, raised in the main thread like KeyboardInterrupt for SIGINT (a
    BaseException, so every clean-up on the way out runs, and click does not take it for
    Ctrl-C)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


_MAIN_PID = os.getpid()


# How long a signal that arrived during an import waits before it is delivered again
REDELIVER_SECONDS = 0.05


def _terminate(signum, frame):
    if os.getpid() != _MAIN_PID:  # a forked worker (thumbnails, data loading): die as usual
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if _importing(frame):
        # An extension module's initialisation can drop an exception raised inside it
        # (numpy.random's, imported lazily, did: the command then ran to its end and
        # exited 0): the signal is delivered again, until no import is under way.
        import threading

        timer = threading.Timer(REDELIVER_SECONDS, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()
        return
    raise Terminated(signum)


def _importing(frame) -> bool:
    """Whether ``frame`` runs inside an import (importlib's bootstrap on the stack)."""
    while frame is not None:
        name = frame.f_code.co_filename
        if "importlib._bootstrap" in name or name.endswith(("importlib/_bootstrap.py",
                                                            "importlib/_bootstrap_external.py")):
            return True
        frame = frame.f_back
    return False


def _install_signal_handlers() -> dict:
    """SIGTERM and SIGHUP raise Terminated (main thread only); returns the old handlers."""
    import threading

    global _MAIN_PID
    if threading.current_thread() is not threading.main_thread():
        return {}
    _MAIN_PID = os.getpid()
    old = {}
    for sig in TERMINATING_SIGNALS:
        try:
            old[sig] = signal.signal(sig, _terminate)
        except (ValueError, OSError):
            pass
    return old


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings (ours and third parties': numpy, torch, PIL, faiss's Python side) as one
    line, "PROG: warning: TEXT", never with the source line that raised them."""
    text = brief(message, 300)
    if category not in (UserWarning, RuntimeWarning):
        text = f"{category.__name__}: {text}"
    click.echo(printable(f"{_prog_name[0]}: warning: {text}"), err=True)


_prog_name = ["cftools"]


def _quiet_third_parties() -> None:
    """matplotlib writes its font cache under HOME; with a read-only HOME it warns (through
    logging, not warnings) and builds it again on every run: give it a writable folder."""
    if "MPLCONFIGDIR" in os.environ:
        return
    home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    target = home / "matplotlib"
    probe = target if target.exists() else home if home.exists() else home.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        import tempfile

        folder = Path(tempfile.gettempdir()) / f"cftools-matplotlib-{os.getuid()}"
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            os.environ["MPLCONFIGDIR"] = str(folder)
        except OSError:
            pass


class command_process:  # noqa: N801 - used as a function: with command_process(prog)
    """Signal handlers, one-line warnings and third parties' settings for one command;
    the handlers and the warning hook are put back on exit (tests run many commands in
    one process)."""

    def __init__(self, prog: str):
        self.prog = prog

    def __enter__(self):
        self.handlers = _install_signal_handlers()
        self.showwarning, _prog_name[0] = warnings.showwarning, self.prog
        warnings.showwarning = _one_line_warning
        _quiet_third_parties()
        return self

    def __exit__(self, *exc):
        warnings.showwarning = self.showwarning
        for sig, handler in self.handlers.items():
            signal.signal(sig, handler)
        return False
