"""The learned path on a standard split: kNN (k = L - 1 neighbours), sequences, cf-train's
train() with the given options, links of D_U, Infomap at the thresholds cf-train calibrated
(both link modes); one JSON line.

    python bench/studies/cosine-infomap-variants/learned.py DATA L SEED [EPOCHS] [key=value ...]
    # key=value: lr=, cap= (identity cap, or none), preset=, and model flags (name=1 or 0)
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from splits import load, score

from cftools.core.clusformer.grammar import build_sequences
from cftools.core.clusformer.inference import predict
from cftools.core.clusformer.model import make_config
from cftools.core.clusformer.sequences import SequenceData
from cftools.core.clusformer.training import TrainConfig, train
from cftools.core.decoding.decoders import decode_infomap
from cftools.core.decoding.weights import link_weights
from cftools.core.neighbours.index import knn
from cftools.formats.thresholds import threshold_key


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="a set of ../shared/data, e.g. celeba-dlib128")
    ap.add_argument("length", metavar="L", type=int)
    ap.add_argument("seed", type=int)
    ap.add_argument("rest", nargs="*", metavar="[EPOCHS] [key=value]",
                    help="epochs (default 8), then training and model options")
    a = ap.parse_args(argv)
    name, length, seed = a.data, a.length, a.seed
    rest = list(a.rest)
    epochs = int(rest.pop(0)) if rest and "=" not in rest[0] else 8
    extra = dict(kv.split("=") for kv in rest)
    (xl, yl), (xu, yu) = load(name)
    il, sl = knn(xl, length)
    iu, su = knn(xu, length)
    ol, ml, tl = build_sequences(il, sl, length, labels=yl)
    ou, mu, _ = build_sequences(iu, su, length)
    cfg = TrainConfig(epochs=epochs, lr=float(extra.pop("lr", 1e-3)), seed=seed,
                      identity_cap=None if extra.get("cap") == "none" else int(extra.pop("cap", 30)))
    extra.pop("cap", None)
    mc = make_config(extra.pop("preset", "small"), xl.shape[1], length,
                     **{k: (v == "1") for k, v in extra.items()})
    t0 = time.time()
    res = train(SequenceData(ol, ml, tl, yl), xl, mc, cfg, device=torch.device("cpu"), log=lambda m: None)
    v = res.summary["validation"]
    pu = predict(res.model, torch.from_numpy(xu), ou, mu)
    out = {"data": name, "L": length, "seed": seed, "epochs": epochs, "kept": res.summary.get("kept_epoch"),
           "auc_model": v["model"]["roc_auc"], "auc_cos": v["cosine"]["roc_auc"],
           "train_s": round(time.time() - t0)}
    for mode in ("reciprocal", "directed"):
        t = res.thresholds.get(threshold_key("infomap", mode))
        pred = decode_infomap(ou, link_weights(ou, pu, mode), t)
        out[mode] = [round(x, 2) for x in score(pred, yu)] + [round(t, 4)]
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
