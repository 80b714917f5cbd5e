"""Writing artifacts: output checks made before any work, provenance, and atomic writes
(a temporary name beside the output, renamed when complete; several outputs all or none)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shlex
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..errors import CfError
from .artifacts import Artifact, row_blocks
from .schema import FORMAT_VERSION, HDF5_SUFFIXES, KINDS, ROW_CHUNK_BYTES


def new_id() -> str:
    return uuid.uuid4().hex


def check_output_path(out, inputs: Iterable = ()) -> Path:
    """Refuse, before any work, an output whose directory is missing or that is an input."""
    out = Path(out)
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
    out = Path(out)
    if out.suffix.lower() not in HDF5_SUFFIXES:
        raise CfError(f"this output is an HDF5 file; name it .h5 (not '{out.suffix}')", out)
    return out


@contextlib.contextmanager
def atomic_outputs(outs: Iterable, suffixes: Iterable | None = None):
    """Several outputs of one command, all or none: yield one temporary path per output
    (None stays None); when the block succeeds every temporary is renamed over its output,
    and when anything fails, writing any of them or renaming, none of the outputs appears
    (those already renamed are removed) and every temporary is removed."""
    outs = [None if o is None else Path(o) for o in outs]
    suffixes = list(suffixes) if suffixes is not None else [""] * len(outs)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmps = [None if o is None else o.with_name(f".{o.name}.cf-tmp-{tag}{sfx}")
            for o, sfx in zip(outs, suffixes)]
    renamed: list[Path] = []
    try:
        yield tmps
        for tmp, out in zip(tmps, outs):
            if out is not None and tmp is not None:
                os.replace(tmp, out)
                renamed.append(out)
    except BaseException:
        for path in renamed + [t for t in tmps if t is not None]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        raise


@contextlib.contextmanager
def write_artifact(out, kind: str, *, inputs: dict | None = None, attrs: dict | None = None):
    """Write an artifact atomically: yield an h5py.File on a temporary name in the output's
    directory; on success stamp the root attributes and rename over ``out``. On any error,
    Ctrl-C included, the temporary file is removed and ``out`` is left as it was."""
    if kind not in KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}")
    out_id = new_id()
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["cftools_kind"] = kind
        f.attrs["cftools_format"] = np.int64(FORMAT_VERSION)
        f.attrs["cftools_id"] = out_id
        for key, value in (attrs or {}).items():
            f.attrs[key] = to_attr(value)
        f.attrs["cftools_provenance"] = json.dumps(provenance_of(inputs or {}, out_id))
        yield f


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
    f.create_dataset(name, data=np.array([str(v) for v in values], dtype=object),
                     dtype=h5py.string_dtype("utf-8"))
