"""The formats users already hold, read and written directly: NumPy ``.npy``, an HDF5
dataset by path, learn-to-cluster's raw float32 ``.bin`` with its one-label-per-line
``.meta``, and its kNN ``.npz``: key ``data`` of shape (N, 2, k), ``[:, 0]`` neighbour ids
and ``[:, 1]`` cosine distances 1 - sim, ascending, self first."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ..errors import CfError, brief
from .artifacts import open_hdf5
from .writing import atomic_path


def require_file(path: Path) -> None:
    if not path.exists():
        raise CfError("no such file", path)
    if path.is_dir():
        raise CfError("is a directory, expected a file", path)


def read_hdf5_dataset(path: Path, inner: str) -> np.ndarray:
    f = open_hdf5(path)
    try:
        obj = f.get(inner)
        if not isinstance(obj, h5py.Dataset):
            raise CfError(f"no dataset at '{inner}'", path)
        try:
            return obj[()]
        except (OSError, RuntimeError) as err:
            raise CfError(f"cannot read dataset '{inner}' (truncated or corrupt?)", path) from err
    finally:
        f.close()


def load_npy(path: Path) -> np.ndarray:
    require_file(path)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        if "pickle" in str(err):  # numpy takes any file without a .npy header for a pickle
            with open(path, "rb") as f:
                head = f.read(8)
            if head == b"\x89HDF\r\n\x1a\n":
                raise CfError("is an HDF5 file, not a .npy array; rename it .h5", path) from err
            if head.startswith(b"\x93NUMPY") or head[:1] == b"\x80":
                raise CfError("holds pickled Python objects, not a plain numeric array; cftools "
                              "never unpickles (save a numeric array with np.save)", path) from err
            raise CfError("not a .npy array (no .npy header)", path) from err
        raise CfError(f"not a readable .npy array ({brief(err, 120)})", path) from err


def load_bin(path: Path, dim: int | None) -> np.ndarray:
    require_file(path)
    size = path.stat().st_size
    if size % 4:
        raise CfError(f"size {size} is not a whole number of float32 values", path)
    floats = size // 4
    if dim is None:
        meta = path.with_suffix(".meta")
        if not meta.exists():
            raise CfError("raw .bin features need --dim, or a .meta labels file beside them", path)
        rows = sum(1 for line in meta.open() if line.strip())
        if rows == 0 or floats % rows:
            raise CfError(f"{floats} floats do not split into the {rows} rows of {meta}", path)
        dim = floats // rows
    if dim < 1 or floats % dim:
        raise CfError(f"{floats} floats do not split into rows of dimension {dim}", path)
    meta = path.with_suffix(".meta")
    if meta.exists():
        rows = sum(1 for line in meta.open() if line.strip())
        if rows != floats // dim:
            raise CfError(f"{floats} floats of dimension {dim} are {floats // dim} rows but "
                          f"{meta} has {rows} lines", path)
    return np.fromfile(path, dtype=np.float32).reshape(-1, dim)


def load_meta(path: Path) -> np.ndarray:
    require_file(path)
    values = []
    with path.open() as fh:
        for lineno, line in enumerate(fh, 1):
            text = line.strip()
            if not text:
                continue
            try:
                values.append(int(text))
            except ValueError:
                raise CfError(f"line {lineno} is not an integer label: {text[:40]!r}", path) from None
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
    require_file(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            key = "data" if "data" in z.files else (z.files[0] if len(z.files) == 1 else None)
            if key is None:
                raise CfError(f"expected one array 'data' of shape (N, 2, k), found {z.files}", path)
            data = z[key]
    except CfError:
        raise
    except (ValueError, OSError, EOFError) as err:
        raise CfError("not a readable .npz file", path) from err
    if data.ndim != 3 or data.shape[1] != 2 or data.shape[0] == 0 or data.shape[2] == 0:
        raise CfError(f"kNN .npz must hold an (N, 2, k) array, got shape {data.shape}", path)
    if not np.isfinite(data).all():
        raise CfError("kNN .npz holds NaN or Inf", path)
    ids = data[:, 0, :]
    if (ids != np.round(ids)).any() or (ids < 0).any() or (ids >= data.shape[0]).any():
        raise CfError("kNN .npz neighbour ids must be integers in [0, N)", path)
    return ids.astype(np.int64), (1.0 - data[:, 1, :]).astype(np.float32)


def write_knn_npz(path, indices: np.ndarray, similarities: np.ndarray) -> None:
    """Write learn-to-cluster's kNN .npz (ids as float32 when exact, as that layout does)."""
    dtype = np.float32 if indices.size == 0 or indices.max() < 2 ** 24 else np.float64
    data = np.stack([indices.astype(dtype), (1.0 - similarities).astype(dtype)], axis=1)
    with atomic_path(path, ".npz") as tmp:  # savez would append .npz to any other name
        np.savez_compressed(tmp, data=data)
