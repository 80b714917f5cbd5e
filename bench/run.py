"""The cftools benchmark: cost of every stage and accuracy against baselines, in one run.

    python bench/run.py [--n 100000] [--quick] [--features F --labels L] [--json OUT]
    make bench [QUICK=1]

Table 1, cost: demo features (N x 256); wall time, throughput and peak memory (max RSS of
the command's process) per stage, run through the real commands; for kNN and link the
achieved GFLOP/s beside GEMM peaks measured in this same run. The paper preset links a
smaller demo set of its own (it runs ~50-100 sequences/s on 2 cores); its rows are shown.

Table 2, accuracy: F_P (pairwise F), F_B (BCubed F), NMI, clusters and time on the demo
set with hard and noisy samples, on the real faces of ../shared/data/celeba-dlib128 (its
standard split) and on any features given with --features/--labels (split by identity
with --seed). cftools (model + each decoder) against baselines run through the same
code path where they fit: every decoder over raw cosine links (--directed, as published:
Infomap over cosine kNN is the strongest untrained method), k-means told the true number
of identities (an oracle), DBSCAN and average-linkage agglomerative. cftools' model rows
use cf-merge's defaults (reciprocal link weights, thresholds cf-train calibrated on D_L).
Every threshold is chosen on the labelled part D_L only, never on the set scored.

Table 3, the default round on real faces (bench/quality.py): `make round` through the
commands on the standard splits of ../shared/data's lfw-dev (long-tailed: 71% of
identities with one image, a few of 100-530) and CelebA (2-30 images an identity), one
round per --quality-seeds value, against Infomap over directed cosine links with k and
the threshold chosen on D_L by pairwise F, and average linkage cut on D_L. About 6
minutes a round on a quiet 2-core machine; skipped by --quick and --skip-quality.

Table 4, cftools against the free baseline (bench/cost.py): the round's steps with
round.mk's defaults and the peer (exact faiss kNN + Infomap, k and min_sim chosen on D_L)
side by side on the demo split at 125K and 31K points (D_U 100K and 25K), per stage, wall
clock and CPU time, with the load average, and both sides' F_P / F_B; its own results file
bench/results/cost-*.json. --quick runs it at 6K points; --skip-peer-cost skips it.

Table 5, the whole loop on real images (bench/omniglot.py): on ../shared/data/omniglot-bg,
`make round` rounds 1 and 2 (backbone included) per --omniglot-seeds value, each round's
clusters of D_U against the free baseline recomputed on that round's features, and round
2's backbone against the step-matched D_L-only baseline and the upper bound (D_U's true
labels) on the test part: top-1, top-1 E, TAR@FAR=0.01 and the share of the upper bound's
gain recovered, mean and spread, with each step's seconds; its own results file
bench/results/omniglot-*.json. About 25-30 minutes a seed on a quiet 2-core machine;
skipped by --quick and --skip-omniglot, and with a note where the data is absent.

Results go to stdout as tables and, with --json, to a file, so runs can be compared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
SHARED = HERE.parents[1] / "shared" / "data" / "celeba-dlib128"
DECODERS = ("peaks", "intimacy", "infomap", "components")


# ----------------------------------------------------------------------------- running


class StageError(RuntimeError):
    pass


def run(argv, stdout_path=None) -> dict:
    """Run one command; wall time and the peak RSS of its own process."""
    argv = [str(a) for a in argv]
    out = open(stdout_path, "w") if stdout_path else subprocess.DEVNULL
    with tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise StageError(f"{' '.join(argv[:3])} failed: {err.read().strip()[-400:]}")
    if stdout_path:
        out.close()
    return {"seconds": wall, "peak_mb": usage.ru_maxrss / 1024}


def cf(name, *args, **kw) -> dict:
    return run([BIN / f"cf-{name}", *args], **kw)


def gemm_peaks() -> dict:
    """Measured in a child process: a child's max RSS starts at its parent's at fork, so
    this (large, torch-importing) parent would inflate every stage's peak memory."""
    proc = subprocess.run([sys.executable, __file__, "--gemm-only"], capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout)


def _gemm_peaks_here() -> dict:
    import torch

    n = 4096
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a
    t = time.perf_counter()
    for _ in range(3):
        a @ a
    numpy_fp32 = 3 * 2 * n**3 / (time.perf_counter() - t) / 1e9
    peaks = {"numpy_fp32": numpy_fp32}
    ta = torch.from_numpy(a)
    for name, dtype in (("torch_fp32", torch.float32), ("torch_bf16", torch.bfloat16)):
        x = ta.to(dtype)
        x @ x
        t = time.perf_counter()
        for _ in range(3):
            x @ x
        peaks[name] = 3 * 2 * n**3 / (time.perf_counter() - t) / 1e9
    return peaks


