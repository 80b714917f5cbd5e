"""Writing artifacts: output checks made before any work, provenance, and atomic writes
(a temporary name beside the output, renamed when complete; several outputs one commit,
all or none: commit.py; a folder built beside itself and swapped in: AtomicDir). A full
disk is one line naming the output ("no space left on device writing FILE")."""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import shlex
import shutil
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..errors import CfError
from .artifacts import Artifact, row_blocks
from .commit import commit, settle
from .inputs import split_spec
from .schema import FORMAT_VERSION, HDF5_SUFFIXES, KINDS, ROW_CHUNK_BYTES

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NO_SPACE_TEXTS = ("errno = 28", "No space left on device", "Disk quota exceeded",
                  "File too large", "errno = 122", "errno = 27")
# suffixes each output format takes: an output named for another format is refused
FORMAT_SUFFIXES = {"hdf5": HDF5_SUFFIXES, "npy": (".npy",), "bin": (".bin",),
                   "meta": (".meta", ".txt", ".labels"), "npz": (".npz",), "json": (".json",),
                   "png": (".png",)}


def new_id() -> str:
    return uuid.uuid4().hex


def check_output_path(out, inputs: Iterable = ()) -> Path:
    """Refuse, before any work, an output whose directory is missing or that is an input
    (a commit of it that a crash left unfinished is settled first: commit.py)."""
    out = Path(out)
    settle(out)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise CfError(f"output directory {parent} does not exist", out)
    if out.is_dir():
        raise CfError("output path is a directory", out)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CfError(f"output directory {parent} is not writable", out)
    for inp in inputs:
        if inp is None:
            continue
        inp = Path(inp)
        same = out.resolve() == inp.resolve()
        if not same and out.exists() and inp.exists():
            same = os.path.samefile(out, inp)
        if same:
            raise CfError("output path is also an input; choose another name", out)
    return out


def command_line() -> str:
    argv = [Path(sys.argv[0]).name] + sys.argv[1:] if sys.argv else []
    return shlex.join(argv)


def provenance_of(inputs: dict[str, Artifact | str | None], output_id: str) -> list[dict]:
    """The inputs' histories (each step once, oldest first) plus this command's step."""
    steps: list[dict] = []
    seen: set[str] = set()
    ids: dict[str, str] = {}
    for role, inp in inputs.items():
        if inp is None:
            continue
        if isinstance(inp, Artifact):
            ids[role] = inp.id
            history = inp.provenance
        else:
            ids[role] = str(inp)
            history = []
        for step in history:
            key = json.dumps(step, sort_keys=True)
            if key not in seen:
                seen.add(key)
                steps.append(step)
    steps.append({
        "command": command_line(),
        "version": __version__,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": ids,
        "output": output_id,
    })
    return steps


@contextlib.contextmanager
def atomic_path(out, suffix: str = ""):
    """Yield a hidden temporary path beside ``out``, renamed over it when the block
    succeeds and removed when it fails, Ctrl-C included: a crash never leaves a
    half-written file under the final name. ``suffix`` keeps the extension that writers
    such as np.save or savefig go by."""
    with atomic_outputs([out], [suffix]) as (tmp,):  # the one-output case
        yield tmp


def check_output_paths(outs: Iterable, inputs: Iterable = (), *, hdf5: Iterable = ()) -> list:
    """check_output_path for each of a command's outputs (None skipped), refusing two that
    name the same file and an HDF5 output (those in ``hdf5``) whose name says otherwise."""
    outs = [Path(o) for o in outs if o is not None]
    for out in outs:
        check_output_path(out, inputs)
    for out in (Path(h) for h in hdf5 if h is not None):
        check_hdf5_name(out)
    seen: dict[Path, Path] = {}
    for out in outs:
        key = out.resolve()
        if key in seen:
            raise CfError("is named by two outputs; each output needs its own file", out)
        seen[key] = out
    return outs


def check_hdf5_name(out) -> Path:
    """Refuse an HDF5 output whose name ends in another format's suffix (.npy, .bin, ...)."""
    return check_format_name(out, "hdf5")


def check_format_name(out, fmt: str) -> Path:
    """Refuse an output whose name says another format than the one written (an HDF5
    file named .npy, a .meta named .bin): readers go by the suffix."""
    out = Path(out)
    allowed = FORMAT_SUFFIXES[fmt]
    if out.suffix.lower() not in allowed:
        what = "an HDF5 file" if fmt == "hdf5" else f"a {allowed[0]} file"
        raise CfError(f"this output is {what}; name it {allowed[0]} (not "
                           f"'{out.suffix or out.name}')", out)
    return out


