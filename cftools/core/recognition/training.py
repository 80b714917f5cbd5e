"""Training a backbone with ArcFace, and extracting features with it.

One readable loop (nanoGPT-style): SGD momentum 0.9, weight decay 5e-4, linear warm-up
then step decay at epoch milestones, horizontal flips, fp16 autocast on CUDA (bf16 on
request, on CPU too), DistributedDataParallel when started by torchrun (WORLD_SIZE > 1:
gloo on CPU, nccl on GPU). A checkpoint is written atomically after every epoch; resuming
restores weights, optimizer, scheduler, scaler, epoch and every RNG, and the data order and
flips are functions of (seed, epoch), so an interrupted run resumed on CPU ends with the
same weights as one that never stopped.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ...data.images import BadImages, ImageDataset
from ...errors import CfError, brief
from ...formats.writing import atomic_path
from ..runtime.distributed import leave_process_group, setup_distributed
from ..runtime.precision import autocast_for
from .arcface import ArcFace
from .backbone import Backbone, BackboneConfig, memory_format
from .extraction import extract_features

CHECKPOINT_FORMAT = 1


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: list = field(default_factory=list)  # epochs where lr *= gamma; [] = auto
    gamma: float = 0.1
    warmup_epochs: float = 1.0
    scale: float = 64.0
    margin: float = 0.5
    easy_margin: bool = False
    precision: str = "auto"  # auto: fp16 autocast on CUDA, fp32 on CPU; fp32; bf16
    workers: int = 0
    seed: int = 0
    steps: int | None = None  # total optimisation steps; None = epochs x batches per epoch

    def resolved_milestones(self) -> list[int]:
        if self.milestones:
            return sorted(int(m) for m in self.milestones)
        if self.epochs < 4:
            return []
        return sorted({round(0.6 * self.epochs), round(0.85 * self.epochs)})


def batching(n_images: int, batch_size: int, world: int = 1) -> tuple[int, bool, int]:
    """How train_backbone batches n labelled images: (batch, drop_last, steps per epoch)."""
    per_rank = n_images // world
    batch = min(batch_size, max(2, per_rank))
    drop_last = per_rank >= batch
    per_epoch = per_rank // batch if drop_last else -(-per_rank // batch)
    return batch, drop_last, max(1, per_epoch)


def steps_of(n_images: int, batch_size: int, epochs: int, world: int = 1) -> int:
    """Optimisation steps of a run of ``epochs`` epochs over n labelled images."""
    return epochs * batching(n_images, batch_size, world)[2]


@dataclass
class TrainResult:
    model: Backbone
    history: list[dict]
    classes: int
    images: int
    finished: bool  # False when stopped early (--stop-after-epoch)
    bad: BadImages


class _Net(nn.Module):
    """Backbone + ArcFace head as one module, so DDP syncs both."""

    def __init__(self, backbone: Backbone, head: ArcFace):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x, y):
        """-> (ArcFace logits with the margin, for the loss; cosines without it, for accuracy)."""
        return self.head(self.backbone(x), y)


# --------------------------------------------------------------------------- helpers


def data_fingerprint(paths, labels) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p, y in zip(paths, labels):
        h.update(f"{p}\t{int(y)}\n".encode())
    return h.hexdigest()


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(),
             "numpy": json.dumps(_np_state_to_json(np.random.get_state())),
             "python": json.dumps(_py_state_to_json(random.getstate()))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(_np_state_from_json(json.loads(state["numpy"])))
    random.setstate(_py_state_from_json(json.loads(state["python"])))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# RNG states as JSON strings: torch.load(weights_only=True) then needs no pickle of them.
def _np_state_to_json(s):
    return [s[0], s[1].tolist(), int(s[2]), int(s[3]), float(s[4])]


def _np_state_from_json(s):
    return (s[0], np.asarray(s[1], dtype=np.uint32), s[2], s[3], s[4])


def _py_state_to_json(s):
    return [s[0], list(s[1]), s[2]]


def _py_state_from_json(s):
    return (s[0], tuple(s[1]), s[2])


def save_checkpoint(path: Path, payload: dict) -> None:
    """torch.save to a temporary name, then rename: a kill never leaves half a checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict:
    try:
        # weights_only: tensors, numbers and strings only; loading runs no code
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is one error
        raise CfError(f"cannot read checkpoint ({brief(err, 120)})", path) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CfError("not a cf-embed checkpoint of this version", path)
    return ckpt