def model_flops(model_path) -> float:
    """FLOPs of one sequence through the model, counted from its config (in a child
    process, for the same reason as gemm_peaks: torch here would inflate every peak)."""
    code = ("import sys; from cftools.core.clusformer.model import flops_per_sequence, load_model; "
            "print(flops_per_sequence(load_model(sys.argv[1])[0].config))")
    proc = subprocess.run([sys.executable, "-c", code, str(model_path)], capture_output=True,
                          text=True, check=True)
    return float(proc.stdout.strip())


# ----------------------------------------------------------------------------- table 1


def cost_table(args, tmp: Path, peaks: dict) -> list[dict]:
    n, d, k, L = args.n, args.dim, args.k, args.length
    rows = []

    def add(stage, res, items, unit, flops=None, note=""):
        row = {"stage": stage, "rows": items, "seconds": res["seconds"],
               "throughput": items / res["seconds"], "unit": unit, "peak_mb": res["peak_mb"],
               "note": note}
        if flops is not None:
            row["gflops"] = flops / res["seconds"] / 1e9
        rows.append(row)
        return row

    feats = tmp / "demo.h5"
    add("demo features", cf("data", "demo", feats, "-n", n, "-d", d, "-q"), n, "pt/s")
    add("knn exact", cf("knn", feats, "-o", tmp / "knn.h5", "-k", k, "-q"), n, "pt/s",
        flops=2.0 * n * n * d, note=f"k={k}")
    add("knn ivf", cf("knn", feats, "-o", tmp / "knn_ivf.h5", "-k", k, "--method", "ivf",
                      "--recall-sample", 200, "-q"), n, "pt/s", note="defaults")
    add("seq", cf("seq", tmp / "knn.h5", "--features", feats, "-o", tmp / "seq.h5", "-L", L,
                  "-q"), n, "seq/s", note=f"L={L}")

    # models of the right shape (d, L), trained briefly on a small labelled demo set: the
    # link stage's cost does not depend on how well the model was trained
    small_l = tmp / "train.h5"
    cf("data", "demo", small_l, "-n", args.train_n, "-d", d, "--seed", 7, "-q")
    cf("knn", small_l, "-o", tmp / "train_knn.h5", "-k", k, "-q")
    cf("seq", tmp / "train_knn.h5", "--features", small_l, "-o", tmp / "train_seq.h5", "-L", L,
       "-q")
    for preset, rows_n in (("small", n), ("paper", min(n, args.paper_rows))):
        model = tmp / f"model_{preset}.h5"
        cf("train", tmp / "train_seq.h5", "--features", small_l, "-o", model, "--preset", preset,
           "--epochs", 1, "--val-fraction", 0.2, "-q")
        feats_in, seq_in = feats, tmp / "seq.h5"
        if rows_n < n:  # a smaller demo set of its own: links need all their features' rows
            feats_in, seq_in = tmp / f"demo_{rows_n}.h5", tmp / f"seq_{rows_n}.h5"
            cf("data", "demo", feats_in, "-n", rows_n, "-d", d, "--seed", 3, "-q")
            cf("knn", feats_in, "-o", tmp / f"knn_{rows_n}.h5", "-k", k, "-q")
            cf("seq", tmp / f"knn_{rows_n}.h5", "--features", feats_in, "-o", seq_in, "-L", L,
               "-q")
        try:
            flops = model_flops(model) * rows_n
        except Exception:  # noqa: BLE001 - the figure is optional, the timing is not
            flops = None
        add(f"link {preset}", cf("link", seq_in, "--features", feats_in, "--model", model, "-o",
                                 tmp / f"links_{preset}.h5", "-q"),
            rows_n, "seq/s", flops=flops, note="" if rows_n == n else f"{rows_n} rows")
    links = tmp / "links_small.h5"
    for decoder in DECODERS:
        add(f"merge {decoder}", cf("merge", links, "-o", tmp / f"cl_{decoder}.h5", "--method",
                                   decoder, "-q"), n, "pt/s", note=f"{n * L} links")
    end_to_end = sum(r["seconds"] for r in rows
                     if r["stage"] in ("knn exact", "seq", "link small", "merge peaks"))
    rows.append({"stage": "end to end", "rows": n, "seconds": end_to_end,
                 "throughput": n / end_to_end, "unit": "pt/s", "peak_mb": max(
                     r["peak_mb"] for r in rows), "note": "knn exact + seq + link small + peaks"})
    return rows


