"""The GPU check's measurements (run by bench/gpu.sh, which sets up the GPU build first).

    python bench/gpu.py --json OUT [--n 584000] [--cpu-n 60000] [--budget 420]
    python bench/gpu.py --dry-run --json OUT      # no GPU: the same stages at small N on CPU

1. the suite's GPU-marked tests (pytest -m gpu);
2. a demo set of N x 256 (584K: one MS-Celeb-1M part; 200K where faiss has no GPU build
   and cf-knn searches on the host's CPUs) through cf-knn (defaults: auto) +
   cf-seq + cf-link (small preset, trained for one epoch on a labelled demo set) +
   cf-merge, on the GPU, each stage timed;
3. the same stages on the CPU of the same host, at --cpu-n points, scaled to N (knn with
   IVF ~ N^1.5, exact ~ N^2, the rest ~ N), so each GPU figure has its CPU figure beside it;
4. link throughput of the paper preset (6+6 layers, width 512; untrained: speed does not
   depend on the weights) on the GPU and on the CPU.

Every stage is skipped, with its reason printed and stored, once the time spent passes
--budget (bench/gpu.sh must finish in 8 minutes) or when what it needs is missing (no CUDA
for torch, no faiss GPU build). One JSON holds the figures, the skips and the host.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from memory import MB, run

SKIPS: list[str] = []
T0 = time.perf_counter()

PAPER_MODEL = """
import sys, torch
from cftools.core.clusformer.model import Clusformer, make_config, save_model
torch.manual_seed(0)
save_model(sys.argv[1], Clusformer(make_config("paper", int(sys.argv[2]), int(sys.argv[3]))))
"""

HOST = """
import json, os, torch, faiss
info = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "faiss": faiss.__version__, "faiss_gpu_build": hasattr(faiss, "StandardGpuResources"),
        "faiss_gpus": int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0,
        "cpus": os.cpu_count(), "load": os.getloadavg()[0]}
