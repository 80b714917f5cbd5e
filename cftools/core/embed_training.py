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

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..artifacts import atomic_path
from ..data.images import BadImages, ImageDataset
from ..errors import CfError, brief
from .distributed import Dist, join_process_group
from .arcface import ArcFace
from .backbone import Backbone, BackboneConfig

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


# --------------------------------------------------------------------------- distributed


def setup_distributed(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on GPU)."""
    d = join_process_group(device.type == "cuda")
    if d.world > 1 and device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
    return d, device


# --------------------------------------------------------------------------- helpers


def autocast_for(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "auto" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast(device.type, enabled=False)


def memory_format(device: torch.device):
    """channels-last on CUDA, where cuDNN runs these convolutions faster. Not on CPU: with
    torch 2.13 a second channels-last model of another width in the same process corrupts
    the heap (double free, segfault), and CPU gains only ~25%."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


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
    except Exception as err:  # noqa: BLE001
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
    from torch.utils.data import DataLoader, DistributedSampler

    labels = np.asarray(labels, dtype=np.int64)
    keep = np.flatnonzero(labels >= 0)
    paths = [paths[i] for i in keep]
    classes, targets = np.unique(labels[keep], return_inverse=True)
    if len(paths) < 2 or len(classes) < 2:
        raise CfError(f"need at least 2 labelled images of 2 identities to train, got "
                      f"{len(paths)} images of {len(classes)}", source)
    bad = bad if bad is not None else BadImages(reporter)
    ddp, device = setup_distributed(device)
    talk = reporter if ddp.main else None

    torch.manual_seed(tconf.seed)
    np.random.seed(tconf.seed)
    random.seed(tconf.seed)
    backbone = Backbone(bconf)
    head = ArcFace(bconf.dim, len(classes), tconf.scale, tconf.margin, tconf.easy_margin)
    init_digest = None
    if init is not None:
        state = {k: v.detach().cpu() for k, v in init.state_dict().items()}
        backbone.load_state_dict(state)
        h = hashlib.blake2b(digest_size=16)
        for k in sorted(state):
            h.update(k.encode())
            h.update(state[k].numpy().tobytes())
        init_digest = h.hexdigest()
        backbone.to(device)
        head.weight.data.copy_(imprint_head(backbone, bconf, paths, targets, len(classes),
                                            device=device))
        backbone.cpu()
    fmt = memory_format(device)
    net = _Net(backbone, head).to(device, memory_format=fmt)
    optimizer = torch.optim.SGD(net.parameters(), lr=tconf.lr, momentum=tconf.momentum,
                                weight_decay=tconf.weight_decay)

    dataset = ImageDataset(paths, targets, bconf.image_size, bconf.mean, bconf.std)
    batch, drop_last, _ = batching(len(dataset), tconf.batch_size, ddp.world)
    sampler = DistributedSampler(dataset, num_replicas=ddp.world, rank=ddp.rank, shuffle=True,
                                 seed=tconf.seed, drop_last=ddp.world > 1)
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=drop_last,
                        num_workers=tconf.workers, pin_memory=device.type == "cuda")
    steps_per_epoch = max(1, len(loader))
    # The schedule is laid out on the run's total steps T as a run of --epochs epochs lays
    # it out on its own: warm-up warmup_epochs/epochs of T, decays at milestone/epochs of T.
    # With no step budget T = epochs x steps per epoch (the plain schedule); with one, a
    # run on other data gets the same schedule, step for step (cf-embed --match-steps).
    total_steps = tconf.steps if tconf.steps else tconf.epochs * steps_per_epoch
    n_epochs = -(-total_steps // steps_per_epoch)
    per_step = total_steps / tconf.epochs
    warm_steps = int(round(tconf.warmup_epochs * per_step))
    milestones = [int(round(m * per_step)) for m in tconf.resolved_milestones()]

    def lr_factor(step: int) -> float:
        decay = tconf.gamma ** sum(step >= m for m in milestones)
        return decay * (min(1.0, (step + 1) / warm_steps) if warm_steps else 1.0)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and tconf.precision == "auto")

    fingerprint = data_fingerprint(paths, targets)
    settings = {k: v for k, v in asdict(tconf).items() if k != "workers"}  # workers: no effect
    run_config = {"backbone": asdict(bconf), "train": settings, "classes": int(len(classes)),
                  "data": fingerprint, "world": ddp.world}
    if init_digest is not None:
        run_config["init"] = init_digest
    start_epoch, history = 0, []
    if resume and checkpoint is not None and checkpoint.exists():
        ckpt = load_checkpoint(checkpoint)
        saved = json.loads(ckpt["config"])
        if saved != json.loads(json.dumps(run_config)):
            diff = sorted(k for k in run_config if json.dumps(saved.get(k), sort_keys=True)
                          != json.dumps(run_config[k], sort_keys=True))
            raise CfError(f"checkpoint was made with other settings or data ({', '.join(diff)}); "
                          "rerun without --resume or with the same options", checkpoint)
        net.load_state_dict(ckpt["net"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        start_epoch = int(ckpt["epoch"])
        history = json.loads(ckpt["history"])
        if reporter and ddp.main:
            reporter.info(f"resuming after epoch {start_epoch} from {checkpoint}")
    elif resume and reporter and ddp.main:
        reporter.info(f"no checkpoint at {checkpoint}; starting from scratch")

    model = net
    if ddp.world > 1:
        model = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)

    for epoch in range(start_epoch, n_epochs):
        epoch_steps = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            return TrainResult(backbone, history, len(classes), len(paths), False, bad)
        sampler.set_epoch(epoch)
        flips = torch.Generator().manual_seed(tconf.seed * 1_000_003 + epoch * 997 + ddp.rank)
        net.train()
        t0, c0 = time.perf_counter(), time.process_time()
        loss_sum = correct = seen = 0.0
        bar = (reporter.progress(total=epoch_steps, desc=f"epoch {epoch + 1}/{n_epochs}",
                                 unit="batch") if talk else None)
        for step, (x, y, idx, errors) in enumerate(loader):
            if step >= epoch_steps:  # the step budget ends inside this epoch
                break
            flip = torch.rand(x.shape[0], generator=flips) < 0.5
            ok = torch.tensor([not e for e in errors], dtype=torch.bool)
            for i, e in zip(idx.tolist(), errors):
                if e:
                    bad.add(dataset.paths[i], e)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)[ok]
            y = y[ok]
            if x.shape[0] >= 2:  # BatchNorm needs two samples
                x = x.to(device, non_blocking=True, memory_format=fmt)
                y = y.to(device, non_blocking=True)
                with autocast_for(device, tconf.precision):
                    logits, cosine = model(x, y)
                loss = F.cross_entropy(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                loss_sum += float(loss.detach()) * x.shape[0]
                correct += float((cosine.argmax(1) == y).sum())
                seen += x.shape[0]
            with warnings.catch_warnings():
                # the schedule counts batches, skipped ones too: torch's "scheduler before
                # optimizer" warning is expected when an early batch had too few images
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler")
                scheduler.step()
            if bar is not None:
                bar.update(1)
                if seen:
                    bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
        if bar is not None:
            bar.close()
        stats = torch.tensor([loss_sum, correct, seen], dtype=torch.float64)
        if ddp.world > 1:
            stats = stats.to(device)
            dist.all_reduce(stats)
        loss_sum, correct, seen = stats.tolist()
        if seen == 0:  # every batch held fewer than 2 readable images: nothing was learnt
            raise CfError(f"epoch {epoch + 1} ran no training step: no batch held 2 or more "
                          f"readable images ({len(bad)} of {len(paths)} labelled images "
                          "unreadable); fix or remove the unreadable images", source)
        if not np.isfinite(loss_sum):
            raise CfError(f"training diverged (loss is {loss_sum}) in epoch {epoch + 1}; "
                          "try a lower --lr or --scale")
        seconds = time.perf_counter() - t0
        record = {"epoch": epoch + 1, "steps": int(epoch_steps), "loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                  "images": int(seen), "seconds": round(seconds, 3),
                  "cpu_seconds": round(time.process_time() - c0, 3),  # this process, all threads
                  "lr": optimizer.param_groups[0]["lr"]}
        history.append(record)
        if reporter and ddp.main:
            reporter.info(f"epoch {epoch + 1}/{n_epochs}: loss {record['loss']:.4f}, "
                          f"train acc {record['train_acc']:.3f}, {seen / max(seconds, 1e-9):.0f} img/s, "
                          f"{seconds:.1f} s")
        if checkpoint is not None and ddp.main:
            save_checkpoint(checkpoint, {
                "format": CHECKPOINT_FORMAT, "config": json.dumps(run_config), "epoch": epoch + 1,
                "net": net.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "rng": _rng_state(), "history": json.dumps(history)})
        if ddp.world > 1:
            dist.barrier()
    return TrainResult(backbone.eval(), history, len(classes), len(paths), True, bad)


# --------------------------------------------------------------------------- extraction


@torch.no_grad()
def extract_features(model: Backbone, config: BackboneConfig, paths, *, batch_size: int = 256,
                     workers: int = 0, device: torch.device = torch.device("cpu"),
                     flip_test: bool = False, precision: str = "auto", reporter=None,
                     bad: BadImages | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Embed images -> (features of the readable ones, L2-normalised float32; mask of
    which images were readable). Unreadable ones are recorded in ``bad`` and skipped."""
    from torch.utils.data import DataLoader

    dataset = ImageDataset(paths, np.full(len(paths), -1), config.image_size, config.mean, config.std)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda")
    fmt = memory_format(device)
    model = model.to(device, memory_format=fmt).eval()
    out = np.zeros((len(paths), config.dim), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    bar = reporter.progress(total=len(paths), desc="extract", unit="img") if reporter else None
    for x, _, idx, errors in loader:
        good = torch.tensor([not e for e in errors], dtype=torch.bool)
        for i, e in zip(idx.tolist(), errors):
            if e and bad is not None:
                bad.add(paths[i], e)
        if good.any():
            x = x[good].to(device, non_blocking=True, memory_format=fmt)
            with autocast_for(device, precision):
                emb = model(x).float()
                if flip_test:
                    emb = emb + model(x.flip(-1)).float()
            emb = F.normalize(emb, dim=1)
            rows = idx[good].numpy()
            out[rows] = emb.cpu().numpy()
            ok[rows] = True
        if bar is not None:
            bar.update(len(errors))
    if bar is not None:
        bar.close()
    return out[ok], ok
