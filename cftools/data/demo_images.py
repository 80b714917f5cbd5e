"""A demo image set the toolkit draws itself, so a round runs with no download.

Each identity is a distinctive random pattern, seeded by (seed, identity): a two-colour
background gradient, a few coloured shapes (ellipses, polygons) and Gabor-like blobs
(oriented stripes under a Gaussian). Each image of it is that pattern under a random pose
(rotation, shift), scale, illumination (brightness, contrast, gamma, colour cast, a light
gradient), blur, sensor noise and, often, an occluding block; about one image in ten is
a hard sample with all of these stronger. Counts per identity are long-tailed (log-normal,
some identities seen once). Identities are split, not images: a fraction of them form the
labelled part, the rest the unlabelled part, and further identities, drawn apart from
both, form a test part that no step of the round trains or calibrates on (it scores the
backbone's recognition of identities it has never seen):

    OUT/labelled/<id>/<n>.png     OUT/unlabelled/<id>/<n>.png     OUT/test/<id>/<n>.png

Folder names are the integer identity ids, so all parts share one label space (the
unlabelled part's folders are its ground truth, for evaluation only). Test identities take
the ids after the others' (identities, identities + 1, ...), so no test identity is any
labelled or unlabelled one, and the labelled and unlabelled parts are the same with or
without a test part.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from ..errors import CfError

HARD_FRACTION = 0.1


def _pattern(rng: np.random.Generator, side: int) -> np.ndarray:
    """The identity's pattern: float RGB (side, side, 3) in [0, 1]."""
    from PIL import Image, ImageDraw

    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    c0, c1 = rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = np.clip(0.5 + (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)), 0, 1)[..., None]
    canvas = c0 * (1 - t) + c1 * t
    im = Image.fromarray((canvas * 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(rng.integers(3, 7)):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        cx, cy = rng.uniform(0.15, 0.85, 2) * side
        r = rng.uniform(0.08, 0.25) * side
        if rng.random() < 0.5:
            a, b = r, r * rng.uniform(0.4, 1.0)
            draw.ellipse([cx - a, cy - b, cx + a, cy + b], fill=colour)
        else:
            n = int(rng.integers(3, 6))
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            radii = r * rng.uniform(0.6, 1.2, n)
            draw.polygon([(float(cx + q * np.cos(w)), float(cy + q * np.sin(w)))
                          for q, w in zip(radii, angles)], fill=colour)
    canvas = np.asarray(im, dtype=np.float32) / 255.0
    for _ in range(rng.integers(2, 5)):
        cx, cy = rng.uniform(0.2, 0.8, 2)
        sigma = rng.uniform(0.06, 0.15)
        wave = rng.uniform(0.04, 0.12)
        theta, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        env = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))
        canvas = canvas + (env * np.cos(2 * np.pi * u / wave + phase))[..., None] * \
            rng.uniform(-0.5, 0.5, 3)
    return np.clip(canvas, 0, 1)


def _sample(pattern_im, rng: np.random.Generator, size: int, hard: bool) -> np.ndarray:
    """One image of an identity: its pattern under pose, scale, light, blur, noise, occlusion."""
    from PIL import Image, ImageFilter

    k = 2.0 if hard else 1.0
    side = pattern_im.size[0]
    angle = np.deg2rad(rng.normal(0, 10 * k))
    scale = np.exp(rng.normal(0, 0.08 * k))
    shift = rng.normal(0, 0.04 * k, 2) * side
    # inverse affine map (output -> input) about the centre
    c, s = np.cos(angle) / scale, np.sin(angle) / scale
    centre = side / 2
    a, b = c, s
    d, e = -s, c
    tx = centre - a * (centre + shift[0]) - b * (centre + shift[1])
    ty = centre - d * (centre + shift[0]) - e * (centre + shift[1])
    fill = tuple(int(v) for v in np.asarray(pattern_im.getpixel((0, 0))))
    im = pattern_im.transform((side, side), Image.AFFINE, (a, b, tx, d, e, ty),
                              resample=Image.BILINEAR, fillcolor=fill)
    im = im.resize((size, size), Image.BILINEAR)
    blur = rng.uniform(0, 0.8 * k) * size / 64
    if blur > 0.2:
        im = im.filter(ImageFilter.GaussianBlur(blur))
    x = np.asarray(im, dtype=np.float32) / 255.0
    # illumination: gain and colour cast, contrast about the mean, gamma, a light gradient
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    light_dir = rng.uniform(0, 2 * np.pi)
    gradient = 1 + rng.uniform(0, 0.4 * k) * (np.cos(light_dir) * xx + np.sin(light_dir) * yy)
    gain = np.exp(rng.normal(0, 0.2 * k)) * np.exp(rng.normal(0, 0.06 * k, 3))
    x = x * gain * gradient[..., None]
    mean = x.mean()
    x = (x - mean) * np.exp(rng.normal(0, 0.15 * k)) + mean
    x = np.clip(x, 0, 1) ** np.exp(rng.normal(0, 0.15 * k))
    if rng.random() < (0.7 if hard else 0.25):
        h, w = (rng.uniform(0.2, 0.45 if not hard else 0.65, 2) * size).astype(int)
        top, left = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        x[top:top + h, left:left + w] = rng.uniform(0, 1, 3)
    x = x + rng.normal(0, rng.uniform(0, 0.03 * k), x.shape)
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def identity_counts(rng: np.random.Generator, identities: int, mean_images: float) -> np.ndarray:
    """Long-tailed images-per-identity: log-normal with the given mean, at least 1."""
    sigma = 0.8
    raw = np.exp(rng.normal(0, sigma, identities)) * mean_images / np.exp(sigma ** 2 / 2)
    return np.clip(np.round(raw), 1, 8 * mean_images).astype(int)