# --------------------------------------------------------------------------- training


@torch.no_grad()
def imprint_head(backbone: Backbone, bconf: BackboneConfig, paths, targets, classes: int, *,
                 device: torch.device, reporter=None) -> torch.Tensor:
    """ArcFace weights (classes x dim) that start where ``backbone`` already is: row c is the
    L2-normalised mean embedding of class c's images (weight imprinting). Fine-tuning from
    a trained backbone with a random head would first tear the backbone apart to fit the
    head; an imprinted head starts the loss low for every class, old or new, so the first
    steps refine the embedding instead. Unreadable images count for nothing."""
    was_training = backbone.training
    feats, ok = extract_features(backbone, bconf, list(paths), batch_size=256, workers=0,
                                 device=device, reporter=None)
    backbone.train(was_training)
    t = torch.as_tensor(np.asarray(targets)[ok], dtype=torch.long)
    sums = torch.zeros(classes, bconf.dim).index_add_(0, t, torch.from_numpy(feats))
    empty = sums.norm(dim=1) == 0
    if empty.any():  # a class with no readable image keeps a random direction
        sums[empty] = torch.randn(int(empty.sum()), bconf.dim)
    return F.normalize(sums, dim=1)


def train_backbone(paths, labels, bconf: BackboneConfig, tconf: TrainConfig, *,
                   device: torch.device, checkpoint: Path | None = None, resume: bool = False,
                   stop_after_epoch: int | None = None, reporter=None,
                   bad: BadImages | None = None, source=None,
                   init: Backbone | None = None) -> TrainResult:
    """Train a backbone on images with integer identity labels (-1 rows are left out).
    ``source`` (the image folder, list or features file) is named in errors. With ``init``
    (a trained backbone of the same architecture) the run fine-tunes it: its weights are
    the start and the ArcFace head is imprinted with its class means (imprint_head)."""
    labels = np.asarray(labels, dtype=np.int64)
    keep = np.flatnonzero(labels >= 0)
    paths = [paths[i] for i in keep]
    classes, targets = np.unique(labels[keep], return_inverse=True)
    if len(paths) < 2 or len(classes) < 2:
        raise CfError(f"need at least 2 labelled images of 2 identities to train, got "
                      f"{len(paths)} images of {len(classes)}", source)
    run = _BackboneRun(paths, targets, len(classes), bconf, tconf, device,
                       bad if bad is not None else BadImages(reporter), reporter, source)
    try:
        run.build(init)
        if resume:
            run.resume(checkpoint)
        run.wrap()
        for epoch in range(run.start_epoch, run.n_epochs):
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                return TrainResult(run.backbone, run.history, len(classes), len(paths), False,
                                   run.bad)
            run.epoch(epoch, checkpoint)
    finally:
        leave_process_group(run.ddp)
    return TrainResult(run.backbone.eval(), run.history, len(classes), len(paths), True,
                       run.bad)


