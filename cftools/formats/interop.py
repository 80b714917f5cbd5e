"""The formats users already hold, read and written directly: NumPy ``.npy``, an HDF5
dataset by path, learn-to-cluster's raw float32 ``.bin`` with its one-label-per-line
``.meta``, and its kNN ``.npz``: key ``data`` of shape (N, 2, k), ``[:, 0]`` neighbour ids
and ``[:, 1]`` cosine distances 1 - sim, ascending, self first."""

from __future__ import annotations

import zipfile
from pathlib import Path

import h5py
import numpy as np

from ..errors import CfError, brief
from .artifacts import check_stored, open_hdf5
from .inputs import MAX_TEXT_BYTES, regular_file
from .writing import atomic_path

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
LABEL_MAX = np.iinfo(np.int64).max


def require_file(path: Path, what: str = "file", max_bytes: int | None = None) -> int:
    """The size of a regular file (the policy of inputs.regular_file)."""
    return regular_file(path, what, max_bytes)


def read_hdf5_dataset(path: Path, inner: str) -> np.ndarray:
    f = open_hdf5(path)
    try:
        obj = f.get(inner)
        if not isinstance(obj, h5py.Dataset):
            raise CfError(f"no dataset at '{inner}'", path)
        check_stored(obj, path, inner)
        try:
            return obj[()]
        except (OSError, RuntimeError) as err:
            raise CfError(f"cannot read dataset '{inner}' (truncated or corrupt?)", path) from err
    finally:
        f.close()


