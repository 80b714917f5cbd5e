"""A demo feature set that looks like face embeddings, made from a seed.

Identities are random directions on the unit sphere of dimension d, in groups of about
a hundred that lie nearer each other (cos ~0.37 between their centres), as faces of one
age, sex or origin do. Identity sizes are
long-tailed (a discrete power law: many identities with 1-3 samples, a few with hundreds,
as in MS1M or LFW). A sample is its identity's direction plus Gaussian noise, with a
per-identity spread; a share of *hard* samples lie far from their centre, and a share of
*noisy* samples lie closer to another identity's centre than to their own (their label
stays the true one). Points are generated block by block, each block holding whole
identities, so any N up to millions streams to disk in bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK_POINTS = 1 << 16


@dataclass(frozen=True)
class DemoSpec:
    n: int
    dim: int = 256
    seed: int = 0
    hard_fraction: float = 0.1  # samples far from their centre
    noise_fraction: float = 0.05  # samples nearer another identity's centre
    spread: tuple[float, float] = (0.6, 1.0)  # per-identity noise scale: cos to centre ~0.7-0.85
    hard_spread: float = 1.6  # cos to centre ~0.53
    max_size: int = 300  # largest identity
    tail: float = 2.0  # power-law exponent of identity sizes
    separable: bool = False  # tight, well separated identities: any sane method is exact
    group_size: int = 100  # identities per group (like people sharing age, sex, origin)
    group_spread: float = 1.3  # identity centres vs their group: cos ~0.6, ~0.37 between them

    def validate(self) -> None:
        if self.n < 1:
            raise ValueError("n must be >= 1")
        if self.dim < 2:
            raise ValueError("dim must be >= 2")
        for name in ("hard_fraction", "noise_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1]")


def identity_sizes(rng: np.random.Generator, n: int, max_size: int, tail: float) -> np.ndarray:
    """Sizes drawn from P(s) ~ s^-tail on 1..max_size until they add up to n."""
    support = np.arange(1, max_size + 1)
    p = support.astype(np.float64) ** -tail
    p /= p.sum()
    sizes: list[np.ndarray] = []
    total = 0
    while total < n:
        draw = rng.choice(support, size=max(16, int((n - total) / 2)), p=p)
        sizes.append(draw)
        total += int(draw.sum())
    out = np.concatenate(sizes)
    cut = np.searchsorted(np.cumsum(out), n)
    out = out[: cut + 1].copy()
    out[-1] -= int(out.sum()) - n
    return out[out > 0]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def iter_demo_blocks(spec: DemoSpec):
    """Yield (features float32, labels int64) blocks that together make the demo set."""
    spec.validate()
    master = np.random.default_rng(spec.seed)
    sizes = identity_sizes(master, spec.n, spec.max_size, spec.tail)
    block_seeds = master.integers(0, 2**63 - 1, size=len(sizes))  # one per identity start
    first_label = 0
    start = 0
    while start < len(sizes):
        # whole identities per block, ~BLOCK_POINTS points
        stop = start + max(1, int(np.searchsorted(np.cumsum(sizes[start:]), BLOCK_POINTS)) + 1)
        stop = min(stop, len(sizes))
        yield _make_block(spec, sizes[start:stop], first_label,
                          np.random.default_rng(int(block_seeds[start])))
        first_label += stop - start
        start = stop


def _make_block(spec: DemoSpec, sizes: np.ndarray, first_label: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    d = spec.dim
    n_ids = len(sizes)
    # Identities come in groups (as faces share age, sex, origin), so that the neighbours
    # beyond a point's identity are structured as in real embeddings, not uniform noise.
    n_groups = max(1, int(round(n_ids / spec.group_size)))
    groups = _unit(rng.standard_normal((n_groups, d)))
    offsets = _unit(rng.standard_normal((n_ids, d)))
    if spec.separable:
        centres = offsets
    else:
        centres = _unit(groups[rng.integers(0, n_groups, size=n_ids)] + spec.group_spread * offsets)
    local = np.repeat(np.arange(n_ids), sizes)
    m = local.size
    if spec.separable:
        sigma = np.full(m, 0.15)
    else:
        sigma = rng.uniform(*spec.spread, size=n_ids)[local]
        hard = rng.random(m) < spec.hard_fraction
        sigma[hard] = spec.hard_spread
    noise = rng.standard_normal((m, d)) / np.sqrt(d)  # norm ~1, so cos to centre ~ 1/sqrt(1+s^2)
    x = centres[local] + sigma[:, None] * noise
    if not spec.separable and n_ids > 1 and spec.noise_fraction > 0:
        noisy = np.flatnonzero(rng.random(m) < spec.noise_fraction)
        other = (local[noisy] + rng.integers(1, n_ids, size=noisy.size)) % n_ids
        # nearer the wrong centre than the right one, but not on it
        x[noisy] = 0.45 * centres[local[noisy]] + 0.9 * centres[other] + 0.6 * noise[noisy]
    x = _unit(x).astype(np.float32)
    order = rng.permutation(m)
    return x[order], (local[order] + first_label).astype(np.int64)


def make_demo_features(n: int, dim: int = 256, *, seed: int = 0, hard_fraction: float = 0.1,
                       noise_fraction: float = 0.05, separable: bool = False,
                       **extra) -> tuple[np.ndarray, np.ndarray]:
    """The whole demo set in memory: (features (n, dim) float32 unit rows, labels (n,) int64)."""
    spec = DemoSpec(n=n, dim=dim, seed=seed, hard_fraction=hard_fraction,
                    noise_fraction=noise_fraction, separable=separable, **extra)
    feats, labels = zip(*iter_demo_blocks(spec))
    return np.concatenate(feats), np.concatenate(labels)


def split_by_identity(labels: np.ndarray, fraction: float = 0.5, *, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (sorted) of a labelled and an unlabelled part, no identity on both sides.

    About ``fraction`` of the identities (not of the points) go to the labelled part.
    Rows with label -1 go to the unlabelled part."""
    labels = np.asarray(labels)
    ids = np.unique(labels[labels >= 0])
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(ids)[: int(round(fraction * len(ids)))]
    in_labelled = np.isin(labels, chosen)
    return np.flatnonzero(in_labelled), np.flatnonzero(~in_labelled)
