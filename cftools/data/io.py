"""Importers and exporters: the formats users already hold, read and written directly.

Features can be given as
  - a cftools features file (``x.h5``),
  - any 2-D float dataset of any HDF5 file (``x.h5:/group/dataset``),
  - a NumPy ``.npy`` file (N x d),
  - learn-to-cluster's raw float32 ``.bin`` (N*d floats; d from ``--dim`` or from the
    line count of the ``.meta`` beside it).
Labels can be given as ``.npy``, learn-to-cluster ``.meta`` (one integer per line), a
cftools features or clusters file (its ``labels``), or ``x.h5:/path``.
kNN can be read from and written to learn-to-cluster's ``.npz``: key ``data`` of shape
(N, 2, k), ``[:, 0]`` neighbour ids and ``[:, 1]`` cosine distances 1 - sim, ascending,
self first.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..artifacts import (HDF5_SUFFIXES, Artifact, atomic_path, create_rows, open_artifact,
                         open_hdf5,
                         row_blocks, write_artifact, write_strings)
from ..errors import CfError, brief

NORM_TOLERANCE = 1e-3


@dataclass
class Features:
    """Features in memory, L2-normalised float32, with what is known about them."""

    features: np.ndarray
    path: Path
    id: str  # cftools_id of an artifact, else a fingerprint of the content
    labels: np.ndarray | None = None
    names: np.ndarray | None = None
    artifact: Artifact | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return self.features.shape[0]

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    @property
    def provenance_ref(self):
        """What to record as this input in a provenance step."""
        return self.artifact if self.artifact is not None else self.id


def split_spec(spec: str) -> tuple[Path, str | None]:
    """``file.h5:/a/b`` -> (file.h5, "/a/b"); anything else -> (path, None)."""
    text = str(spec)
    for suffix in HDF5_SUFFIXES:
        marker = suffix + ":"
        pos = text.find(marker)
        if pos > 0:
            return Path(text[: pos + len(suffix)]), text[pos + len(marker):] or "/"
    return Path(text), None


def fingerprint(array: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(str((array.shape, array.dtype.str)).encode())
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    step = 64 << 20
    for start in range(0, flat.size, step):
        h.update(flat[start:start + step])
    return "content:" + h.hexdigest()


# ----------------------------------------------------------------------- features


def load_features(spec, *, labels=None, dim: int | None = None, strict: bool = False,
                  reporter=None) -> Features:
    """Read features from any supported source, validated and L2-normalised.

    Refused with a one-line error: a missing or unreadable file, a wrong rank, no rows,
    NaN/Inf, all-zero rows; rows not of unit norm are normalised with a warning, or
    refused when ``strict``."""
    path, inner = split_spec(spec)
    art = None
    file_labels = names = None
    if inner is not None:
        raw = _read_hdf5_dataset(path, inner)
    elif path.suffix.lower() in HDF5_SUFFIXES:
        art = open_artifact(path, "features")
        raw = art.read("features")
        file_labels = art.read("labels") if "labels" in art else None
        names = art.read("names") if "names" in art else None
    elif path.suffix.lower() == ".npy":
        raw = _load_npy(path)
    elif path.suffix.lower() == ".bin":
        raw = _load_bin(path, dim)
        if dim is None:  # the dimension came from the .meta's line count: it must fit
            _check_meta_dimension(raw, path)
    else:
        _require_file(path)
        raise CfError("unknown features format (expected .h5/.hdf5, file.h5:/dataset, .npy or .bin)",
                      path)
    feats = _validated_unit_rows(raw, path, strict=strict, reporter=reporter)
    ident = art.id if art is not None else fingerprint(feats)
    result = Features(feats, path, ident, file_labels, names, art)
    if labels is not None:
        result.labels = load_labels(labels, n=result.n, for_path=path)
    return result


def _require_file(path: Path) -> None:
    if not path.exists():
        raise CfError("no such file", path)
    if path.is_dir():
        raise CfError("is a directory, expected a file", path)


def _read_hdf5_dataset(path: Path, inner: str) -> np.ndarray:
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


def _load_npy(path: Path) -> np.ndarray:
    _require_file(path)
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


def _load_bin(path: Path, dim: int | None) -> np.ndarray:
    _require_file(path)
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


def _check_meta_dimension(raw: np.ndarray, path: Path) -> None:
    """A .meta of the wrong line count gives a wrong dimension whose rows are not unit:
    refuse it rather than read the floats in the wrong shape."""
    for start, stop in row_blocks(raw.shape):
        norms = np.sqrt(np.einsum("ij,ij->i", raw[start:stop], raw[start:stop], dtype=np.float64))
        if (np.abs(norms - 1.0) > NORM_TOLERANCE).any():
            meta = path.with_suffix(".meta")
            raise CfError(f"dimension {raw.shape[1]} from the {raw.shape[0]} lines of {meta} gives "
                          "rows not of unit norm; the .meta may not match: give --dim", path)


def _validated_unit_rows(raw: np.ndarray, path: Path, *, strict: bool, reporter) -> np.ndarray:
    if raw.ndim != 2:
        raise CfError(f"features must be a 2-D array (N x d), got shape {raw.shape}", path)
    if raw.shape[0] == 0 or raw.shape[1] == 0:
        raise CfError(f"empty features (shape {raw.shape})", path)
    if not np.issubdtype(raw.dtype, np.floating):
        raise CfError(f"features must be floating point, got {raw.dtype}", path)
    feats = np.ascontiguousarray(raw, dtype=np.float32)
    renormalised = 0
    for start, stop in row_blocks(feats.shape):
        block = feats[start:stop]
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            raise CfError(f"features hold NaN or Inf (first at row {row})", path)
        norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
        if (norms == 0).any():
            row = start + int(np.argmax(norms == 0))
            raise CfError(f"row {row} is an all-zero vector, which has no direction", path)
        off = np.abs(norms - 1.0) > NORM_TOLERANCE
        if off.any():
            if strict:
                row = start + int(np.argmax(off))
                raise CfError(f"row {row} has norm {norms[row - start]:.4g}, not 1 "
                              "(features must be L2-normalised under --strict)", path)
            renormalised += int(off.sum())
        # rows already unit up to float32 rounding stay bit-identical, so that a file
        # exported and read back keeps its content (and fingerprint)
        fix = np.abs(norms - 1.0) > 1e-5
        if fix.any():
            block[fix] /= norms[fix, None].astype(np.float32)  # the array was read for us
    if renormalised and reporter is not None:
        reporter.warn(f"{path}: {renormalised} of {feats.shape[0]} rows were not of unit norm; "
                      "normalised them (use --strict to refuse such input)")
    return feats


# ----------------------------------------------------------------------- labels


def load_labels(spec, *, n: int | None = None, for_path=None) -> np.ndarray:
    """Integer labels (-1 = unknown) from .npy, .meta, a cftools file or file.h5:/path."""
    path, inner = split_spec(spec)
    if inner is not None:
        raw = _read_hdf5_dataset(path, inner)
    elif path.suffix.lower() in HDF5_SUFFIXES:
        with open_artifact(path, ("features", "clusters")) as art:
            if "labels" not in art:
                raise CfError("features file has no labels", path)
            raw = art.read("labels")
    elif path.suffix.lower() == ".npy":
        raw = _load_npy(path)
    elif path.suffix.lower() in (".meta", ".txt", ".labels"):
        raw = _load_meta(path)
    else:
        _require_file(path)
        raise CfError("unknown labels format (expected .npy, .meta, .h5 or file.h5:/dataset)", path)
    raw = np.asarray(raw)
    if raw.ndim != 1:
        raise CfError(f"labels must be 1-D, got shape {raw.shape}", path)
    if raw.size and not np.issubdtype(raw.dtype, np.integer):
        if np.issubdtype(raw.dtype, np.floating) and np.all(np.isfinite(raw)) and np.all(raw == np.round(raw)):
            raw = raw.astype(np.int64)
        else:
            raise CfError(f"labels must be integers, got {raw.dtype}", path)
    if n is not None and raw.shape[0] != n:
        other = f" of {for_path}" if for_path is not None else ""
        raise CfError(f"has {raw.shape[0]} labels but the features{other} have {n} rows", path)
    if (raw < -1).any():
        raise CfError("labels must be >= 0, or -1 for unknown", path)
    return raw.astype(np.int64, copy=False)


def _load_meta(path: Path) -> np.ndarray:
    _require_file(path)
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


# ----------------------------------------------------------------------- features files


def write_features(out, features: np.ndarray, *, labels=None, names=None, inputs=None,
                   attrs=None) -> None:
    """Write a cftools features file (rows must already be unit norm)."""
    with write_artifact(out, "features", inputs=inputs, attrs=attrs) as f:
        create_rows(f, "features", features.shape, np.float32, data=features)
        if labels is not None:
            f.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
        if names is not None:
            write_strings(f, "names", names)


# ----------------------------------------------------------------------- kNN .npz


def read_knn_npz(path) -> tuple[np.ndarray, np.ndarray]:
    """learn-to-cluster kNN .npz -> (indices int64, similarities float32)."""
    path = Path(path)
    _require_file(path)
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
