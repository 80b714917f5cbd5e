"""The round's cosine path without training: for each candidate length L (k = L - 1
neighbours), Infomap over cosine links of D_L calibrated in each link mode by cftools'
objective (identity-capped pairwise F), then D_U at that threshold. Prints the D_L
calibration score and D_L's plain F_P / F_B beside D_U's F_P / F_B, so the choice rule
can be read off.

    python bench/studies/cosine-infomap-variants/cosine_path.py DATA   # e.g. celeba-dlib128
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from splits import load, score

from cftools.core.calibration.length import CANDIDATE_LENGTHS
from cftools.core.calibration.thresholds import calibrate_links, decode_with, local_links
from cftools.core.clusformer.grammar import build_sequences
from cftools.core.clusformer.inference import cosine_to_centre
from cftools.core.neighbours.index import knn
from cftools.formats.thresholds import link_mode_key

K = 81


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="a set of ../shared/data, e.g. lfw-dev-dlib128")
    name = ap.parse_args(argv).data
    (xl, yl), (xu, yu) = load(name)
    il, sl = knn(xl, K)
    iu, su = knn(xu, K)
    ol, ml, _ = build_sequences(il, sl, K, labels=yl)
    ou, mu, _ = build_sequences(iu, su, K)
    cl = cosine_to_centre(torch.from_numpy(xl), ol, ml)
    cu = cosine_to_centre(torch.from_numpy(xu), ou, mu)
    for length in CANDIDATE_LENGTHS:
        idx, w = local_links(ol[:, :length], ml[:, :length], cl[:, :length], yl.size)
        thr, sc = calibrate_links(idx, w, yl[ol[:, 0]], ("infomap",))
        for mode in ("directed", "reciprocal"):
            t = dict(thr)
            t[link_mode_key("infomap")] = mode
            probs = np.where(mu[:, :length], cu[:, :length], 0).astype(np.float32)
            pred = decode_with(ou[:, :length], probs, t, "infomap")
            plain = score(decode_with(idx, w, t, "infomap"), yl[ol[:, 0]])
            print(name, "L", length, mode, f"DL capped {sc['infomap'][mode]:.4f} "
                  f"plain {plain[0]:.2f}/{plain[1]:.2f}", "DU {:.2f}/{:.2f}".format(*score(pred, yu)),
                  flush=True)


if __name__ == "__main__":
    main()