# ----------------------------------------------------------------------------- table 2


def score(clusters_or_labels, truth) -> dict:
    from cftools.core.metrics import evaluate

    m = evaluate(np.asarray(clusters_or_labels), np.asarray(truth))
    return {"F_P": 100 * m["pairwise_f"], "F_B": 100 * m["bcubed_f"], "NMI": 100 * m["nmi"],
            "clusters": m["n_clusters"]}


def read_clusters(path):
    from cftools.formats.artifacts import open_artifact

    with open_artifact(path, "clusters") as art:
        return art.read("labels")


def read_features(path):
    from cftools.formats.artifacts import open_artifact

    with open_artifact(path, "features") as art:
        return art.read("features"), art.read("labels")


def accuracy_rows(name: str, lab: Path, unl: Path, tmp: Path, args) -> list[dict]:
    """Everything on one dataset already split into D_L (lab) and D_U (unl)."""
    from baselines import AGGLOMERATIVE_MAX_N, agglomerative, dbscan, kmeans_true_k

    k, L = args.acc_k, args.acc_length
    rows = []
    fl, yl = read_features(lab)
    fu, yu = read_features(unl)
    prep = {}
    for part, src in (("L", lab), ("U", unl)):
        prep[part] = cf("knn", src, "-o", tmp / f"knn_{part}.h5", "-k", k, "-q")["seconds"]
        prep[part] += cf("seq", tmp / f"knn_{part}.h5", "--features", src, "-o",
                         tmp / f"seq_{part}.h5", "-L", L, "-q")["seconds"]
    train = cf("train", tmp / "seq_L.h5", "--features", lab, "-o", tmp / "model.h5",
               "--preset", "small", "--epochs", args.epochs, "--lr", args.lr, "-q")["seconds"]
    link = cf("link", tmp / "seq_U.h5", "--features", unl, "--model", tmp / "model.h5", "-o",
              tmp / "links_model.h5", "-q")["seconds"]
    for part, src in (("L", lab), ("U", unl)):
        cf("link", tmp / f"seq_{part}.h5", "--features", src, "--method", "cosine", "-o",
           tmp / f"links_cos_{part}.h5", "-q")
    for decoder in DECODERS:
        res = cf("merge", tmp / "links_model.h5", "-o", tmp / f"m_{decoder}.h5", "--method",
                 decoder, "-q")
        rows.append({"data": name, "method": f"cftools model + {decoder}",
                     **score(read_clusters(tmp / f"m_{decoder}.h5"), yu),
                     "seconds": prep["U"] + link + res["seconds"], "train_seconds": train})
    for decoder in DECODERS:  # raw cosine links as published: --directed
        res = cf("merge", tmp / "links_cos_U.h5", "-o", tmp / f"c_{decoder}.h5", "--method",
                 decoder, "--directed", "--calibrate", tmp / "links_cos_L.h5",
                 "--calibrate-truth", lab, "-q")
        rows.append({"data": name, "method": f"cosine + {decoder}",
                     **score(read_clusters(tmp / f"c_{decoder}.h5"), yu),
                     "seconds": prep["U"] + res["seconds"]})
    if args.baseline_ks:
        rows.append(cosine_infomap_best_k(name, lab, unl, tmp, args))
    n_ids = len(np.unique(yu[yu >= 0]))
    t = time.perf_counter()
    pred = kmeans_true_k(fu, n_ids, seed=args.seed)
    rows.append({"data": name, "method": "k-means (true K: oracle)", **score(pred, yu),
                 "seconds": time.perf_counter() - t})
    t = time.perf_counter()
    pred, eps = dbscan(fl, yl, fu)
    rows.append({"data": name, "method": f"DBSCAN (eps {eps:.3f} from D_L)", **score(pred, yu),
                 "seconds": time.perf_counter() - t})
    if max(len(fl), len(fu)) <= AGGLOMERATIVE_MAX_N:
        t = time.perf_counter()
        pred, thr = agglomerative(fl, yl, fu)
        rows.append({"data": name, "method": f"agglomerative avg (t {thr:.3f} from D_L)",
                     **score(pred, yu), "seconds": time.perf_counter() - t})
    return rows


