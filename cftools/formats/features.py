"""Features and labels, from every source cftools reads, validated and L2-normalised.

Features can be given as
  - a cftools features file (``x.h5``),
  - any 2-D float dataset of any HDF5 file (``x.h5:/group/dataset``),
  - a NumPy ``.npy`` file (N x d),
  - learn-to-cluster's raw float32 ``.bin`` (N*d floats; d from ``--dim`` or from the
    line count of the ``.meta`` beside it).
Labels can be given as ``.npy``, learn-to-cluster ``.meta`` (one integer per line), a
cftools features or clusters file (its ``labels``), or ``x.h5:/path``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CfError
from .artifacts import Artifact, open_artifact, row_blocks
from .interop import load_bin, load_meta, load_npy, read_hdf5_dataset, require_file
from .schema import HDF5_SUFFIXES
from .writing import create_rows, write_artifact, write_strings

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

    def names_of(self, rows) -> list[str]:
        """The names of these rows, FILE#ROW where the features carry none."""
        if self.names is not None:
            return [str(s) for s in self.names[rows]]
        return [f"{self.path}#{r}" for r in rows]


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
        h.update(flat[start:start + step])  # type: ignore[arg-type]  # an array is a buffer
    return "content:" + h.hexdigest()


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
        raw = read_hdf5_dataset(path, inner)
    elif path.suffix.lower() in HDF5_SUFFIXES:
        art = open_artifact(path, "features")
        raw = art.read("features")
        file_labels = art.read("labels") if "labels" in art else None
        names = art.read("names") if "names" in art else None
    elif path.suffix.lower() == ".npy":
        raw = load_npy(path)
    elif path.suffix.lower() == ".bin":
        raw = load_bin(path, dim)
        if dim is None:  # the dimension came from the .meta's line count: it must fit
            _check_meta_dimension(raw, path)
    else:
        require_file(path)
        raise CfError("unknown features format (expected .h5/.hdf5, file.h5:/dataset, .npy or .bin)",
                      path)
    feats = _validated_unit_rows(raw, path, strict=strict, reporter=reporter)
    ident = art.id if art is not None else fingerprint(feats)
    result = Features(feats, path, ident, file_labels, names, art)
    if labels is not None:
        result.labels = load_labels(labels, n=result.n, for_path=path)
    return result


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


def load_labels(spec, *, n: int | None = None, for_path=None) -> np.ndarray:
    """Integer labels (-1 = unknown) from .npy, .meta, a cftools file or file.h5:/path."""
    path, inner = split_spec(spec)
    if inner is not None:
        raw = read_hdf5_dataset(path, inner)
    elif path.suffix.lower() in HDF5_SUFFIXES:
        with open_artifact(path, ("features", "clusters")) as art:
            if "labels" not in art:
                raise CfError("features file has no labels", path)
            raw = art.read("labels")
    elif path.suffix.lower() == ".npy":
        raw = load_npy(path)
    elif path.suffix.lower() in (".meta", ".txt", ".labels"):
        raw = load_meta(path)
    else:
        require_file(path)
        raise CfError("unknown labels format (expected .npy, .meta, .h5 or file.h5:/dataset)", path)
    raw = np.asarray(raw)
    if raw.ndim != 1:
        raise CfError(f"labels must be 1-D, got shape {raw.shape}", path)
    if raw.size and not np.issubdtype(raw.dtype, np.integer):
        if (np.issubdtype(raw.dtype, np.floating) and np.all(np.isfinite(raw))
                and np.all(raw == np.round(raw))):
            raw = raw.astype(np.int64)
        else:
            raise CfError(f"labels must be integers, got {raw.dtype}", path)
    if n is not None and raw.shape[0] != n:
        other = f" of {for_path}" if for_path is not None else ""
        raise CfError(f"has {raw.shape[0]} labels but the features{other} have {n} rows", path)
    if (raw < -1).any():
        raise CfError("labels must be >= 0, or -1 for unknown", path)
    return raw.astype(np.int64, copy=False)


def write_features(out, features: np.ndarray, *, labels=None, names=None, inputs=None,
                   attrs=None) -> None:
    """Write a cftools features file (rows must already be unit norm)."""
    with write_artifact(out, "features", inputs=inputs, attrs=attrs) as f:
        create_rows(f, "features", features.shape, np.float32, data=features)
        if labels is not None:
            f.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
        if names is not None:
            write_strings(f, "names", names)
