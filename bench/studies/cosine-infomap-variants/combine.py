"""Link-combination rules over dump.py's saved links: each rule's thresholds chosen on D_L
(all rows, by the calibration objective as cf-train calibrates), D_U scored; the D_U
oracle beside it only to show the headroom.

    python bench/studies/cosine-infomap-variants/combine.py FILE.npz    # FILE from dump.py
"""

from __future__ import annotations

import argparse

import numpy as np
from splits import score

from cftools.core.calibration.thresholds import calibrate_thresholds, local_links
from cftools.core.decoding.decoders import decode_infomap


def logit(p):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def as_probability(w):
    """Weights outside [0, 1] (blended logits) through the logistic function."""
    return (1 / (1 + np.exp(-w))) if (w.min() < 0 or w.max() > 1) else w


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("npz", help="links saved by dump.py")
    z = np.load(ap.parse_args(argv).npz)
    ol, ml, yl, ou, mu, yu = z["ol"], z["ml"], z["yl"], z["ou"], z["mu"], z["yu"]
    pl, cl, pu, cu = z["pl"], z["cl"], z["pu"], z["cu"]
    il, _ = local_links(ol, ml, cl, yl.size)
    iu, _ = local_links(ou, mu, cu, yu.size)
    cyl = yl[ol[:, 0]]

    def run(tag, wl, wu):
        wl = np.where(ml, as_probability(wl), 0).astype(np.float32)
        wu = np.where(mu, as_probability(wu), 0).astype(np.float32)
        t = calibrate_thresholds(il, wl, cyl, decoders=("infomap",))["infomap"]
        to = calibrate_thresholds(iu, wu, yu, decoders=("infomap",))["infomap"]  # oracle (on D_U)
        a = score(decode_infomap(il, wl, t), cyl)
        b = score(decode_infomap(iu, wu, t), yu)
        o = score(decode_infomap(iu, wu, to), yu)
        print(f"{tag:28s} DL-chosen t {t:.4f} DL {a[0]:.2f}/{a[1]:.2f} DU {b[0]:.2f}/{b[1]:.2f} "
              f"| oracle t {to:.4f} DU {o[0]:.2f}/{o[1]:.2f}", flush=True)

    run("cosine", cl, cu)
    run("model", pl, pu)
    # blend in logit space: cosine calibrated with the model's skip is not at hand, so use
    # rank-free z-scored logits of each on D_L
    def zc(c):
        return (c - cl[ml].mean()) / cl[ml].std()

    def zp(p):
        return (logit(p) - logit(pl)[ml].mean()) / logit(pl)[ml].std()

    for share in (0.25, 0.5, 0.75):
        wl = share * zp(pl) + (1 - share) * zc(cl)
        wu = share * zp(pu) + (1 - share) * zc(cu)
        run(f"blend a={share}", wl, wu)
    for qm in (0.5, 0.7, 0.85):
        tm = np.quantile(pl[:, 1:][ml[:, 1:] & (pl[:, 1:] > 0.05)], qm)
        run(f"cos, model>=q{qm}", np.where(pl >= tm, cl, 0), np.where(pu >= tm, cu, 0))


if __name__ == "__main__":
    main()
