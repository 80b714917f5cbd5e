"""Issue 14, the demo's gap: a random FRAC of D_U clustered from scratch by the round's
commands against the all-at-once clustering on the same points (FRAC 1.0: the same
points in another row order, the clustering's own spread: how far does the clustering
move by order alone?). Works in work/incremental-gap/.

    python bench/studies/incremental-gap/perm.py demo SEED FRAC [auto|model|cosine]
"""

from __future__ import annotations

import argparse
import subprocess

import h5py
import numpy as np
from runs import BIN, ROOT, labels_of, round_of

from cftools.core.metrics import bcubed_scores, pairwise_scores
from cftools.formats.features import write_features


def cf(*args):
    subprocess.run([str(BIN / args[0]), *map(str, args[1:]), "-q"], check=True, capture_output=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("set", help="a set bench/incremental.py ran, e.g. demo")
    ap.add_argument("seed", type=int)
    ap.add_argument("frac", type=float, help="the share of D_U clustered")
    ap.add_argument("links", nargs="?", default="auto", choices=("auto", "model", "cosine"),
                    help="cf-link --method (default auto, as the round)")
    a = ap.parse_args(argv)
    name, seed, frac, links = a.set, a.seed, a.frac, a.links
    r = round_of(name)
    with h5py.File(r / "unlabelled.h5") as f:
        x, y = f["features"][()], f["labels"][()]
    once = labels_of(r / ("clusters.h5" if links == "auto" else f"clusters-{links}.h5"))
    with h5py.File(r / "clusters.h5") as f:
        dec = str(f.attrs["method"])
    perm = np.random.default_rng(seed).permutation(y.size)[: int(round(frac * y.size))]
    d = ROOT / "work" / "incremental-gap" / f"perm-{name}-{seed}-{frac}-{links}"
    d.mkdir(parents=True, exist_ok=True)
    write_features(d / "f.h5", x[perm], labels=y[perm])
    cf("cf-knn", d / "f.h5", "-o", d / "k.h5", "-k", 81)
    cf("cf-seq", d / "k.h5", "--features", d / "f.h5", "-o", d / "s.h5", "-L", 81)
    cf("cf-link", d / "s.h5", "--features", d / "f.h5", "--model", r / "model.h5", "-o", d / "l.h5",
       "--method", links)
    cf("cf-merge", d / "l.h5", "-o", d / "c.h5", "--method", dec)
    lab = labels_of(d / "c.h5")
    yy = y[perm]

    def sc(labels):
        p = pairwise_scores(labels, yy)
        return (100 * p["pairwise_f"], 100 * bcubed_scores(labels, yy)["bcubed_f"],
                100 * p["pairwise_precision"], 100 * p["pairwise_recall"])

    s, o = sc(lab), sc(once[perm])
    print(f"{name} seed {seed} frac {frac} {links}: scratch F_P {s[0]:.2f} F_B {s[1]:.2f} "
          f"(P {s[2]:.2f} R {s[3]:.2f}); at once on same pts F_P {o[0]:.2f} F_B {o[1]:.2f} "
          f"(P {o[2]:.2f} R {o[3]:.2f}); gap {s[0] - o[0]:+.2f} / {s[1] - o[1]:+.2f}")


if __name__ == "__main__":
    main()
