"""The GPU check's measurements (bench/gpu.sh sets up the host and runs this).

    python bench/gpu.py --json OUT                  # a CUDA host: 584K and 5.21M points
    python bench/gpu.py --dry-run --json OUT        # no GPU: the same stages, small N, CPU

1. the bf16 GEMM rate this GPU reaches (torch.matmul, 8192^3, measured here): the peak
   every stage's share is given against;
2. the suite's GPU tests (pytest -m gpu, the files --tests names);
3. for each size (584K, one MS-Celeb-1M part; 5.21M, all of it): demo features N x 256
   (made off the clock, the blocks of `cf-data demo` in parallel), then cf-knn (--backend
   auto: torch on a GPU where faiss has none) + cf-seq + cf-link (--method model, a
   small-preset model made on the CPU, bench/gpu-model.h5, committed: its provenance
   gives the recipe, `cf-data demo f.h5 -n 20000 -d 256 --seed 7`, `cf-knn -k 80`,
   `cf-seq -L 64`, `cf-train --preset small --epochs 1 -L 64 --seed 0`) + cf-merge (--method
   propagation), each timed as the command a user runs (start-up, reading, writing);
4. where time is left, cf-merge --method infomap (the round's default) at the smaller
   size.

A stage's share of the peak is its matrix products' FLOPs (kNN: 2 N^2 d; link: the
model's FLOPs per sequence, counted by torch on one batch, times N; seq and merge: none)
over its wall time times the peak. The time budget (--budget, what bench/gpu.sh has left
of its 6 minutes) bounds every stage; a stage that cannot start or finish in it is
skipped or stopped, saying so, and the JSON (rewritten after every stage) keeps what
ran. The dry run makes the same files through the same code on the CPU at small N: its
figures are the CPU's, never a GPU's.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZES = (584_000, 5_210_000)
DRY_SIZES = (20_000, 60_000)
MODEL = ROOT / "bench" / "gpu-model.h5"
TESTS = ("tests/test_gpu.py", "tests/core/test_propagation.py")
T0 = time.perf_counter()


def now() -> float:
    return time.perf_counter() - T0


def say(msg: str) -> None:
    print(f"[{now():6.1f} s] {msg}", file=sys.stderr, flush=True)


class Report:
    """The JSON, rewritten after every stage so that a stopped run keeps what ran."""

    def __init__(self, path: Path, budget: float, data: dict):
        self.path, self.budget, self.data = path, budget, data
        self.data.setdefault("skipped", [])

    def left(self) -> float:
        return self.budget - now()

    def skip(self, what: str, why: str) -> None:
        self.data["skipped"].append(f"{what}: {why}")
        say(f"SKIPPED {what}: {why}")
        self.save()

    def save(self) -> None:
        self.data["seconds"] = round(now(), 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=1, default=str))


# ------------------------------------------------------------------ the host and its peak

def host_info() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available(), "cpus": os.cpu_count(),
            "load": round(os.getloadavg()[0], 2),
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
    try:
        import faiss

        info.update(faiss=faiss.__version__,
                    faiss_gpu_build=hasattr(faiss, "StandardGpuResources"))
    except ImportError as err:
        info["faiss"] = f"absent ({err})"
    return info


def matmul_peak(device: str) -> dict:
    """The FLOP rate of a large product on ``device``: bf16 on CUDA (the peak the stages
    are measured against), fp32 on the CPU (dry run)."""
    import torch

    cuda = device == "cuda"
    n, dtype, reps = (8192, torch.bfloat16, 20) if cuda else (1024, torch.float32, 3)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    return {"device": device, "dtype": str(dtype).replace("torch.", ""), "n": n,
            "tflops": round(2 * n ** 3 * reps / seconds / 1e12, 2)}


def link_flops_per_sequence(model_path: Path, dim: int, length: int) -> float:
    """Matrix-product FLOPs of one sequence through the model, as torch's profiler counts
    them (mm, bmm, addmm, linear, attention) on one batch on the CPU."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from cftools.core.clusformer.inference import run_batch
    from cftools.core.clusformer.model import load_model
    from cftools.core.clusformer.model import unit_rows as model_unit_rows

    model = load_model(model_path)[0].eval()
    b = 8
    x = torch.nn.functional.normalize(torch.randn(b * length, dim), dim=1)
    order = torch.arange(b * length).reshape(b, length)
    mask = torch.ones(b, length, dtype=torch.bool)
    prepared, unit = model.prepare(x), model_unit_rows(x)
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        run_batch(model, prepared, order, mask, None, unit)
    return sum(e.flops or 0 for e in prof.events()) / b


# ------------------------------------------------------------------ demo features, in parallel

def _block(args):
    from cftools.data.demo import _make_block

    spec, sizes, first, seed = args
    return _make_block(spec, sizes, first, np.random.default_rng(seed))