def cosine_infomap_best_k(name, lab: Path, unl: Path, tmp: Path, args) -> dict:
    """The strongest untrained baseline given its best shot: Infomap over raw cosine kNN with
    k chosen on D_L too (the pairwise F that D_L's own calibration reaches, for each k of
    --baseline-ks), then D_U clustered through the commands at that k. (Skipped by --quick:
    two dozen more commands.)"""
    from cftools.core.calibration.thresholds import calibrate_thresholds
    from cftools.formats.artifacts import open_artifact

    _, yl = read_features(lab)
    best, u_seconds = None, {}
    for k in args.baseline_ks:
        for part, src in (("L", lab), ("U", unl)):
            took = cf("knn", src, "-o", tmp / f"bk{k}_knn_{part}.h5", "-k", k, "-q")["seconds"]
            took += cf("seq", tmp / f"bk{k}_knn_{part}.h5", "--features", src, "-o",
                       tmp / f"bk{k}_seq_{part}.h5", "-L", k, "-q")["seconds"]
            took += cf("link", tmp / f"bk{k}_seq_{part}.h5", "--features", src, "--method",
                       "cosine", "-o", tmp / f"bk{k}_links_{part}.h5", "-q")["seconds"]
            if part == "U":
                u_seconds[k] = took
        with open_artifact(tmp / f"bk{k}_links_L.h5", "links") as art:
            idx, sims = art.read("indices"), art.read("probabilities")
        _, on_dl = calibrate_thresholds(idx, sims, yl, decoders=("infomap",), return_scores=True)
        if best is None or on_dl["infomap"] > best[1]:
            best = (k, on_dl["infomap"])
    k = best[0]
    res = cf("merge", tmp / f"bk{k}_links_U.h5", "-o", tmp / "bk_infomap.h5", "--method",
             "infomap", "--directed", "--calibrate", tmp / f"bk{k}_links_L.h5",
             "--calibrate-truth", lab, "-q")
    return {"data": name, "method": f"cosine + infomap, k={k} chosen on D_L",
            **score(read_clusters(tmp / "bk_infomap.h5"), read_features(unl)[1]),
            "seconds": u_seconds[k] + res["seconds"]}


def accuracy_table(args, tmp: Path) -> list[dict]:
    rows = []
    sets = []
    demo = tmp / "acc_demo.h5"
    cf("data", "demo", demo, "-n", args.acc_n, "-d", args.dim, "--seed", args.seed, "-q")
    sets.append(("demo", demo, None))
    if (SHARED / "features.npy").exists():
        real = tmp / "celeba.h5"
        cf("data", "import", SHARED / "features.npy", "--labels", SHARED / "labels.npy", "-o",
           real, "-q")
        sets.append(("celeba-dlib128", real, SHARED / "labelled_idx.npy"))
    else:
        print(f"(skipping real faces: {SHARED} not found)", file=sys.stderr)
    if args.features:
        given = tmp / "given.h5"
        cf("data", "import", args.features, *(["--labels", args.labels] if args.labels else []),
           "-o", given, "-q")
        sets.append((Path(args.features).name, given, None))
    for name, path, rows_file in sets:
        part = tmp / name
        part.mkdir()
        split = ["--rows", rows_file] if rows_file else ["--seed", args.seed]
        cf("data", "split", path, "-L", part / "L.h5", "-U", part / "U.h5", *split, "-q")
        print(f"accuracy: {name} ...", file=sys.stderr)
        rows += accuracy_rows(name, part / "L.h5", part / "U.h5", part, args)
    return rows


# ----------------------------------------------------------------------------- output


def print_cost(rows, peaks):
    print(f"\nCost per stage (demo features, d=256; GEMM peaks this run: numpy fp32 "
          f"{peaks['numpy_fp32']:.0f}, torch fp32 {peaks['torch_fp32']:.0f}, torch bf16 "
          f"{peaks['torch_bf16']:.0f} GFLOP/s)")
    print(f"{'stage':<16} {'rows':>9} {'seconds':>9} {'throughput':>14} {'GFLOP/s':>8} "
          f"{'% peak':>7} {'peak MB':>8}  note")
    for r in rows:
        g = r.get("gflops")
        ref = peaks["numpy_fp32"] if r["stage"].startswith("knn") else peaks["torch_bf16"]
        gtxt = f"{g:8.1f} {100 * g / ref:6.0f}%" if g else f"{'':8} {'':7}"
        print(f"{r['stage']:<16} {r['rows']:>9} {r['seconds']:>9.2f} "
              f"{r['throughput']:>10.0f} {r['unit']:<4}{gtxt} {r['peak_mb']:>8.0f}  {r['note']}")


