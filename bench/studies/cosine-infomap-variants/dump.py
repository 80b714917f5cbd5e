"""Train as the round does (round_core.py) and save the model's and cosine's links on all
of D_L and D_U to an .npz, so link-combination rules can be tried without retraining.
Usage: dump.py DATA SEED OUT.npz [EPOCHS]"""
from common import *
import sys, json
import torch
torch.set_num_threads(1)
from cftools.core.clusformer.grammar import build_sequences
from cftools.core.clusformer.model import make_config
from cftools.core.calibration.length import choose_length
from cftools.core.clusformer.sequences import SequenceData, split_rows
from cftools.core.clusformer.training import TrainConfig, train
from cftools.core.clusformer.inference import predict, cosine_to_centre

name, seed, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 8
K = 81
(xl, yl), (xu, yu) = load(name)
il, sl = knn(xl, K); iu, su = knn(xu, K)
ol, ml, tl = build_sequences(il, sl, K, labels=yl)
ou, mu, _ = build_sequences(iu, su, K)
cos_l = cosine_to_centre(torch.from_numpy(xl), ol, ml)
L = choose_length(ol, ml, cos_l, yl, seed=seed, log=lambda m: None)["length"]
ol, ml, tl, ou, mu = (a[:, :L].copy() for a in (ol, ml, tl, ou, mu))
data = SequenceData(ol, ml, tl, yl)
cfg = TrainConfig(epochs=epochs, lr=1e-3, seed=seed)
res = train(data, xl, make_config("small", xl.shape[1], L), cfg, device=torch.device("cpu"),
            log=lambda m: print(m, flush=True))
_, val_rows, val_ids = split_rows(data, cfg.val_fraction, cfg.seed)
np.savez(out, L=L, ol=ol, ml=ml, yl=yl, ou=ou, mu=mu, yu=yu, val_rows=val_rows,
         pl=predict(res.model, torch.from_numpy(xl), ol, ml), cl=cosine_to_centre(torch.from_numpy(xl), ol, ml),
         pu=predict(res.model, torch.from_numpy(xu), ou, mu), cu=cosine_to_centre(torch.from_numpy(xu), ou, mu),
         thresholds=json.dumps(res.thresholds), cos_thresholds=json.dumps(res.summary["cosine_thresholds"]),
         guard=json.dumps(res.summary.get("guard")))
print("saved", out, "L", L, flush=True)
