"""Which D_L objective picks (k, threshold) for cosine Infomap that does well on D_U on both
sets, and is not moved by one giant identity? Objectives: F_P, F_B, their mean, their
harmonic mean, and F_P with identity-capped point weights (each identity weighs as if it
had at most CAP points)."""
from common import *
import json

def capped_fp(pred, y, cap=30):
    sizes = np.bincount(y)
    w = np.minimum(1.0, cap / sizes[y])
    def pairs(codes):
        _, inv = np.unique(codes, return_inverse=True)
        W = np.bincount(inv, weights=w); W2 = np.bincount(inv, weights=w * w)
        return ((W * W - W2) / 2).sum()
    both = pairs(pred.astype(np.int64) * (y.max() + 1) + y)
    p = both / max(pairs(pred), 1e-12); r = both / max(pairs(y), 1e-12)
    return 100 * 2 * p * r / max(p + r, 1e-12)

OBJ = {"FP": lambda r: r["lp"], "FB": lambda r: r["lb"], "mean": lambda r: (r["lp"] + r["lb"]) / 2,
       "hmean": lambda r: 2 * r["lp"] * r["lb"] / (r["lp"] + r["lb"] + 1e-9),
       "capFP30": lambda r: r["lc30"], "capFP100": lambda r: r["lc100"]}
out = {}
for name in ("lfw-dev-dlib128", "celeba-dlib128"):
    (xl, yl), (xu, yu) = load(name)
    res = []
    for k in (10, 20, 30, 50, 80):
        il, sl = knn(xl, k + 1); iu, su = knn(xu, k + 1)
        for t in np.arange(0.90, 0.985, 0.005):
            pl = decode_infomap(il, sl, t); pu = decode_infomap(iu, su, t)
            lp, lb = score(pl, yl); up, ub = score(pu, yu)
            res.append(dict(k=k, t=round(float(t), 3), lp=lp, lb=lb, up=up, ub=ub,
                            lc30=capped_fp(pl, yl, 30), lc100=capped_fp(pl, yl, 100)))
    for o, f in OBJ.items():
        b = max(res, key=f)
        print(name, o, "k %d t %.3f DU %.2f/%.2f" % (b["k"], b["t"], b["up"], b["ub"]), flush=True)
    out[name] = res
json.dump(out, open("/tmp/objectives.json", "w"))
