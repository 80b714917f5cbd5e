"""Thumbnails of the gallery: 96 px JPEGs made in parallel, named by the SHA-1 of the
image's bytes (DIR/thumbs/ab/<hash>.jpg), so a rebuild reuses them and identical images
share one."""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ProcessPoolExecutor

from ..errors import CfError
from ..formats.inputs import MAX_IMAGE_BYTES, read_bytes

THUMB_PX = 96


def _thumb_one(args):
    """Worker: (source path, output root, old root or None) -> relative thumb path or
    an error string starting with '!'. Only regular files of at most MAX_IMAGE_BYTES are
    read (formats.inputs: /dev/zero named as an image is not read until memory runs out);
    an image past PIL's decompression-bomb limit is not decoded."""
    src, root, old = args
    try:
        data = read_bytes(src, "image", MAX_IMAGE_BYTES, settle_commit=False)
    except CfError as err:  # the reason, without the path the caller shows
        return "!" + (str(err)[len(err.path) + 2:] if err.path else str(err))
    digest = hashlib.sha1(data).hexdigest()[:20]
    rel = f"thumbs/{digest[:2]}/{digest}.jpg"
    dst = os.path.join(root, rel)
    if os.path.exists(dst):
        return rel
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if old is not None and os.path.exists(os.path.join(old, rel)):
        try:
            os.link(os.path.join(old, rel), dst)
            return rel
        except OSError:
            pass
    try:
        import io

        from PIL import Image, UnidentifiedImageError

        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                im = Image.open(io.BytesIO(data))
            except UnidentifiedImageError:  # its text names the BytesIO, not the file
                return "!not an image format Pillow reads"
            with im:
                im.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))  # JPEG: decode at a lower scale
                im = im.convert("L" if im.mode in ("1", "L", "I", "I;16", "F") else "RGB")
                im.thumbnail((THUMB_PX, THUMB_PX))
                tmp = f"{dst}.{os.getpid()}.tmp"
                im.save(tmp, "JPEG", quality=85)
                os.replace(tmp, dst)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        return "!too many pixels (Pillow's decompression-bomb limit)"
    except Exception as err:  # noqa: BLE001 - a bad image never stops the gallery
        return "!" + (str(err).splitlines()[0][:80] if str(err) else type(err).__name__)
    return rel


def make_thumbnails(paths, root, *, old_root=None, workers: int | None = None, progress=None):
    """Thumbnails of ``paths`` under root/thumbs (in parallel); returns one relative path
    per input, or None where the image could not be read, and the error of each of those."""
    workers = max(1, workers or os.cpu_count() or 1)
    jobs = [(p, str(root), None if old_root is None else str(old_root)) for p in paths]
    results = []
    if workers == 1 or len(jobs) < 64:
        for j in jobs:
            results.append(_thumb_one(j))
            if progress is not None:
                progress.update(1)
    else:
        with ProcessPoolExecutor(workers) as pool:
            for r in pool.map(_thumb_one, jobs, chunksize=64):
                results.append(r)
                if progress is not None:
                    progress.update(1)
    rels = [None if r.startswith("!") else r for r in results]
    errors = {p: r[1:] for p, r in zip(paths, results) if r.startswith("!")}
    return rels, errors
