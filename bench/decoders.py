"""The fast decoder (label propagation) against Infomap, in the default round, three seeds.

    python bench/decoders.py                                   # demo, lfw-dev, CelebA; seeds 0 1 2
    python bench/decoders.py --sets celeba-dlib128 --seeds 0 --json OUT

For every set and seed this runs the default round up to its links (`make round`'s
links.h5: cf-knn, cf-seq, cf-train with every decoder calibrated on D_L, cf-link
--method auto), then clusters those same links twice, `cf-merge --method infomap` and
`cf-merge --method propagation`, each at the threshold and link mode cf-train calibrated
for it on D_L, and scores both on D_U's truth (F_P, F_B). It also times what the new
decoder adds to training: both decoders' calibration (calibrate_links, as cf-train runs
it) on D_L's links made by the same model and link method.

Sets: `demo` is `cf-data demo -n --demo-n -d 128 --seed S` split by identity 20/80
(D_L/D_U, `cf-data split --fraction 0.2 --seed S`); lfw-dev-dlib128 and celeba-dlib128
are ../shared/data's standard splits, where the seed is the round's training seed.
Rows go to bench/results/decoders-<time>.json and a table per set is printed.
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

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SETS = ("demo", "lfw-dev-dlib128", "celeba-dlib128")
BIN = Path(sys.executable).parent


def write_data(name: str, seed: int, data: Path, demo_n: int) -> None:
    """labelled/unlabelled .npy (+ _labels.npy) for the round's features mode."""
    data.mkdir(parents=True, exist_ok=True)
    if name == "demo":
        import h5py

        subprocess.run([BIN / "cf-data", "demo", data / "all.h5", "-n", str(demo_n), "-d",
                        "128", "--seed", str(seed), "-q"], check=True)
        subprocess.run([BIN / "cf-data", "split", data / "all.h5", "--fraction", "0.2", "--seed",
                        str(seed), "-L", data / "dl.h5", "-U", data / "du.h5", "-q"], check=True)
        parts = {}
        for part, f in (("labelled", "dl.h5"), ("unlabelled", "du.h5")):
            with h5py.File(data / f, "r") as h:
                parts[part] = (h["features"][()], h["labels"][()])
        for f in ("all.h5", "dl.h5", "du.h5"):
            (data / f).unlink()
    else:
        d = SHARED / name
        x, y = np.load(d / "features.npy"), np.load(d / "labels.npy")
        li, ui = np.load(d / "labelled_idx.npy"), np.load(d / "unlabelled_idx.npy")
        parts = {"labelled": (x[li], y[li]), "unlabelled": (x[ui], y[ui])}
    for part, (x, y) in parts.items():
        np.save(data / f"{part}.npy", x)
        np.save(data / f"{part}_labels.npy", y)


def run(cmd) -> float:
    t = time.perf_counter()
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - t


def calibration_seconds(r: Path, link_method: str) -> dict:
    """Seconds of each decoder's calibration on D_L's links, as cf-train runs it."""
    from cftools.core.calibration.thresholds import COSINE_MODES, calibrate_links
    from cftools.formats.links import read_links
    from cftools.formats.thresholds import LINK_MODES

    run([BIN / "cf-link", r / "seq_labelled.h5", "--features", r / "labelled.h5", "--model",
         r / "model.h5", "-o", r / "links_labelled.h5", "--method", link_method, "-q"])
    idx, probs, _, _, art = read_links(r / "links_labelled.h5")
    art.close()
    import h5py

    with h5py.File(r / "labelled.h5", "r") as f:
        labels = f["labels"][()]
    modes = COSINE_MODES if link_method == "cosine" else LINK_MODES
    out = {}
    for decoder in ("infomap", "propagation"):
        t = time.perf_counter()
        calibrate_links(idx, probs, labels, (decoder,), modes=modes)
        out[decoder] = round(time.perf_counter() - t, 2)
    return out


