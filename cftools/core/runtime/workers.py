"""Work spread over worker processes: CPU-bound loops that hold the GIL (the Infomap runs
of calibration) run on every core the process may use instead of one.

Workers are forked for one map (a spawned one would import the caller's main script
again) and run torch on one thread each. They ignore Ctrl-C, which the parent handles.
Small work stays in the calling process, where a worker's start would cost more than it
saves."""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor


def cpu_workers() -> int:
    """Processes worth running at once: the CPUs this process may use, at most
    OMP_NUM_THREADS where the user set it (a cap on threads is a cap on cores)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    cap = os.environ.get("OMP_NUM_THREADS", "")
    if cap.isdigit() and int(cap) > 0:
        n = min(n, int(cap))
    return max(1, n)


def _quiet_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(1)  # one core each: the workers share the machine


def parallel_map(fn, argument_tuples, *, parallel: bool = True, cost=None) -> list:
    """[fn(*args) for args in argument_tuples], in worker processes where ``parallel`` and
    more than one worker and one item; ``fn`` and its arguments must pickle. The workers
    live for this call only. ``cost``: an estimate of each item's work (a function of its
    arguments); the costliest items are handed out first, so that no long one starts last
    while the other workers sit idle (the results keep the items' order)."""
    items = list(argument_tuples)
    workers = min(cpu_workers(), len(items))
    if not parallel or workers < 2:
        return [fn(*args) for args in items]
    order = list(range(len(items)))
    if cost is not None:
        order.sort(key=lambda i: -cost(*items[i]))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                             initializer=_quiet_worker) as pool:
        done = list(pool.map(_call, [(fn, items[i]) for i in order]))
    results: list = [None] * len(items)
    for i, value in zip(order, done):
        results[i] = value
    return results


def _call(job):
    fn, args = job
    return fn(*args)
