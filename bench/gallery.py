"""Time cf-eval gallery on a 1M-point demo clustering (features only: names, no images).

    python bench/gallery.py [-n 1000000] [-d 128] [--work /tmp/cf-gallery-bench] [--links]

Makes (once, kept in --work) a demo features file with `cf-data demo` and a clusters file
derived from its true identities with the mistakes a decoder makes: 10% of identities split
in two, 2% of points moved to another cluster, 3% left unassigned. That synthetic
clustering stands in for the pipeline, which is far slower at 1M on a small CPU. Then
it times `cf-eval gallery CLUSTERS --features F --truth F -o DIR` end to end (a fresh
process, as a user runs it) and checks the issue's bounds: under 2 minutes, no page over
2 MB, no page over --per-page members. Prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def make_inputs(work: Path, n: int, d: int) -> tuple[Path, Path]:
    feats, clusters = work / f"demo_{n}_{d}.h5", work / f"clusters_{n}_{d}.h5"
    if not feats.exists():
        subprocess.run([BIN / "cf-data", "demo", feats, "-n", str(n), "-d", str(d), "-q"],
                       check=True)
    if not clusters.exists():
        import h5py

        from cftools.formats.writing import write_artifact

        with h5py.File(feats, "r") as f:
            truth = f["labels"][()]
        rng = np.random.default_rng(0)
        pred = truth.copy()
        top = int(truth.max()) + 1
        split_ids = rng.choice(top, top // 10, replace=False)
        half = np.isin(truth, split_ids) & (rng.random(n) < 0.5)
        pred[half] += top                      # identities split in two
        moved = rng.random(n) < 0.02
        pred[moved] = rng.choice(pred, int(moved.sum()))  # strays in other clusters
        pred[rng.random(n) < 0.03] = -1        # unassigned
        with write_artifact(clusters, "clusters", attrs={"note": "synthetic, bench/gallery.py"}) as f:
            f.create_dataset("labels", data=pred.astype(np.int64))
    return feats, clusters


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1_000_000)
    ap.add_argument("-d", type=int, default=128)
    ap.add_argument("--work", default="/tmp/cf-gallery-bench")
    ap.add_argument("--per-page", type=int, default=300)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    feats, clusters = make_inputs(work, args.n, args.d)
    prep = time.perf_counter() - t0
    out = work / "gallery"
    t0 = time.perf_counter()
    proc = subprocess.run([BIN / "cf-eval", "gallery", clusters, "--features", feats,
                           "--truth", feats, "-o", out, "--per-page", str(args.per_page), "-q"],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"cf-eval gallery failed: {proc.stderr.strip()}")
    files = [p for p in out.rglob("*") if p.is_file()]
    pages = [p for p in files if p.suffix == ".html"]
    biggest = max(pages, key=lambda p: p.stat().st_size)
    most = max(len(re.findall(r'class="m[ "]', p.read_text())) for p in
               sorted((out / "pages").glob("*.html"))[:50] + [biggest])
    shards = list((out / "search").glob("*.js"))
    result = {
        "points": args.n, "dim": args.d, "inputs_prepared_s": round(prep, 1),
        "gallery_s": round(seconds, 1), "under_2_min": seconds < 120,
        "pages": len(pages), "largest_page": biggest.name,
        "largest_page_bytes": biggest.stat().st_size,
        "pages_under_2MB": biggest.stat().st_size < 2 << 20,
        "most_members_on_a_page_checked": most,
        "search_shards": len(shards),
        "largest_shard_bytes": max(p.stat().st_size for p in shards),
        "site_bytes": sum(p.stat().st_size for p in files), "files": len(files),
        "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