print(json.dumps(info))
"""


def skip(what: str, why: str) -> None:
    line = f"{what}: {why}"
    SKIPS.append(line)
    print(f"gpu.py: SKIPPED {line}", file=sys.stderr, flush=True)


def left(budget: float) -> float:
    return budget - (time.perf_counter() - T0)


def cf(module, *args) -> dict:
    res = run([sys.executable, "-m", f"cftools.commands.{module}", *map(str, args), "-q"])
    return {"seconds": round(res["seconds"], 2), "peak_mb": round(res["peak"] / MB)}


def timed(name, budget, reserve, module, *args, **extra):
    """Run one stage unless less than ``reserve`` seconds of the budget are left."""
    if left(budget) < reserve:
        skip(name, f"time budget spent ({time.perf_counter() - T0:.0f} s of {budget:.0f} s)")
        return None
    print(f"[{time.perf_counter() - T0:6.1f} s] {name} ...", file=sys.stderr, flush=True)
    try:
        res = cf(module, *args)
    except RuntimeError as err:
        skip(name, f"failed: {str(err)[-300:]}")
        return None
    res.update(stage=name, **extra)
    print(f"           {res['seconds']:.1f} s", file=sys.stderr, flush=True)
    return res


def knn_attrs(path) -> dict:
    code = ("import sys, json, h5py; f = h5py.File(sys.argv[1]); "
            "print(json.dumps({k: f.attrs[k] for k in ('method', 'params', 'auto') "
            "if k in f.attrs} | {'recall_at_k': float(f.attrs.get('recall_at_k', 1.0))}))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def pipeline(tmp: Path, tag: str, n: int, device: str, model: Path, a, budget,
             knn_device: str | None = None) -> list:
    """knn + seq + link + merge on n demo points with --device ``device`` (cf-knn on
    ``knn_device`` where given: the CPU when faiss has no GPU build)."""
    rows = []
    f = tmp / f"f_{tag}.h5"
    r = timed(f"cf-data demo {tag}", budget, 20, "data", "demo", f, "-n", n, "-d", a.dim,
              "--seed", 1)
    if r is None:
        return rows
    k, s, lk, c = (tmp / f"{x}_{tag}.h5" for x in ("k", "s", "l", "c"))
    knn_device = knn_device or device
    r = timed(f"cf-knn {tag}", budget, 30, "knn", f, "-o", k, "-k", a.k, "--device",
              knn_device, n=n, device=knn_device)
    if r is None:
        return rows
    r["knn"] = knn_attrs(k)
    rows.append(r)
    r = timed(f"cf-seq {tag}", budget, 20, "seq", k, "--features", f, "-o", s, "-L", a.length,
              n=n, device="cpu")
    if r is None:
        return rows
    rows.append(r)
    r = timed(f"cf-link {tag}", budget, 20, "link", s, "--features", f, "--model", model,
              "-o", lk, "--device", device, n=n, device=device)
    if r is None:
        return rows
    r["sequences_per_s"] = round(n / r["seconds"])
    rows.append(r)
    r = timed(f"cf-merge {tag}", budget, 20, "merge", lk, "-o", c, n=n, device="cpu")
    if r is not None:
        rows.append(r)
    return rows


def scale(row: dict, n: int) -> float:
    """A CPU stage's seconds at n points from its measurement at row['n']."""
    power = 1.0
    if row["stage"].startswith("cf-knn"):
        power = 2.0 if row.get("knn", {}).get("method") == "exact" else 1.5
    return row["seconds"] * (n / row["n"]) ** power


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--dry-run", action="store_true", help="no GPU: small N on the CPU only")
    ap.add_argument("--n", type=int, default=None,
                    help="points [584000; 200000 where faiss has no GPU build; dry run 20000]")
    ap.add_argument("--cpu-n", type=int, default=None, help="CPU comparison [60000; dry 5000]")
    ap.add_argument("--paper-n", type=int, default=None,
                    help="sequences for the paper preset's GPU throughput [100000; dry 500]")
    ap.add_argument("--train-n", type=int, default=None,
                    help="labelled demo points the small model trains on [20000; dry 3000]; "
                         "on the H200 host, 20000 took 125 s (data, kNN on the CPU, training, "
                         "cf-train's calibration)")
    ap.add_argument("--budget", type=float, default=420, help="seconds for everything here")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("-k", type=int, default=80)
    ap.add_argument("-L", "--length", type=int, default=64)
    a = ap.parse_args(argv)
    dry = a.dry_run
    n = a.n or (20_000 if dry else 584_000)
    cpu_n = a.cpu_n or (5_000 if dry else 60_000)
    paper_n = a.paper_n or (500 if dry else 100_000)
    budget = a.budget
    report: dict = {"dry_run": dry, "n": n, "cpu_n": cpu_n, "dim": a.dim, "k": a.k,
                    "L": a.length, "budget_s": budget, "python": platform.python_version()}
    host = subprocess.run([sys.executable, "-c", HOST], capture_output=True, text=True)
    report["host"] = json.loads(host.stdout) if host.returncode == 0 else {"error": host.stderr[-300:]}
    cuda = bool(report["host"].get("cuda"))
    if dry:
        skip("GPU stages", "no NVIDIA GPU on this host: CPU dry run at small N")
    elif not cuda:
        skip("GPU stages", "torch sees no CUDA GPU (a CPU build of torch?)")
    if not dry and not report["host"].get("faiss_gpu_build"):
        skip("faiss on the GPU", "this faiss has no GPU support (the GPU build did not install): "
             "cf-knn runs on the CPU in the GPU pipeline too")
        if a.n is None:  # the H200 host's CPUs searched 200K in 12 s; 584K ran past 290 s
            n = report["n"] = 200_000

    # 1. the GPU-marked tests
    t = time.perf_counter()
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-rfs",
                            "tests/test_gpu.py"], capture_output=True, text=True, timeout=240)
    summary = [line for line in tests.stdout.splitlines() if line.strip()]
    report["gpu_tests"] = {"exit": tests.returncode, "seconds": round(time.perf_counter() - t, 1),
                           "summary": summary[-1] if summary else "",
                           "skipped": [s for s in summary if s.startswith("SKIPPED")]}
    report["gpu_tests"]["failed"] = [s for s in summary if s.startswith("FAILED")]
    print(f"gpu tests: {report['gpu_tests']['summary']}", file=sys.stderr, flush=True)
    if tests.returncode not in (0, 5):
        print(tests.stdout[-3000:], file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # a small-preset model for d and L: one epoch on a labelled demo set
        ft, kt, st, model = (tmp / f"train_{x}.h5" for x in ("f", "k", "s", "m"))
        tn = a.train_n or (3000 if dry else 20000)
        dev = "cuda" if cuda and not dry else "cpu"
        for stage in (("data", "demo", ft, "-n", tn, "-d", a.dim, "--seed", 7),
                      ("knn", ft, "-o", kt, "-k", a.k, "--device", "cpu"),
                      ("seq", kt, "--features", ft, "-o", st, "-L", a.length),
                      ("train", st, "--features", ft, "-o", model, "--preset", "small",
                       "--epochs", 1, "--device", dev)):
            cf(*stage)
        report["model"] = {"preset": "small", "train_points": tn, "epochs": 1,
                           "seconds": round(time.perf_counter() - T0, 1)}

        knn_dev = "cuda" if report["host"].get("faiss_gpu_build") else "cpu"
        gpu_rows = pipeline(tmp, "gpu", n, "cuda", model, a, budget, knn_dev) \
            if cuda and not dry else []
        cpu_rows = pipeline(tmp, "cpu", cpu_n, "cpu", model, a, budget)
        for row in cpu_rows:
            row["seconds_scaled_to_n"] = round(scale(row, n), 1)
        report["gpu"], report["cpu"] = gpu_rows, cpu_rows
        ratios = {}
        for g in gpu_rows:
            name = g["stage"].split()[0]
            c = next((r for r in cpu_rows if r["stage"].split()[0] == name), None)
            if c is not None:
                ratios[name] = round(c["seconds_scaled_to_n"] / g["seconds"], 2)
        report["gpu_speedup_vs_cpu"] = ratios

        # 4. the paper preset's link throughput
        paper = tmp / "paper.h5"
        subprocess.run([sys.executable, "-c", PAPER_MODEL, str(paper), str(a.dim),
                        str(a.length)], check=True)
        report["paper_link"] = {}
        for tag, rows, dev_ in (("gpu", paper_n, "cuda"), ("cpu", max(200, paper_n // 100), "cpu")):
            if tag == "gpu" and (dry or not cuda):
                continue
            src = tmp / f"s_{tag}.h5"
            f = tmp / f"f_{tag}.h5"
            if not src.exists():
                skip(f"paper link {tag}", "its sequences were not made (budget)")
                continue
            # the first `rows` sequences: a cut of the pipeline's sequences file
            cut = tmp / f"s_paper_{tag}.h5"
            fcut = tmp / f"f_paper_{tag}.h5"
            subprocess.run([sys.executable, "-c", CUT, str(src), str(f), str(cut), str(fcut),
                            str(rows)], check=True)
            r = timed(f"cf-link paper {tag}", budget, 30, "link", cut, "--features", fcut,
                      "--model", paper, "-o", tmp / f"lp_{tag}.h5", "--device", dev_,
                      n=rows, device=dev_)
            if r is not None:
                r["sequences_per_s"] = round(rows / r["seconds"])
                report["paper_link"][tag] = r
        if "gpu" in report["paper_link"] and "cpu" in report["paper_link"]:
            report["gpu_speedup_vs_cpu"]["cf-link paper"] = round(
                report["paper_link"]["gpu"]["sequences_per_s"]
                / report["paper_link"]["cpu"]["sequences_per_s"], 2)
    report["skipped"] = SKIPS
    report["seconds"] = round(time.perf_counter() - T0, 1)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps({k: report[k] for k in ("gpu_speedup_vs_cpu", "skipped", "seconds")},
                     indent=1), file=sys.stderr)
    print(f"gpu.py: wrote {a.json}", file=sys.stderr)
    return 0 if tests.returncode in (0, 5) else 1


# the first ROWS sequences of a sequences file, ids kept within those rows' neighbours:
# simplest is to keep the whole features file and cut only the sequences' rows, which
# cf-link refuses (rows != features); so cut both, and clip ids into range
CUT = """
import sys, numpy as np, h5py
from cftools.formats.artifacts import open_artifact
from cftools.formats.features import load_features, write_features
from cftools.formats.writing import create_rows, write_artifact
src, feats, out, fout, rows = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
f = load_features(feats)
rows = min(rows, f.n)
write_features(fout, f.features[:rows])
fid = load_features(fout).id
with open_artifact(src, "sequences") as s:
    order = s.read("order", slice(0, rows)) % rows
    mask = s.read("mask", slice(0, rows))
order[:, 0] = np.arange(rows)
with write_artifact(out, "sequences", attrs={"knn_id": "cut", "features_id": fid}) as h:
    create_rows(h, "order", order.shape, np.int64, data=order)
    create_rows(h, "mask", mask.shape, bool, data=mask)
"""


if __name__ == "__main__":
    sys.exit(main())