def demo_features(path: Path, n: int, dim: int, seed: int, workers: int) -> None:
    """The features `cf-data demo -n N -d DIM --seed S` makes (the same blocks, made in
    parallel), written as a features file with labels."""
    from cftools.data.demo import BLOCK_POINTS, DemoSpec, identity_sizes
    from cftools.formats.features import write_features

    spec = DemoSpec(n=n, dim=dim, seed=seed)
    master = np.random.default_rng(spec.seed)
    sizes = identity_sizes(master, spec.n, spec.max_size, spec.tail)
    block_seeds = master.integers(0, 2**63 - 1, size=len(sizes))
    jobs, first, start = [], 0, 0
    while start < len(sizes):  # as iter_demo_blocks cuts them
        stop = min(len(sizes), start + max(1, int(np.searchsorted(
            np.cumsum(sizes[start:]), BLOCK_POINTS)) + 1))
        jobs.append((spec, sizes[start:stop], first, int(block_seeds[start])))
        first += stop - start
        start = stop
    with mp.get_context("fork").Pool(max(1, workers)) as pool:
        blocks = pool.map(_block, jobs, chunksize=1)
    x = np.concatenate([b[0] for b in blocks])
    y = np.concatenate([b[1] for b in blocks])
    del blocks
    write_features(path, x, labels=y)


# ------------------------------------------------------------------ the stages

def command(rep: Report, name: str, module: str, *args, reserve: float = 5.0,
            **extra) -> dict | None:
    """Run ``python -m cftools.commands.<module> args`` within the budget; its row."""
    left = rep.left()
    if left < reserve:
        rep.skip(name, f"time budget spent ({now():.0f} s of {rep.budget:.0f} s)")
        return None
    say(f"{name} ...")
    cmd = [sys.executable, "-m", f"cftools.commands.{module}", *map(str, args)]
    t = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=left)
    except subprocess.TimeoutExpired:
        rep.skip(name, f"stopped at the end of the time budget after {left:.0f} s")
        return None
    seconds = time.perf_counter() - t
    if r.returncode != 0:
        rep.skip(name, f"failed ({r.returncode}): {r.stderr.strip()[-400:]}")
        return None
    say(f"{name}: {seconds:.1f} s")
    row = {"stage": name, "seconds": round(seconds, 2), **extra}
    found = re.search(r"search ([0-9.]+) s\)", r.stderr)
    if found:
        row["search_seconds"] = float(found.group(1))
    return row


def chain(rep: Report, tmp: Path, n: int, a, device: str, link_flops: float) -> list:
    """Demo features of n points, then knn + seq + link + merge, each timed."""
    rows: list = []
    rep.data.setdefault("runs", {})[str(n)] = rows
    f, k, s, lk, c = (tmp / f"{x}_{n}.h5" for x in ("f", "k", "s", "l", "c"))
    if rep.left() < 20:
        rep.skip(f"{n} points", "time budget spent before its data")
        return rows
    say(f"demo features {n} x {a.dim} ...")
    t = time.perf_counter()
    demo_features(f, n, a.dim, seed=1, workers=a.workers)
    rep.data.setdefault("data_seconds", {})[str(n)] = round(time.perf_counter() - t, 1)
    say(f"demo features: {time.perf_counter() - t:.1f} s")
    if device == "cpu":  # the dry run checks that the blocks made in parallel are the demo's
        from cftools.data.demo import make_demo_features
        from cftools.formats.features import load_features

        x, y = make_demo_features(n, a.dim, seed=1)
        made = load_features(f)
        rep.data.setdefault("demo_equals_cf_data_demo", {})[str(n)] = bool(
            np.array_equal(made.features, x) and np.array_equal(made.labels, y))
    knn_args = ["--backend", "torch"] if device == "cpu" else []
    link_args = ["--batch-size", 4096] if device == "cuda" else []
    stages = [
        ("cf-knn", "knn", [f, "-o", k, "-k", a.k, "--device", device, *knn_args, "-q"],
         2.0 * n * n * a.dim),
        ("cf-seq", "seq", [k, "--features", f, "-o", s, "-L", a.length, "-q"], 0.0),
        ("cf-link", "link", [s, "--features", f, "--model", a.model, "-o", lk, "--method",
                             "model", "--device", device, *link_args, "-q"], link_flops * n),
        ("cf-merge", "merge", [lk, "-o", c, "--method", "propagation", "-q"], 0.0),
    ]
    for name, module, args, flops in stages:
        row = command(rep, f"{name} {n}", module, *args, n=n, flops=flops)
        if row is None:
            break
        if name == "cf-knn":
            row["knn"] = knn_attrs(k)
        rows.append(row)
        rep.save()
        for done in (f, k, s) if name == "cf-merge" else ():
            done.unlink(missing_ok=True)  # the disk holds one size's files at a time
    return rows


