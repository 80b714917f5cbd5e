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
from .inputs import split_spec
from .interop import load_bin, load_meta, load_npy, read_hdf5_dataset, require_file
from .schema import HDF5_SUFFIXES
from .writing import create_rows, write_artifact, write_strings

NORM_TOLERANCE = 1e-3
FLOAT32_MAX = float(np.finfo(np.float32).max)
# labels are int64 (-1 unknown); float labels must be whole numbers a float64 holds exactly
LABEL_MAX = np.iinfo(np.int64).max
FLOAT_LABEL_MAX = 2 ** 53

__all__ = ["Features", "fingerprint", "load_features", "load_labels", "split_spec",
           "write_features"]


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
    if raw.dtype.itemsize > 4:  # values a float32 cannot hold would become Inf
        for start, stop in row_blocks(raw):
            block = raw[start:stop]
            big = np.isfinite(block) & (np.abs(block) > FLOAT32_MAX)
            if big.any():
                row = start + int(np.argwhere(big)[0][0])
                raise CfError(f"row {row} holds values beyond float32's range (|x| > "
                              f"{FLOAT32_MAX:.3g}); scale the features down", path)
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
            # divided by the float32 norm (what the fingerprints of features from outside
            # were made with), except where that norm is past float32's range (rows of
            # ~1e38: it would be Inf and the row would turn into zeros) or below it: there
            # in float64 (the array was read for us)
            with np.errstate(over="ignore"):  # a norm past float32's range: Inf, handled
                n32 = norms.astype(np.float32)
            exact = fix & (np.isinf(n32) | (n32 < np.finfo(np.float32).tiny))
            plain = fix & ~exact
            block[plain] /= n32[plain, None]
            if exact.any():
                block[exact] = (block[exact] / norms[exact, None]).astype(np.float32)
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
    if n is not None and raw.shape[0] != n:
        other = f" of {for_path}" if for_path is not None else ""
        raise CfError(f"has {raw.shape[0]} labels but the features{other} have {n} rows", path)
    return checked_labels(raw, path)


def checked_labels(raw: np.ndarray, path) -> np.ndarray:
    """Labels as int64, refused (never wrapped or truncated) unless every one is an
    integer in [-1, 2^63 - 1]: unsigned labels past int64 would turn negative, float labels
    past 2^53 are no longer whole numbers one by one."""
    if raw.size == 0:
        return raw.astype(np.int64)
    if np.issubdtype(raw.dtype, np.floating):
        bad = ~np.isfinite(raw) | (raw != np.round(raw))
        if bad.any():
            row = int(np.argmax(bad))
            raise CfError(f"labels must be integers, got {raw[row]!r} at row {row}", path)
        big = np.abs(raw) > FLOAT_LABEL_MAX
        if big.any():
            row = int(np.argmax(big))
            raise CfError(f"label {raw[row]:.6g} at row {row} is too large for a float label "
                          f"(at most 2^53); store labels as integers", path)
    elif np.issubdtype(raw.dtype, np.unsignedinteger):
        big = raw > LABEL_MAX
        if big.any():
            row = int(np.argmax(big))
            raise CfError(f"label {int(raw[row])} at row {row} is beyond int64 (at most "
                          "2^63 - 1)", path)
    elif raw.dtype == np.bool_ or not np.issubdtype(raw.dtype, np.integer):
        raise CfError(f"labels must be integers, got {raw.dtype}", path)
    labels = raw.astype(np.int64)
    low = labels < -1
    if low.any():
        row = int(np.argmax(low))
        raise CfError(f"labels must be >= 0, or -1 for unknown (row {row} holds "
                      f"{int(labels[row])})", path)
    return labels


def write_features(out, features: np.ndarray, *, labels=None, names=None, inputs=None,
                   attrs=None, datasets: dict[str, np.ndarray] | None = None) -> None:
    """Write a cftools features file (rows must already be unit norm); ``datasets``: more
    per-row datasets written as given (a retraining set's 'source' and 'source_rows')."""
    with write_artifact(out, "features", inputs=inputs, attrs=attrs) as f:
        create_rows(f, "features", features.shape, np.float32, data=features)
        if labels is not None:
            f.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
        if names is not None:
            write_strings(f, "names", names)
        for name, data in (datasets or {}).items():
            f.create_dataset(name, data=data)
