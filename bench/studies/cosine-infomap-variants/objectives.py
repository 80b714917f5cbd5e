"""Which D_L objective picks (k, threshold) for cosine Infomap that does well on D_U on both
sets, and is not moved by one giant identity? Objectives: F_P, F_B, their mean, their
harmonic mean, and F_P with identity-capped point weights (each identity weighs as if it
had at most CAP points, CAP 30 and 100). Every row goes to --json too.

    python bench/studies/cosine-infomap-variants/objectives.py [--json /tmp/objectives.json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from splits import SETS, load, score

from cftools.core.decoding.decoders import decode_infomap
from cftools.core.neighbours.index import knn


def capped_fp(pred, y, cap=30):
    """Pairwise F (points) with each point weighing min(1, cap / its identity's size)."""
    sizes = np.bincount(y)
    w = np.minimum(1.0, cap / sizes[y])

    def pairs(codes):
        _, inv = np.unique(codes, return_inverse=True)
        big_w = np.bincount(inv, weights=w)
        w2 = np.bincount(inv, weights=w * w)
        return ((big_w * big_w - w2) / 2).sum()

    both = pairs(pred.astype(np.int64) * (y.max() + 1) + y)
    p = both / max(pairs(pred), 1e-12)
    r = both / max(pairs(y), 1e-12)
    return 100 * 2 * p * r / max(p + r, 1e-12)


OBJ = {"FP": lambda r: r["lp"], "FB": lambda r: r["lb"], "mean": lambda r: (r["lp"] + r["lb"]) / 2,
       "hmean": lambda r: 2 * r["lp"] * r["lb"] / (r["lp"] + r["lb"] + 1e-9),
       "capFP30": lambda r: r["lc30"], "capFP100": lambda r: r["lc100"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default="/tmp/objectives.json", help="where every row goes")
    a = ap.parse_args(argv)
    out = {}
    for name in SETS:
        (xl, yl), (xu, yu) = load(name)
        res = []
        for k in (10, 20, 30, 50, 80):
            il, sl = knn(xl, k + 1)
            iu, su = knn(xu, k + 1)
            for t in np.arange(0.90, 0.985, 0.005):
                pl = decode_infomap(il, sl, t)
                pu = decode_infomap(iu, su, t)
                lp, lb = score(pl, yl)
                up, ub = score(pu, yu)
                res.append(dict(k=k, t=round(float(t), 3), lp=lp, lb=lb, up=up, ub=ub,
                                lc30=capped_fp(pl, yl, 30), lc100=capped_fp(pl, yl, 100)))
        for o, f in OBJ.items():
            b = max(res, key=f)
            print(name, o, f"k {b['k']} t {b['t']:.3f} DU {b['up']:.2f}/{b['ub']:.2f}", flush=True)
        out[name] = res
    with open(a.json, "w") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    main()