def one_round(name: str, seed: int, work: Path, demo_n: int) -> dict:
    data = work / "data"
    write_data(name, seed, data, demo_n)
    r = work / "w" / "round1"
    t0 = time.perf_counter()
    run(["make", "-s", str(r / "links.h5"), f"DATA={name}", f"DATADIR={data}",
         f"WORK={work / 'w'}", f"SEED={seed}", "QUIET=-q"])
    round_s = time.perf_counter() - t0
    import h5py

    with h5py.File(r / "links.h5", "r") as f:
        link_method = str(f.attrs["method"])
        thresholds = json.loads(f.attrs["thresholds"])
    row = {"data": name, "seed": seed, "links": link_method, "round_to_links_s": round(round_s, 1),
           "n_unlabelled": int(np.load(data / "unlabelled_labels.npy").shape[0])}
    for decoder in ("infomap", "propagation"):
        out = r / f"clusters_{decoder}.h5"
        secs = run([BIN / "cf-merge", r / "links.h5", "-o", out, "--method", decoder, "-q"])
        ev = subprocess.run([BIN / "cf-eval", out, "--truth", r / "unlabelled.h5", "--json", "-q"],
                            capture_output=True, text=True, check=True)
        e = json.loads(ev.stdout)
        mode = thresholds.get(f"link_mode_{decoder}")
        key = decoder if mode == "reciprocal" else f"{mode}_{decoder}"
        row[decoder] = {"F_P": round(100 * e["pairwise_f"], 2), "F_B": round(100 * e["bcubed_f"], 2),
                        "clusters": e.get("n_clusters"), "merge_s": round(secs, 2),
                        "link_mode": mode, "threshold": thresholds.get(key)}
    row["calibration_s"] = calibration_seconds(r, link_method)
    return row


def print_table(name: str, rows: list) -> None:
    print(f"\n{name}: D_U, thresholds calibrated on D_L by cf-train "
          "(cf-merge seconds include reading the links)")
    print("| seed | links | Infomap F_P / F_B | propagation F_P / F_B | difference | merge s "
          "(Infomap / propagation) | calibration s on D_L |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        a, b = r["infomap"], r["propagation"]
        print(f"| {r['seed']} | {r['links']} | {a['F_P']:.2f} / {a['F_B']:.2f} | "
              f"{b['F_P']:.2f} / {b['F_B']:.2f} | {b['F_P'] - a['F_P']:+.2f} / "
              f"{b['F_B'] - a['F_B']:+.2f} | {a['merge_s']:.1f} / {b['merge_s']:.1f} | "
              f"{r['calibration_s']['infomap']:.1f} / {r['calibration_s']['propagation']:.1f} |")
    if rows:
        mean = {d: {m: float(np.mean([r[d][m] for r in rows])) for m in ("F_P", "F_B")}
                for d in ("infomap", "propagation")}
        a, b = mean["infomap"], mean["propagation"]
        print(f"| mean | | {a['F_P']:.2f} / {a['F_B']:.2f} | {b['F_P']:.2f} / {b['F_B']:.2f} | "
              f"{b['F_P'] - a['F_P']:+.2f} / {b['F_B'] - a['F_B']:+.2f} | | |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--demo-n", type=int, default=20000,
                    help="demo points before the 20/80 split [20000]")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    out = args.json or ROOT / "bench" / "results" / (
        "decoders-" + datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%M%SZ") + ".json")
    rows: list = []
    for name in args.sets:
        if name != "demo" and not (SHARED / name / "features.npy").exists():
            print(f"(skipping {name}: not found under {SHARED})", file=sys.stderr)
            continue
        mine = []
        for seed in args.seeds:
            with tempfile.TemporaryDirectory(prefix=f"cf-dec-{name}-") as tmp:
                row = one_round(name, seed, Path(tmp), args.demo_n)
            row["load"] = round(os.getloadavg()[0], 2)
            mine.append(row)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"time": datetime.now(timezone.utc).isoformat(),
                                       "cpus": os.cpu_count(), "args": vars(args) | {"json": str(out)},
                                       "rows": rows}, indent=1))
        print_table(name, mine)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
