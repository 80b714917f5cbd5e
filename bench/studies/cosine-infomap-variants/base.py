from common import *
import itertools
for name in ("lfw-dev-dlib128", "celeba-dlib128"):
    (xl, yl), (xu, yu) = load(name)
    KL = {k: knn(xl, k+1) for k in (10, 20, 30, 50, 80)}
    KU = {k: knn(xu, k+1) for k in (10, 20, 30, 50, 80)}
    res = []
    for k in KL:
        il, sl = KL[k]; iu, su = KU[k]
        for t in np.arange(0.90, 0.985, 0.005):
            pl = decode_infomap(il, sl, t); pu = decode_infomap(iu, su, t)
            res.append((k, round(t,3), *score(pl, yl), *score(pu, yu)))
    res = np.array(res)
    for obj, f in (("FP", lambda r: r[2]), ("FB", lambda r: r[3]), ("mean", lambda r: (r[2]+r[3])/2)):
        b = max(res, key=f)
        print(name, obj, "chosen k %d t %.3f  DL %.2f/%.2f  DU %.2f/%.2f" % tuple(b))
    b = max(res, key=lambda r: r[4]); print(name, "oracle FP", b)
    b = max(res, key=lambda r: r[5]); print(name, "oracle FB", b)
    pass  # the printed lines are the result
