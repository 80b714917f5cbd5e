"""The HDF5 file kinds of cftools: schema, validation on read, provenance, atomic write.

Every artifact is one HDF5 file whose root attributes say what it is:

- ``cftools_kind``        one of ``KINDS`` (features, knn, sequences, model, links, clusters)
- ``cftools_format``      integer format version of that kind (``FORMAT_VERSION``)
- ``cftools_id``          random hex id, new for every file written
- ``cftools_provenance``  JSON list of {command, version, time, inputs, output}: the
                          history of every file this one was made from, then its own step

The written spec is man/cftools.7; keep the two in step.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shlex
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import h5py
import numpy as np

from . import __version__
from .errors import CfError

FORMAT_VERSION = 1
ROW_CHUNK_BYTES = 4 << 20  # ~4 MiB per chunk: big enough to stream fast, small enough to seek


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of a kind: its dtype and its symbolic shape (dims shared across the file)."""

    name: str
    dtype: str  # numpy dtype name, or "str" for UTF-8 strings
    dims: tuple[str, ...]
    required: bool = True
    finite: bool = False  # NaN/Inf refused (checked by check_finite, streamed)


@dataclass(frozen=True)
class KindSpec:
    name: str
    datasets: tuple[DatasetSpec, ...]
    attrs: tuple[str, ...] = ()  # root attributes every file of the kind carries
    groups: tuple[str, ...] = ()  # required groups (model weights)


KINDS: dict[str, KindSpec] = {
    k.name: k
    for k in (
        KindSpec(
            "features",
            (
                DatasetSpec("features", "float32", ("N", "d"), finite=True),
                DatasetSpec("labels", "int64", ("N",), required=False),
                DatasetSpec("names", "str", ("N",), required=False),
            ),
        ),
        KindSpec(
            "knn",
            (
                DatasetSpec("indices", "int64", ("N", "k")),
                DatasetSpec("similarities", "float32", ("N", "k"), finite=True),
            ),
            attrs=("query_id", "base_id", "method", "self_first"),
        ),
        KindSpec(
            "sequences",
            (
                DatasetSpec("order", "int64", ("N", "L")),
                DatasetSpec("mask", "bool", ("N", "L")),
                DatasetSpec("targets", "int8", ("N", "L"), required=False),
            ),
            attrs=("knn_id", "features_id"),
        ),
        KindSpec("model", (), attrs=("config",), groups=("weights",)),
        KindSpec(
            "links",
            (
                DatasetSpec("indices", "int64", ("N", "k")),
                DatasetSpec("probabilities", "float32", ("N", "k"), finite=True),
            ),
            attrs=("features_id", "method"),
        ),
        KindSpec("clusters", (DatasetSpec("labels", "int64", ("N",)),)),
    )
}

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")


def new_id() -> str:
    return uuid.uuid4().hex


# --------------------------------------------------------------------------- reading


def _describe_dtype(dt: np.dtype) -> str:
    return "str" if h5py.check_string_dtype(dt) is not None else dt.name


def _dtype_matches(dt: np.dtype, want: str) -> bool:
    if want == "str":
        return h5py.check_string_dtype(dt) is not None
    return dt == np.dtype(want)


def open_hdf5(path) -> h5py.File:
    """Open an existing HDF5 file read-only, turning every way it can fail into a CfError."""
    path = Path(path)
    if not path.exists():
        raise CfError("no such file", path)
    if path.is_dir():
        raise CfError("is a directory, expected an HDF5 file", path)
    try:
        if not h5py.is_hdf5(path):
            raise CfError("not an HDF5 file", path)
        return h5py.File(path, "r")
    except CfError:
        raise
    except (OSError, RuntimeError) as err:
        raise CfError(f"cannot read HDF5 (truncated or corrupt?): {_first_line(err)}", path) from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


