"""Cosine Infomap after a feature transform fit on D_L (centering, within-class whitening)
or applied within each set (qe: alpha query expansion, x_i <- sum over its m nearest, itself
included, of max(cos, 0)^alpha x_j, re-normalised); k and the threshold chosen on D_L by
F_P, D_U scored (oracle by F_B beside).

    python bench/studies/cosine-infomap-variants/transform.py [KIND ...]
    # KIND: raw, centre, wccn[:REG] (default raw centre wccn), qe:M or qe:M:ALPHA (alpha 3)
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from splits import SETS, load, score

from cftools.core.decoding.decoders import decode_infomap
from cftools.core.neighbours.index import knn


def norm(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def fit(xl, yl, kind, reg=0.1):
    mu = xl.mean(0)
    if kind == "qe":
        m, alpha = (int(reg), 3.0) if ":" not in str(reg) else map(float, str(reg).split(":"))

        def qe(x):
            i, s = knn(x, int(m))
            w = np.maximum(s, 0) ** alpha
            return norm(np.einsum("nk,nkd->nd", w, x[i]))

        return qe
    if kind == "raw":
        return lambda x: x
    if kind == "centre":
        return lambda x: norm(x - mu)
    # within-class covariance of identities with 2+ images, regularised toward its mean eigenvalue
    ids, inv, cnt = np.unique(yl, return_inverse=True, return_counts=True)
    keep = cnt[inv] >= 2
    means = np.zeros((len(ids), xl.shape[1]))
    np.add.at(means, inv, xl)
    means /= cnt[:, None]
    r = (xl - means[inv])[keep]
    sw = r.T @ r / len(r)
    w, v = np.linalg.eigh(sw)
    w = w + reg * w.mean()
    whiten = (v / np.sqrt(w)) @ v.T
    if kind == "wccn":
        return lambda x: norm((x - mu) @ whiten)
    raise ValueError(kind)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kinds", nargs="*", default=["raw", "centre", "wccn"], metavar="KIND")
    kinds = ap.parse_args(argv).kinds
    torch.set_num_threads(1)
    for name in SETS:
        (xl, yl), (xu, yu) = load(name)
        for spec in kinds:
            kind, reg = spec, 0.1
            if ":" in kind:
                kind, reg = kind.split(":", 1)
                reg = reg if kind == "qe" else float(reg)
            f = fit(xl, yl, kind, reg)
            tl, tu = f(xl), f(xu)
            res = []
            for k in (20, 50, 80):
                il, sl = knn(tl, k + 1)
                iu, su = knn(tu, k + 1)
                qs = np.quantile(sl[:, 1:], np.linspace(0.5, 0.999, 30))
                for t in qs:
                    res.append((k, t, *score(decode_infomap(il, sl, t), yl),
                                *score(decode_infomap(iu, su, t), yu)))
            res = np.array(res)
            b = max(res, key=lambda r: r[2])
            o = max(res, key=lambda r: r[5])
            print(f"{name:16s} {kind}:{reg} DL-FP chosen k {b[0]:.0f} t {b[1]:.3f} DL {b[2]:.2f}/{b[3]:.2f} "
                  f"DU {b[4]:.2f}/{b[5]:.2f}   oracle-FB DU {o[4]:.2f}/{o[5]:.2f}", flush=True)


if __name__ == "__main__":
    main()
