"""Training Clusformer on the sequences of the labelled set D_L.

- Loss: binary cross-entropy per position, over positions that are real neighbours (mask)
  with a known target (targets != -1). The centre's own position (always 1) is left out.
- Validation, held out BY IDENTITY: a share of the centres' identities is set aside. Their
  rows are never trained on, and in the training rows every position whose neighbour
  belongs to a held-out identity is masked, so no held-out face is ever seen in training.
  The held-out rows are then linked like unlabelled data (their neighbours may include
  training identities: realistic distractors) and scored on every valid position.
- Each epoch: link precision / recall / F1 (at 0.5) and ROC-AUC on the held-out rows;
  raw cosine to the centre is scored once on the same positions, for comparison.
- Thresholds: ``link`` = the probability that maximises F1 of link classification on the
  held-out rows. The decoders' thresholds (cf-merge) are calibrated on the links of the
  whole labelled set, linked as D_U will be (see ``decoding_thresholds``), under both
  link modes: reciprocal under the decoder's name, directed as ``directed_<name>``.
- AdamW, warm-up then linear (the paper) or cosine decay; mixed precision (autocast
  fp16 + GradScaler on GPUs without bf16, bf16 autocast on GPUs and CPUs with it).
- A checkpoint after every epoch (atomic), holding model, optimizer, scheduler, scaler,
  RNG states and epoch; resuming from it reaches the same weights as an uninterrupted run
  (on CPU, same seed): batches come from a permutation seeded by (seed, epoch) and dropout
  from a torch generator reseeded by (seed, epoch, rank).
- DDP under ``torchrun`` (WORLD_SIZE > 1): nccl on GPU, gloo on CPU. ``batch_size`` is the
  global batch: each step every rank takes its share of the same batch and the loss is
  normalised by the global count of positions, so the gradient equals a single process's.
  Only rank 0 validates and writes.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..artifacts import atomic_path
from ..errors import CfError
from .distributed import Dist, join_process_group
from .grammar import TARGET_UNKNOWN, centre_cosine
from .model import Clusformer, ClusformerConfig, unit_rows


@dataclass
class TrainConfig:
    epochs: int = 20
    lr: float = 1e-4
    weight_decay: float = 1e-4
    schedule: str = "linear"  # or "cosine"
    warmup: float = 0.05  # share of all steps spent warming up
    batch_size: int = 128  # global, over all ranks
    val_fraction: float = 0.2  # share of identities held out
    seed: int = 0
    grad_clip: float = 1.0
    bf16: bool | None = None  # None: where the hardware supports it
    stop_after_epoch: int | None = None  # testing: stop as if killed after this epoch
    calibration_points: int = 100_000  # most D_L points the decoders are calibrated on
    identity_cap: int | None = 30  # most centres one identity gives an epoch (None: all)


@dataclass
class SequenceData:
    """Sequences of D_L in memory, with each centre's label (for the identity split)."""

    order: np.ndarray  # (N, L) int64
    mask: np.ndarray  # (N, L) bool
    targets: np.ndarray  # (N, L) int8
    labels: np.ndarray  # (P,) int64: labels of all points, -1 unknown


# --------------------------------------------------------------------------- split


def split_rows(data: SequenceData, val_fraction: float, seed: int):
    """(train_rows, val_rows, val_identities): rows split by their centre's identity."""
    centre_lab = data.labels[data.order[:, 0]]
    ids = np.unique(centre_lab[centre_lab >= 0])
    if ids.size == 0:
        raise CfError("no centre has a known label: nothing to train on")
    n_val = int(round(val_fraction * ids.size))
    if val_fraction > 0 and ids.size >= 2:
        n_val = min(max(1, n_val), ids.size - 1)
    else:
        n_val = 0
    val_ids = np.sort(np.random.default_rng(seed).permutation(ids)[:n_val])
    known = centre_lab >= 0
    is_val = np.isin(centre_lab, val_ids)
    return np.flatnonzero(known & ~is_val), np.flatnonzero(known & is_val), val_ids


