"""Several outputs of one command as one commit, and what a later command does with a
commit that a crash left unfinished.

A command with several outputs (cf-data split and export, cf-merge labels and add; the
gallery's folder swap too) writes each under a hidden temporary name, then ``commit``s:

1. a journal, ``.NAME.cf-commit`` beside every output (the same JSON in each: temporaries,
   outputs, backups), is written; the first output's journal is written last, and its
   appearance is the commit point;
2. output by output, the old file (if any) is renamed to a hidden backup
   (``.NAME.cf-old-TAG``) and the temporary renamed in;
3. the first output's journal is removed, then the other journals and the backups.

When a rename fails (EBUSY on a mount point, EXDEV, EACCES ...), Ctrl-C or SIGTERM
arrives during step 2, the commit is undone: the journal says so, the backups go back,
what was renamed in is removed, and the outputs are as before. A crash (kill -9, out of
memory) leaves journals behind: the next cftools command that reads or writes any of the
outputs first ``settle``s them: with the first output's journal present it finishes the
renames (or the undo it records); without it (the crash came before the commit point, or
after step 3 began) it removes the temporaries and backups left. Either way a cftools
reader sees the old set or the new set, never a mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import time
import uuid
from pathlib import Path

from ..errors import CfError

# tests: SIGKILL this process after this many renames of a commit (a crash between them)
DIE_ENV = "CFTOOLS_TEST_DIE_AFTER_RENAMES"
# a journal whose writer may still be running is waited for this long, then refused
WAIT_SECONDS = 10.0
# a journal older than this is a dead writer's (a commit takes milliseconds), whatever pid
STALE_SECONDS = 600.0


def journal_of(out) -> Path:
    out = Path(out)
    return out.with_name(f".{out.name}.cf-commit")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` at ``path`` by a temporary and a rename: a journal is whole or absent."""
    tmp = path.with_name(path.name + f".{os.getpid()}")
    with open(tmp, "w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def commit(pairs) -> None:
    """Rename every (temporary, output) pair as one commit (see the module docstring); a
    single file is one atomic rename and needs no journal (a folder does: the old one
    must be moved aside first)."""
    pairs = [(Path(t), Path(o)) for t, o in pairs]
    if len(pairs) == 1 and not pairs[0][1].is_dir():
        tmp, out = pairs[0]
        _replace_or_refuse(tmp, out)
        return
    tag = uuid.uuid4().hex[:8]
    entries: list[dict] = [{"tmp": str(t.absolute()), "out": str(o.absolute()),
                "backup": str(o.absolute().with_name(f".{o.name}.cf-old-{tag}")),
                "had_old": os.path.lexists(o)} for t, o in pairs]
    journals = [journal_of(o) for _, o in pairs]
    for j, (_, out) in zip(journals, pairs):
        if j.exists():
            raise CfError("another command is writing it (its commit journal "
                          f"{j.name} is there); try again when it ends", out)
    record = {"version": 1, "state": "commit", "pid": os.getpid(),
              "host": socket.gethostname(), "time": time.time(),
              "primary": str(journals[0].absolute()), "entries": entries}
    written: list[Path] = []
    try:
        for j in journals[1:] + journals[:1]:  # the first output's journal last: the commit
            _write_json(j, record)
            written.append(j)
    except BaseException:
        for j in written[::-1]:  # the primary is last written: removed first
            _remove(j)
        raise
    try:
        for done, e in enumerate(entries):
            if e["had_old"]:
                os.rename(e["out"], e["backup"])
            os.rename(e["tmp"], e["out"])
            if os.environ.get(DIE_ENV) == str(done + 1):
                os.kill(os.getpid(), signal.SIGKILL)
    except BaseException as err:
        record["state"] = "undo"
        _write_json(journals[0], record)
        _undo(entries)
        _finish(journals, entries, remove="tmp")
        if isinstance(err, OSError):
            named = (err.filename, err.filename2)  # name the output as the user gave it
            failed = next((o for e, (_, o) in zip(entries, pairs)
                           if e["out"] in named or e["backup"] in named or e["tmp"] in named),
                          err.filename2 or err.filename)
            raise CfError(f"cannot replace it ({err.strerror or err}); nothing was changed: "
                          "every output is as it was", failed) from None
        raise
    _finish(journals, entries, remove="backup")


def _replace_or_refuse(tmp: Path, out: Path) -> None:
    try:
        os.replace(tmp, out)
    except OSError as err:
        raise CfError(f"cannot replace it ({err.strerror or err}); it is as it was",
                      out) from None


def _undo(entries) -> None:
    for e in entries:
        if os.path.lexists(e["backup"]):
            if os.path.isdir(e["backup"]) and os.path.lexists(e["out"]):
                _remove(Path(e["out"]))  # a folder is not replaced by rename
            os.replace(e["backup"], e["out"])
        elif not e["had_old"] and not os.path.lexists(e["tmp"]) and os.path.lexists(e["out"]):
            _remove(Path(e["out"]))  # renamed in where nothing was before


def _finish(journals, entries, *, remove: str) -> None:
    """Remove the primary journal (first), the others, and what is left of ``remove``
    ("backup" after a commit, "tmp" after an undo or an uncommitted crash)."""
    for j in journals:
        _remove(Path(j))
    for e in entries:
        _remove(Path(e[remove]))


def _writer_may_run(record: dict) -> bool:
    age = time.time() - float(record.get("time", 0))
    if age > STALE_SECONDS or record.get("pid") == os.getpid():
        return False
    if record.get("host") != socket.gethostname():
        return age < 60  # another node: no pid to ask; a commit takes milliseconds
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, TypeError, KeyError):
        return True
    return True


def _read_journal(path: Path) -> dict | None:
    try:
        with open(path) as fh:
            record = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise CfError(f"unreadable commit journal ({err}); remove it", path) from None
    if not isinstance(record, dict) or not isinstance(record.get("entries"), list) or \
            not isinstance(record.get("primary"), str):
        raise CfError("not a cftools commit journal; remove it", path)
    return record


def settle(path) -> None:
    """Before ``path`` is read or written: finish or clear a commit of it that a crash
    left unfinished (see the module docstring). Costs one stat when there is none."""
    journal = journal_of(path)
    if not os.path.lexists(journal):
        return
    record = _read_journal(journal)
    deadline = time.monotonic() + WAIT_SECONDS
    while record is not None and _writer_may_run(record):
        if time.monotonic() > deadline:
            raise CfError(f"is being replaced by process {record.get('pid')} on "
                          f"{record.get('host')} (journal {journal.name}); try again when "
                          "it ends", path)
        time.sleep(0.02)
        record = _read_journal(journal)
    if record is None:  # the writer finished meanwhile
        return
    entries = record["entries"]
    journals = [journal_of(e["out"]) for e in entries]
    primary = _read_journal(Path(record["primary"]))
    try:
        if primary is None:  # never committed, or committed and cleaning up
            for e in entries:
                _remove(Path(e["tmp"]))
            _finish(journals, entries, remove="backup")
        elif primary.get("state") == "undo":
            _undo(entries)
            _finish(journals, entries, remove="tmp")
        else:  # committed: finish the renames
            for e in entries:
                if os.path.lexists(e["tmp"]):
                    if e["had_old"] and os.path.lexists(e["out"]) and \
                            not os.path.lexists(e["backup"]):
                        os.rename(e["out"], e["backup"])
                    os.replace(e["tmp"], e["out"])
            _finish(journals, entries, remove="backup")
    except OSError as err:
        raise CfError(f"cannot finish the commit a crashed command left ({err.strerror or err}; "
                      f"journal {journal.name})", path) from None
