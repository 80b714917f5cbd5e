from common import *
import scipy.sparse as sp
def sets(idx, sim, k, recip, tmin=None):
    n = idx.shape[0]; i = idx[:, :k]
    rows = np.repeat(np.arange(n), k); cols = i.ravel()
    keep = cols >= 0
    if tmin is not None: keep &= sim[:, :k].ravel() >= tmin
    A = sp.csr_matrix((np.ones(keep.sum()), (rows[keep], cols[keep])), shape=(n, n))
    if recip: A = A.multiply(A.T).tocsr()
    A = A.maximum(sp.identity(n, format="csr"))
    return A
def jaccard_links(idx, sim, kj, recip, tmin=None):
    A = sets(idx, sim, kj, recip, tmin)
    n, K = idx.shape
    inter = np.asarray((A[np.repeat(np.arange(n), K)].multiply(A[np.maximum(idx.ravel(),0)])).sum(1)).ravel()
    sz = np.asarray(A.sum(1)).ravel()
    j = inter / (sz[np.repeat(np.arange(n), K)] + sz[np.maximum(idx.ravel(),0)] - inter)
    return j.reshape(n, K).astype(np.float32)
import itertools
for name in ("lfw-dev-dlib128", "celeba-dlib128"):
    (xl, yl), (xu, yu) = load(name)
    K = 50
    il, sl = knn(xl, K+1); iu, su = knn(xu, K+1)
    for kj, recip, tmin in itertools.product((10, 20, 30), (False, True), (None, 0.93)):
        jl = jaccard_links(il, sl, kj, recip, tmin); ju = jaccard_links(iu, su, kj, recip, tmin)
        for comb in ("j", "cosj"):
            wl = jl if comb == "j" else sl * jl; wu = ju if comb == "j" else su * ju
            res = []
            for q in np.linspace(0.5, 0.99, 25):
                t = np.quantile(wl[:, 1:], q)
                res.append((t, *score(decode_infomap(il, wl, t), yl), *score(decode_infomap(iu, wu, t), yu)))
            b = max(res, key=lambda r: r[1] + r[2]); o = max(res, key=lambda r: r[3] + r[4])
            print(name, kj, recip, tmin, comb, "DL-chosen t %.3f DL %.2f/%.2f DU %.2f/%.2f" % b, " oracle DU %.2f/%.2f" % o[3:], flush=True)