def default_test_identities(identities: int) -> int:
    """The demo's test part: a fifth as many identities as D_L and D_U together, at least 2."""
    return max(2, round(identities / 5))


def make_demo(out, *, identities: int = 300, image_size: int = 64, seed: int = 0,
              labelled_fraction: float = 0.5, mean_images: float = 12.0,
              test_identities: int | None = None, reporter=None) -> dict:
    """Draw the demo set under ``out`` (which must not exist or be empty); returns a summary.
    Written into a temporary folder beside ``out`` and renamed, so it appears whole.
    ``test_identities``: identities of the test part (None: a fifth of ``identities``, at
    least 2; 0: no test part)."""
    out = Path(out)
    if identities < 2:
        raise CfError("the demo needs at least 2 identities")
    if not 0 < labelled_fraction < 1:
        raise CfError("--labelled-fraction must be between 0 and 1 (exclusive)")
    if test_identities is None:
        test_identities = default_test_identities(identities)
    if test_identities < 0:
        raise CfError("--test-identities must be >= 0")
    if image_size < 8:
        raise CfError("--image-size must be at least 8")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CfError("already exists and is not an empty folder; remove it or choose another", out)
    if not out.parent.is_dir():
        raise CfError(f"output directory {out.parent} does not exist", out)
    from PIL import Image

    rng = np.random.default_rng([seed, 0])
    counts = identity_counts(rng, identities, mean_images)
    n_labelled = min(identities - 1, max(1, round(labelled_fraction * identities)))
    labelled = set(rng.permutation(identities)[:n_labelled].tolist())
    # the test part's counts come from a stream of their own: D_L and D_U stay the same
    test_counts = identity_counts(np.random.default_rng([seed, 2]), test_identities, mean_images)
    counts = np.concatenate([counts, test_counts]).astype(int)
    tmp = out.with_name(f".{out.name}.cf-tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    side = 2 * image_size  # draw at twice the size so rotations resample smoothly
    try:
        tmp.mkdir()
        bar = reporter.progress(total=int(counts.sum()), desc="demo", unit="img") if reporter else None
        for ident in range(identities + test_identities):
            irng = np.random.default_rng([seed, 1, ident])
            pattern = Image.fromarray((_pattern(irng, side) * 255 + 0.5).astype(np.uint8))
            part = ("test" if ident >= identities else
                    "labelled" if ident in labelled else "unlabelled")
            folder = tmp / part / f"{ident:05d}"
            folder.mkdir(parents=True)
            for j in range(counts[ident]):
                hard = irng.random() < HARD_FRACTION
                Image.fromarray(_sample(pattern, irng, image_size, hard)).save(folder / f"{j:04d}.png")
            if bar is not None:
                bar.update(int(counts[ident]))
        if bar is not None:
            bar.close()
        summary = {
            "identities": identities, "image_size": image_size, "seed": seed,
            "labelled_identities": len(labelled),
            "labelled_images": int(sum(counts[i] for i in labelled)),
            "unlabelled_identities": identities - len(labelled),
            "unlabelled_images": int(sum(counts[i] for i in range(identities) if i not in labelled)),
            "test_identities": int(test_identities),
            "test_images": int(test_counts.sum()),
            "mean_images": mean_images, "labelled_fraction": labelled_fraction,
        }
        (tmp / "demo.json").write_text(json.dumps(summary, indent=1) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
