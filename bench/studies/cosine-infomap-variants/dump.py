"""Train as the round does (round_core.py) and save the model's and cosine's links on all
of D_L and D_U to an .npz, so link-combination rules (combine.py) can be tried without
retraining.

    python bench/studies/cosine-infomap-variants/dump.py DATA SEED OUT.npz [EPOCHS]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from splits import load

from cftools.core.calibration.length import choose_length
from cftools.core.clusformer.grammar import build_sequences
from cftools.core.clusformer.inference import cosine_to_centre, predict
from cftools.core.clusformer.model import make_config
from cftools.core.clusformer.sequences import SequenceData, split_rows
from cftools.core.clusformer.training import TrainConfig, train
from cftools.core.neighbours.index import knn

K = 81


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="a set of ../shared/data, e.g. celeba-dlib128")
    ap.add_argument("seed", type=int)
    ap.add_argument("out", help="the .npz to write")
    ap.add_argument("epochs", type=int, nargs="?", default=8)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    (xl, yl), (xu, yu) = load(a.data)
    il, sl = knn(xl, K)
    iu, su = knn(xu, K)
    ol, ml, tl = build_sequences(il, sl, K, labels=yl)
    ou, mu, _ = build_sequences(iu, su, K)
    cos_l = cosine_to_centre(torch.from_numpy(xl), ol, ml)
    length = choose_length(ol, ml, cos_l, yl, seed=a.seed, log=lambda m: None)["length"]
    ol, ml, tl, ou, mu = (v[:, :length].copy() for v in (ol, ml, tl, ou, mu))
    data = SequenceData(ol, ml, tl, yl)
    cfg = TrainConfig(epochs=a.epochs, lr=1e-3, seed=a.seed)
    res = train(data, xl, make_config("small", xl.shape[1], length), cfg, device=torch.device("cpu"),
                log=lambda m: print(m, flush=True))
    _, val_rows, _ = split_rows(data, cfg.val_fraction, cfg.seed)
    tx, ux = torch.from_numpy(xl), torch.from_numpy(xu)
    np.savez(a.out, L=length, ol=ol, ml=ml, yl=yl, ou=ou, mu=mu, yu=yu, val_rows=val_rows,
             pl=predict(res.model, tx, ol, ml), cl=cosine_to_centre(tx, ol, ml),
             pu=predict(res.model, ux, ou, mu), cu=cosine_to_centre(ux, ou, mu),
             thresholds=json.dumps(res.thresholds),
             cos_thresholds=json.dumps(res.summary["cosine_thresholds"]),
             guard=json.dumps(res.summary.get("guard")))
    print("saved", a.out, "L", length, flush=True)


if __name__ == "__main__":
    main()
