"""Image inputs: finding images, their identity labels, and decoding them with Pillow.

An image set can be given as
  - a folder: every image below it (recursively); the first-level sub-folder is the
    identity. Identity folders named by integers (``0017``) keep those integers as labels,
    so the labelled and unlabelled parts of one set share one label space; otherwise
    labels are the folders' ranks in sorted order. Images directly in the folder get -1.
  - a list file: one image path per line (optionally ``path<TAB>label``); relative paths
    are taken from the current directory, else from the list file's directory.
  - a cftools features file whose ``names`` are image paths (and ``labels`` identities):
    how pseudo-labels from ``cf-merge labels`` come back.
Unreadable or corrupt images never stop a run: the dataset hands back an error string
in their place and the caller skips and reports them.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CfError, brief

LABEL_MAX = 2 ** 63 - 1
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".pnm", ".pbm", ".tif",
                  ".tiff", ".webp", ".gif"}
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")


@dataclass
class ImageSet:
    """Image paths with their labels (-1 = unknown) and, for folders, the label names."""

    paths: list[str]
    labels: np.ndarray  # int64
    source: Path
    label_names: dict[int, str] | None = None
    artifact: object = None  # the features file the names came from, for provenance

    def __len__(self) -> int:
        return len(self.paths)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def from_folder(root) -> ImageSet:
    root = Path(root)
    if not root.is_dir():
        raise CfError("not a folder", root)
    files = sorted(_walk(root))
    if not files:
        raise CfError(f"no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})", root)
    top = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None for p in files]
    names = sorted({t for t in top if t is not None})
    if names and all(n.isascii() and n.isdigit() for n in names):
        mapping = {n: int(n) for n in names}
        seen: dict[int, str] = {}
        for n, label in mapping.items():
            if label > LABEL_MAX:
                raise CfError(f"identity folder {n!r} is a number beyond int64 (at most "
                              "2^63 - 1)", root)
            if label in seen:  # "17" and "017": one label for two identities
                raise CfError(f"identity folders {seen[label]!r} and {n!r} name the same "
                              f"identity {label}; rename one", root)
            seen[label] = n
    else:
        mapping = {n: i for i, n in enumerate(names)}
    labels = np.array([mapping[t] if t is not None else -1 for t in top], dtype=np.int64)
    return ImageSet([str(p) for p in files], labels, root, {v: k for k, v in mapping.items()})


def _walk(root: Path):
    """Image files below root, following symlinked folders (datasets are often linked in)
    but never one folder twice; hidden files and folders are left out."""
    seen = set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            p = Path(folder) / name
            if not name.startswith(".") and is_image(p) and p.is_file():
                yield p


def from_list(path) -> ImageSet:
    from ..formats.inputs import read_lines

    path = Path(path)
    paths, labels = [], []
    lines = read_lines(path, "list file of images")
    for lineno, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        label = -1
        if "\t" in line:
            line, _, text = line.rpartition("\t")
            try:
                label = int(text)
            except ValueError:
                raise CfError(f"line {lineno}: label {text[:30]!r} is not an integer", path) from None
            if not -1 <= label <= LABEL_MAX:
                raise CfError(f"line {lineno}: label {label} is outside [-1, 2^63 - 1] (-1: "
                              "unknown)", path)
        paths.append(_resolve(line.strip(), path.parent))
        labels.append(label)
    if not paths:
        raise CfError("list file names no images", path)
    return ImageSet(paths, np.asarray(labels, dtype=np.int64), path)


def from_features_file(path, *, require_labels: bool = False) -> ImageSet:
    from ..formats.artifacts import open_artifact

    path = Path(path)
    with open_artifact(path, "features") as art:
        if "names" not in art:
            raise CfError("features file has no 'names' dataset (image paths) to read images from",
                          path)
        names = art.read("names")
        if "labels" in art:
            labels = art.read("labels").astype(np.int64)
        elif require_labels:
            raise CfError("features file has no 'labels' dataset (identities to train on)", path)
        else:
            labels = np.full(len(names), -1, dtype=np.int64)
    paths = [_resolve(str(n), path.parent) for n in names]
    return ImageSet(paths, labels, path, artifact=art)


def _resolve(name: str, base: Path) -> str:
    p = Path(name)
    if p.is_absolute() or p.exists() or not (base / p).exists():
        return name
    return str(base / p)


def open_images(spec, *, require_labels: bool = False) -> ImageSet:
    """A folder, an HDF5 features file, or a list file -> ImageSet (validated up front)."""
    path = Path(spec)
    if path.is_dir():
        images = from_folder(path)
    elif not path.exists():
        raise CfError("no such file or folder", path)
    elif path.suffix.lower() in HDF5_SUFFIXES:
        images = from_features_file(path, require_labels=require_labels)
    elif is_image(path):
        raise CfError("is a single image; give a folder or a list file of images", path)
    else:
        images = from_list(path)
    if require_labels and not (images.labels >= 0).any():
        raise CfError("no labelled images (need identity sub-folders or labels >= 0)", path)
    return images


def combine(sets: list[ImageSet]) -> ImageSet:
    """Several image sets as one, each in a label space of its own: the labels of each set
    after the first are shifted past the largest label before them, so identities of
    different sets are never merged (two folders both named 's1' stay two identities).
    The first set names the whole in errors and provenance."""
    if len(sets) == 1:
        return sets[0]
    paths, labels, offset = [], [], 0
    for part in sets:
        lab = np.asarray(part.labels, dtype=np.int64)
        paths.extend(part.paths)
        labels.append(np.where(lab >= 0, lab + offset, -1))
        if (lab >= 0).any():
            offset += int(lab.max()) + 1
    return ImageSet(paths, np.concatenate(labels), sets[0].source)


def check_trainable(images: ImageSet, size: int) -> None:
    """Refuse, before any training, an image set that cannot train a classifier: fewer
    than two labelled identities, or no readable image in all but one of them. Decodes
    the images of each identity in turn until one reads, and stops as soon as two
    identities have one: two decodes on a sound set; on a set of mostly broken
    files, at most one pass of decoding (far less than an epoch of training). Says one
    line naming the set; the unreadable files are not listed one by one here."""
    labels = np.asarray(images.labels)
    ids = np.unique(labels[labels >= 0])
    if ids.size < 2:
        raise CfError(f"too few identities to train on: {int((labels >= 0).sum())} labelled "
                      f"image(s) of {ids.size} identity; training needs at least 2 identities",
                      images.source)
    readable, tried, first_error = 0, 0, None
    for label in ids:
        for i in np.flatnonzero(labels == label):
            tried += 1
            try:
                decode(images.paths[i], size)
            except Exception as err:  # noqa: BLE001 - any decoder failure: unreadable
                if first_error is None:
                    first_error = f"{images.paths[i]}: {type(err).__name__}"
                continue
            readable += 1
            break
        if readable >= 2:
            return
    raise CfError(f"too few readable images to train on: only {readable} of {ids.size} "
                  f"identities has a readable image ({tried - readable} unreadable among the "
                  f"{tried} images tried, e.g. {first_error}); training needs readable images "
                  "of at least 2 identities", images.source)


# --------------------------------------------------------------------------- decoding


def decode(path: str, size: int) -> np.ndarray:
    """Read an image as RGB uint8 (size, size, 3), resized (aspect not kept: face crops and
    landmark photos are framed already). Raises OSError/ValueError for bad files: also for
    a device, FIFO or socket, and a file past MAX_IMAGE_BYTES (formats.inputs), which are
    never opened."""
    from PIL import Image

    from ..formats.inputs import MAX_IMAGE_BYTES, regular_file

    try:
        regular_file(path, "image", MAX_IMAGE_BYTES, settle_commit=False)
    except CfError as err:
        raise ValueError(str(err)[len(err.path) + 2:] if err.path else str(err)) from None
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)


def describe_error(err: BaseException) -> str:
    return brief(err, 160) or type(err).__name__


class ImageDataset:
    """torch Dataset: i -> (image float tensor (3, S, S) normalised, label, i, error).

    A bad image yields a zero tensor and a non-empty ``error``; the loop drops it. Random
    augmentation is not done here (workers' RNGs would make runs unrepeatable); the
    training loop flips whole batches with its own seeded generator."""

    def __init__(self, paths, labels, size: int, mean, std):
        self.paths = list(paths)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.size = int(size)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        import torch

        error = ""
        try:
            pixels = decode(self.paths[i], self.size)
            x = (pixels.transpose(2, 0, 1).astype(np.float32) / 255.0 - self.mean) / self.std
        except Exception as err:  # noqa: BLE001 - any decoder failure means "skip this image"
            error = f"{type(err).__name__}: {describe_error(err)}"
            x = np.zeros((3, self.size, self.size), dtype=np.float32)
        return torch.from_numpy(x), int(self.labels[i]), i, error


class BadImages:
    """Collects skipped images and reports the first ``cap`` of them as warnings."""

    def __init__(self, reporter=None, cap: int = 20):
        self.reporter = reporter
        self.cap = cap
        self.seen: dict[str, str] = {}

    def add(self, path: str, error: str) -> None:
        if path in self.seen:
            return
        self.seen[path] = error
        if self.reporter is not None and len(self.seen) <= self.cap:
            self.reporter.warn(f"{path}: unreadable image skipped ({error})")

    def summary(self) -> None:
        if self.reporter is not None and self.seen:
            more = len(self.seen) - self.cap
            tail = f" ({more} not listed)" if more > 0 else ""
            self.reporter.warn(f"{len(self.seen)} unreadable image(s) skipped{tail}")

    def __len__(self) -> int:
        return len(self.seen)