class _BackboneRun:
    """One run of train_backbone: the network and its data, an optional resume, epochs."""

    def __init__(self, paths, targets, classes: int, bconf: BackboneConfig, tconf: TrainConfig,
                 device, bad: BadImages, reporter, source):
        self.paths, self.targets, self.classes = paths, targets, classes
        self.bconf, self.tconf, self.bad, self.source = bconf, tconf, bad, source
        self.ddp, self.device = setup_distributed(device)
        self.reporter = reporter if self.ddp.main else None
        self.start_epoch = 0
        self.history: list[dict] = []

    def build(self, init: Backbone | None) -> None:
        """Seeded network (fine-tuned from ``init``), optimiser, data and schedule."""
        from torch.utils.data import DataLoader, DistributedSampler

        bconf, tconf, device, ddp = self.bconf, self.tconf, self.device, self.ddp
        torch.manual_seed(tconf.seed)
        np.random.seed(tconf.seed)
        random.seed(tconf.seed)
        self.backbone = Backbone(bconf)
        head = ArcFace(bconf.dim, self.classes, tconf.scale, tconf.margin, tconf.easy_margin)
        init_digest = None
        if init is not None:
            state = {k: v.detach().cpu() for k, v in init.state_dict().items()}
            self.backbone.load_state_dict(state)
            h = hashlib.blake2b(digest_size=16)
            for k in sorted(state):
                h.update(k.encode())
                h.update(state[k].numpy().tobytes())
            init_digest = h.hexdigest()
            self.backbone.to(device)
            head.weight.data.copy_(imprint_head(self.backbone, bconf, self.paths, self.targets,
                                                self.classes, device=device))
            self.backbone.cpu()
        self.fmt = memory_format(device)
        self.net = _Net(self.backbone, head).to(  # type: ignore[call-overload]
            device, memory_format=self.fmt)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=tconf.lr,
                                         momentum=tconf.momentum,
                                         weight_decay=tconf.weight_decay)
        dataset: Any = ImageDataset(self.paths, self.targets, bconf.image_size, bconf.mean,
                                    bconf.std)  # torch's Dataset protocol
        self.dataset = dataset
        batch, drop_last, _ = batching(len(dataset), tconf.batch_size, ddp.world)
        self.sampler: DistributedSampler = DistributedSampler(
            dataset, num_replicas=ddp.world, rank=ddp.rank, shuffle=True, seed=tconf.seed,
            drop_last=ddp.world > 1)
        self.loader: DataLoader = DataLoader(dataset, batch_size=batch, sampler=self.sampler,
                                             drop_last=drop_last, num_workers=tconf.workers,
                                             pin_memory=device.type == "cuda")
        self._schedule()
        settings = {k: v for k, v in asdict(tconf).items() if k != "workers"}  # no effect
        self.run_config = {"backbone": asdict(bconf), "train": settings,
                           "classes": int(self.classes),
                           "data": data_fingerprint(self.paths, self.targets), "world": ddp.world}
        if init_digest is not None:
            self.run_config["init"] = init_digest

    def wrap(self) -> None:
        """DDP around the (possibly resumed) network when there are several ranks."""
        self.model = self.net
        if self.ddp.world > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def _schedule(self) -> None:
        # The schedule is laid out on the run's total steps T as a run of --epochs epochs
        # lays it out on its own: warm-up warmup_epochs/epochs of T, decays at
        # milestone/epochs of T. With no step budget T = epochs x steps per epoch (the plain
        # schedule); with one, a run on other data gets the same schedule, step for step
        # (cf-embed --match-steps).
        tconf = self.tconf
        self.steps_per_epoch = max(1, len(self.loader))
        self.total_steps = tconf.steps if tconf.steps else tconf.epochs * self.steps_per_epoch
        self.n_epochs = -(-self.total_steps // self.steps_per_epoch)
        per_step = self.total_steps / tconf.epochs
        warm_steps = int(round(tconf.warmup_epochs * per_step))
        milestones = [int(round(m * per_step)) for m in tconf.resolved_milestones()]

        def lr_factor(step: int) -> float:
            decay = tconf.gamma ** sum(step >= m for m in milestones)
            return decay * (min(1.0, (step + 1) / warm_steps) if warm_steps else 1.0)

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda"
                                           and tconf.precision == "auto")

    def resume(self, checkpoint: Path | None) -> None:
        if checkpoint is None or not checkpoint.exists():
            if self.reporter:
                self.reporter.info(f"no checkpoint at {checkpoint}; starting from scratch")
            return
        ckpt = load_checkpoint(checkpoint)
        saved = json.loads(ckpt["config"])
        if saved != json.loads(json.dumps(self.run_config)):
            diff = sorted(k for k in self.run_config if json.dumps(saved.get(k), sort_keys=True)
                          != json.dumps(self.run_config[k], sort_keys=True))
            raise CfError(f"checkpoint was made with other settings or data ({', '.join(diff)}); "
                          "rerun without --resume or with the same options", checkpoint)
        self.net.load_state_dict(ckpt["net"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        self.start_epoch = int(ckpt["epoch"])
        self.history = json.loads(ckpt["history"])
        if self.reporter:
            self.reporter.info(f"resuming after epoch {self.start_epoch} from {checkpoint}")

    def _step(self, x, y) -> tuple[float, float, int]:
        """One optimisation step: (loss x images, correct, images)."""
        x = x.to(self.device, non_blocking=True, memory_format=self.fmt)
        y = y.to(self.device, non_blocking=True)
        with autocast_for(self.device, self.tconf.precision):
            logits, cosine = self.model(x, y)
        loss = F.cross_entropy(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return (float(loss.detach()) * x.shape[0], float((cosine.argmax(1) == y).sum()),
                x.shape[0])

    def epoch(self, epoch: int, checkpoint: Path | None) -> None:
        tconf, ddp = self.tconf, self.ddp
        epoch_steps = min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)
        self.sampler.set_epoch(epoch)
        flips = torch.Generator().manual_seed(tconf.seed * 1_000_003 + epoch * 997 + ddp.rank)
        self.net.train()
        t0, c0 = time.perf_counter(), time.process_time()
        loss_sum = correct = seen = 0.0
        bar = (self.reporter.progress(total=epoch_steps, desc=f"epoch {epoch + 1}/{self.n_epochs}",
                                      unit="batch") if self.reporter else None)
        for step, (x, y, idx, errors) in enumerate(self.loader):
            if step >= epoch_steps:  # the step budget ends inside this epoch
                break
            flip = torch.rand(x.shape[0], generator=flips) < 0.5
            ok = torch.tensor([not e for e in errors], dtype=torch.bool)
            for i, e in zip(idx.tolist(), errors):
                if e:
                    self.bad.add(self.dataset.paths[i], e)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)[ok]
            y = y[ok]
            if x.shape[0] >= 2:  # BatchNorm needs two samples
                step_loss, step_correct, step_seen = self._step(x, y)
                loss_sum += step_loss
                correct += step_correct
                seen += step_seen
            with warnings.catch_warnings():
                # the schedule counts batches, skipped ones too: torch's "scheduler before
                # optimizer" warning is expected when an early batch had too few images
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler")
                self.scheduler.step()
            if bar is not None:
                bar.update(1)
                if seen:
                    bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
        if bar is not None:
            bar.close()
        self._end_of_epoch(epoch, epoch_steps, (loss_sum, correct, seen), t0, c0, checkpoint)

    def _end_of_epoch(self, epoch, epoch_steps, sums, t0, c0, checkpoint) -> None:
        """Sums over the ranks, the epoch's record, its checks and the checkpoint."""
        ddp = self.ddp
        stats = torch.tensor(sums, dtype=torch.float64)
        if ddp.world > 1:
            stats = stats.to(self.device)
            dist.all_reduce(stats)
        loss_sum, correct, seen = stats.tolist()
        if seen == 0:  # every batch held fewer than 2 readable images: nothing was learnt
            raise CfError(f"epoch {epoch + 1} ran no training step: no batch held 2 or more "
                          f"readable images ({len(self.bad)} of {len(self.paths)} labelled "
                          "images unreadable); fix or remove the unreadable images",
                          self.source)
        if not np.isfinite(loss_sum):
            raise CfError(f"training diverged (loss is {loss_sum}) in epoch {epoch + 1}; "
                          "try a lower --lr or --scale")
        seconds = time.perf_counter() - t0
        record = {"epoch": epoch + 1, "steps": int(epoch_steps), "loss": loss_sum / max(seen, 1),
                  "train_acc": correct / max(seen, 1), "images": int(seen),
                  "seconds": round(seconds, 3),
                  "cpu_seconds": round(time.process_time() - c0, 3),  # this process, all threads
                  "lr": self.optimizer.param_groups[0]["lr"]}
        self.history.append(record)
        if self.reporter:
            self.reporter.info(f"epoch {epoch + 1}/{self.n_epochs}: loss {record['loss']:.4f}, "
                               f"train acc {record['train_acc']:.3f}, "
                               f"{seen / max(seconds, 1e-9):.0f} img/s, {seconds:.1f} s")
        if checkpoint is not None and ddp.main:
            save_checkpoint(checkpoint, {
                "format": CHECKPOINT_FORMAT, "config": json.dumps(self.run_config),
                "epoch": epoch + 1, "net": self.net.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": _rng_state(), "history": json.dumps(self.history)})
        if ddp.world > 1:
            dist.barrier()
