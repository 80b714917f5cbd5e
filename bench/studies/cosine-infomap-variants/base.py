"""Cosine Infomap on D_L picks k and the threshold by F_P, F_B or their mean: for k 10-80
and thresholds 0.900-0.980 (directed cosine kNN, no model), prints the (k, t) each
objective chooses on D_L with D_U's F_P / F_B at it, and D_U's own best rows (oracles).

    python bench/studies/cosine-infomap-variants/base.py      # a few minutes
"""

from __future__ import annotations

import argparse

import numpy as np
from splits import SETS, load, score

from cftools.core.decoding.decoders import decode_infomap
from cftools.core.neighbours.index import knn

KS = (10, 20, 30, 50, 80)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args(argv)
    for name in SETS:
        (xl, yl), (xu, yu) = load(name)
        kl = {k: knn(xl, k + 1) for k in KS}
        ku = {k: knn(xu, k + 1) for k in KS}
        rows = []
        for k in KS:
            il, sl = kl[k]
            iu, su = ku[k]
            for t in np.arange(0.90, 0.985, 0.005):
                pl = decode_infomap(il, sl, t)
                pu = decode_infomap(iu, su, t)
                rows.append((k, round(t, 3), *score(pl, yl), *score(pu, yu)))
        res = np.array(rows)
        for obj, f in (("FP", lambda r: r[2]), ("FB", lambda r: r[3]), ("mean", lambda r: (r[2] + r[3]) / 2)):
            b = max(res, key=f)
            print(name, obj, f"chosen k {b[0]:.0f} t {b[1]:.3f}  DL {b[2]:.2f}/{b[3]:.2f}  "
                  f"DU {b[4]:.2f}/{b[5]:.2f}")
        print(name, "oracle FP", max(res, key=lambda r: r[4]))
        print(name, "oracle FB", max(res, key=lambda r: r[5]))


if __name__ == "__main__":
    main()
