"""Issue 14 at scale: F of clusterings of bench/add_scale.py's 1M + 10K set against the
generator's labels (regenerated: same seed and order as add_scale.py), over all points and
over the new points alone.

    python bench/studies/incremental-gap/score_1m.py WORKDIR clusters.h5 clusters2.h5 [...]
    # WORKDIR e.g. work/add_scale/model-1000000-e10; the all-at-once clustering of the
    # 1.01M: cf-knn/cf-seq/cf-link/cf-merge on the add's --features-out (features2.h5)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np

from cftools.core.metrics import bcubed_scores, pairwise_scores
from cftools.data.demo import make_demo_features

N, NEW = 1_000_000, 10_000  # add_scale.py's defaults: --n, --new


def f(a, b):
    return (round(100 * pairwise_scores(a, b)["pairwise_f"], 3),
            round(100 * bcubed_scores(a, b)["bcubed_f"], 3))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdir", type=Path, help="add_scale.py's folder of the run")
    ap.add_argument("clusters", nargs="+", help="clusters files in it")
    a = ap.parse_args(argv)
    _, y = make_demo_features(N + NEW, 128, seed=1, tail=1.0)
    y = y[np.random.default_rng(0).permutation(y.size)]
    with h5py.File(a.workdir / "old.h5") as h:
        if not (h["labels"][()] == y[:N]).all():
            raise SystemExit("not add_scale.py's 1M set")
    for name in a.clusters:
        with h5py.File(a.workdir / name) as h:
            lab = h["labels"][()]
        m = lab.size
        print(name, m, "points: F_P / F_B", f(lab, y[:m]),
              "; new points only", f(lab[N:], y[N:m]) if m > N else "-")


if __name__ == "__main__":
    main()
