"""The default round's choices in one process (no files): kNN at K, -L auto, cf-train's
train(), then D_U clustered by Infomap over the model's links and over cosine links, each
at its own calibrated threshold and link mode, beside the guard's held-out verdict; one
JSON line.

    python bench/studies/cosine-infomap-variants/round_core.py DATA SEED [EPOCHS] [key=value ...]
    # key=value: K=, L= (0: auto), lr=, and model flags (name=1 or 0)
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from splits import load, score

from cftools.core.calibration.length import choose_length
from cftools.core.calibration.thresholds import decode_with
from cftools.core.clusformer.grammar import build_sequences
from cftools.core.clusformer.inference import cosine_to_centre, predict
from cftools.core.clusformer.model import make_config
from cftools.core.clusformer.sequences import SequenceData
from cftools.core.clusformer.training import TrainConfig, train
from cftools.core.neighbours.index import knn
from cftools.formats.thresholds import link_mode_key


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="a set of ../shared/data, e.g. celeba-dlib128")
    ap.add_argument("seed", type=int)
    ap.add_argument("rest", nargs="*", metavar="[EPOCHS] [key=value]",
                    help="epochs (default 8), then options")
    a = ap.parse_args(argv)
    name, seed = a.data, a.seed
    rest = list(a.rest)
    epochs = int(rest.pop(0)) if rest and "=" not in rest[0] else 8
    extra = dict(kv.split("=") for kv in rest)
    k = int(extra.pop("K", 81))
    (xl, yl), (xu, yu) = load(name)
    il, sl = knn(xl, k)
    iu, su = knn(xu, k)
    ol, ml, tl = build_sequences(il, sl, k, labels=yl)
    ou, mu, _ = build_sequences(iu, su, k)
    t0 = time.time()
    cos_l = cosine_to_centre(torch.from_numpy(xl), ol, ml)
    length = int(extra.pop("L", 0)) or choose_length(ol, ml, cos_l, yl, seed=seed,
                                                     log=lambda m: None)["length"]
    ol, ml, tl, ou, mu = (v[:, :length].copy() for v in (ol, ml, tl, ou, mu))
    cfg = TrainConfig(epochs=epochs, lr=float(extra.pop("lr", 1e-3)), seed=seed)
    mc = make_config("small", xl.shape[1], length, **{key: (v == "1") for key, v in extra.items()})
    res = train(SequenceData(ol, ml, tl, yl), xl, mc, cfg, device=torch.device("cpu"), log=lambda m: None)
    v = res.summary["validation"]
    pu = predict(res.model, torch.from_numpy(xu), ou, mu)
    cu = cosine_to_centre(torch.from_numpy(xu), ou, mu)
    g = res.summary.get("guard", {})
    out = {"data": name, "seed": seed, "L": length, "epochs": epochs, "kept": res.summary.get("kept_epoch"),
           "auc_model": round(v["model"]["roc_auc"], 4), "auc_cos": round(v["cosine"]["roc_auc"], 4),
           "guard": g.get("winner"), "guard_model": g.get("model"), "guard_cos": g.get("cosine"),
           "s": round(time.time() - t0)}
    for tag, probs, thr in (("model", pu, res.thresholds), ("cosine", cu, res.summary["cosine_thresholds"])):
        pred = decode_with(ou, np.where(mu, probs, 0).astype(np.float32), thr, "infomap", seed=seed)
        out[tag] = [round(x, 2) for x in score(pred, yu)] + [thr.get(link_mode_key("infomap"))]
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
