"""The learned path on a standard split: kNN (k = L - 1 neighbours), sequences, cf-train's
train() with the given options, links of D_U, Infomap at the thresholds cf-train calibrated
(both link modes). Usage: learned.py DATA L SEED [EPOCHS] [key=value training options]."""
from common import *
import sys, json, time
import torch
from cftools.core.clusformer.grammar import build_sequences
from cftools.core.clusformer.model import make_config
from cftools.core.clusformer.sequences import SequenceData
from cftools.core.clusformer.training import TrainConfig, train
from cftools.core.clusformer.inference import predict

name, L, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 8
extra = dict(a.split("=") for a in sys.argv[5:])
(xl, yl), (xu, yu) = load(name)
il, sl = knn(xl, L); iu, su = knn(xu, L)
ol, ml, tl = build_sequences(il, sl, L, labels=yl)
ou, mu, _ = build_sequences(iu, su, L)
cfg = TrainConfig(epochs=epochs, lr=float(extra.pop("lr", 1e-3)), seed=seed,
                  identity_cap=None if extra.get("cap") == "none" else int(extra.pop("cap", 30)))
extra.pop("cap", None)
mc = make_config(extra.pop("preset", "small"), xl.shape[1], L,
                 **{k: (v == "1") for k, v in extra.items()})
t0 = time.time()
res = train(SequenceData(ol, ml, tl, yl), xl, mc, cfg, device=torch.device("cpu"), log=lambda m: None)
v = res.summary["validation"]
pu = predict(res.model, torch.from_numpy(xu), ou, mu)
out = {"data": name, "L": L, "seed": seed, "epochs": epochs, "kept": res.summary.get("kept_epoch"),
       "auc_model": v["model"]["roc_auc"], "auc_cos": v["cosine"]["roc_auc"],
       "train_s": round(time.time() - t0)}
from cftools.core.decoding.weights import link_weights
for mode in ("reciprocal", "directed"):
    key = "infomap" if mode == "reciprocal" else "directed_infomap"
    t = res.thresholds.get(key)
    pred = decode_infomap(ou, link_weights(ou, pu, mode), t)
    out[mode] = [round(x, 2) for x in score(pred, yu)] + [round(t, 4)]
print(json.dumps(out), flush=True)