def capped_epoch_rows(centre_labels: np.ndarray, cap: int | None, rng) -> np.ndarray:
    """Positions (into ``centre_labels``) of the centres one epoch trains on: every identity
    gives at most ``cap`` of its centres, drawn afresh each epoch, so that a few identities
    of hundreds of images do not make up most of what the model sees (lfw-dev: one of
    2,867 identities holds 530 of 3,000-odd labelled faces). The count is the same every
    epoch: sum over identities of min(size, cap)."""
    n = centre_labels.size
    if cap is None or n == 0:
        return rng.permutation(n)
    order = rng.permutation(n)
    lab = centre_labels[order]
    by_id = np.argsort(lab, kind="stable")  # a random order within each identity
    sorted_lab = lab[by_id]
    first = np.r_[True, sorted_lab[1:] != sorted_lab[:-1]]
    rank = np.arange(n) - np.maximum.accumulate(np.where(first, np.arange(n), 0))
    keep = order[by_id[rank < cap]]
    return keep[rng.permutation(keep.size)]


def fit_cosine_logit(cosine: np.ndarray, truth: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """(a, b) of the logistic regression P(same) = sigmoid(a * cos + b), by Newton's method
    with a small ridge (links that are all one class, or separable, stay finite)."""
    x = np.asarray(cosine, dtype=np.float64)
    y = np.asarray(truth, dtype=np.float64)
    if x.size == 0 or y.min() == y.max():
        return 1.0, 0.0
    mu, sd = x.mean(), max(x.std(), 1e-6)  # standardised: Newton is well conditioned
    z = (x - mu) / sd
    w = np.zeros(2)
    X = np.stack([z, np.ones_like(z)], axis=1)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        grad = X.T @ (p - y) + 1e-3 * w
        hess = (X * (p * (1 - p))[:, None]).T @ X + 1e-3 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    a = w[0] / sd
    return float(a), float(w[1] - a * mu)


def training_view(data: SequenceData, rows: np.ndarray, val_ids: np.ndarray):
    """order/mask/targets of the training rows with held-out identities masked out."""
    order = data.order[rows]
    mask = data.mask[rows].copy()
    targets = data.targets[rows].copy()
    if val_ids.size:
        hidden = np.isin(data.labels[order], val_ids)
        hidden[:, 0] = False
        mask &= ~hidden
        targets[hidden] = TARGET_UNKNOWN
    return order, mask, targets


# --------------------------------------------------------------------------- metrics


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN when
    only one class is present."""
    from scipy.stats import rankdata

    truth = np.asarray(truth).astype(bool)
    pos, neg = int(truth.sum()), int((~truth).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[truth].sum() - pos * (pos + 1) / 2) / (pos * neg))


def link_scores(scores: np.ndarray, truth: np.ndarray, threshold: float) -> dict:
    """Precision, recall, F1 (harmonic) of 'score >= threshold' as a link, and ROC-AUC."""
    truth = np.asarray(truth).astype(bool)
    pred = np.asarray(scores) >= threshold
    tp = int((pred & truth).sum())
    p = tp / max(1, int(pred.sum()))
    r = tp / max(1, int(truth.sum()))
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f, "roc_auc": roc_auc(scores, truth),
            "threshold": float(threshold), "positives": int(truth.sum()), "pairs": int(truth.size)}


def best_f1_threshold(scores: np.ndarray, truth: np.ndarray) -> float:
    """The score threshold (links are score >= t) with the highest F1 on these pairs."""
    truth = np.asarray(truth).astype(bool)
    if truth.sum() == 0:
        return 0.5
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    s = np.asarray(scores, dtype=np.float64)[order]
    tp = np.cumsum(truth[order])
    k = np.arange(1, s.size + 1)
    last = np.r_[s[1:] != s[:-1], True]  # cut only between distinct scores
    f1 = np.where(last, 2 * tp / (k + truth.sum()), -1.0)
    i = int(np.argmax(f1))
    # midway to the next lower score, so the threshold is not glued to one sample
    return float(s[i] if i + 1 >= s.size else (s[i] + s[i + 1]) / 2)


# --------------------------------------------------------------------------- running the model


def autocast_dtype(device: torch.device, bf16: bool | None):
    """The autocast dtype to use, or None for plain float32."""
    if device.type == "cuda":
        if bf16 is False:
            return torch.float16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if bf16 is False:
        return None
    supported = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if bf16 and not supported:
        raise CfError("--bf16 asked for, but this CPU has no bfloat16 support")
    return torch.bfloat16 if supported else None


@torch.no_grad()
def predict(model, features_t, order, mask, *, batch_size=256, amp=None, progress=None):
    """Probabilities (n, L) float32 for in-memory sequences; masked positions get 0."""
    model.eval()
    device = features_t.device
    prepared = model.prepare(features_t)
    unit = unit_rows(features_t) if model.needs_cosine else None
    out = np.zeros(order.shape, dtype=np.float32)
    for start in range(0, order.shape[0], batch_size):
        o = torch.from_numpy(order[start:start + batch_size]).to(device)
        m = torch.from_numpy(mask[start:start + batch_size]).to(device)
        out[start:start + o.shape[0]] = run_batch(model, prepared, o, m, amp, unit)
        if progress is not None:
            progress.update(o.shape[0])
    return out


def run_batch(model, prepared, order_t, mask_t, amp, unit=None) -> np.ndarray:
    """Link probabilities of one batch, masked positions 0; ``prepared`` = model.prepare(features),
    ``unit`` = unit_rows(features), needed by a model with a cosine skip."""
    cosine = centre_cosine(unit[order_t]) if model.needs_cosine else None
    with torch.autocast(prepared.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        logits = model.infer(prepared, order_t, mask_t, cosine)
    prob = torch.sigmoid(logits.float()) * mask_t
    return prob.cpu().numpy()


def cosine_to_centre(features_t, order, mask, batch_size=4096) -> np.ndarray:
    out = np.zeros(order.shape, dtype=np.float32)
    for start in range(0, order.shape[0], batch_size):
        o = torch.from_numpy(order[start:start + batch_size]).to(features_t.device)
        m = torch.from_numpy(mask[start:start + batch_size]).to(features_t.device)
        out[start:start + o.shape[0]] = (centre_cosine(features_t[o]) * m).cpu().numpy()
    return out


def scored_positions(mask: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Positions that count in loss and metrics: real neighbours, known target, not the centre."""
    use = mask & (targets != TARGET_UNKNOWN)
    use[:, 0] = False
    return use


# --------------------------------------------------------------------------- schedule, checkpoints


def lr_lambda(total_steps: int, warmup_steps: int, schedule: str):
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(1.0, progress)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)
    return f


