"""Where D_U's best Infomap threshold lies against the one calibrated on D_L, for the model
links of finished rounds: a diagnosis (it reads D_U's labels), never a way to choose.

For each round folder (a `make round` output: model.h5, seq_labelled.h5, labelled.h5,
unlabelled.h5, links.h5) it decodes D_U's links by Infomap, in the link mode cf-train
calibrated, at the threshold each rule gives, and scores the clusters on D_U's labels:

- calibrated: cf-train's threshold (the whole labelled set linked by the model, pairwise F);
- held-out: the best of a grid by the jury's score (held-out identities decoded among
  all of D_L's links, calibration.jury), the identities the model never trained on;
- quantile-matched: the threshold that keeps the same share of D_U's links as the
  calibrated one keeps of D_L's (adapts to a shift of the link probabilities, no labels);
- oracle: the best of the grid on D_U's own labels (what no rule can reach).

Then, at the calibrated threshold, each singleton joined to the cluster of its strongest
link when that link's probability is at least A (for A in --attach): does the model's
uncertainty leave points alone that belong to a cluster? Last, the guard's recorded jury
scores beside D_U's, for the round's clusters and for cosine links at cosine's length
(cf-train's cosine thresholds): does the jury's verdict hold on D_U?

    python bench/threshold_shift.py /tmp/omni/s0/round1 /tmp/omni/s1/round1
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def _round(folder: str, grid: np.ndarray, attach) -> dict:
    import torch

    from cftools.core.calibration.jury import HeldOut, mean_f
    from cftools.core.calibration.thresholds import local_links
    from cftools.core.clusformer.inference import predict
    from cftools.core.clusformer.model import load_model
    from cftools.core.clusformer.sequences import SequenceData, split_rows
    from cftools.core.decoding.decoders import decode
    from cftools.core.decoding.weights import link_weights, valid_links
    from cftools.core.metrics import bcubed_scores, pairwise_scores
    from cftools.formats.artifacts import open_artifact
    from cftools.formats.features import load_features
    from cftools.formats.links import read_links
    from cftools.formats.thresholds import resolve_threshold

    model, attrs = load_model(f"{folder}/model.h5")
    th = attrs["thresholds"]
    th = th if isinstance(th, dict) else json.loads(th)
    training = attrs["training"]
    training = training if isinstance(training, dict) else json.loads(training)
    cfg = training["train_config"]
    seq = open_artifact(f"{folder}/seq_labelled.h5", "sequences")
    order, mask, targets = seq.read("order"), seq.read("mask"), seq.read("targets")
    fl, fu = load_features(f"{folder}/labelled.h5"), load_features(f"{folder}/unlabelled.h5")
    links = read_links(f"{folder}/links.h5")
    if links.attrs.get("method") != "model":
        return {"folder": folder, "skipped": "cosine links (the guard chose cosine)"}
    n = links.indices.shape[1]
    probs = predict(model, torch.from_numpy(fl.features), order[:, :n], mask[:, :n])
    idx, p = local_links(order[:, :n], mask[:, :n], probs, fl.n)
    mode = th.get("link_mode_infomap", "reciprocal")
    calibrated = resolve_threshold("infomap", th, mode)
    wl, wu = link_weights(idx, p, mode), link_weights(links.indices, links.probabilities, mode)
    _, _, held = split_rows(SequenceData(order, mask, targets, fl.labels), cfg["val_fraction"],
                            cfg["seed"])
    jury = HeldOut(fl.labels[order[:, 0]], held)

    decoded: dict = {}  # D_U's clusters by threshold: each decoded once

    def on_du(t: float) -> np.ndarray:
        if t not in decoded:
            decoded[t] = decode("infomap", links.indices, wu, float(t), seed=cfg["seed"])
        return decoded[t]

    def score(pred) -> tuple[float, float]:
        return (100 * pairwise_scores(pred, fu.labels)["pairwise_f"],
                100 * bcubed_scores(pred, fu.labels)["bcubed_f"])

    scored = []
    for t in grid:
        jl = jury.scores(decode("infomap", idx, wl, float(t), seed=cfg["seed"]))
        scored.append((float(t), mean_f(jl), score(on_du(t))))
    share = float((wl[valid_links(idx, 0)] >= calibrated).mean())
    matched = float(np.quantile(wu[valid_links(links.indices, 0)], 1 - share))
    rules = {"calibrated": calibrated,
             "held-out": max(scored, key=lambda r: r[1])[0],
             "quantile-matched": matched,
             "oracle": max(scored, key=lambda r: sum(r[2]))[0]}
    out = {"folder": folder, "mode": mode, "rules": {k: {"t": t, "F": score(on_du(t))}
                                                     for k, t in rules.items()}}
    out["attach"] = {str(a): score(_attach(on_du(calibrated), links.indices, wu, a))
                     for a in attach}
    out["jury"] = _jury_and_cosine(folder, training, fu, score)
    return out


def _jury_and_cosine(folder: str, training: dict, fu, score) -> dict:
    """The guard's recorded jury scores beside D_U's: the model's links (the round's own
    clusters.h5) and cosine links at cosine's length and cf-train's cosine thresholds."""
    import torch

    from cftools.core.calibration.thresholds import decode_with
    from cftools.core.clusformer.inference import cosine_to_centre
    from cftools.formats.artifacts import open_artifact
    from cftools.formats.clusters import read_clusters

    g = training["guard"]
    n = int(g["cosine_length"])
    seq = open_artifact(f"{folder}/seq_unlabelled.h5", "sequences")
    order, mask = seq.read("order")[:, :n], seq.read("mask")[:, :n]
    cos = cosine_to_centre(torch.from_numpy(fu.features), order, mask)
    pred = decode_with(np.where(mask, order, -1), cos, training["cosine_thresholds"],
                       "infomap")
    ours = read_clusters(f"{folder}/clusters.h5")[0]  # unassigned (-1) score as singletons
    return {"model": [100 * g["model"]["pairwise_f"], 100 * g["model"]["bcubed_f"]],
            "cosine": [100 * g["cosine"]["pairwise_f"], 100 * g["cosine"]["bcubed_f"]],
            "ahead": g["model_ahead"], "cosine_length": n,
            "du_model": score(ours), "du_cosine": score(pred)}


def _attach(pred: np.ndarray, idx: np.ndarray, w: np.ndarray, least: float) -> np.ndarray:
    """Each singleton of ``pred`` joined to the cluster of its strongest link to a point
    not itself a singleton, where that link's weight is at least ``least``."""
    _, code, sizes = np.unique(pred, return_inverse=True, return_counts=True)
    size = sizes[code]
    from cftools.core.decoding.weights import valid_links

    n = idx.shape[0]
    ok = valid_links(idx, 0)
    ok &= size[np.where(ok, idx, 0)] > 1
    weight = np.where(ok, w, -np.inf)
    best = weight.argmax(axis=1)
    go = (size == 1) & (weight[np.arange(n), best] >= least)
    out = pred.copy()
    out[go] = pred[idx[go, best[go]]]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", help="round folders (make round's WORK/roundR)")
    ap.add_argument("--attach", nargs="*", type=float, default=[0.6, 0.5, 0.4, 0.2])
    args = ap.parse_args(argv)
    grid = np.round(np.arange(0.30, 0.801, 0.02), 2)
    print("| round | mode | rule | t | D_U F_P | F_B |\n|---|---|---|---|---|---|")
    rows = []
    for folder in args.folders:
        r = _round(folder, grid, args.attach)
        rows.append(r)
        if "skipped" in r:
            print(f"| {folder} | | {r['skipped']} | | | |")
            continue
        for name, v in r["rules"].items():
            print(f"| {folder} | {r['mode']} | {name} | {v['t']:.3f} | {v['F'][0]:.2f} | "
                  f"{v['F'][1]:.2f} |")
        for a, f in r["attach"].items():
            print(f"| {folder} | {r['mode']} | calibrated, singletons joined at >= {a} | | "
                  f"{f[0]:.2f} | {f[1]:.2f} |")
    print("\n| round | jury: model F_P / F_B | cosine | model ahead | D_U: model (the round) "
          "| cosine links at cosine's length |\n|---|---|---|---|---|---|")
    for r in rows:
        if "jury" in r:
            j = r["jury"]
            print(f"| {r['folder']} | {j['model'][0]:.2f} / {j['model'][1]:.2f} | "
                  f"{j['cosine'][0]:.2f} / {j['cosine'][1]:.2f} (L {j['cosine_length']}) | "
                  f"{j['ahead']:.0%} | {j['du_model'][0]:.2f} / {j['du_model'][1]:.2f} | "
                  f"{j['du_cosine'][0]:.2f} / {j['du_cosine'][1]:.2f} |")
    return rows


if __name__ == "__main__":
    main()
