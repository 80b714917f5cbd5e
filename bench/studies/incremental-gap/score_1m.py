"""Issue 14 at scale: F of clusterings of bench/add_scale.py's 1M + 10K set against the
generator's labels (regenerated: same seed and order as add_scale.py), over all points and
over the new points alone.

    python bench/add_gap/score_1m.py WORKDIR clusters.h5 clusters2.h5 [...]
    # WORKDIR e.g. work/add_scale/model-1000000-e10; the all-at-once clustering of the
    # 1.01M: cf-knn/cf-seq/cf-link/cf-merge on the add's --features-out (features2.h5)
"""
import sys
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from cftools.core.metrics import bcubed_scores, pairwise_scores  # noqa: E402
from cftools.data.demo import make_demo_features  # noqa: E402

w = Path(sys.argv[1])
n, new = 1_000_000, 10_000
_, y = make_demo_features(n + new, 128, seed=1, tail=1.0)
y = y[np.random.default_rng(0).permutation(y.size)]
with h5py.File(w / "old.h5") as f:
    assert (f["labels"][()] == y[:n]).all(), "not add_scale.py's 1M set"


def f(a, b):
    return (round(100 * pairwise_scores(a, b)["pairwise_f"], 3),
            round(100 * bcubed_scores(a, b)["bcubed_f"], 3))


for name in sys.argv[2:]:
    with h5py.File(w / name) as h:
        lab = h["labels"][()]
    m = lab.size
    print(name, m, "points: F_P / F_B", f(lab, y[:m]),
          "; new points only", f(lab[n:], y[n:m]) if m > n else "-")
