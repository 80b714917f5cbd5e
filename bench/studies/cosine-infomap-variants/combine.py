"""Link-combination rules over dump.py's saved links: each rule's thresholds chosen on D_L
(all rows, capped pairwise F as cf-train calibrates), D_U scored; the D_U oracle beside it
only to show the headroom. Usage: combine.py FILE.npz"""
from common import *
import sys, json
from cftools.core.calibration.thresholds import local_links
from cftools.core.metrics import capped_pairwise_f

z = np.load(sys.argv[1])
ol, ml, yl, ou, mu, yu = z["ol"], z["ml"], z["yl"], z["ou"], z["mu"], z["yu"]
pl, cl, pu, cu = z["pl"], z["cl"], z["pu"], z["cu"]
il, _ = local_links(ol, ml, cl, yl.size); iu, _ = local_links(ou, mu, cu, yu.size)
logit = lambda p: np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))
cyl = yl[ol[:, 0]]

from cftools.core.calibration.thresholds import calibrate_thresholds
def run(tag, wl, wu, grid=None):
    sig = lambda w: (1 / (1 + np.exp(-w))) if (w.min() < 0 or w.max() > 1) else w
    wl = np.where(ml, sig(wl), 0).astype(np.float32); wu = np.where(mu, sig(wu), 0).astype(np.float32)
    t = calibrate_thresholds(il, wl, cyl, decoders=("infomap",))["infomap"]
    to = calibrate_thresholds(iu, wu, yu, decoders=("infomap",))["infomap"]  # oracle (capped F on D_U)
    a = score(decode_infomap(il, wl, t), cyl); b = score(decode_infomap(iu, wu, t), yu); o = score(decode_infomap(iu, wu, to), yu)
    print(f"{tag:28s} DL-chosen t {t:.4f} DL {a[0]:.2f}/{a[1]:.2f} DU {b[0]:.2f}/{b[1]:.2f} | oracle t {to:.4f} DU {o[0]:.2f}/{o[1]:.2f}", flush=True)

q = lambda w, m: np.quantile(w[:, 1:][m[:, 1:]], np.linspace(float(__import__("os").environ.get("QLO", "0.8")), 0.995, 40))
run("cosine", cl, cu, q(cl, ml))
run("model", pl, pu, q(pl, ml))
for a in (0.25, 0.5, 0.75):
    # blend in logit space: cosine calibrated with the model's skip is not at hand, so use
    # rank-free z-scored logits of each on D_L
    zc = lambda c: (c - cl[ml].mean()) / cl[ml].std()
    zp = lambda p: (logit(p) - logit(pl)[ml].mean()) / logit(pl)[ml].std()
    wl = a * zp(pl) + (1 - a) * zc(cl); wu = a * zp(pu) + (1 - a) * zc(cu)
    run(f"blend a={a}", wl, wu, q(wl, ml))
for qm in (0.5, 0.7, 0.85):
    tm = np.quantile(pl[:, 1:][ml[:, 1:] & (pl[:, 1:] > 0.05)], qm)
    wl = np.where(pl >= tm, cl, 0); wu = np.where(pu >= tm, cu, 0)
    run(f"cos, model>=q{qm}", wl, wu, q(cl, ml))
