"""Cosine Infomap after a feature transform fit on D_L (centering, within-class whitening)
or applied within each set (qe: alpha query expansion, x_i <- sum over its m nearest, itself
included, of max(cos, 0)^alpha x_j, re-normalised; kinds qe:M or qe:M:ALPHA, alpha 3)."""
from common import *
import torch; torch.set_num_threads(1)

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
    means = np.zeros((len(ids), xl.shape[1])); np.add.at(means, inv, xl); means /= cnt[:, None]
    r = (xl - means[inv])[keep]
    sw = r.T @ r / len(r)
    w, v = np.linalg.eigh(sw)
    w = w + reg * w.mean()
    P = (v / np.sqrt(w)) @ v.T
    if kind == "wccn":
        return lambda x: norm((x - mu) @ P)
    raise ValueError(kind)

def norm(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

import sys
kinds = sys.argv[1:] or ["raw", "centre", "wccn"]
for name in ("lfw-dev-dlib128", "celeba-dlib128"):
    (xl, yl), (xu, yu) = load(name)
    for kind in kinds:
        reg = 0.1
        if ":" in kind:
            kind, reg = kind.split(":", 1)
            reg = reg if kind == "qe" else float(reg)
        f = fit(xl, yl, kind, reg); tl, tu = f(xl), f(xu)
        res = []
        for k in (20, 50, 80):
            il, sl = knn(tl, k+1); iu, su = knn(tu, k+1)
            qs = np.quantile(sl[:, 1:], np.linspace(0.5, 0.999, 30))
            for t in qs:
                res.append((k, t, *score(decode_infomap(il, sl, t), yl), *score(decode_infomap(iu, su, t), yu)))
        res = np.array(res)
        b = max(res, key=lambda r: r[2]); o = max(res, key=lambda r: r[5])
        print(f"{name:16s} {kind}:{reg} DL-FP chosen k {b[0]:.0f} t {b[1]:.3f} DL {b[2]:.2f}/{b[3]:.2f} DU {b[4]:.2f}/{b[5]:.2f}   oracle-FB DU {o[4]:.2f}/{o[5]:.2f}", flush=True)