def _npy_header(path: Path, size: int) -> tuple[tuple, np.dtype]:
    """The shape and dtype a .npy header declares, refused unless the file holds that
    many bytes: a header may claim 10^12 rows in a file of a few bytes."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if not head.startswith(b"\x93NUMPY"):
            if head == HDF5_MAGIC:
                raise CfError("is an HDF5 file, not a .npy array; rename it .h5", path)
            if head.startswith(b"PK\x03\x04"):
                raise CfError("is a .npz (zip) archive, not a .npy array", path)
            if head[:1] == b"\x80":
                raise CfError("holds pickled Python objects, not a plain numeric array; cftools "
                              "never unpickles (save a numeric array with np.save)", path)
            raise CfError("not a .npy array (no .npy header)", path)
        fh.seek(0)
        try:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read(fh, max_header_size=10000)
        except (ValueError, OSError, EOFError, SyntaxError) as err:
            raise CfError(f"not a readable .npy array ({brief(err, 120)})", path) from None
        offset = fh.tell()
    if dtype.hasobject:
        raise CfError("holds pickled Python objects, not a plain numeric array; cftools "
                      "never unpickles (save a numeric array with np.save)", path)
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if offset + need > size:
        raise CfError(f"its header declares shape {shape} of {dtype} ({need} bytes) but the "
                      f"file holds {size - offset} bytes of data (truncated?)", path)
    return shape, dtype


def load_npy(path: Path) -> np.ndarray:
    size = require_file(path, ".npy array")
    _npy_header(path, size)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise CfError(f"not a readable .npy array ({brief(err, 120)})", path) from err


def _meta_lines(meta: Path) -> int:
    require_file(meta, ".meta labels file", MAX_TEXT_BYTES)
    with meta.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def load_bin(path: Path, dim: int | None) -> np.ndarray:
    size = require_file(path, ".bin array")
    if size % 4:
        raise CfError(f"size {size} is not a whole number of float32 values", path)
    floats = size // 4
    if dim is None:
        meta = path.with_suffix(".meta")
        if not meta.exists():
            raise CfError("raw .bin features need --dim, or a .meta labels file beside them", path)
        rows = _meta_lines(meta)
        if rows == 0 or floats % rows:
            raise CfError(f"{floats} floats do not split into the {rows} rows of {meta}", path)
        dim = floats // rows
    if dim < 1 or floats % dim:
        raise CfError(f"{floats} floats do not split into rows of dimension {dim}", path)
    meta = path.with_suffix(".meta")
    if meta.exists():
        rows = _meta_lines(meta)
        if rows != floats // dim:
            raise CfError(f"{floats} floats of dimension {dim} are {floats // dim} rows but "
                          f"{meta} has {rows} lines", path)
    return np.fromfile(path, dtype=np.float32).reshape(-1, dim)


def load_meta(path: Path) -> np.ndarray:
    require_file(path, "labels file", MAX_TEXT_BYTES)
    values = []
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, 1):
            text = line.strip()
            if not text:
                continue
            try:
                value = int(text)
            except ValueError:
                shown = text[:40].decode("utf-8", "replace")
                raise CfError(f"line {lineno} is not an integer label: {shown!r}", path) from None
            if not -1 <= value <= LABEL_MAX:
                raise CfError(f"line {lineno}: label {value} is outside [-1, 2^63 - 1]", path)
            values.append(value)
    return np.asarray(values, dtype=np.int64)


def write_meta(path, labels: np.ndarray) -> None:
    """learn-to-cluster .meta: one integer label per line (atomically)."""
    with atomic_path(path) as tmp:
        np.savetxt(tmp, np.asarray(labels, dtype=np.int64), fmt="%d")


def write_bin(path, features: np.ndarray) -> None:
    """learn-to-cluster .bin: raw little-endian float32, row-major (atomically)."""
    with atomic_path(path) as tmp:
        np.ascontiguousarray(features, dtype="<f4").tofile(tmp)


def read_knn_npz(path) -> tuple[np.ndarray, np.ndarray]:
    """learn-to-cluster kNN .npz -> (indices int64, similarities float32)."""
    path = Path(path)
    require_file(path, "kNN .npz")
    try:
        with np.load(path, allow_pickle=False) as z:
            key = "data" if "data" in z.files else (z.files[0] if len(z.files) == 1 else None)
            if key is None:
                raise CfError(f"expected one array 'data' of shape (N, 2, k), found {z.files}", path)
            data = z[key]
        if not isinstance(data, np.ndarray) or data.dtype.hasobject:
            raise CfError("expected a numeric array 'data'", path)
    except CfError:
        raise
    except AttributeError:  # np.load gave an array, not an archive: a .npy under .npz
        raise CfError("is a .npy array, not a .npz archive", path) from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise CfError(f"not a readable .npz file ({brief(err, 100)})", path) from None
    if data.ndim != 3 or data.shape[1] != 2 or data.shape[0] == 0 or data.shape[2] == 0:
        raise CfError(f"kNN .npz must hold an (N, 2, k) array, got shape {data.shape}", path)
    if not np.isfinite(data).all():
        raise CfError("kNN .npz holds NaN or Inf", path)
    ids = data[:, 0, :]
    if (ids != np.round(ids)).any() or (ids < 0).any() or (ids >= data.shape[0]).any():
        raise CfError("kNN .npz neighbour ids must be integers in [0, N)", path)
    return ids.astype(np.int64), (1.0 - data[:, 1, :]).astype(np.float32)


def write_knn_npz(path, indices: np.ndarray, similarities: np.ndarray) -> None:
    """Write learn-to-cluster's kNN .npz (ids as float32 when exact, as that layout does).
    The layout has no mark for a neighbour not found: refused rather than written as a
    file that no reader takes (id -1, distance Inf)."""
    missing = int((indices < 0).sum())
    if missing:
        raise CfError(f"{missing} neighbour slots were not filled by the search, and "
                      "learn-to-cluster's .npz cannot mark a missing neighbour: raise "
                      "--nprobe or --ef-search, use --method exact, or write a .h5 knn file",
                      path)
    dtype = np.float32 if indices.size == 0 or indices.max() < 2 ** 24 else np.float64
    data = np.stack([indices.astype(dtype), (1.0 - similarities).astype(dtype)], axis=1)
    with atomic_path(path, ".npz") as tmp:  # savez would append .npz to any other name
        np.savez_compressed(tmp, data=data)