def is_no_space(err: BaseException) -> bool:
    """Whether ``err`` says the disk (or quota, or file size limit) is full: an OSError's
    errno, or the text of an HDF5 error that carries it."""
    if isinstance(err, (_Hdf5Wedged, NoSpace)) or \
            (isinstance(err, OSError) and err.errno in NO_SPACE_ERRNOS):
        return True
    return isinstance(err, (OSError, RuntimeError)) and any(t in str(err) for t in NO_SPACE_TEXTS)


def _disk_full(outs) -> bool:
    """Whether an output's file system has (next to) no room left: what a writer that
    words its failure its own way (torch.save) meant."""
    for out in outs:
        with contextlib.suppress(OSError):
            if shutil.disk_usage(Path(out).parent or ".").free < (1 << 20):
                return True
    return False


class NoSpace(CfError):
    """ "no space left on device writing FILE" (``filename``: FILE)."""

    def __init__(self, out, hard_exit: bool = False):
        self.filename = str(out)
        self.hard_exit = hard_exit
        super().__init__(f"no space left on device writing {out}")


def _no_space_error(err: BaseException, outs, tmps) -> CfError:
    """ "no space left on device writing FILE": the output whose temporary failed (named
    by the error, else the one written last)."""
    named = {str(t): o for t, o in zip(tmps, outs) if t is not None and o is not None}
    out = named.get(str(getattr(err, "filename", "")))
    if out is None:
        text = str(err)
        out = next((o for t, o in named.items() if t in text), None)
    if out is None:
        written = [(Path(t).stat().st_mtime_ns, o) for t, o in named.items()
                   if os.path.lexists(t)]
        out = max(written, key=lambda x: x[0])[1] if written else next(iter(named.values()))
    return NoSpace(out, bool(getattr(err, "hard_exit", False)))


@contextlib.contextmanager
def atomic_outputs(outs: Iterable, suffixes: Iterable | None = None):
    """Several outputs of one command, all or none: yield one temporary path per output
    (None stays None); when the block succeeds the temporaries are committed (commit.py:
    renamed over the outputs as one commit), and when anything fails, writing any of them
    or renaming, none of the outputs changes and every temporary is removed."""
    outs = [None if o is None else Path(o) for o in outs]
    suffixes = list(suffixes) if suffixes is not None else [""] * len(outs)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmps = [None if o is None else o.with_name(f".{o.name}.cf-tmp-{tag}{sfx}")
            for o, sfx in zip(outs, suffixes)]
    try:
        yield tmps
        commit([(t, o) for t, o in zip(tmps, outs) if o is not None and t is not None])
    except BaseException as err:
        no_space = is_no_space(err) or (isinstance(err, (OSError, RuntimeError)) and
                                        _disk_full([o for o in outs if o is not None]))
        for path in (t for t in tmps if t is not None):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        if no_space:
            raise _no_space_error(err, outs, tmps) from None
        raise


_WEDGED: list = []  # the HDF5 objects of a write that failed for want of space, kept open


class _Hdf5Wedged(Exception):
    """An HDF5 write failed for want of space: closing the file or its datasets again (or
    at exit) fails again, and can crash the HDF5 library. Every object of the file is kept
    open (_WEDGED) and a command run as a process ends at once (CfError.hard_exit)."""

    hard_exit = True

    def __init__(self, err: BaseException, f: h5py.File):
        self.filename = getattr(err, "filename", None)
        with contextlib.suppress(Exception):
            # new references to every open object of the file: the wrappers dropped on
            # the way out then close nothing (each close would try to flush and fail)
            _WEDGED.append((f, h5py.h5f.get_obj_ids(f.id, h5py.h5f.OBJ_ALL)))
        super().__init__(str(err))


class _QuietNoSpace:
    """sys.unraisablehook and sys.excepthook while an artifact is written: an h5py object
    dropped while an error unwinds tries to close itself, flushes, fails for want of space
    and would print a traceback per object (Cython prints it through both hooks); the
    error that ends the command says it once."""

    def __init__(self):
        self.unraisable, self.excepthook = sys.unraisablehook, sys.excepthook

    def __enter__(self):
        sys.unraisablehook, sys.excepthook = self._unraisable, self._except
        return self

    def restore(self):
        sys.unraisablehook, sys.excepthook = self.unraisable, self.excepthook

    def _unraisable(self, unraisable):
        if unraisable.exc_value is None or not is_no_space(unraisable.exc_value):
            self.unraisable(unraisable)

    def _except(self, kind, value, tb):
        if value is None or not is_no_space(value):
            self.excepthook(kind, value, tb)


