"""Issue 14: the links the adds maintain, decoded from scratch (plain cf-merge on the last
add's links file: every id may change), against the all-at-once clustering and the
incremental clustering with ids kept; every set and seed bench/incremental.py has run
with its default --links auto (the inc-seedN folders).

    python bench/studies/incremental-gap/redecode.py   # after bench/incremental.py --sets S --seed N runs
"""

from __future__ import annotations

import argparse
import subprocess

import h5py
import numpy as np
from runs import BIN, labels_of, round_of, work_of

from cftools.core.metrics import bcubed_scores, pairwise_scores

SETS = ("celeba-dlib128", "demo", "lfw-dev-dlib128")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args(argv)
    for name in SETS:
        r = round_of(name)
        if not (r / "clusters.h5").exists():
            continue
        with h5py.File(r / "unlabelled.h5") as f:
            y = f["labels"][()]
        with h5py.File(r / "clusters.h5") as f:
            once, dec = f["labels"][()], str(f.attrs["method"])
        for inc in sorted(work_of(name).glob("inc-seed[0-9]")):
            if not (inc / "links4.h5").exists():
                continue
            s = int(inc.name.split("seed")[1])
            perm = np.random.default_rng(s).permutation(y.size)
            subprocess.run([str(BIN / "cf-merge"), str(inc / "links4.h5"), "-o",
                            str(inc / "redecoded.h5"), "--method", dec, "-q"], check=True)
            lab = labels_of(inc / "redecoded.h5")
            fin = labels_of(inc / "clusters4.h5")
            yy = y[perm]

            def sc(labels, yy=yy):
                return (100 * pairwise_scores(labels, yy)["pairwise_f"],
                        100 * bcubed_scores(labels, yy)["bcubed_f"])

            a, b, c = sc(lab), sc(once[perm]), sc(fin)
            print(f"{name} seed {s}: at once {b[0]:.2f}/{b[1]:.2f}; incremental {c[0]:.2f}/"
                  f"{c[1]:.2f} (gap {c[0] - b[0]:+.2f}/{c[1] - b[1]:+.2f}); final links "
                  f"re-decoded {a[0]:.2f}/{a[1]:.2f} (gap {a[0] - b[0]:+.2f}/{a[1] - b[1]:+.2f})",
                  flush=True)


if __name__ == "__main__":
    main()
