"""The one policy for the files a command reads, and for its inputs taken together.

- Regular files only: a device (/dev/zero), a FIFO or a socket named as an input is
  refused before it is opened (reading one never ends, or blocks). ``regular_file``.
- A size bound for every file read whole that has no header saying its size: JSON side
  files (``MAX_JSON_BYTES``), images (``MAX_IMAGE_BYTES``), text lists of names or labels
  (``MAX_TEXT_BYTES``). Arrays (.npy, .bin, HDF5 datasets) are bounded by what their
  header or size declares, checked against the bytes the file holds before anything is
  allocated (interop.py, artifacts.py).
- A commit that a crashed command left unfinished is settled before a file is read
  (commit.py), so a reader sees a whole set of outputs, old or new.
- One file or folder given in two roles of one command (the same set as labelled and
  unlabelled, as features and distractors, twice as training images) is a usage error:
  ``check_distinct_inputs``, every command, every pair of its input roles.
"""

from __future__ import annotations

import itertools
import json
import os
import stat
from pathlib import Path

from ..errors import CfError, CfUsageError
from .commit import settle
from .schema import HDF5_SUFFIXES

MAX_JSON_BYTES = 64 << 20  # eval.json, sweep.json, --attach: kilobytes in practice
MAX_IMAGE_BYTES = 256 << 20  # a 16-bit 8K x 8K TIFF is 400 MB raw; compressed, far less
MAX_TEXT_BYTES = 4 << 30  # names of 10M images at ~400 bytes a path


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # pragma: no cover


