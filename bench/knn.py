"""cf-knn against a bare faiss call on the same array, in the same run.

    python bench/knn.py [--n 100000] [--dim 256] [-k 80] [--method exact]

Prints the wall time of the whole `cf-knn` command (start-up, reading and validating the
file, search, putting the centre first, writing the output) and of `IndexFlatIP.add` +
`search` on the array already in memory, and their ratio. The target: the command's
overhead over bare faiss stays under 10%.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("-k", type=int, default=80)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each; the median is shown")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    import faiss

    from cftools.formats.artifacts import open_artifact

    bindir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory(prefix="cf-bench-knn-") as tmp:
        feats = Path(tmp) / "demo.h5"
        subprocess.run([bindir / "cf-data", "demo", feats, "-n", str(args.n), "-d",
                        str(args.dim), "-q"], check=True)
        command, bare = [], []
        for _ in range(args.repeat):
            out = Path(tmp) / "knn.h5"
            t = time.perf_counter()
            subprocess.run([bindir / "cf-knn", feats, "-o", out, "-k", str(args.k), "-q"],
                           check=True)
            command.append(time.perf_counter() - t)
            out.unlink()

            with open_artifact(feats, "features") as art:
                x = art.read("features")
            t = time.perf_counter()
            index = faiss.IndexFlatIP(x.shape[1])
            index.add(x)
            index.search(x, args.k)
            bare.append(time.perf_counter() - t)
            del index, x
    c, b = float(np.median(command)), float(np.median(bare))
    flops = 2.0 * args.n * args.n * args.dim
    result = {"n": args.n, "dim": args.dim, "k": args.k, "threads": faiss.omp_get_max_threads(),
              "cf_knn_s": c, "bare_faiss_s": b, "ratio": c / b, "overhead_pct": 100 * (c / b - 1),
              "bare_gflops": flops / b / 1e9}
    print(f"kNN exact, N={args.n}, d={args.dim}, k={args.k}, {result['threads']} threads")
    print(f"  cf-knn (whole command)   {c:8.2f} s")
    print(f"  bare faiss add+search    {b:8.2f} s   ({result['bare_gflops']:.0f} GFLOP/s)")
    print(f"  ratio                    {c / b:8.3f}   (overhead {result['overhead_pct']:+.1f}%, "
          f"target < +10%)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
