"""Issue 14: the links the adds maintain, decoded from scratch (plain cf-merge on the last
add's links file: every id may change), against the all-at-once clustering and the
incremental clustering with ids kept.

    python bench/add_gap/redecode.py   # after bench/incremental.py --sets S --seed N runs
"""
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from cftools.core.metrics import bcubed_scores, pairwise_scores  # noqa: E402

for name in ("celeba-dlib128", "demo", "lfw-dev-dlib128"):
    W = ROOT / "work" / "incremental" / name
    r = W / "w" / "round1"
    if not (r / "clusters.h5").exists():
        continue
    with h5py.File(r / "unlabelled.h5") as f:
        y = f["labels"][()]
    with h5py.File(r / "clusters.h5") as f:
        once, dec = f["labels"][()], str(f.attrs["method"])
    for inc in sorted(W.glob("inc-seed[0-9]")):
        if not (inc / "links4.h5").exists():
            continue
        s = int(inc.name.split("seed")[1])
        perm = np.random.default_rng(s).permutation(y.size)
        subprocess.run([str(ROOT / ".venv" / "bin" / "cf-merge"), str(inc / "links4.h5"), "-o",
                        str(inc / "redecoded.h5"), "--method", dec, "-q"], check=True)
        with h5py.File(inc / "redecoded.h5") as f:
            lab = f["labels"][()]
        with h5py.File(inc / "clusters4.h5") as f:
            fin = f["labels"][()]
        yy = y[perm]

        def sc(l):
            return (100 * pairwise_scores(l, yy)["pairwise_f"],
                    100 * bcubed_scores(l, yy)["bcubed_f"])

        a, b, c = sc(lab), sc(once[perm]), sc(fin)
        print(f"{name} seed {s}: at once {b[0]:.2f}/{b[1]:.2f}; incremental {c[0]:.2f}/"
              f"{c[1]:.2f} (gap {c[0] - b[0]:+.2f}/{c[1] - b[1]:+.2f}); final links "
              f"re-decoded {a[0]:.2f}/{a[1]:.2f} (gap {a[0] - b[0]:+.2f}/{a[1] - b[1]:+.2f})",
              flush=True)