def knn_attrs(path: Path) -> dict:
    import h5py

    with h5py.File(path, "r") as f:
        return {key: (json.loads(f.attrs[key]) if key in ("params", "auto") else str(f.attrs[key]))
                for key in ("method", "params", "auto", "device") if key in f.attrs}


def summarise(rep: Report) -> list:
    """Per size and stage: seconds and share of the measured peak."""
    peak = rep.data.get("peak", {}).get("tflops")
    lines = []
    for n, rows in rep.data.get("runs", {}).items():
        total = 0.0
        for r in rows:
            total += r["seconds"] if not r["stage"].startswith("cf-merge infomap") else 0.0
            share = None if not peak else r["flops"] / (r["seconds"] * peak * 1e12)
            r["share_of_peak"] = None if share is None else round(share, 4)
            lines.append({"n": int(n), "stage": r["stage"].split()[0] + (
                " infomap" if "infomap" in r["stage"] else ""), "seconds": r["seconds"],
                "share_of_peak": r["share_of_peak"]})
        lines.append({"n": int(n), "stage": "knn+seq+link+merge", "seconds": round(total, 1),
                      "complete": len([r for r in rows if "infomap" not in r["stage"]]) == 4})
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--dry-run", action="store_true", help="no GPU: small N on the CPU")
    ap.add_argument("--sizes", type=int, nargs="+", default=None,
                    help=f"points [{' '.join(map(str, SIZES))}; dry run "
                         f"{' '.join(map(str, DRY_SIZES))}]")
    ap.add_argument("--budget", type=float, default=330, help="seconds for everything here")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("-k", type=int, default=80)
    ap.add_argument("-L", "--length", type=int, default=64)
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--tests", nargs="*", default=list(TESTS))
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    a = ap.parse_args(argv)
    rep = Report(a.json, a.budget, {"dry_run": a.dry_run, "dim": a.dim, "k": a.k,
                                    "L": a.length, "budget_s": a.budget,
                                    "model": str(a.model.relative_to(ROOT)
                                                 if a.model.is_relative_to(ROOT) else a.model)})
    rep.data["host"] = host_info()
    cuda = bool(rep.data["host"]["cuda"])
    if not a.dry_run and not cuda:
        rep.skip("every GPU stage", "torch sees no CUDA GPU; run with --dry-run for the CPU")
        return 1
    device = "cpu" if a.dry_run else "cuda"
    rep.data["peak"] = matmul_peak(device)
    say(f"matmul rate on {device}: {rep.data['peak']}")
    link_flops = link_flops_per_sequence(a.model, a.dim, a.length)
    rep.data["link_flops_per_sequence"] = link_flops
    rep.save()

    t = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    try:
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-rfs",
                                "-p", "no:cacheprovider", *a.tests], capture_output=True,
                               text=True, cwd=ROOT, env=env, timeout=max(30, min(150, rep.left())))
        lines = [line for line in tests.stdout.splitlines() if line.strip()]
        rep.data["gpu_tests"] = {"exit": tests.returncode, "summary": lines[-1] if lines else "",
                                 "not_passed": [s for s in lines if s.startswith(
                                     ("SKIPPED", "FAILED", "ERROR"))]}
        if tests.returncode not in (0, 5):
            print(tests.stdout[-4000:], tests.stderr[-2000:], file=sys.stderr)
    except subprocess.TimeoutExpired:
        rep.data["gpu_tests"] = {"exit": None, "summary": "stopped: over its time limit"}
    rep.data["gpu_tests"]["seconds"] = round(time.perf_counter() - t, 1)
    say(f"gpu tests: {rep.data['gpu_tests']['summary']}")
    rep.save()

    sizes = a.sizes or (DRY_SIZES if a.dry_run else SIZES)
    with tempfile.TemporaryDirectory(prefix="cf-gpu-") as tmp:
        for n in sizes:
            chain(rep, Path(tmp), n, a, device, link_flops)
        # the round's default decoder at the smaller size, where time is left
        n = min(sizes)
        links = Path(tmp) / f"l_{n}.h5"
        if links.exists():
            row = command(rep, f"cf-merge infomap {n}", "merge", links, "-o",
                          Path(tmp) / f"ci_{n}.h5", "--method", "infomap", "-q", n=n,
                          flops=0.0)
            if row is not None:
                rep.data["runs"][str(n)].append(row)
    rep.data["summary"] = summarise(rep)
    rep.save()
    print(json.dumps(rep.data["summary"], indent=1), file=sys.stderr)
    say(f"wrote {a.json}")
    return 0 if rep.data["gpu_tests"].get("exit") in (0, 5) else 1


if __name__ == "__main__":
    sys.exit(main())