@contextlib.contextmanager
def write_artifact(out, kind: str, *, inputs: dict | None = None, attrs: dict | None = None):
    """Write an artifact atomically: yield an h5py.File on a temporary name in the output's
    directory; on success stamp the root attributes and rename over ``out``. On any error,
    Ctrl-C included, the temporary file is removed and ``out`` is left as it was; a full
    disk is "no space left on device writing OUT", never a crash of HDF5."""
    if kind not in KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}")
    out_id = new_id()
    quiet = _QuietNoSpace().__enter__()
    with atomic_path(out) as tmp:
        f = h5py.File(tmp, "w")
        try:
            f.attrs["cftools_kind"] = kind
            f.attrs["cftools_format"] = np.int64(FORMAT_VERSION)
            f.attrs["cftools_id"] = out_id
            for key, value in (attrs or {}).items():
                f.attrs[key] = to_attr(value)
            f.attrs["cftools_provenance"] = json.dumps(provenance_of(inputs or {}, out_id))
            yield f
        except BaseException as err:
            if is_no_space(err):  # the hook stays: what is dropped later fails quietly
                raise _Hdf5Wedged(err, f) from None  # not closed: HDF5 would crash
            f.close()
            quiet.restore()
            raise
        try:
            f.close()
        except (OSError, RuntimeError) as err:
            if is_no_space(err):
                raise _Hdf5Wedged(err, f) from None
            raise
        finally:
            if not _WEDGED:
                quiet.restore()


def to_attr(value):
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    if value is None:
        return "null"
    return value


def create_rows(f: h5py.File, name: str, shape: tuple, dtype, data=None) -> h5py.Dataset:
    """A dataset chunked by rows (~4 MiB a chunk), so it can be streamed in and out."""
    dtype = np.dtype(dtype)
    row_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)
    rows = int(max(1, min(shape[0], ROW_CHUNK_BYTES // row_bytes))) if shape[0] else 1
    chunks = (rows,) + tuple(shape[1:]) if shape[0] else None
    ds = f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks)
    if data is not None:
        for start, stop in row_blocks(ds):
            ds[start:stop] = data[start:stop]
    return ds


def write_strings(f: h5py.File, name: str, values) -> None:
    """Strings (names) as a UTF-8 string dataset; a name read with bytes that are not
    UTF-8 (surrogate escapes: artifacts.decode_name) is written back byte for byte."""
    encoded = [str(v).encode("utf-8", "surrogateescape") for v in values]
    f.create_dataset(name, data=np.array(encoded, dtype=object),
                     dtype=h5py.string_dtype("utf-8"))


# --------------------------------------------------------------------------- atomic folder


class AtomicDir:
    """Build a folder beside its final name, then swap it in (commit.py: the old folder is
    moved aside and removed after): a failed or interrupted build leaves DIR as it was.
    Refused before any work: DIR's parent missing or not writable, DIR a file, or a
    folder that is neither empty nor marked by ``marker`` (written by an earlier build),
    and any input that lies inside DIR (the swap would delete it)."""

    def __init__(self, out, *, marker: str, inputs: Iterable = (), kind: str = "cftools gallery"):
        self.out = Path(out)
        settle(self.out)
        parent = self.out.parent if str(self.out.parent) else Path(".")
        if not parent.is_dir():
            raise CfError(f"output directory {parent} does not exist", self.out)
        if not os.access(parent, os.W_OK | os.X_OK):
            raise CfError(f"output directory {parent} is not writable", self.out)
        if self.out.exists():
            if not self.out.is_dir():
                raise CfError("exists and is not a folder", self.out)
            if any(self.out.iterdir()) and not (self.out / marker).exists():
                raise CfError(f"exists, is not empty and is not a {kind}; choose another "
                              "folder", self.out)
            if not os.access(self.out, os.W_OK | os.X_OK):
                raise CfError("is not writable", self.out)
        root = self.out.resolve()
        for inp in inputs:
            if inp is None:
                continue
            path = split_spec(inp)[0].resolve()
            if path == root or root in path.parents:
                raise CfError(f"lies inside the output folder {self.out}, which this run "
                              "replaces; move it out first", inp)
        tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp = self.out.with_name(f".{self.out.name}.cf-tmp-{tag}")
        self.previous = self.out if (self.out / marker).exists() else None

    def __enter__(self):
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if exc is not None and is_no_space(exc):
                raise NoSpace(self.out) from None
            return False
        try:
            commit([(self.tmp, self.out)])
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        return False