def print_accuracy(rows):
    print("\nAccuracy on the unlabelled part (thresholds from the labelled part only)")
    print(f"{'data':<16} {'method':<40} {'F_P':>6} {'F_B':>6} {'NMI':>6} {'clusters':>8} "
          f"{'seconds':>8}")
    for r in rows:
        print(f"{r['data']:<16} {r['method']:<40} {r['F_P']:6.2f} {r['F_B']:6.2f} "
              f"{r['NMI']:6.2f} {r['clusters']:>8} {r['seconds']:8.1f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description="cftools benchmark: cost and accuracy tables")
    ap.add_argument("--n", type=int, default=100_000, help="points of the cost table")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("-k", type=int, default=64)
    ap.add_argument("--length", type=int, default=64, help="sequence length L")
    ap.add_argument("--paper-rows", type=int, default=3000,
                    help="rows linked with the paper preset (it is slow on CPUs)")
    ap.add_argument("--train-n", type=int, default=4000)
    ap.add_argument("--acc-n", type=int, default=12000, help="points of the demo accuracy set")
    ap.add_argument("--acc-k", type=int, default=48)
    ap.add_argument("--acc-length", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=20, help="cf-train epochs for accuracy")
    ap.add_argument("--baseline-ks", type=lambda t: [int(v) for v in t.split(",")],
                    default=[10, 20, 30, 48],
                    help="k values tried for Infomap over cosine, the best on D_L kept")
    ap.add_argument("--lr", type=float, default=1e-3, help="cf-train peak learning rate")
    ap.add_argument("--features", help="real features to add to the accuracy table")
    ap.add_argument("--labels", help="their labels, when the features file has none")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="small sizes: about 3 minutes")
    ap.add_argument("--skip-cost", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-peer-cost", action="store_true",
                    help="skip table 4 (cftools against the free baseline, bench/cost.py)")
    ap.add_argument("--skip-quality", action="store_true",
                    help="skip table 3 (the default round on real faces)")
    ap.add_argument("--quality-seeds", type=lambda t: [int(v) for v in t.split(",")],
                    default=[0, 1, 2], help="training seeds of table 3's rounds")
    ap.add_argument("--skip-omniglot", action="store_true",
                    help="skip table 5 (the whole loop on omniglot-bg's images)")
    ap.add_argument("--omniglot-seeds", type=lambda t: [int(v) for v in t.split(",")],
                    default=[0, 1, 2], help="seeds of table 5's rounds (backbone included)")
    ap.add_argument("--json", type=Path, default=None,
                    help="results file [default: bench/results/run-<UTC time>.json]")
    ap.add_argument("--gemm-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.gemm_only:
        print(json.dumps(_gemm_peaks_here()))
        return
    if args.quick:
        args.n, args.train_n, args.paper_rows = 10_000, 1500, 300
        args.acc_n, args.epochs, args.baseline_ks = 3000, 2, []
    t0 = time.perf_counter()
    peaks = gemm_peaks()
    result = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "gemm_gflops": peaks}
    with tempfile.TemporaryDirectory(prefix="cf-bench-") as tmp:
        tmp = Path(tmp)
        if not args.skip_cost:
            (tmp / "cost").mkdir()
            result["cost"] = cost_table(args, tmp / "cost", peaks)
            print_cost(result["cost"], peaks)
        if not args.skip_accuracy:
            (tmp / "acc").mkdir()
            result["accuracy"] = accuracy_table(args, tmp / "acc")
            print_accuracy(result["accuracy"])
    if not (args.quick or args.skip_quality):
        from quality import quality_rows

        result["quality"] = quality_rows(seeds=args.quality_seeds)
    if not args.skip_peer_cost:
        from cost import main as peer_cost

        result["peer_cost"] = peer_cost(["--sizes", "6250" if args.quick else "125000,31250"])
    if not (args.quick or args.skip_omniglot):
        from omniglot import main as omniglot

        result["omniglot"] = omniglot(["--seeds", *map(str, args.omniglot_seeds)])
    result["total_seconds"] = time.perf_counter() - t0
    if args.json is None:
        stamp = result["time"].replace(":", "").replace("+0000", "Z")
        args.json = HERE / "results" / f"run-{stamp}{'-quick' if args.quick else ''}.json"
    print(f"\nbench: {result['total_seconds']:.0f} s in all")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"bench: results in {args.json}")


if __name__ == "__main__":
    main()