class Artifact:
    """An open, validated artifact. Datasets are h5py datasets (read lazily, in chunks)."""

    def __init__(self, path, file: h5py.File, kind: str, dims: dict[str, int]):
        self.path = Path(path)
        self.file = file
        self.kind = kind
        self.dims = dims
        self.id: str = str(file.attrs["cftools_id"])
        self.attrs = {k: _attr_value(v) for k, v in file.attrs.items()}
        self.provenance: list = json.loads(self.attrs.get("cftools_provenance", "[]"))

    def __contains__(self, name: str) -> bool:
        return name in self.file

    def __getitem__(self, name: str) -> h5py.Dataset:
        return self.file[name]

    def read(self, name: str, rows=None) -> np.ndarray:
        """Read a dataset (or a row slice of it); read errors become CfErrors naming the file."""
        try:
            ds = self.file[name]
            out = ds[()] if rows is None else ds[rows]
        except (OSError, RuntimeError, KeyError) as err:
            raise CfError(f"cannot read dataset '{name}' (truncated or corrupt?): {_first_line(err)}",
                          self.path) from err
        if h5py.check_string_dtype(ds.dtype) is not None:
            out = np.array([s.decode() if isinstance(s, bytes) else s for s in np.atleast_1d(out)],
                           dtype=object)
        return out

    def json_attr(self, name: str, default=None):
        if name not in self.attrs:
            return default
        try:
            return json.loads(self.attrs[name])
        except (TypeError, ValueError) as err:
            raise CfError(f"attribute '{name}' is not valid JSON", self.path) from err

    def close(self):
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _attr_value(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def open_artifact(path, kind: str | Iterable[str]) -> Artifact:
    """Open ``path`` and check, before any data is read, that it is an artifact of ``kind``
    in a format this version reads, with every dataset present, of the right dtype and of
    shapes that agree. Values (NaN/Inf, norms) are checked by the readers that stream them."""
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    f = open_hdf5(path)
    try:
        return _validate(path, f, kinds)
    except BaseException:
        f.close()
        raise


def _validate(path, f: h5py.File, kinds: tuple[str, ...]) -> Artifact:
    want = " or ".join(kinds)
    if "cftools_kind" not in f.attrs:
        raise CfError(f"not a cftools file (no cftools_kind attribute); expected {want}", path)
    got = _attr_value(f.attrs["cftools_kind"])
    if got not in kinds:
        raise CfError(f"is a {got} file, expected {want}", path)
    spec = KINDS[got]
    version = f.attrs.get("cftools_format")
    if version is None or not np.issubdtype(np.asarray(version).dtype, np.integer):
        raise CfError("missing or invalid cftools_format attribute", path)
    if int(version) > FORMAT_VERSION:
        raise CfError(f"{got} format version {int(version)} is newer than this cftools "
                      f"({__version__}) reads (<= {FORMAT_VERSION}); upgrade cftools", path)
    for a in ("cftools_id",) + spec.attrs:
        if a not in f.attrs:
            raise CfError(f"missing attribute '{a}' of a {got} file", path)
    for g in spec.groups:
        if not isinstance(f.get(g), h5py.Group):
            raise CfError(f"missing group '{g}' of a {got} file", path)
    dims: dict[str, int] = {}
    first_seen: dict[str, str] = {}
    for ds_spec in spec.datasets:
        obj = f.get(ds_spec.name)
        if obj is None:
            if ds_spec.required:
                raise CfError(f"missing dataset '{ds_spec.name}' of a {got} file", path)
            continue
        if not isinstance(obj, h5py.Dataset):
            raise CfError(f"'{ds_spec.name}' is not a dataset", path)
        if not _dtype_matches(obj.dtype, ds_spec.dtype):
            raise CfError(f"dataset '{ds_spec.name}' has dtype {_describe_dtype(obj.dtype)}, "
                          f"expected {ds_spec.dtype}", path)
        if obj.ndim != len(ds_spec.dims):
            raise CfError(f"dataset '{ds_spec.name}' has rank {obj.ndim} (shape {obj.shape}), "
                          f"expected rank {len(ds_spec.dims)} ({' x '.join(ds_spec.dims)})", path)
        for dim, size in zip(ds_spec.dims, obj.shape):
            if dim in dims and dims[dim] != size:
                raise CfError(f"dataset '{ds_spec.name}' has {dim}={size} but "
                              f"'{first_seen[dim]}' has {dim}={dims[dim]}", path)
            dims.setdefault(dim, size)
            first_seen.setdefault(dim, ds_spec.name)
    if dims.get("N", 1) == 0:
        raise CfError(f"empty {got} file (0 rows)", path)
    return Artifact(path, f, got, dims)


def check_finite(art: Artifact, name: str) -> None:
    """Stream a float dataset and refuse NaN/Inf with the first offending row."""
    ds = art[name]
    for start, stop in row_blocks(ds):
        block = art.read(name, slice(start, stop))
        bad = ~np.isfinite(block)
        if bad.any():
            row = start + int(np.argwhere(bad)[0][0])
            raise CfError(f"dataset '{name}' holds NaN or Inf (first at row {row})", art.path)


def row_blocks(ds_or_shape, target_bytes: int = ROW_CHUNK_BYTES) -> Iterator[tuple[int, int]]:
    """(start, stop) row ranges of about ``target_bytes`` each, for streaming a 2-D array."""
    shape = ds_or_shape.shape if hasattr(ds_or_shape, "shape") else ds_or_shape
    itemsize = getattr(getattr(ds_or_shape, "dtype", None), "itemsize", 4)
    row_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * itemsize)
    step = max(1, target_bytes // row_bytes)
    for start in range(0, shape[0], step):
        yield start, min(shape[0], start + step)


def require_same_source(expected_id: str, actual_id: str, *, what: str, path, other_path) -> None:
    """Refuse inputs that do not belong together, naming both files."""
    if expected_id != actual_id:
        hint = ""
        if expected_id.startswith("content:") or actual_id.startswith("content:"):
            # features from outside cftools: known by a fingerprint of their exact float32
            # values after normalisation; a rescaled or re-saved copy rounds differently
            hint = ("; features from outside cftools are known by a fingerprint of their exact "
                    "values after normalisation, so a rescaled or re-saved copy counts as other "
                    "features: give every command the same file")
        raise CfError(f"was made from other {what} than {other_path} "
                      f"(id {expected_id[:12]} != {actual_id[:12]}){hint}", path)


# --------------------------------------------------------------------------- writing


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


def provenance_of(inputs: dict[str, "Artifact | str | None"], output_id: str) -> list[dict]:
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
            raise CfError(f"is named by two outputs; each output needs its own file", out)
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
            if out is not None:
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
            f.attrs[key] = _to_attr(value)
        f.attrs["cftools_provenance"] = json.dumps(provenance_of(inputs or {}, out_id))
        yield f


def _to_attr(value):
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
