"""A second pass over cosine Infomap's clusters: clusters (singletons included) whose
normalised mean features are close enough are merged, average-linkage style on the
centroids; the threshold is chosen on D_L by the calibration objective (identity-capped
pairwise F), D_U scored (oracle beside).

    python bench/studies/cosine-infomap-variants/centroids.py
"""

from __future__ import annotations

import argparse

import numpy as np
from splits import load, score

from cftools.core.calibration.objective import calibration_score
from cftools.core.decoding.decoders import decode_infomap
from cftools.core.neighbours.index import knn

# (set, k, threshold) of the first pass, cosine Infomap
FIRST_PASS = (("lfw-dev-dlib128", 50, 0.95), ("celeba-dlib128", 20, 0.935))


def centroids(x, pred):
    _, inv, cnt = np.unique(pred, return_inverse=True, return_counts=True)
    c = np.zeros((cnt.size, x.shape[1]))
    np.add.at(c, inv, x)
    return inv, cnt, (c / np.linalg.norm(c, axis=1, keepdims=True)).astype(np.float32)


def merge(x, pred, t, min_size=1, k=10):
    """Union clusters whose centroids have cosine >= t (kNN among centroids), where at
    least one of the two has min_size members."""
    inv, cnt, c = centroids(x, pred)
    idx, sim = knn(c, min(k + 1, c.shape[0]))
    parent = np.arange(c.shape[0])

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i in range(c.shape[0]):
        for j, s in zip(idx[i, 1:], sim[i, 1:]):
            if j >= 0 and s >= t and max(cnt[i], cnt[j]) >= min_size:
                parent[find(i)] = find(j)
    root = np.array([find(a) for a in range(c.shape[0])])
    return root[inv]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args(argv)
    for name, k, t in FIRST_PASS:
        (xl, yl), (xu, yu) = load(name)
        il, sl = knn(xl, k + 1)
        iu, su = knn(xu, k + 1)
        pl = decode_infomap(il, sl, t)
        pu = decode_infomap(iu, su, t)
        (lp, lb), (up, ub) = score(pl, yl), score(pu, yu)
        print(name, "infomap", f"DL {lp:.2f}/{lb:.2f}", f"DU {up:.2f}/{ub:.2f}", flush=True)
        for min_size in (1, 2, 5):
            rows = []
            for t2 in np.arange(0.90, 0.99, 0.0025):
                a = merge(xl, pl, t2, min_size)
                b = merge(xu, pu, t2, min_size)
                rows.append((t2, calibration_score(a, yl), *score(a, yl), *score(b, yu)))
            res = np.array(rows)
            c = max(res, key=lambda r: r[1])
            o = max(res, key=lambda r: r[5])
            print(f"  merge min_size {min_size}: DL-chosen t {c[0]:.4f} DL {c[2]:.2f}/{c[3]:.2f} "
                  f"DU {c[4]:.2f}/{c[5]:.2f} | oracle t {o[0]:.4f} DU {o[4]:.2f}/{o[5]:.2f}", flush=True)


if __name__ == "__main__":
    main()
