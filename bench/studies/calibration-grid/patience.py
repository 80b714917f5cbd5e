"""The coarse grid's early stop: thresholds, scores and decodes with and without it.

For labelled sets (a features file with labels, its sequences), the cosine links of all
rows at length L are calibrated for every decoder twice: with the coarse scan stopping
after GRID_PATIENCE thresholds in a row below the best (cftools' rule) and without that
stop (only the older "two in a row under half the best" rule), counting the decodes and
the CPU time of each.

    python bench/studies/calibration-grid/patience.py FEATURES.h5 SEQ.h5 L [...]
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

from cftools.core.calibration import thresholds as th
from cftools.core.clusformer.inference import cosine_to_centre
from cftools.core.decoding import decoders as dec
from cftools.formats.artifacts import open_artifact
from cftools.formats.features import load_features


def counted(fn, box):
    def wrapper(*a, **k):
        box[0] += 1
        return fn(*a, **k)
    return wrapper


def one(features_path, seq_path, length):
    feats = load_features(features_path)
    with open_artifact(seq_path, "sequences") as s:
        order, mask = s.read("order")[:, :length], s.read("mask")[:, :length]
    cos = cosine_to_centre(torch.from_numpy(feats.features), order, mask)
    idx, w = th.local_links(order, mask, cos, feats.n)
    labels = feats.labels[order[:, 0]]
    rows = {}
    for name, patience in (("stop after 3 below the best", 3), ("no such stop", 10**9)):
        th.GRID_PATIENCE = patience
        th._CALIBRATED.clear()
        box = [0]
        for fn in ("decode", "decode_intimacy", "decode_peaks"):
            setattr(th, fn, counted(getattr(dec, fn), box))
        t = time.process_time()
        found, scores = th.calibrate_thresholds(idx, w, labels, return_scores=True)
        rows[name] = {"thresholds": found, "scores": scores, "decodes": box[0],
                      "cpu_seconds": round(time.process_time() - t, 1)}
    return {"features": str(features_path), "rows": int(order.shape[0]), "L": length, **rows}


if __name__ == "__main__":
    args = sys.argv[1:]
    out = [one(args[i], args[i + 1], int(args[i + 2])) for i in range(0, len(args), 3)]
    print(json.dumps(out, indent=1, default=float))
    for r in out:
        a, b = r["stop after 3 below the best"], r["no such stop"]
        same = all(np.isclose(a["thresholds"][k], b["thresholds"][k]) for k in b["thresholds"])
        print(f"{r['features']} L {r['L']}: decodes {a['decodes']} vs {b['decodes']}, CPU "
              f"{a['cpu_seconds']} vs {b['cpu_seconds']} s, same thresholds: {same}",
              file=sys.stderr)
