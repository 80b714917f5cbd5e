"""Experiments on one round's features: the free baseline, cosine at its length, the model
at several lengths / epochs; D_U scores and two juries (guard's sparse one, crowded one)."""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cftools.core.calibration.length import choose_length
from cftools.core.calibration.thresholds import COSINE_MODES, calibrate_links, decode_with, local_links
from cftools.core.clusformer.grammar import build_sequences
from cftools.core.clusformer.inference import cosine_to_centre, predict
from cftools.core.clusformer.model import make_config
from cftools.core.clusformer.sequences import SequenceData, split_rows, truncated
from cftools.core.clusformer.training import TrainConfig, train
from cftools.core.decoding.decoders import decode_infomap
from cftools.core.metrics import bcubed_scores, pairwise_scores
from cftools.core.neighbours.index import knn
from cftools.formats.features import load_features


def sc(pred, truth):
    return (round(100 * pairwise_scores(pred, truth)["pairwise_f"], 2),
            round(100 * bcubed_scores(pred, truth)["bcubed_f"], 2))


def restricted(pred, truth, scored):
    """pairwise F over pairs touching scored points; BCubed over scored points."""
    pred = pred.copy()
    un = pred < 0
    pred[un] = pred.max() + 1 + np.arange(un.sum())
    _, pc = np.unique(pred, return_inverse=True)
    _, tc = np.unique(truth, return_inverse=True)
    nt = tc.max() + 1
    cell = pc * nt + tc
    cells, cnt = np.unique(cell, return_counts=True)
    cell_id = np.searchsorted(cells, cell)
    pc_sizes = np.bincount(pc)
    tc_sizes = np.bincount(tc)
    h_per_cluster = np.bincount(pc, weights=scored.astype(float), minlength=pc_sizes.size)
    hid = np.unique(tc[scored])
    cell_t = cells % nt
    in_h = np.isin(cell_t, hid)
    tp = (cnt[in_h] * (cnt[in_h] - 1) / 2).sum()
    def c2(n):
        return n * (n - 1) / 2
    pp = (c2(pc_sizes) - c2(pc_sizes - h_per_cluster)).sum()
    tpairs = c2(tc_sizes[hid]).sum()
    p = tp / pp if pp else 1.0
    r = tp / tpairs if tpairs else 1.0
    fp = 2 * p * r / (p + r) if p + r else 0
    i = np.flatnonzero(scored)
    nc = cnt[cell_id[i]]
    bp = (nc / pc_sizes[pc[i]]).mean()
    br = (nc / tc_sizes[tc[i]]).mean()
    fb = 2 * bp * br / (bp + br)
    return round(100 * fp, 2), round(100 * fb, 2)


def baseline(il, sl, yl, iu, su, yu, ks=(10, 20, 30, 50, 80)):
    best = None
    for k in ks:
        s = sl[:, 1:k + 1]
        grid = np.quantile(s, np.linspace(0.05, 0.995, 60))
        for t in grid:
            f = pairwise_scores(decode_infomap(il[:, :k + 1], sl[:, :k + 1], float(t)), yl)["pairwise_f"]
            if best is None or f > best[0]:
                best = (f, k, float(t))
    f, k, t = best
    return {"k": k, "t": round(t, 4), "dl": round(100 * f, 2),
            "du": sc(decode_infomap(iu[:, :k + 1], su[:, :k + 1], t), yu)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("round")
    ap.add_argument("--lengths", nargs="*", type=int, default=[11, 21, 31, 51])
    ap.add_argument("--epochs", nargs="*", type=int, default=[8])
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--extra", default="{}")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", 1)))
    fl = load_features(a.round + "/labelled.h5")
    fu = load_features(a.round + "/unlabelled.h5")
    xl, yl, xu, yu = fl.features, fl.labels, fu.features, fu.labels
    il, sl = knn(xl, 81)
    iu, su = knn(xu, 81)
    res = {"round": a.round}
    if not a.no_baseline:
        t0 = time.time()
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/
        from quality import cosine_infomap, similarity_grid
        res["baseline"] = cosine_infomap(xl, yl, xu, yu, (10, 20, 30, 50, 80), grid=similarity_grid, fine=6)
        print("baseline", res["baseline"], f"{time.time() - t0:.0f}s", flush=True)
    ol, ml, tl = build_sequences(il, sl, 81, labels=yl)
    ou, mu, _ = build_sequences(iu, su, 81)
    data = SequenceData(ol, ml, tl, yl)
    xl_t, xu_t = torch.from_numpy(xl), torch.from_numpy(xu)
    cosl = cosine_to_centre(xl_t, ol, ml)
    cosu = cosine_to_centre(xu_t, ou, mu)
    choose_length(ol, ml, cosl, yl, seed=a.seed, log=lambda m: print(m, flush=True))
    _, val_rows, val_ids = split_rows(data, 0.2, a.seed)
    held = np.isin(yl, val_ids)
    res["cosine"] = {}
    for L in sorted(set([11, 21, 31, 51, 81] + a.lengths)):
        ci, cw = local_links(ol[:, :L], ml[:, :L], cosl[:, :L], yl.size)
        ct = calibrate_links(ci, cw, yl, ("infomap",), a.seed, modes=COSINE_MODES)[0]
        pl = decode_with(ci, cw, ct, "infomap", seed=a.seed)
        pu = decode_with(ou[:, :L], cosu[:, :L], ct, "infomap", seed=a.seed)
        res["cosine"][L] = {"t": ct, "dl": sc(pl, yl), "jury": restricted(pl, yl, held),
                            "du": sc(pu, yu)}
        print("cosine", L, res["cosine"][L], flush=True)
    res["models"] = []
    extra = json.loads(a.extra)
    for L in a.lengths:
        for ep in a.epochs:
            t0 = time.time()
            r = train(truncated(data, L), xl, make_config(a.preset, xl.shape[1], L, **extra.get("model", {})),
                      TrainConfig(epochs=ep, lr=a.lr, seed=a.seed, **extra.get("train", {})),
                      device=torch.device("cpu"), log=lambda m: None)
            dt = time.time() - t0
            th = r.thresholds
            pl_probs = predict(r.model, xl_t, ol[:, :L], ml[:, :L])
            li, lw = local_links(ol[:, :L], ml[:, :L], pl_probs, yl.size)
            pl = decode_with(li, lw, th, "infomap", seed=a.seed)
            t1 = time.time()
            pu_probs = predict(r.model, xu_t, ou[:, :L], mu[:, :L])
            tlink = time.time() - t1
            pu = decode_with(ou[:, :L], pu_probs, th, "infomap", seed=a.seed)
            row = {"L": L, "epochs": ep, "train_s": round(dt), "link_s": round(tlink),
                   "kept": r.summary.get("kept_epoch"),
                   "auc": [round(h.get("val_roc_auc", 0), 4) for h in r.summary["history"]],
                   "auc_cos": r.summary["validation"]["cosine"]["roc_auc"],
                   "guard": r.summary.get("guard"),
                   "dl": sc(pl, yl), "jury": restricted(pl, yl, held), "du": sc(pu, yu),
                   "mode": th.get("link_mode_infomap")}
            res["models"].append(row)
            print("model", json.dumps(row), flush=True)
    if a.out:
        json.dump(res, open(a.out, "w"), indent=1, default=str)


if __name__ == "__main__":
    main()