def rng_states() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "python": list(random.getstate()[1])}


def set_rng_states(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    name, keys, pos, has_gauss, cached = s["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate((3, tuple(s["python"]), None))


def resumable_settings(cfg: TrainConfig) -> dict:
    """The training options a resume must share with its checkpoint: all that shape the
    optimisation (not when to stop early, nor how many rows calibrate afterwards)."""
    return {k: v for k, v in asdict(cfg).items()
            if k not in ("stop_after_epoch", "calibration_points")}


def save_checkpoint(path, state: dict) -> None:
    """torch.save to a temporary name, then rename: a kill never leaves half a checkpoint.
    Only tensors, numbers, strings, lists and dicts: loadable with weights_only=True."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CfError("no such checkpoint", path) from None
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is one error
        raise CfError(f"not a readable cf-train checkpoint ({type(err).__name__})", path) from err


# --------------------------------------------------------------------------- distributed


def init_distributed(device_name: str) -> Dist:
    return join_process_group(device_name != "cpu" and torch.cuda.is_available())


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    model: Clusformer
    thresholds: dict
    summary: dict
    history: list = field(default_factory=list)


def train(data: SequenceData, features: np.ndarray, model_config: ClusformerConfig,
          cfg: TrainConfig, *, device: torch.device, dist: Dist | None = None,
          checkpoint: str | None = None, resume: str | None = None, log=print,
          progress=None) -> TrainResult | None:
    """Train, validate each epoch, calibrate thresholds. Returns None on ranks other than
    0 and when stopped early by ``stop_after_epoch``."""
    dist = dist or Dist()
    if cfg.schedule not in ("linear", "cosine"):
        raise CfError(f"unknown schedule {cfg.schedule!r} (linear or cosine)")
    train_rows, val_rows, val_ids = split_rows(data, cfg.val_fraction, cfg.seed)
    if train_rows.size == 0:
        raise CfError("no training rows left after holding out the validation identities")
    t_order, t_mask, t_targets = training_view(data, train_rows, val_ids)
    v_order, v_mask = data.order[val_rows], data.mask[val_rows]
    v_use = scored_positions(v_mask, data.targets[val_rows])
    v_truth = data.targets[val_rows][v_use] == 1
    if val_rows.size and (v_truth.all() or not v_truth.any()):
        # ROC-AUC, the kept epoch and the link threshold all need links of both kinds
        raise CfError(f"the held-out identities give {int(v_truth.sum())} same-identity and "
                      f"{int((~v_truth).sum())} other-identity links: validation is undefined "
                      f"(hold out more with --val-fraction, or longer sequences)")
    if not scored_positions(t_mask, t_targets).any():
        raise CfError("the training rows have no neighbour with a known target to learn from")

    torch.manual_seed(cfg.seed)
    model = Clusformer(model_config)
    if model_config.center:
        model.feature_mean.copy_(torch.from_numpy(features.mean(axis=0)))
    model.to(device)
    features_t = torch.from_numpy(features).to(device)
    if model_config.cosine_skip:  # start as calibrated cosine: the head adds nothing yet
        t_use = scored_positions(t_mask, t_targets)
        a, b = fit_cosine_logit(cosine_to_centre(features_t, t_order, t_mask)[t_use],
                                t_targets[t_use] == 1)
        with torch.no_grad():
            model.skip.copy_(torch.tensor([a, b]))
            model.head.weight.zero_()
            model.head.bias.zero_()
    amp = autocast_dtype(device, cfg.bf16)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    t_centre_labels = data.labels[t_order[:, 0]]
    rows_per_epoch = capped_epoch_rows(t_centre_labels, cfg.identity_cap,
                                       np.random.default_rng(0)).size
    n_batches = math.ceil(rows_per_epoch / cfg.batch_size)
    total = n_batches * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(total, int(cfg.warmup * total), cfg.schedule))
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    net = model
    if dist.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.local_rank] if device.type == "cuda" else None)

    start_epoch, history, best = 0, [], None
    if resume:
        ck = load_checkpoint(resume)
        if ck.get("model_config") != asdict(model_config) or ck.get("split") != val_ids.tolist():
            raise CfError("checkpoint was made with another model config or data", resume)
        saved = ck.get("train_config", {})
        changed = sorted(k for k, v in resumable_settings(cfg).items() if saved.get(k) != v)
        if changed:  # the weights would come from one run and the model record from another
            raise CfError("checkpoint was made with other training options ("
                          + ", ".join("--" + k.replace("_", "-") for k in changed)
                          + "); rerun without --resume or with the same options", resume)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        set_rng_states(ck["rng"])
        start_epoch, history = int(ck["epoch"]), list(ck["history"])
        best = ck.get("best")
        log(f"resumed from {resume} after epoch {start_epoch}")

    baseline = None
    if dist.main and val_rows.size:
        v_cosine = cosine_to_centre(features_t, v_order, v_mask)  # the guard reuses it
        cos = v_cosine[v_use]
        baseline = link_scores(cos, v_truth, best_f1_threshold(cos, v_truth))
        log(f"held out {val_ids.size} identities ({val_rows.size} rows, {v_truth.size} pairs); "
            f"raw cosine: ROC-AUC {baseline['roc_auc']:.4f}, best F1 {baseline['f1']:.4f} "
            f"at cos >= {baseline['threshold']:.4f}")

    def validate():
        probs = predict(model, features_t, v_order, v_mask, amp=amp)
        return probs, link_scores(probs[v_use], v_truth, 0.5)

    # The epoch kept is the one with the best held-out ROC-AUC, the untrained model (epoch
    # 0: calibrated cosine, when the model has the cosine skip) included.
    if best is None and dist.main and val_rows.size:
        _, s0 = validate()
        best = {"epoch": 0, "roc_auc": s0["roc_auc"],
                "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        log(f"epoch 0 (untrained): val ROC-AUC {s0['roc_auc']:.4f}")

    to = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    t_order_t, t_mask_t, t_targets_t = to(t_order), to(t_mask), to(t_targets)
    val_probs = None
    for epoch in range(start_epoch, cfg.epochs):
        net.train()
        torch.manual_seed(cfg.seed * 1_000_003 + epoch * 1009 + dist.rank)  # dropout
        perm = capped_epoch_rows(t_centre_labels, cfg.identity_cap,
                                 np.random.default_rng([cfg.seed, epoch]))
        t0, loss_sum, loss_n = time.time(), 0.0, 0
        bar = progress(total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch") \
            if progress and dist.main else None
        for b in range(n_batches):
            batch = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            if batch.size < dist.world:
                continue  # too small to share out; skipped by every rank alike
            local = torch.from_numpy(batch[dist.rank::dist.world]).to(device)
            o, m, t = t_order_t[local], t_mask_t[local], t_targets_t[local]
            use = m & (t != TARGET_UNKNOWN)
            use[:, 0] = False
            count = use.sum().float()
            if dist.world > 1:
                torch.distributed.all_reduce(count)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits = net(features_t[o], m)
            bce = F.binary_cross_entropy_with_logits(logits.float(), t.clamp(min=0).float(),
                                                     reduction="none")
            loss = (bce * use).sum() / count.clamp(min=1) * dist.world  # DDP averages ranks
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            loss_sum += float(loss.detach()) / dist.world
            loss_n += 1
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        record = {"epoch": epoch + 1, "loss": loss_sum / max(1, loss_n),
                  "lr": sched.get_last_lr()[0], "seconds": round(time.time() - t0, 2)}
        if dist.main:
            if val_rows.size:
                val_probs, s = validate()
                if best is not None and s["roc_auc"] > best["roc_auc"]:
                    best = {"epoch": epoch + 1, "roc_auc": s["roc_auc"],
                            "model": {k: v.detach().cpu().clone()
                                      for k, v in model.state_dict().items()}}
                record.update({f"val_{k}": v for k, v in s.items()
                               if k in ("precision", "recall", "f1", "roc_auc")})
                log(f"epoch {epoch + 1}/{cfg.epochs}: loss {record['loss']:.4f}, val P "
                    f"{s['precision']:.4f} R {s['recall']:.4f} F1 {s['f1']:.4f} ROC-AUC "
                    f"{s['roc_auc']:.4f} ({record['seconds']} s)")
            else:
                log(f"epoch {epoch + 1}/{cfg.epochs}: loss {record['loss']:.4f}")
            history.append(record)
            if checkpoint:
                save_checkpoint(checkpoint, {
                    "epoch": epoch + 1, "model": model.state_dict(),
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "scaler": scaler.state_dict(), "rng": rng_states(), "history": history,
                    "model_config": asdict(model_config), "split": val_ids.tolist(),
                    "train_config": resumable_settings(cfg), "best": best})
        if dist.world > 1:
            torch.distributed.barrier()
        if cfg.stop_after_epoch is not None and epoch + 1 >= cfg.stop_after_epoch:
            return None
    if not dist.main:
        return None

    thresholds, summary = {"link": 0.5}, {"epochs": cfg.epochs, "train_rows": int(train_rows.size),
                                          "val_rows": int(val_rows.size),
                                          "val_identities": int(val_ids.size),
                                          "train_config": asdict(cfg), "world_size": dist.world}
    if best is not None and best["epoch"] != (history[-1]["epoch"] if history else 0):
        model.load_state_dict(best["model"])
        val_probs = None
    if best is not None:
        summary["kept_epoch"] = best["epoch"]
        log(f"kept epoch {best['epoch']}: the best held-out ROC-AUC ({best['roc_auc']:.4f})")
    if val_rows.size:
        if val_probs is None:  # resumed after the last epoch, or an earlier epoch kept
            val_probs = predict(model, features_t, v_order, v_mask, amp=amp)
        p = val_probs[v_use]
        thresholds["link"] = best_f1_threshold(p, v_truth)
        final = link_scores(p, v_truth, thresholds["link"])
        summary["validation"] = {"model": final, "cosine": baseline}
        log(f"calibrated link threshold {thresholds['link']:.4f}: val P {final['precision']:.4f} "
            f"R {final['recall']:.4f} F1 {final['f1']:.4f} ROC-AUC {final['roc_auc']:.4f} "
            f"(raw cosine ROC-AUC {baseline['roc_auc']:.4f}, best F1 {baseline['f1']:.4f})")
    else:
        log("no validation identities: link threshold left at 0.5 (uncalibrated)")
    model_t, cosine_t = decoding_thresholds(data, model, features_t, amp, log,
                                            max_points=cfg.calibration_points, seed=cfg.seed)
    thresholds.update(model_t)
    summary["cosine_thresholds"] = cosine_t
    if val_rows.size and model_t and cosine_t:
        from .selection import guard

        verdict = guard(v_order, v_mask, val_probs, v_cosine, data.labels, thresholds, cosine_t,
                        seed=cfg.seed)
        summary["guard"] = verdict
        log("guard on the held-out identities ({decoder}, {points} points): model links "
            "F_P {mp:.4f} F_B {mb:.4f}, cosine links F_P {cp:.4f} F_B {cb:.4f}; the model "
            "leads on {ahead:.0%} of {n} random halves of these identities: {w} wins".format(
                decoder=verdict["decoder"], points=verdict["points"],
                mp=verdict["model"]["pairwise_f"], mb=verdict["model"]["bcubed_f"],
                cp=verdict["cosine"]["pairwise_f"], cb=verdict["cosine"]["bcubed_f"],
                ahead=verdict["model_ahead"], n=verdict["resamples"], w=verdict["winner"]))
    summary["history"] = history
    return TrainResult(model.cpu().eval(), thresholds, summary, history)


def decoding_thresholds(data: SequenceData, model, features_t, amp, log, *,
                        max_points: int = 100_000, seed: int = 0) -> tuple[dict, dict]:
    """(model thresholds, cosine thresholds) of the decoders (cf-merge), each calibrated on
    the whole labelled set linked as D_U will be (every row, neighbours of every
    identity): once by the trained model, once by raw cosine (what cf-link's cosine links
    carry). Both link modes; ``link_mode_<decoder>`` says which calibrated better.

    Why not the held-out rows alone: linked among themselves they hold only val_fraction
    of the identities, so few look-alikes, and the thresholds chosen there are far too lax
    for a real unlabelled set (CelebA: Infomap 0.13 there against 0.74 on all of D_L,
    pairwise F 93.7 against 94.3 on D_U). The density of identities matters more than the
    model's optimism on its own training identities. Above ``max_points`` rows, a random
    subset of identities holding up to that many is used."""
    from .decoding import DECODERS, LINK_MODES
    from .selection import COSINE_MODES, calibrate_links, calibration_rows, local_links

    centre_labels = data.labels[data.order[:, 0]]
    rows = calibration_rows(centre_labels, max_points, seed)
    if rows.size < centre_labels.size:
        log(f"calibrating the decoders on {rows.size} of {centre_labels.size} rows "
            f"(--calibration-points {max_points})")
    order, mask = data.order[rows], data.mask[rows]
    found = []
    for probs, modes in ((predict(model, features_t, order, mask, amp=amp), LINK_MODES),
                         (cosine_to_centre(features_t, order, mask), COSINE_MODES)):
        idx, w = local_links(order, mask, probs, data.labels.shape[0])
        try:
            found.append(calibrate_links(idx, w, centre_labels[rows], DECODERS, seed,
                                         modes=modes)[0])
        except Exception as err:  # noqa: BLE001 - the model is still good without them
            log(f"warning: decoder threshold calibration failed: {type(err).__name__}: {err}")
            found.append({})
    model_t, cosine_t = found
    for name, t in (("model", model_t), ("cosine", cosine_t)):
        if t:
            log(f"decoder thresholds ({name} links): " + ", ".join(
                f"{k} {t[k]:.4g} ({t['link_mode_' + k]})" if t.get("link_mode_" + k) == "reciprocal"
                else f"{k} {t['directed_' + k]:.4g} (directed)"
                for k in ("peaks", "intimacy", "infomap", "components") if "link_mode_" + k in t))
    return model_t, cosine_t
