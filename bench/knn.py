"""cf-knn against the thirty lines a user would write instead, in the same run.

    python bench/knn.py                      # the D_U of issue 24's split, k 81, 3 pairs
    python bench/knn.py --n 125000 --dim 128 --seed 5 -k 81 --pairs 3 --json OUT

The data: `cf-data demo -n N -d DIM --seed S`, then `cf-data split --fraction 0.2 --seed
S`; the unlabelled part (D_U, ~100K points at the defaults) is searched. Each pair runs,
one after the other, as separate processes:

- `cf-knn DU -o OUT -k K` with its defaults (--method auto, --backend auto): start-up,
  reading and validating the file, auto's choice, the search, each centre put first, the
  write;
- the peer: a fresh Python that reads the features with h5py, runs faiss `IndexFlatIP`
  add + search at the same k, and writes the two arrays with h5py.

Both run under the same OpenMP settings (GOMP_SPINCOUNT as cftools sets it, unless
given). The machine is shared, so the pairs alternate and the median of the per-pair ratios is
the figure (target: at most 1.15). The load average is recorded beside every run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import cftools  # noqa: F401  sets GOMP_SPINCOUNT, which the peer's process inherits too

PEER = """
import sys, time, h5py, faiss
t0 = time.perf_counter()
with h5py.File(sys.argv[1], "r") as f:
    x = f["features"][()]
index = faiss.IndexFlatIP(x.shape[1])
index.add(x)
sims, ids = index.search(x, int(sys.argv[3]))
t1 = time.perf_counter()
with h5py.File(sys.argv[2], "w") as f:
    f["indices"] = ids
    f["similarities"] = sims
print(t1 - t0, time.perf_counter() - t1)
"""


def timed(cmd) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{r.stderr[-2000:]}")
    return time.perf_counter() - t, r.stdout + r.stderr


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=125_000, help="demo points before the split")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("-k", type=int, default=81)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    bindir = Path(sys.executable).parent
    rows = []
    with tempfile.TemporaryDirectory(prefix="cf-bench-knn-") as tmp:
        tmp = Path(tmp)
        subprocess.run([bindir / "cf-data", "demo", tmp / "all.h5", "-n", str(args.n), "-d",
                        str(args.dim), "--seed", str(args.seed), "-q"], check=True)
        subprocess.run([bindir / "cf-data", "split", tmp / "all.h5", "--fraction", "0.2",
                        "--seed", str(args.seed), "-L", tmp / "dl.h5", "-U", tmp / "du.h5",
                        "-q"], check=True)
        du = tmp / "du.h5"
        for pair in range(args.pairs):
            load = os.getloadavg()[0]
            cf_s, log = timed([bindir / "cf-knn", du, "-o", tmp / "knn.h5", "-k", args.k])
            (tmp / "knn.h5").unlink()
            load_mid = os.getloadavg()[0]
            peer_s, out = timed([sys.executable, "-c", PEER, du, tmp / "peer.h5", args.k])
            (tmp / "peer.h5").unlink()
            search_s, write_s = (float(v) for v in out.split())
            row = {"pair": pair, "cf_knn_s": round(cf_s, 2), "peer_s": round(peer_s, 2),
                   "peer_search_s": round(search_s, 2), "peer_write_s": round(write_s, 2),
                   "ratio": round(cf_s / peer_s, 3),
                   "load": [round(load, 2), round(load_mid, 2), round(os.getloadavg()[0], 2)],
                   "cf_knn_log": [line for line in log.splitlines()
                                  if "auto" in line or "wrote" in line]}
            rows.append(row)
            print(f"pair {pair}: cf-knn {cf_s:7.2f} s  peer {peer_s:7.2f} s  ratio "
                  f"{cf_s / peer_s:.3f}  (load {load:.1f}/{load_mid:.1f})", flush=True)
    ratio = float(np.median([r["ratio"] for r in rows]))
    result = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "data": f"cf-data demo -n {args.n} -d {args.dim} --seed {args.seed}; split "
                      f"--fraction 0.2 --seed {args.seed}; D_U searched",
              "k": args.k, "threads": os.environ.get("OMP_NUM_THREADS", "all"),
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
              "gomp_spincount": os.environ.get("GOMP_SPINCOUNT", "unset"),
              "cpus": os.cpu_count(), "pairs": rows, "median_ratio": round(ratio, 3),
              "target": 1.15}
    print(f"median ratio cf-knn / peer: {ratio:.3f} (target <= 1.15)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
