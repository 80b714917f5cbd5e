"""Multi-process training under torchrun: one process group, the same for every trainer."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class Dist:
    """This process's place among the torchrun processes (a single process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def join_process_group(use_cuda: bool) -> Dist:
    """Join torchrun's process group when WORLD_SIZE > 1: nccl on GPUs (one per local
    rank), gloo on CPUs. The same command line then trains with DDP."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    import torch

    # torch.optim imports torch._dynamo on first use; imported after the group exists it
    # keeps the group alive past destroy_process_group, until the interpreter's exit, where
    # a gloo thread releasing a finished collective can abort the process. Imported first,
    # the group is torn down where leave_process_group asks.
    import torch._dynamo  # noqa: F401
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local)


def leave_process_group(d: Dist) -> None:
    """Tear the process group down (its threads joined) while the interpreter is whole:
    left to the interpreter's exit, gloo's threads can abort it."""
    if d.world <= 1:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def init_distributed(device_name: str) -> Dist:
    """cf-train: the process group of ``--device`` (nccl where it means a GPU)."""
    import torch

    return join_process_group(device_name != "cpu" and torch.cuda.is_available())


def setup_distributed(device):
    """cf-embed train: (Dist, this rank's device) after joining the process group."""
    import torch

    d = join_process_group(device.type == "cuda")
    if d.world > 1 and device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
    return d, device
