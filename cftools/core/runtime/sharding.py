"""Row-sharded commands under torchrun: cf-knn, cf-link and cf-embed extract.

The same command line runs in one process or under ``torchrun --nproc_per_node=P
[--nnodes=M]``. Each rank takes a contiguous share of the rows (``rank_rows``), computes
them, and writes them to its own shard file; when every rank reports success, rank 0
concatenates the shards, in rank order, into the ordinary artifact (temporary name, then
rename, as every cftools output) and the shards are removed.

Why a concatenation and not an HDF5 virtual dataset over the shards: the published file
is then self-contained (it can be copied, moved, read by any HDF5 reader, without shard
files that must live beside it forever), it is the very artifact a single process writes,
and it appears by one atomic rename. The price is one sequential copy of the output
(~1 GB/s here; 5 GB of 5.21M x 80 neighbours in ~5 s, small beside the search).

Failure: a rank that raises tells the others through the status exchange; a rank that is
killed breaks the process group (gloo reports the lost peer) or torchrun terminates the
others with SIGTERM, which is turned into an interruption here so the clean-up runs.
Every surviving rank removes the shard folder; the output never appears. Shards live in
a hidden folder beside the output, so on several nodes the output's folder must be on a
file system every node sees (as the inputs must be).

Process group: gloo on every host, also with GPUs: only a few numbers travel between the
ranks (status, sums of recall hits, rank 0's choices); the data goes through the files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ...errors import CfError
from ...formats.artifacts import row_blocks
from ...formats.writing import create_rows, write_artifact, write_strings
from .distributed import Dist, leave_process_group

# tests: the rank named here kills itself (SIGKILL) after writing its shard, before the
# status exchange, to check that a dead rank leaves nothing published
DIE_ENV = "CFTOOLS_TEST_DIE_RANK"


def rank_rows(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows [start, stop) of rank ``rank`` of ``world``: contiguous, sizes differ by <= 1."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


@dataclass
class Sharding:
    """This process's share of a row-sharded command (rank 0 of 1 without torchrun)."""

    dist: Dist

    @property
    def world(self) -> int:
        return self.dist.world

    @property
    def rank(self) -> int:
        return self.dist.rank

    @property
    def active(self) -> bool:
        return self.dist.world > 1

    @property
    def main(self) -> bool:
        return self.dist.rank == 0

    def rows(self, n: int) -> tuple[int, int]:
        return rank_rows(n, self.rank, self.world)

    # ---- the few numbers that travel between ranks (gloo, CPU tensors)

    def all_ok(self, ok: bool) -> bool:
        """Whether every rank says ok (a collective: every rank must call it)."""
        if not self.active:
            return ok
        import torch
        import torch.distributed as dist

        t = torch.tensor([1 if ok else 0], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def sum(self, values) -> list[float]:
        """Element-wise sum over the ranks of a few numbers."""
        if not self.active:
            return [float(v) for v in values]
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def broadcast(self, value):
        """Rank 0's ``value`` (a small JSON-like object) on every rank."""
        if not self.active:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def gather_rows(sh: Sharding, arrays: list):
    """Every rank's rows of each array, concatenated in rank order on rank 0 (None
    elsewhere): for outputs held in memory anyway (learn-to-cluster .npz)."""
    if not sh.active:
        return arrays
    import torch.distributed as dist

    box: list | None = [None] * sh.world if sh.main else None
    dist.gather_object(arrays, box, dst=0)
    if box is None:
        return None
    return [np.concatenate([part[i] for part in box]) for i in range(len(arrays))]


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _interrupt_on_sigterm(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_held():
    """A SIGTERM that comes during the block is acted on when it ends. When a rank dies,
    the survivor learns it from gloo and from torchrun's SIGTERM at about the same moment:
    the interruption raised inside the removal of the shards would leave them behind.
    Python runs signal handlers in the main thread whichever thread the signal reached,
    so the handler is swapped there (a thread's signal mask would not hold it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: came.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if came and callable(previous):
            previous(signal.SIGTERM, None)
        elif came and previous != signal.SIG_IGN:  # the default (or a handler not Python's)
            os.kill(os.getpid(), signal.SIGTERM)


def join(use_cuda: bool = False) -> Sharding:
    """Join torchrun's process group (gloo) when WORLD_SIZE > 1; one process otherwise.

    With CUDA, this rank's GPU is LOCAL_RANK (torch.cuda.set_device), so ``cuda`` means it.
    Under torchrun SIGTERM (torchrun stopping the survivors of a failed rank) becomes an
    interruption, so temporary files and shards are removed on the way out."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Sharding(Dist())
    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda and torch.cuda.is_available():
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    return Sharding(Dist(dist.get_rank(), dist.get_world_size(), local))


def leave(sh: Sharding) -> None:
    """Leave the process group (after the output is published). Nothing here may import
    torch._dynamo after join (a meta-device randn does): see join_process_group."""
    leave_process_group(sh.dist)


class ShardedOutput:
    """Write an artifact whose datasets are split by rows among the ranks.

    Used as a context manager. ``create_rows(name, local_shape, dtype)`` makes this rank's
    part of a dataset (its rows only, written with local row indices; ``write_strings``
    for strings); ``attrs`` may be extended until the block ends. One
    process writes straight into the artifact's temporary file. Under torchrun each rank
    writes its shard, the ranks agree that all succeeded, and rank 0 concatenates the
    shards into the artifact; any failure leaves neither output nor shards."""

    def __init__(self, out, kind: str, sh: Sharding, *, inputs: dict | None = None,
                 attrs: dict | None = None):
        self.out = Path(out)
        self.kind = kind
        self.sh = sh
        self.inputs = inputs or {}
        self.attrs = dict(attrs or {})
        self._stack = contextlib.ExitStack()
        self._file: Any = None  # an h5py.File while the block runs
        self._order: list[str] = []
        self.shard_dir: Path | None = None

    # ---- writing this rank's rows

    def create_rows(self, name: str, shape: tuple, dtype, data=None):
        """This rank's rows of dataset ``name`` (``shape[0]`` = its row count)."""
        self._order.append(name)
        return create_rows(self._file, name, tuple(shape), dtype, data=data)

    def write_strings(self, name: str, values) -> None:
        """This rank's rows of a string dataset, written whole."""
        self._order.append(name)
        write_strings(self._file, name, values)

    # ---- the context

    def __enter__(self):
        if not self.sh.active:
            self._file = self._stack.enter_context(
                write_artifact(self.out, self.kind, inputs=self.inputs, attrs={}))
            return self
        tag = self.sh.broadcast(uuid.uuid4().hex[:12] if self.sh.main else None)
        self.shard_dir = self.out.with_name(f".{self.out.name}.cf-shards-{tag}")
        try:
            self.shard_dir.mkdir(exist_ok=True)
            self._file = h5py.File(self.shard_dir / f"rank{self.sh.rank:05d}.h5", "w")
        except BaseException:
            self._cleanup()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.sh.active:
            if exc_type is None:
                from ...formats.writing import to_attr

                for key, value in self.attrs.items():
                    self._file.attrs[key] = to_attr(value)
            return self._stack.__exit__(exc_type, exc, tb)
        try:
            self._finish(exc_type is None)
        except BaseException:
            if exc_type is None:
                raise
            # this rank's own error is the one to report
        finally:
            self._cleanup()
        return False

    def _finish(self, mine_ok: bool) -> None:
        self._file.close()
        if mine_ok and os.environ.get(DIE_ENV) == str(self.sh.rank):
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            ok = self.sh.all_ok(mine_ok)
        except RuntimeError as err:  # gloo: a peer is gone
            raise CfError(f"another rank stopped ({_first_line(err)}); nothing was written",
                          self.out) from err
        if not mine_ok:
            return
        if not ok:
            raise CfError("another rank failed; nothing was written", self.out)
        published = True
        if self.sh.main:
            try:
                self._publish()
            except BaseException:
                with contextlib.suppress(Exception):
                    self.sh.all_ok(False)
                raise
        if not self.sh.all_ok(published):
            raise CfError("rank 0 could not write the output", self.out)

    def _cleanup(self):
        with _sigterm_held():
            with contextlib.suppress(Exception):
                if self._file is not None and self._file.id.valid:
                    self._file.close()
            if self.shard_dir is not None:
                shutil.rmtree(self.shard_dir, ignore_errors=True)

    def _publish(self):
        """Rank 0: concatenate every rank's shard, in rank order, into the artifact."""
        assert self.shard_dir is not None  # made on entering under torchrun
        shards = [self.shard_dir / f"rank{r:05d}.h5" for r in range(self.sh.world)]
        files = [h5py.File(p, "r") for p in shards]
        try:
            with write_artifact(self.out, self.kind, inputs=self.inputs,
                                attrs=self.attrs) as f:
                for name in self._order:
                    parts = [sf[name] for sf in files]
                    n = sum(p.shape[0] for p in parts)
                    if h5py.check_string_dtype(parts[0].dtype) is not None:
                        values = [s.decode() if isinstance(s, bytes) else s
                                  for p in parts for s in p[()]]
                        write_strings(f, name, values)
                        continue
                    ds = create_rows(f, name, (n,) + parts[0].shape[1:], parts[0].dtype)
                    at = 0
                    for p in parts:
                        for a, b in row_blocks(p):
                            ds[at + a:at + b] = p[a:b]
                        at += p.shape[0]
        finally:
            for sf in files:
                sf.close()
