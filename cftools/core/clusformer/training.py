"""Training Clusformer on the sequences of the labelled set D_L.

- Loss: binary cross-entropy per position, over positions that are real neighbours (mask)
  with a known target (targets != -1). The centre's own position (always 1) is left out.
- Validation, held out BY IDENTITY: a share of the centres' identities is set aside. Their
  rows are never trained on, and in the training rows every position whose neighbour
  belongs to a held-out identity is masked, so no held-out face is ever seen in training.
  The held-out rows are then linked like unlabelled data (their neighbours may include
  training identities: realistic distractors) and scored on every valid position.
- Each epoch reads at most ``epoch_budget`` centres, stratified by identity, those cosine
  decides wrongly or nearly first (sequences.hard_rows): its cost does not grow with D_L.
  After it: link precision / recall / F1 (at 0.5) and ROC-AUC on the held-out rows, or
  on whole held-out identities holding up to ``epoch_val_rows`` of them (raw cosine
  scored once on all); training stops once that ROC-AUC has not risen for ``patience``
  epochs, half the epochs done (sequences.plateaued). The kept epoch's link threshold
  and gates read every held-out row.
- Thresholds: ``link`` = the probability that maximises F1 of link classification on the
  held-out rows. The decoders' thresholds (cf-merge) are calibrated on the links of the
  whole labelled set, linked as D_U will be (calibration.thresholds.decoder_thresholds),
  model links under both link modes, cosine links directed. Then each decoder's gate
  (gate.py): how far from its threshold the model changed held-out decisions.
- AdamW, warm-up then linear (the paper) or cosine decay; mixed precision (autocast
  fp16 + GradScaler on GPUs without bf16, bf16 autocast on GPUs and CPUs with it).
- A checkpoint after every epoch (checkpoint.py); resuming from it reaches the same
  weights as an uninterrupted run (on CPU, same seed): batches come from a permutation
  seeded by (seed, epoch) and dropout from a torch generator reseeded by (seed, epoch,
  rank).
- DDP under ``torchrun`` (WORLD_SIZE > 1): nccl on GPU, gloo on CPU. ``batch_size`` is the
  global batch: each step every rank takes its share of the same batch and the loss is
  normalised by the global count of positions, so the gradient equals a single process's
  (the loss recorded sums the ranks' shares). Only rank 0 validates and writes.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import CfError
from ..calibration.objective import IDENTITY_CAP, best_f1_threshold
from ..calibration.thresholds import calibration_rows
from ..decoding.decoders import DECODERS
from ..metrics import link_scores
from ..runtime.distributed import Dist
from ..runtime.precision import autocast_dtype
from .calibrate import calibrate_decoders
from .checkpoint import (
    check_resumable,
    load_checkpoint,
    resumable_settings,
    rng_states,
    save_checkpoint,
    set_rng_states,
)
from .gate import fit_cosine_logit, held_out_gates
from .grammar import TARGET_UNKNOWN
from .inference import cosine_to_centre, predict
from .model import Clusformer, ClusformerConfig
from .sequences import (
    AUC_RISE,
    EPOCH_BUDGET,
    EPOCH_VAL_ROWS,
    PATIENCE,
    SequenceData,
    capped_epoch_rows,
    hard_rows,
    plateaued,
    scored_positions,
    split_rows,
    training_view,
)


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
    identity_cap: int | None = IDENTITY_CAP  # most centres an identity gives an epoch (None: all)
    epoch_budget: int | None = EPOCH_BUDGET  # most centres an epoch reads (None: all)
    patience: int | None = PATIENCE  # epochs without a better held-out AUC before stopping
    hard_first: bool = True  # a budgeted epoch reads the rows cosine gets wrong or nearly first
    epoch_val_rows: int | None = EPOCH_VAL_ROWS  # most held-out rows an epoch is scored on
    decoders: tuple[str, ...] = DECODERS  # the decoders whose thresholds are calibrated


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


@dataclass
class TrainResult:
    model: Clusformer
    thresholds: dict
    summary: dict
    history: list = field(default_factory=list)
    # (rows, the kept model's probabilities on them) from calibration, for the jury
    calibration_probs: tuple[np.ndarray, np.ndarray] | None = None


class _Run:
    """One training run, phase by phase: the identity split, the model (started as
    calibrated cosine), the optimiser, an optional resume, then epochs, then the kept
    epoch's thresholds (the guard is cf-train's, over every length it trains). Rank 0
    validates and writes."""

    def __init__(self, data: SequenceData, features: np.ndarray, model_config: ClusformerConfig,
                 cfg: TrainConfig, device: torch.device, dist: Dist, log, progress):
        if cfg.schedule not in ("linear", "cosine"):
            raise CfError(f"unknown schedule {cfg.schedule!r} (linear or cosine)")
        self.data, self.cfg, self.device, self.dist = data, cfg, device, dist
        self.model_config, self.log, self.progress = model_config, log, progress
        self._split()
        self._build_model(features)
        self._build_optimiser()
        self.start_epoch = 0
        self.history: list[dict] = []
        self.best: dict | None = None  # the kept epoch: {epoch, roc_auc, model state}
        self.val_probs: np.ndarray | None = None
        self.baseline: dict | None = None  # raw cosine's held-out link scores
        self.stopped_after: int | None = None  # the epoch a plateau stopped training after
        self.auc0: float | None = None  # the untrained model's held-out ROC-AUC

    # ---- phases of set-up

    def _split(self) -> None:
        data, cfg = self.data, self.cfg
        train_rows, val_rows, val_ids = split_rows(data, cfg.val_fraction, cfg.seed)
        if train_rows.size == 0:
            raise CfError("no training rows left after holding out the validation identities")
        self.train_rows, self.val_rows, self.val_ids = train_rows, val_rows, val_ids
        self.t_order, self.t_mask, self.t_targets = training_view(data, train_rows, val_ids)
        self.v_order, self.v_mask = data.order[val_rows], data.mask[val_rows]
        self.v_use = scored_positions(self.v_mask, data.targets[val_rows])
        self.v_truth = data.targets[val_rows][self.v_use] == 1
        if val_rows.size and (self.v_truth.all() or not self.v_truth.any()):
            # ROC-AUC, the kept epoch and the link threshold all need links of both kinds
            raise CfError(f"the held-out identities give {int(self.v_truth.sum())} same-identity "
                          f"and {int((~self.v_truth).sum())} other-identity links: validation is "
                          f"undefined (hold out more with --val-fraction, or longer sequences)")
        if not scored_positions(self.t_mask, self.t_targets).any():
            raise CfError("the training rows have no neighbour with a known target to learn from")
        self._epoch_sample()

    def _epoch_sample(self) -> None:
        """The held-out rows each epoch is scored on (positions into val_rows): whole
        identities up to cfg.epoch_val_rows rows (an epoch's ROC-AUC needs no more, and
        linking them all each epoch cost more than a tenth of training), all where the
        sample would lack links of either kind."""
        cfg, n = self.cfg, self.val_rows.size
        self.e_rows, self.e_use, self.e_truth = np.arange(n), self.v_use, self.v_truth
        if cfg.epoch_val_rows and n > cfg.epoch_val_rows:
            rows = calibration_rows(self.data.labels[self.v_order[:, 0]], cfg.epoch_val_rows,
                                    cfg.seed)
            use = self.v_use[rows]
            truth = self.data.targets[self.val_rows[rows]][use] == 1
            if truth.any() and not truth.all():
                self.e_rows, self.e_use, self.e_truth = rows, use, truth
        self.e_all = self.e_rows.size == n

    def _build_model(self, features: np.ndarray) -> None:
        cfg, device = self.cfg, self.device
        torch.manual_seed(cfg.seed)
        model = Clusformer(self.model_config)
        if self.model_config.center:
            model.feature_mean.copy_(torch.from_numpy(features.mean(axis=0)))
        model.to(device)
        self.features_t = torch.from_numpy(features).to(device)
        if self.model_config.cosine_skip:  # start as calibrated cosine: the head adds nothing
            t_use = scored_positions(self.t_mask, self.t_targets)
            a, b = fit_cosine_logit(
                cosine_to_centre(self.features_t, self.t_order, self.t_mask)[t_use],
                self.t_targets[t_use] == 1)
            with torch.no_grad():
                model.skip.copy_(torch.tensor([a, b]))
                model.head.weight.zero_()
                model.head.bias.zero_()
        self.model = model

    def _build_optimiser(self) -> None:
        cfg, device, dist = self.cfg, self.device, self.dist
        self.amp = autocast_dtype(device, cfg.bf16)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr,
                                     weight_decay=cfg.weight_decay)
        self.t_centre_labels = self.data.labels[self.t_order[:, 0]]
        self.t_hard = self._hard_rows() if cfg.hard_first and cfg.epoch_budget else None
        rows_per_epoch = capped_epoch_rows(self.t_centre_labels, cfg.identity_cap,
                                           np.random.default_rng(0), cfg.epoch_budget).size
        self.n_batches = math.ceil(rows_per_epoch / cfg.batch_size)
        total = self.n_batches * cfg.epochs
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lr_lambda(total, int(cfg.warmup * total), cfg.schedule))
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp is torch.float16)
        self.net: torch.nn.Module = self.model
        if dist.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[dist.local_rank] if device.type == "cuda" else None)

    def _hard_rows(self) -> np.ndarray:
        """The training rows cosine decides wrongly or nearly (sequences.hard_rows)."""
        hard = hard_rows(cosine_to_centre(self.features_t, self.t_order, self.t_mask),
                         scored_positions(self.t_mask, self.t_targets), self.t_targets == 1)
        self.log(f"{int(hard.sum())} of {hard.size} training rows hold a pair cosine decides "
                 f"wrongly or nearly: budgeted epochs read them first")
        return hard

    def resume(self, path) -> None:
        ck = load_checkpoint(path)
        check_resumable(ck, asdict(self.model_config), self.val_ids.tolist(), self.cfg, path)
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck["scaler"])
        set_rng_states(ck["rng"])
        self.start_epoch, self.history = int(ck["epoch"]), list(ck["history"])
        self.best = ck.get("best")
        self.auc0 = ck.get("epoch0_auc")
        self.log(f"resumed from {path} after epoch {self.start_epoch}")

    # ---- validation

    def validate(self):
        """(the epoch's held-out rows' probabilities, their link scores at 0.5)."""
        rows = self.e_rows
        probs = predict(self.model, self.features_t, self.v_order[rows], self.v_mask[rows],
                        amp=self.amp)
        return probs, link_scores(probs[self.e_use], self.e_truth, 0.5)

    def _sampled(self) -> str:
        return "" if self.e_all else f"; each epoch scored on {self.e_rows.size} of the rows"

    def _snapshot(self, epoch: int, roc_auc: float) -> dict:
        return {"epoch": epoch, "roc_auc": roc_auc,
                "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}}

    def score_cosine_and_epoch_zero(self) -> None:
        """Raw cosine scored once on the held-out pairs; the epoch kept is the one with the
        best held-out ROC-AUC, the untrained model (epoch 0: calibrated cosine, when the
        model has the cosine skip) included."""
        if not (self.dist.main and self.val_rows.size):
            return
        cos = cosine_to_centre(self.features_t, self.v_order, self.v_mask)[self.v_use]
        self.baseline = link_scores(cos, self.v_truth, best_f1_threshold(cos, self.v_truth))
        self.log(f"held out {self.val_ids.size} identities ({self.val_rows.size} rows, "
                 f"{self.v_truth.size} pairs{self._sampled()}); raw cosine: ROC-AUC "
                 f"{self.baseline['roc_auc']:.4f}, best F1 {self.baseline['f1']:.4f} at cos >= "
                 f"{self.baseline['threshold']:.4f}")
        if self.best is None:
            _, s0 = self.validate()
            self.best = self._snapshot(0, s0["roc_auc"])
            self.auc0 = s0["roc_auc"]
            self.log(f"epoch 0 (untrained): val ROC-AUC {s0['roc_auc']:.4f}")

    # ---- epochs

    def epochs(self, checkpoint) -> bool:
        """Train from start_epoch on, until cfg.epochs or a plateau of the held-out AUC
        (sequences.plateaued); False when stopped early by stop_after_epoch."""
        cfg, dist, device = self.cfg, self.dist, self.device
        tensors = tuple(torch.from_numpy(a).to(device)
                        for a in (self.t_order, self.t_mask, self.t_targets))
        for epoch in range(self.start_epoch, cfg.epochs):
            if self._stop(epoch):
                break
            record = self._train_epoch(epoch, *tensors)
            if dist.main:
                self._end_of_epoch(epoch, record, checkpoint)
            if dist.world > 1:
                torch.distributed.barrier()
            if cfg.stop_after_epoch is not None and epoch + 1 >= cfg.stop_after_epoch:
                return False
        return True

    def _stop(self, epochs_done: int) -> bool:
        """Whether to stop before training another epoch: rank 0 decides, every rank
        follows (a resumed run decides again from its checkpoint's history)."""
        stop = (self.dist.main and self.auc0 is not None and plateaued(
            [self.auc0] + [h["val_roc_auc"] for h in self.history[:epochs_done]],
            self.cfg.patience, at_least=self.cfg.epochs // 2))
        if self.dist.world > 1:
            flag = torch.tensor([int(stop)], device=self.device)
            torch.distributed.broadcast(flag, 0)
            stop = bool(flag.item())
        if stop and self.dist.main:
            self.stopped_after = epochs_done
            self.log(f"stopped after epoch {epochs_done}: the held-out ROC-AUC has not risen "
                     f"by {AUC_RISE:g} for {self.cfg.patience} epochs")
        return stop

    def _train_epoch(self, epoch: int, t_order_t, t_mask_t, t_targets_t) -> dict:
        cfg, dist, device, amp = self.cfg, self.dist, self.device, self.amp
        self.net.train()
        torch.manual_seed(cfg.seed * 1_000_003 + epoch * 1009 + dist.rank)  # dropout
        perm = capped_epoch_rows(self.t_centre_labels, cfg.identity_cap,
                                 np.random.default_rng([cfg.seed, epoch]), cfg.epoch_budget,
                                 self.t_hard)
        t0, loss_sum, loss_n = time.time(), 0.0, 0
        bar = self.progress(total=self.n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                            unit="batch") if self.progress and dist.main else None
        for b in range(self.n_batches):
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
                logits = self.net(self.features_t[o], m)
            bce = F.binary_cross_entropy_with_logits(logits.float(), t.clamp(min=0).float(),
                                                     reduction="none")
            loss = (bce * use).sum() / count.clamp(min=1) * dist.world  # DDP averages ranks
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.grad_clip:
                self.scaler.unscale_(self.opt)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.scaler.step(self.opt)
            self.scaler.update()
            self.sched.step()
            loss_sum += float(loss.detach()) / dist.world  # this rank's share of the loss
            loss_n += 1
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        if dist.world > 1:  # the whole loss: the ranks' shares summed
            total = torch.tensor([loss_sum], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(total)
            loss_sum = float(total.item())
        return {"epoch": epoch + 1, "loss": loss_sum / max(1, loss_n),
                "lr": self.sched.get_last_lr()[0], "seconds": round(time.time() - t0, 2),
                "centres": int(perm.size)}

    def _end_of_epoch(self, epoch: int, record: dict, checkpoint) -> None:
        """Rank 0: validate, keep the best epoch, log, write the checkpoint."""
        cfg = self.cfg
        if self.val_rows.size:
            probs, s = self.validate()
            self.val_probs = probs if self.e_all else None
            if self.best is not None and s["roc_auc"] > self.best["roc_auc"]:
                self.best = self._snapshot(epoch + 1, s["roc_auc"])
            record.update({f"val_{k}": v for k, v in s.items()
                           if k in ("precision", "recall", "f1", "roc_auc")})
            self.log(f"epoch {epoch + 1}/{cfg.epochs}: loss {record['loss']:.4f}, val P "
                     f"{s['precision']:.4f} R {s['recall']:.4f} F1 {s['f1']:.4f} ROC-AUC "
                     f"{s['roc_auc']:.4f} ({record['seconds']} s)")
        else:
            self.log(f"epoch {epoch + 1}/{cfg.epochs}: loss {record['loss']:.4f}")
        self.history.append(record)
        if checkpoint:
            save_checkpoint(checkpoint, {
                "epoch": epoch + 1, "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": rng_states(), "history": self.history,
                "model_config": asdict(self.model_config), "split": self.val_ids.tolist(),
                "train_config": resumable_settings(cfg), "best": self.best,
                "epoch0_auc": self.auc0})

    # ---- the result

    def finish(self, calibrate_cosine: bool = True) -> TrainResult:
        """Rank 0: the kept epoch, its link threshold, the decoders' thresholds (those of
        cosine links at this length too, with ``calibrate_cosine``)."""
        cfg, log, model = self.cfg, self.log, self.model
        history, best = self.history, self.best
        thresholds: dict = {"link": 0.5}
        summary: dict = {"epochs": cfg.epochs, "epochs_run": len(history),
                         "stopped_early": self.stopped_after is not None,
                         "train_rows": int(self.train_rows.size),
                         "val_rows": int(self.val_rows.size),
                         "val_identities": int(self.val_ids.size),
                         "train_config": asdict(cfg), "world_size": self.dist.world}
        if best is not None and best["epoch"] != (history[-1]["epoch"] if history else 0):
            model.load_state_dict(best["model"])
            self.val_probs = None
        if best is not None:
            summary["kept_epoch"] = best["epoch"]
            log(f"kept epoch {best['epoch']}: the best held-out ROC-AUC ({best['roc_auc']:.4f})")
        if self.val_rows.size:
            if self.val_probs is None:  # a sample scored epochs, an earlier epoch kept, resumed
                self.val_probs = predict(model, self.features_t, self.v_order, self.v_mask,
                                         amp=self.amp)
            p = self.val_probs[self.v_use]
            assert self.baseline is not None  # scored with the held-out rows
            thresholds["link"] = best_f1_threshold(p, self.v_truth)
            final = link_scores(p, self.v_truth, thresholds["link"])
            summary["validation"] = {"model": final, "cosine": self.baseline}
            log(f"calibrated link threshold {thresholds['link']:.4f}: val P "
                f"{final['precision']:.4f} R {final['recall']:.4f} F1 {final['f1']:.4f} ROC-AUC "
                f"{final['roc_auc']:.4f} (raw cosine ROC-AUC {self.baseline['roc_auc']:.4f}, "
                f"best F1 {self.baseline['f1']:.4f})")
        else:
            log("no validation identities: link threshold left at 0.5 (uncalibrated)")
        model_t, cosine_t, linked = calibrate_decoders(
            self.data, model, self.features_t, self.amp, log,
            max_points=cfg.calibration_points, seed=cfg.seed,
            known=None if self.val_probs is None else (self.val_rows, self.val_probs),
            cosine=calibrate_cosine, decoders=cfg.decoders)
        thresholds.update(model_t)
        if cosine_t is not None:
            summary["cosine_thresholds"] = cosine_t
        if self.val_probs is not None and model.needs_cosine:
            summary["gate"] = held_out_gates(model, self.features_t, self.v_order, self.v_mask,
                                             self.val_probs, thresholds, cfg.decoders, log)
        summary["history"] = history
        return TrainResult(model.cpu().eval(), thresholds, summary, history, linked)


def train(data: SequenceData, features: np.ndarray, model_config: ClusformerConfig,
          cfg: TrainConfig, *, device: torch.device, dist: Dist | None = None,
          checkpoint: str | None = None, resume: str | None = None, log=print,
          progress=None, calibrate_cosine: bool = True) -> TrainResult | None:
    """Train, validate each epoch, calibrate thresholds (``calibrate_cosine``: cosine
    links' too, at this length; cf-train leaves them out where cosine links are used at
    another). Returns None on ranks other than 0 and when stopped early by
    ``stop_after_epoch``."""
    dist = dist or Dist()
    run = _Run(data, features, model_config, cfg, device, dist, log, progress)
    if resume:
        run.resume(resume)
    run.score_cosine_and_epoch_zero()
    if not run.epochs(checkpoint) or not dist.main:
        return None
    return run.finish(calibrate_cosine)
