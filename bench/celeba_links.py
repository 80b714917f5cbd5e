"""Link quality of Clusformer vs raw cosine on real faces (CelebA, dlib 128-d), standard split.

Trains on the labelled half (cf-knn -> cf-seq -> cf-train), links the unlabelled half
(cf-link, model and cosine) and scores every neighbour position (centre excluded, masked
excluded) against the truth: ROC-AUC, and precision / recall / F1 at the threshold
calibrated on the labelled half (the model's stored 'link' threshold; for cosine the best
F1 threshold on the labelled half's own links). The truth of the unlabelled half is only
used for scoring.

    python bench/celeba_links.py [--epochs 20] [--preset small] [-L 32] [--lr 1e-3] [--out DIR]
                                 [--extra=--token-features]  (more cf-train options)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "celeba-dlib128"


def run(*args):
    subprocess.run([sys.executable, "-m", *args], check=True, cwd=REPO)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--preset", default="small")
    ap.add_argument("-L", type=int, default=32)
    ap.add_argument("-k", type=int, default=48)
    ap.add_argument("--lr", default="1e-3")
    ap.add_argument("--batch-size", default="64")
    ap.add_argument("--extra", default="", help="more cf-train options, space separated")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    from cftools.core.calibration.objective import best_f1_threshold
    from cftools.core.metrics import link_scores
    from cftools.formats.artifacts import open_artifact
    from cftools.formats.features import write_features

    out = Path(a.out or tempfile.mkdtemp(prefix="cf-celeba-"))
    out.mkdir(parents=True, exist_ok=True)
    feats = np.load(DATA / "features.npy")
    labels = np.load(DATA / "labels.npy")
    parts = {"L": np.load(DATA / "labelled_idx.npy"), "U": np.load(DATA / "unlabelled_idx.npy")}
    for name, idx in parts.items():
        write_features(out / f"{name}.h5", feats[idx], labels=labels[idx])
        run("cftools.commands.knn", str(out / f"{name}.h5"), "-o", str(out / f"knn{name}.h5"),
            "-k", str(a.k), "-q")
        run("cftools.commands.seq", str(out / f"knn{name}.h5"), "--features", str(out / f"{name}.h5"),
            "-o", str(out / f"seq{name}.h5"), "-L", str(a.L), "-q")
    t0 = time.time()
    run("cftools.commands.train", str(out / "seqL.h5"), "--features", str(out / "L.h5"), "-o",
        str(out / "model.h5"), "--preset", a.preset, "-L", str(a.L), "--epochs", str(a.epochs),
        "--lr", a.lr, "--batch-size", a.batch_size, *a.extra.split())
    train_s = time.time() - t0
    for method in ("model", "cosine"):
        for part in ("L", "U"):
            # --method model: the model's links even where cf-train's guard chose cosine
            extra = ["--model", str(out / "model.h5")] if method == "model" else []
            extra += ["--method", method]
            run("cftools.commands.link", str(out / f"seq{part}.h5"), "--features",
                str(out / f"{part}.h5"), "-o", str(out / f"links_{method}_{part}.h5"), "-q", *extra)

    def scored(part, method):
        with open_artifact(out / f"links_{method}_{part}.h5", "links") as art, \
                open_artifact(out / f"seq{part}.h5", "sequences") as seq:
            p, t, m = art.read("probabilities"), seq.read("targets"), seq.read("mask")
            th = art.json_attr("thresholds", {})
        use = m & (t >= 0)
        use[:, 0] = False
        return p[use], t[use] == 1, th

    report = {}
    for method in ("model", "cosine"):
        pu, tu, th = scored("U", method)
        if method == "model":
            threshold = th["link"]
        else:
            pl, tl, _ = scored("L", method)
            threshold = best_f1_threshold(pl, tl)
        report[method] = link_scores(pu, tu, threshold)
        best = link_scores(pu, tu, best_f1_threshold(pu, tu))
        report[method]["oracle_f1_on_U"] = best["f1"]
    report["train_seconds"] = round(train_s, 1)
    report["args"] = vars(a)
    print(json.dumps(report, indent=1))
    for method in ("model", "cosine"):
        r = report[method]
        print(f"{method:7s} unlabelled half: ROC-AUC {r['roc_auc']:.4f}  "
              f"at calibrated t={r['threshold']:.4f}: P {r['precision']:.4f} R {r['recall']:.4f} "
              f"F1 {r['f1']:.4f}  (oracle F1 {r['oracle_f1_on_U']:.4f})",
              file=sys.stderr)


if __name__ == "__main__":
    main()
