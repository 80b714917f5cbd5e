"""Reading artifacts: open an HDF5 file, check it against the schema before any data is
read, and read its datasets and attributes with every failure turned into one line that
names the file. Values (NaN/Inf, norms) are checked by the readers that stream them."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..errors import CfError
from .inputs import regular_file
from .schema import FORMAT_VERSION, KINDS, ROOT_ATTRS, ROW_CHUNK_BYTES, AttrSpec


def _describe_dtype(dt: np.dtype) -> str:
    return "str" if h5py.check_string_dtype(dt) is not None else dt.name


def _dtype_matches(dt: np.dtype, want: str) -> bool:
    if want == "str":
        return h5py.check_string_dtype(dt) is not None
    return dt == np.dtype(want)


def open_hdf5(path) -> h5py.File:
    """Open an existing HDF5 file read-only, turning every way it can fail into a CfError
    (a device, FIFO or socket is refused before it is opened: inputs.regular_file)."""
    path = Path(path)
    regular_file(path, "HDF5 file")
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
    """An open, validated artifact. Datasets are h5py datasets (read lazily, in chunks);
    ``attrs`` the root attributes as Python values, each checked against the schema when
    the file was opened (``json_attr`` gives a JSON attribute parsed)."""

    def __init__(self, path, file: h5py.File, kind: str, dims: dict[str, int],
                 attrs: dict, parsed: dict):
        self.path = Path(path)
        self.file = file
        self.kind = kind
        self.dims = dims
        self.attrs = attrs
        self._parsed = parsed
        self.id: str = attrs["cftools_id"]
        self.provenance: list = parsed.get("cftools_provenance", [])

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
            out = np.array([decode_name(s) for s in np.atleast_1d(out)], dtype=object)
        return out

    def json_attr(self, name: str, default=None):
        if name not in self.attrs:
            return default
        if name in self._parsed:
            return self._parsed[name]
        return _parse_json(self.attrs[name], name, self.path, AttrSpec(name, ""))

    def close(self):
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def decode_name(s) -> str:
    """A string of an HDF5 dataset as str. Names are image paths: bytes that are not
    UTF-8 (an old latin-1 file name) are kept as surrogate escapes, so the path still
    opens, and written back byte for byte (writing.write_strings)."""
    return s.decode("utf-8", "surrogateescape") if isinstance(s, bytes) else str(s)


def _attr_value(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "surrogateescape")
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray) and v.ndim == 0:
        return _attr_value(v[()])
    return v


_TYPE_WORDS = {"str": "a string", "int": "an integer", "float": "a finite number",
               "bool": "true or false", "json": "a JSON text", "sim": 'a number or "none"'}


def _parse_json(value, name: str, path, spec: AttrSpec):
    if not isinstance(value, str):
        raise CfError(f"attribute '{name}' is not a JSON text", path)
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError) as err:
        raise CfError(f"attribute '{name}' is not valid JSON", path) from err
    want, word = (list, "a list") if spec.json_list else (dict, "an object")
    if parsed is not None and not isinstance(parsed, want):
        raise CfError(f"attribute '{name}' holds a JSON {type(parsed).__name__}, expected "
                      f"{word}", path)
    return parsed


def _typed(value, spec: AttrSpec, path) -> bool:
    """Whether a root attribute's value is of the type its spec says."""
    t = spec.holds
    if t in ("str", "json"):
        return isinstance(value, str)
    if t == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and \
            math.isfinite(value)
    if t == "bool":
        return isinstance(value, (bool, int)) or (isinstance(value, str) and
                                                  value.lower() in ("true", "false"))
    if t == "sim":
        return (isinstance(value, str) and value in ("none", "null")) or \
            (isinstance(value, (int, float)) and not isinstance(value, bool) and
             math.isfinite(value))
    return True


def read_root_attributes(f: h5py.File, kind: str, path) -> tuple[dict, dict]:
    """The one reader of root attributes: every attribute as a Python value, those the
    schema declares (ROOT_ATTRS and the kind's) checked for their type, JSON ones parsed.
    Returns (attributes, parsed JSON attributes)."""
    specs = {a.name: a for a in ROOT_ATTRS + KINDS[kind].attrs}
    attrs, parsed = {}, {}
    for name in f.attrs:
        try:
            value = _attr_value(f.attrs[name])
        except (OSError, RuntimeError, TypeError, ValueError) as err:
            raise CfError(f"cannot read attribute '{name}' ({err})", path) from None
        attrs[name] = value
        spec = specs.get(name)
        if spec is None:
            continue
        if not _typed(value, spec, path):
            shown = repr(value)[:40]
            raise CfError(f"attribute '{name}' must be {_TYPE_WORDS[spec.holds]}, got {shown}",
                          path)
        if spec.holds == "json":
            parsed[name] = _parse_json(value, name, path, spec)
    steps = parsed.get("cftools_provenance")
    if steps is not None and not all(isinstance(step, dict) for step in steps):
        raise CfError("attribute 'cftools_provenance' must be a list of steps (objects)", path)
    return attrs, parsed


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


