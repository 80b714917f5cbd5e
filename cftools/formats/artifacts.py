"""Reading artifacts: open an HDF5 file, check it against the schema before any data is
read, and read its datasets and attributes with every failure turned into one line that
names the file. Values (NaN/Inf, norms) are checked by the readers that stream them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..errors import CfError
from .schema import FORMAT_VERSION, KINDS, ROW_CHUNK_BYTES


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
    for a in ("cftools_id",) + spec.required_attrs:
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
