"""Jaccard-of-kNN-sets edge weights for Infomap: for the k of the sets (10-30), reciprocal
or not, with or without a cosine floor of 0.93, the Jaccard weight alone ("j") or times
cosine ("cosj"), over kNN at k 50; the threshold chosen on D_L by F_P + F_B, D_U scored
(oracle beside).

    python bench/studies/cosine-infomap-variants/jac.py
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import scipy.sparse as sp
from splits import SETS, load, score

from cftools.core.decoding.decoders import decode_infomap
from cftools.core.neighbours.index import knn

K = 50


def sets(idx, sim, k, recip, tmin=None):
    """Each point's kNN set (itself included) as a sparse 0/1 matrix; ``recip``: mutual
    neighbours only; ``tmin``: neighbours of cosine >= tmin only."""
    n = idx.shape[0]
    i = idx[:, :k]
    rows = np.repeat(np.arange(n), k)
    cols = i.ravel()
    keep = cols >= 0
    if tmin is not None:
        keep &= sim[:, :k].ravel() >= tmin
    a = sp.csr_matrix((np.ones(keep.sum()), (rows[keep], cols[keep])), shape=(n, n))
    if recip:
        a = a.multiply(a.T).tocsr()
    return a.maximum(sp.identity(n, format="csr"))


def jaccard_links(idx, sim, kj, recip, tmin=None):
    a = sets(idx, sim, kj, recip, tmin)
    n, k = idx.shape
    centre = np.repeat(np.arange(n), k)
    other = np.maximum(idx.ravel(), 0)
    inter = np.asarray((a[centre].multiply(a[other])).sum(1)).ravel()
    sz = np.asarray(a.sum(1)).ravel()
    j = inter / (sz[centre] + sz[other] - inter)
    return j.reshape(n, k).astype(np.float32)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args(argv)
    for name in SETS:
        (xl, yl), (xu, yu) = load(name)
        il, sl = knn(xl, K + 1)
        iu, su = knn(xu, K + 1)
        for kj, recip, tmin in itertools.product((10, 20, 30), (False, True), (None, 0.93)):
            jl = jaccard_links(il, sl, kj, recip, tmin)
            ju = jaccard_links(iu, su, kj, recip, tmin)
            for comb in ("j", "cosj"):
                wl = jl if comb == "j" else sl * jl
                wu = ju if comb == "j" else su * ju
                res = []
                for q in np.linspace(0.5, 0.99, 25):
                    t = np.quantile(wl[:, 1:], q)
                    res.append((t, *score(decode_infomap(il, wl, t), yl),
                                *score(decode_infomap(iu, wu, t), yu)))
                b = max(res, key=lambda r: r[1] + r[2])
                o = max(res, key=lambda r: r[3] + r[4])
                print(name, kj, recip, tmin, comb,
                      "DL-chosen t {:.3f} DL {:.2f}/{:.2f} DU {:.2f}/{:.2f}".format(*b),
                      " oracle DU {:.2f}/{:.2f}".format(*o[3:]), flush=True)


if __name__ == "__main__":
    main()
