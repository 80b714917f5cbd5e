"""Every cf-merge decoder on real faces: CelebA dlib-128, the standard split.

Thresholds (and the intimacy ratio, the peaks tolerance) are calibrated on the LABELLED
half only, with links made the same way; the unlabelled half is clustered and scored.
Rows: raw cosine kNN links for each --k; Infomap over cosine is the baseline
(the data's README: 95.68 / 95.66 with thresholds chosen on the labelled half).
With --train-epochs N > 0 a Clusformer is trained on the labelled half through the core
API (cftools.core.training) and its links of the unlabelled half are decoded too, with
the thresholds training calibrated on its held-out identities ("model/train") and with
thresholds calibrated on the labelled half's model links ("model/D_L").

    python bench/faces.py                       # k = 10, 20, 30, 50, 80, cosine links
    python bench/faces.py --k 80 --train-epochs 20 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from cftools.core.calibration.thresholds import calibrate_thresholds
from cftools.core.decoding.decoders import DECODERS, decode
from cftools.core.metrics import evaluate
from cftools.core.neighbours.index import knn

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba-dlib128"


def decode_all(rows, tag, k, iu, pu, yu, th, calib_seconds):
    for method in DECODERS:
        t0 = time.perf_counter()
        labels = decode(method, iu, pu, th[method], intimacy_ratio=th.get("intimacy_ratio", 0.5),
                          peaks_tolerance=th.get("peaks_tolerance", 0.0))
        dt = time.perf_counter() - t0
        e = evaluate(labels, yu)
        row = {"links": tag, "k": k, "method": method, "threshold": round(th[method], 5),
               "pairwise_f": round(100 * e["pairwise_f"], 2),
               "bcubed_f": round(100 * e["bcubed_f"], 2), "nmi": round(100 * e["nmi"], 2),
               "clusters": e["n_clusters"], "singletons": e["n_singletons"],
               "true_clusters": e["n_true_clusters"], "decode_s": round(dt, 3),
               "calibrate_s": round(calib_seconds, 2)}
        rows.append(row)
        print(f"{tag:13s} k={k:<3d} {method:11s} t={th[method]:.4f}  F_P {row['pairwise_f']:6.2f}"
              f"  F_B {row['bcubed_f']:6.2f}  NMI {row['nmi']:6.2f}  clusters {row['clusters']:4d}"
              f" (true {row['true_clusters']})  singletons {row['singletons']:4d}"
              f"  decode {dt:.2f} s", file=sys.stderr, flush=True)


def model_rows(rows, k, x, y, lab, unl, il, sl, iu, su, epochs, seed):
    import torch

    from cftools.core.clusformer.grammar import build_sequences
    from cftools.core.clusformer.inference import predict
    from cftools.core.clusformer.model import make_config
    from cftools.core.clusformer.sequences import SequenceData
    from cftools.core.clusformer.training import TrainConfig, train

    torch.set_num_threads(2)
    order, mask, targets = build_sequences(il, sl, k, labels=y[lab])
    t0 = time.perf_counter()
    res = train(SequenceData(order, mask, targets, y[lab]), x[lab],
                make_config("small", x.shape[1], k), TrainConfig(epochs=epochs, seed=seed),
                device=torch.device("cpu"), log=lambda m: print(m, file=sys.stderr))
    print(f"trained in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    ou, mu, _ = build_sequences(iu, su, k)
    pu = predict(res.model, torch.from_numpy(x[unl]), ou, mu)
    pl = predict(res.model, torch.from_numpy(x[lab]), order, mask)
    decode_all(rows, "model/train", k, ou, pu, y[unl], res.thresholds, 0.0)
    t0 = time.perf_counter()
    th = calibrate_thresholds(order, pl, y[lab])
    decode_all(rows, "model/D_L", k, ou, pu, y[unl], th, time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--k", default="10,20,30,50,80", help="comma-separated k")
    ap.add_argument("--train-epochs", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    d = Path(args.data)
    if not (d / "features.npy").exists():
        sys.exit(f"bench/faces.py: no data at {d}")
    x = np.load(d / "features.npy")
    y = np.load(d / "labels.npy")
    lab, unl = np.load(d / "labelled_idx.npy"), np.load(d / "unlabelled_idx.npy")
    rows: list = []
    for k in (int(v) for v in args.k.split(",")):
        il, sl = knn(x[lab], k)
        iu, su = knn(x[unl], k)
        t0 = time.perf_counter()
        th = calibrate_thresholds(il, sl, y[lab], seed=args.seed)
        decode_all(rows, "cosine", k, iu, su, y[unl], th, time.perf_counter() - t0)
        if args.train_epochs > 0:
            model_rows(rows, k, x, y, lab, unl, il, sl, iu, su, args.train_epochs, args.seed)
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()


if __name__ == "__main__":
    main()
