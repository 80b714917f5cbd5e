"""How wide the gate must be: rows read and decisions missed at several margins.

Given a model and its links of D_U read by the model on every row (cf-link --gate none),
for each margin m: the rows a gate of reach m x flip_distance (the largest distance from
the threshold at which the model changed a held-out decision, recorded by cf-train) would
read, and the rows it would skip although the model put one of their links on the other
side of the decoder's threshold than calibrated cosine does (decisions the gate misses).

    python bench/studies/link-gate/margin.py MODEL.h5 LINKS_FULL.h5 SEQ.h5 FEATURES.h5
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from cftools.core.clusformer.gate import cosine_logits, model_logits, recorded_gate
from cftools.core.clusformer.model import load_model, unit_rows
from cftools.formats.artifacts import open_artifact
from cftools.formats.features import load_features


def main(model_path, links_path, seq_path, features_path, decoder="infomap"):
    model, info = load_model(model_path)
    gate = recorded_gate(info["training"], decoder)
    with open_artifact(links_path, "links") as a:
        probs = a.read("probabilities")
    length = probs.shape[1]
    with open_artifact(seq_path, "sequences") as s:
        order, mask = s.read("order")[:, :length], s.read("mask")[:, :length]
    unit = unit_rows(torch.from_numpy(load_features(features_path).features))
    cos_logit = cosine_logits(model, unit, order).astype(np.float64)
    centre = np.log(gate.threshold) - np.log1p(-gate.threshold)
    use = mask.copy()
    use[:, 0] = False
    flips = ((model_logits(probs) >= centre) != (cos_logit >= centre)) & use
    dist = np.where(use, np.abs(cos_logit - centre), np.inf)
    flipped_rows = flips.any(axis=1)
    row_near = dist.min(axis=1)  # a row is read when its nearest link lies within the reach
    out = {"gate": gate.as_dict(), "rows": int(order.shape[0]), "links": int(use.sum()),
           "flipped_links": int(flips.sum()), "flipped_rows": int(flipped_rows.sum()),
           "largest_flip_distance_on_these_rows": float(dist[flips].max()) if flips.any() else 0,
           "margins": []}
    for m in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0):
        reach = m * gate.flip_distance
        read = row_near <= reach
        out["margins"].append({
            "margin": m, "reach": reach, "rows_read": float(read.mean()),
            "flipped_rows_skipped": int((flipped_rows & ~read).sum()),
            "flipped_links_skipped": int((flips & ~read[:, None]).sum())})
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
