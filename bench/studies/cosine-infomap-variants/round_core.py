"""The default round's choices in one process (no files): kNN at K, -L auto, cf-train's
train(), then D_U clustered by Infomap over the model's links and over cosine links, each
at its own calibrated threshold and link mode, beside the guard's held-out verdict.
Usage: round_core.py DATA SEED [EPOCHS] [key=value model options]."""
from common import *
import sys, json, time
import torch
from cftools.core.clusformer.grammar import build_sequences
from cftools.core.clusformer.model import make_config
from cftools.core.calibration.length import choose_length
from cftools.core.calibration.thresholds import decode_with
from cftools.core.clusformer.sequences import SequenceData
from cftools.core.clusformer.training import TrainConfig, train
from cftools.core.clusformer.inference import predict, cosine_to_centre

name, seed = sys.argv[1], int(sys.argv[2])
epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 8
extra = dict(a.split("=") for a in sys.argv[4:])
K = int(extra.pop("K", 81))
(xl, yl), (xu, yu) = load(name)
il, sl = knn(xl, K); iu, su = knn(xu, K)
ol, ml, tl = build_sequences(il, sl, K, labels=yl)
ou, mu, _ = build_sequences(iu, su, K)
t0 = time.time()
cos_l = cosine_to_centre(torch.from_numpy(xl), ol, ml)
L = int(extra.pop("L", 0)) or choose_length(ol, ml, cos_l, yl, seed=seed, log=lambda m: None)["length"]
ol, ml, tl, ou, mu = (a[:, :L].copy() for a in (ol, ml, tl, ou, mu))
cfg = TrainConfig(epochs=epochs, lr=float(extra.pop("lr", 1e-3)), seed=seed)
mc = make_config("small", xl.shape[1], L, **{k: (v == "1") for k, v in extra.items()})
res = train(SequenceData(ol, ml, tl, yl), xl, mc, cfg, device=torch.device("cpu"), log=lambda m: None)
v = res.summary["validation"]
pu = predict(res.model, torch.from_numpy(xu), ou, mu)
cu = cosine_to_centre(torch.from_numpy(xu), ou, mu)
g = res.summary.get("guard", {})
out = {"data": name, "seed": seed, "L": L, "epochs": epochs, "kept": res.summary.get("kept_epoch"),
       "auc_model": round(v["model"]["roc_auc"], 4), "auc_cos": round(v["cosine"]["roc_auc"], 4),
       "guard": g.get("winner"), "guard_model": g.get("model"), "guard_cos": g.get("cosine"),
       "s": round(time.time() - t0)}
for tag, probs, thr in (("model", pu, res.thresholds), ("cosine", cu, res.summary["cosine_thresholds"])):
    pred = decode_with(ou, np.where(mu, probs, 0).astype(np.float32), thr, seed=seed)
    out[tag] = [round(x, 2) for x in score(pred, yu)] + [thr.get("link_mode_infomap")]
print(json.dumps(out), flush=True)
