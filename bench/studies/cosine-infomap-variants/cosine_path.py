"""The round's cosine path without training: for each candidate length L (k = L - 1
neighbours), Infomap over cosine links of D_L calibrated in each link mode by cftools'
objective (identity-capped pairwise F), then D_U at that threshold. Prints the D_L
calibration score and D_L's plain F_P / F_B beside D_U's F_P / F_B, so the choice rule can be read off.
Usage: cosine_path.py DATA"""
from common import *
import sys
import torch
from cftools.core.clusformer.grammar import build_sequences
from cftools.core.calibration.thresholds import calibrate_links, local_links, decode_with
from cftools.core.calibration.length import CANDIDATE_LENGTHS
from cftools.core.clusformer.inference import cosine_to_centre

name = sys.argv[1]
(xl, yl), (xu, yu) = load(name)
K = 81
il, sl = knn(xl, K); iu, su = knn(xu, K)
ol, ml, _ = build_sequences(il, sl, K, labels=yl)
ou, mu, _ = build_sequences(iu, su, K)
cl = cosine_to_centre(torch.from_numpy(xl), ol, ml)
cu = cosine_to_centre(torch.from_numpy(xu), ou, mu)
for L in CANDIDATE_LENGTHS:
    idx, w = local_links(ol[:, :L], ml[:, :L], cl[:, :L], yl.size)
    thr, sc = calibrate_links(idx, w, yl[ol[:, 0]], ("infomap",))
    for mode in ("directed", "reciprocal"):
        t = dict(thr); t["link_mode_infomap"] = mode
        pred = decode_with(ou[:, :L], np.where(mu[:, :L], cu[:, :L], 0).astype(np.float32), t)
        plain = score(decode_with(idx, w, t), yl[ol[:, 0]])
        print(name, "L", L, mode, "DL capped %.4f plain %.2f/%.2f" % (sc["infomap"][mode], *plain),
              "DU %.2f/%.2f" % score(pred, yu), flush=True)