def _kind_and_version(path, f: h5py.File, kinds: tuple[str, ...]) -> str:
    want = " or ".join(kinds)
    if "cftools_kind" not in f.attrs:
        raise CfError(f"not a cftools file (no cftools_kind attribute); expected {want}", path)
    try:
        got = _attr_value(f.attrs["cftools_kind"])
    except (OSError, RuntimeError, TypeError, ValueError):
        got = None
    if not isinstance(got, str):
        raise CfError(f"attribute 'cftools_kind' must be a string, got {repr(got)[:40]}; "
                      f"expected {want}", path)
    if got not in kinds:
        if got not in KINDS:
            raise CfError(f"is of unknown kind {got[:40]!r}, expected {want}", path)
        raise CfError(f"is a {got} file, expected {want}", path)
    version = _attr_value(f.attrs["cftools_format"]) if "cftools_format" in f.attrs else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise CfError("missing or invalid cftools_format attribute (an integer version)", path)
    if version < 1:
        raise CfError(f"{got} format version {version} does not exist (versions start at 1)",
                      path)
    if version > FORMAT_VERSION:
        raise CfError(f"{got} format version {version} is newer than this cftools "
                      f"({__version__}) reads (<= {FORMAT_VERSION}); upgrade cftools", path)
    return got


def _validate(path, f: h5py.File, kinds: tuple[str, ...]) -> Artifact:
    got = _kind_and_version(path, f, kinds)
    spec = KINDS[got]
    for a in ("cftools_id",) + spec.required_attrs:
        if a not in f.attrs:
            raise CfError(f"missing attribute '{a}' of a {got} file", path)
    attrs, parsed = read_root_attributes(f, got, path)
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
        check_stored(obj, path, ds_spec.name)
        for dim, size in zip(ds_spec.dims, obj.shape):
            if dim in dims and dims[dim] != size:
                raise CfError(f"dataset '{ds_spec.name}' has {dim}={size} but "
                              f"'{first_seen[dim]}' has {dim}={dims[dim]}", path)
            dims.setdefault(dim, size)
            first_seen.setdefault(dim, ds_spec.name)
    if dims.get("N", 1) == 0:
        raise CfError(f"empty {got} file (0 rows)", path)
    return Artifact(path, f, got, dims, attrs, parsed)


def _bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n}"  # pragma: no cover


def check_stored(ds: h5py.Dataset, path, name: str) -> None:
    """Refuse, before anything is allocated for it, a dataset whose declared shape the
    file does not hold: chunks never written (a 237 KB file may declare 10^8 rows, read
    back as fill values), or storage past the end of a truncated file."""
    if ds.size == 0:
        return
    declared = f"{' x '.join(str(s) for s in ds.shape)} {ds.dtype}"
    size = os.path.getsize(path)
    try:
        if ds.chunks is not None:
            want = 1
            for extent, chunk in zip(ds.shape, ds.chunks):
                want *= -(-extent // chunk)
            have = ds.id.get_num_chunks()
            if have < want:
                raise CfError(f"dataset '{name}' declares {declared} but only {have} of its "
                              f"{want} chunks are stored (truncated, or never written?)", path)
            last = ds.id.get_chunk_info(have - 1)
            end = max(last.byte_offset + last.size, 0) if last.byte_offset is not None else 0
        else:
            stored = ds.id.get_storage_size()
            if stored == 0 and ds.id.get_offset() is None and \
                    ds.id.get_create_plist().get_layout() == h5py.h5d.CONTIGUOUS:
                raise CfError(f"dataset '{name}' declares {declared} but holds no data "
                              "(never written?)", path)
            offset = ds.id.get_offset()
            end = (offset or 0) + stored
    except CfError:
        raise
    except (OSError, RuntimeError, ValueError) as err:
        raise CfError(f"cannot read dataset '{name}' (truncated or corrupt?): "
                      f"{_first_line(err)}", path) from err
    if end > size:
        raise CfError(f"dataset '{name}' declares {declared} stored up to byte {end}, past the "
                      f"end of the {_bytes(size)} file (truncated?)", path)


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
