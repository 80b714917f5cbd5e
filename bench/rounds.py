"""The default round (`make round`) on a set, run once per (set, seed) and reused by the
benchmarks of corrections and adds (bench/review.py, bench/incremental.py).

    python bench/rounds.py lfw-dev-dlib128 celeba-dlib128 demo --seeds 0 1 2

Rounds live under work/rounds/<set>-seed<S>/ (round1/ inside); the real face sets are laid
out as features from ../shared/data/<set> (D_L and D_U as split there).
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SETS = ("lfw-dev-dlib128", "celeba-dlib128", "demo")


def available(name: str) -> bool:
    return name == "demo" or (SHARED / name / "features.npy").exists()


def the_round(name: str, seed: int, work: Path | None = None) -> Path:
    """Run (or reuse) the default round of ``name`` at ``seed``; returns its round1 folder."""
    work = work or ROOT / "work" / "rounds" / f"{name}-seed{seed}"
    args = ["make", "-s", "round", f"DATA={name}", f"WORK={work / 'w'}", f"SEED={seed}",
            "QUIET=-q"]
    if name != "demo":
        data = work / "data"
        if not (data / "unlabelled.npy").exists():
            d = SHARED / name
            x, y = np.load(d / "features.npy"), np.load(d / "labels.npy")
            li, ui = np.load(d / "labelled_idx.npy"), np.load(d / "unlabelled_idx.npy")
            data.mkdir(parents=True, exist_ok=True)
            for part, idx in (("labelled", li), ("unlabelled", ui)):
                np.save(data / f"{part}.npy", x[idx])
                np.save(data / f"{part}_labels.npy", y[idx])
        args.append(f"DATADIR={data}")
    subprocess.run(args, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return work / "w" / "round1"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sets", nargs="*", default=list(SETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    for seed in args.seeds:
        for name in args.sets:
            if available(name):
                print(the_round(name, seed), flush=True)


if __name__ == "__main__":
    main()