def _kind(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def regular_file(path, what: str = "file", max_bytes: int | None = None, *,
                 settle_commit: bool = True) -> int:
    """The size of ``path``, refused unless it is a regular file (after links) of at most
    ``max_bytes``; an unfinished commit of it is settled first."""
    path = Path(path)
    if settle_commit:
        settle(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CfError("no such file", path) from None
    except NotADirectoryError:
        raise CfError("no such file (a part of the path is not a folder)", path) from None
    except OSError as err:
        raise CfError(f"cannot read it ({err.strerror or err})", path) from None
    if stat.S_ISDIR(st.st_mode):
        raise CfError(f"is a directory, expected a {what}", path)
    if not stat.S_ISREG(st.st_mode):
        raise CfError(f"is {_kind(st.st_mode)}, not a regular file (cftools reads every "
                      f"{what} from a regular file only)", path)
    if max_bytes is not None and st.st_size > max_bytes:
        raise CfError(f"is {_size(st.st_size)}, more than the {_size(max_bytes)} a {what} "
                      "may be", path)
    return st.st_size


def read_bytes(path, what: str, max_bytes: int, *, settle_commit: bool = True) -> bytes:
    """The whole of a regular file of at most ``max_bytes`` (re-checked as read: the file
    may grow meanwhile)."""
    regular_file(path, what, max_bytes, settle_commit=settle_commit)
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as err:
        raise CfError(f"cannot read it ({err.strerror or err})", path) from None
    if len(data) > max_bytes:
        raise CfError(f"grew past the {_size(max_bytes)} a {what} may be while read", path)
    return data


class _NotJsonConstant(ValueError):
    pass


def _refuse_constant(name: str):
    raise _NotJsonConstant(name)


def read_json(path, what: str = "JSON file", want: type | tuple | None = dict, *,
              allow_nan: bool = False):
    """A JSON file (UTF-8, at most MAX_JSON_BYTES, no NaN or Infinity, which JSON does
    not have though Python writes them, unless ``allow_nan``), holding a ``want`` (dict:
    an object)."""
    data = read_bytes(path, what, MAX_JSON_BYTES)
    try:
        value = json.loads(data.decode("utf-8"),
                           parse_constant=None if allow_nan else _refuse_constant)
    except UnicodeDecodeError:
        raise CfError(f"is not UTF-8 text, so not a {what}", path) from None
    except _NotJsonConstant as err:
        raise CfError(f"holds {err}, which JSON does not allow (a number is needed)",
                      path) from None
    except (ValueError, RecursionError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CfError(f"is not valid JSON ({first})", path) from None
    if want is not None and not isinstance(value, want):
        names: dict = {dict: "an object", list: "a list"}
        expected = names.get(want, str(want)) if isinstance(want, type) else " or ".join(
            names.get(w, str(w)) for w in want)
        raise CfError(f"holds a JSON {type(value).__name__}, expected {expected}", path)
    return value


def read_lines(path, what: str) -> list[str]:
    """The lines of a text file (names, paths) as str: UTF-8, with bytes that are not
    kept as they are (surrogate escapes: an old latin-1 file name still opens); a NUL,
    which no name holds and HDF5 strings end at, is refused."""
    data = read_bytes(path, what, MAX_TEXT_BYTES)
    if b"\0" in data:
        line = data[:data.index(b"\0")].count(b"\n") + 1
        raise CfError(f"line {line} holds a NUL byte, which a name cannot hold", path)
    lines = data.decode("utf-8", "surrogateescape").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


# ----------------------------------------------------------------- inputs taken together


def split_spec(spec) -> tuple[Path, str | None]:
    """``file.h5:/a/b`` -> (file.h5, "/a/b"); anything else -> (path, None). A path that
    exists is a path, also under a folder named like ``run.h5:old/``; otherwise it is split
    at the first ``.h5:`` whose file exists, and where none does, split unless the folder
    the whole would lie in exists (then "no such file" names the whole)."""
    text = str(spec)
    if os.path.lexists(text):
        return Path(text), None
    splits = []
    for suffix in HDF5_SUFFIXES:
        marker = suffix + ":"
        pos = text.find(marker)
        while pos > 0:
            splits.append(pos + len(suffix))
            pos = text.find(marker, pos + 1)
    for cut in sorted(splits):
        if os.path.isfile(text[:cut]):
            return Path(text[:cut]), text[cut + 1:] or "/"
    if splits and not os.path.isdir(os.path.dirname(text) or "."):
        cut = min(splits)
        return Path(text[:cut]), text[cut + 1:] or "/"
    if splits and os.path.dirname(text[:min(splits)]) == os.path.dirname(text):
        cut = min(splits)  # FILE.h5:dataset with no folder after the colon
        return Path(text[:cut]), text[cut + 1:] or "/"
    return Path(text), None


def _key(spec) -> tuple[Path, str | None]:
    """(the file or folder, the dataset path of FILE.h5:/path or None), resolved."""
    path, inner = split_spec(spec)
    try:
        return path.resolve(), inner
    except (OSError, RuntimeError):
        return path.absolute(), inner


def _clash(a, b) -> str | None:
    """How two inputs clash: 'is' (the same file or dataset), 'inside' (a lies in the
    folder b), or None."""
    (pa, ia), (pb, ib) = _key(a), _key(b)
    if pa == pb or (pa.exists() and pb.exists() and os.path.samefile(pa, pb)):
        return "is" if ia == ib or pa.is_dir() else None
    if pb.is_dir() and pb in pa.parents:
        return "inside"
    if pa.is_dir() and pa in pb.parents:
        return "contains"
    return None


def check_distinct_inputs(roles: dict, *, may_share=(), why: dict | None = None) -> None:
    """Refuse, before any work, one file or folder given in two input roles (the same
    path, a link to it, or one folder inside another): it would be read twice as two
    things and distort the result silently (one set both labelled and unlabelled, a
    probe set against itself as distractors, images trained on under two identities).
    ``roles``: {role as the user writes it (e.g. "--truth"): path or FILE.h5:/path, or
    None}; ``may_share``: pairs of roles one file may fill at once (a features file and
    its own labels). A command passes every pair of its roles that can take the same kind
    of file; roles of different kinds (a knn file and features) need no check here: the
    kind check refuses a file in the wrong role, and says more. ``why``: {(role, role):
    what the refusal should say instead of the general reason}."""
    shared = {frozenset(pair) for pair in may_share}
    reasons = {frozenset(pair): text for pair, text in (why or {}).items()}
    given = [(role, spec) for role, spec in roles.items() if spec is not None]
    for (ra, a), (rb, b) in itertools.combinations(given, 2):
        if frozenset((ra, rb)) in shared:
            continue
        how = _clash(a, b)
        if how == "is":
            reason = reasons.get(frozenset((ra, rb)),
                                 "one input cannot fill two roles (give each its own file)")
            raise CfUsageError(f"is given as both {ra} and {rb}; {reason}", a)
        if how in ("inside", "contains"):
            inner, outer, ri, ro = (a, b, ra, rb) if how == "inside" else (b, a, rb, ra)
            raise CfUsageError(f"({ri}) lies inside {outer} ({ro}): its files would be read "
                               "twice; give folders that do not overlap", inner)
