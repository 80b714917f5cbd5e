"""What the learned path costs against the free baseline, side by side in one run.

    python bench/cost.py [--sizes 125000,31250] [--train-seeds 0] [--bin DIR] [--label NAME]
    make bench            (runs it through bench/run.py at both sizes)

For each size N: `cf-data demo all.h5 -n N -d 128 --seed 5`, `cf-data split --fraction 0.2`
(D_L a fifth of the identities, D_U the rest: 25K / 100K at N 125K). Then, one after the
other on the same machine:

- cftools, the round's steps with round.mk's defaults (K, L, TRAIN_L, PRESET,
  TRAIN_EPOCHS, TRAIN_LR, DECODER, GUARD_DISTRACTORS, read from round.mk): D_L side
  cf-knn, cf-seq, cf-train (--decoders DECODER, as round.mk); D_U side, per model, cf-knn
  and cf-seq as far as its links read (--for-model, as round.mk), cf-link --method auto
  (--gate DECODER), cf-merge; and the same D_U
  links with the model forced (cf-link --method model, then cf-merge) unless auto chose
  the model;
- the peer, the thirty lines a user would write (face-cluster-by-infomap's recipe): on
  D_L exact faiss kNN (IndexFlatIP over unit rows, searched once at the largest k) and a
  grid of Infomap runs over the directed cosine links, k from --peer-ks and, for each,
  min_sim from 10 quantiles of D_L's neighbour similarities then 5 values between the
  best one's neighbours (75 runs), chosen together by pairwise F; on D_U
  exact kNN at that k and one Infomap run at that min_sim. It runs in a child process of
  its own, as the commands do, so both sides pay an interpreter start. The peer runs
  before cftools and again after; ratios are against the mean of its two times.

Every stage is timed by its wall clock and by its own CPU time (user + system, all its
threads), with the 1-minute load average when it started: on a shared machine the wall
clock of a loaded stage stretches, its CPU time much less (read ratios, not seconds).
F_P / F_B of every clustering of D_U against its labels (never used to choose anything).
OMP_NUM_THREADS and the OpenMP spin (GOMP_SPINCOUNT, which cftools shortens unless
given) are inherited by both sides alike and recorded. --bin runs another build's
commands (e.g. the main branch, for a before/after table with the same script); the peer
always runs from here.

Results: a table per size on stdout and bench/results/cost-<N>-<label>-<time>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import cftools  # noqa: F401  sets GOMP_SPINCOUNT, which the peer's processes inherit too
from cftools.core.runtime.precision import cpu_bf16_supported

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEER_KS = (10, 20, 30, 50, 80)
PEER_COARSE, PEER_FINE = 10, 5  # min_sim values per k: 15 Infomap runs


# ----------------------------------------------------------------------------- the peer


def peer_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine kNN with faiss: (ids, similarities), (N, k + 1), the point first."""
    import faiss

    x = np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    sims, ids = index.search(x, k + 1)
    return ids, sims


def peer_infomap(ids: np.ndarray, sims: np.ndarray, min_sim: float) -> np.ndarray:
    """Infomap (two-level, directed) over the links of similarity >= min_sim."""
    import infomap

    n = ids.shape[0]
    rows = np.broadcast_to(np.arange(n)[:, None], ids.shape)
    keep = (ids >= 0) & (ids != rows) & (sims >= min_sim)
    labels = np.arange(n, dtype=np.int64)
    if not keep.any():
        return labels
    im = infomap.Infomap("--two-level --directed --silent")
    im.add_links(np.stack([rows[keep], ids[keep], np.maximum(sims[keep], 1e-6)], axis=1)
                 .astype(np.float64))
    im.run()
    modules = im.get_modules()
    labels[np.fromiter(modules.keys(), np.int64)] = n + np.fromiter(modules.values(), np.int64)
    return labels


def pairwise_f(pred: np.ndarray, truth: np.ndarray) -> float:
    def pairs(values) -> float:
        counts = np.unique(values, return_counts=True, axis=0)[1].astype(np.float64)
        return float((counts * (counts - 1) / 2).sum())

    tp = pairs(np.stack([pred, truth], axis=1))
    claimed, true = pairs(pred), pairs(truth)
    return 2 * tp / (claimed + true) if claimed + true else 0.0


def peer_choose(features: Path, out: Path, ks) -> None:
    """The peer's D_L side: k and min_sim by pairwise F on D_L (timings into ``out``)."""
    import h5py

    t0 = time.perf_counter()
    with h5py.File(features, "r") as f:
        x, y = f["features"][()], f["labels"][()]
    t1 = time.perf_counter()
    ids, sims = peer_knn(x, max(ks))
    t2 = time.perf_counter()
    runs = 0
    best = (-1.0, 0, 0.0)
    for k in ks:  # per k: a coarse grid of quantiles, then a fine one around its best
        coarse = np.quantile(sims[:, 1:k + 1], np.linspace(0.3, 0.99, PEER_COARSE))
        found = []
        for t in coarse:
            found.append(pairwise_f(peer_infomap(ids[:, :k + 1], sims[:, :k + 1], float(t)), y))
        b = int(np.argmax(found))
        lo, hi = coarse[max(b - 1, 0)], coarse[min(b + 1, coarse.size - 1)]
        fine = np.linspace(lo, hi, PEER_FINE + 2)[1:-1]
        for t in fine:
            found.append(pairwise_f(peer_infomap(ids[:, :k + 1], sims[:, :k + 1], float(t)), y))
        runs += len(found)
        b = int(np.argmax(found))
        if found[b] > best[0]:
            best = (found[b], k, float(np.r_[coarse, fine][b]))
    t3 = time.perf_counter()
    out.write_text(json.dumps({"k": best[1], "min_sim": best[2], "f_on_dl": best[0],
                               "runs": runs, "read": t1 - t0, "knn": t2 - t1,
                               "grid": t3 - t2}))


def peer_cluster(features: Path, choice: Path, out: Path) -> None:
    """The peer's D_U side: exact kNN at the chosen k, one Infomap run."""
    import h5py

    c = json.loads(choice.read_text())
    t0 = time.perf_counter()
    with h5py.File(features, "r") as f:
        x = f["features"][()]
    t1 = time.perf_counter()
    ids, sims = peer_knn(x, c["k"])
    t2 = time.perf_counter()
    labels = peer_infomap(ids, sims, c["min_sim"])
    t3 = time.perf_counter()
    np.save(out, labels)
    out.with_suffix(".json").write_text(json.dumps({"read": t1 - t0, "knn": t2 - t1,
                                                    "infomap": t3 - t2}))


# ----------------------------------------------------------------------------- running


def round_defaults() -> dict:
    """K, L, TRAIN_L, PRESET, TRAIN_EPOCHS, TRAIN_LR, DECODER as round.mk sets them."""
    text = (ROOT / "round.mk").read_text()
    found = dict(re.findall(r"^(\w+)\s*\?=\s*(\S+)\s*$", text, flags=re.M))
    return {k: found[k] for k in ("K", "L", "TRAIN_L", "PRESET", "TRAIN_EPOCHS", "TRAIN_LR",
                                  "DECODER", "GUARD_DISTRACTORS")}


class Stages:
    """Runs commands, records each one's wall time and the load average it started at."""

    def __init__(self, bin_dir: Path, log):
        self.bin, self.rows, self.log = bin_dir, [], log

    def run(self, side: str, stage: str, argv, *, record: bool = True) -> float:
        argv = [str(a) for a in argv]
        load = os.getloadavg()[0]
        with tempfile.TemporaryFile("w+") as err:
            t = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)
            took = time.perf_counter() - t
            if os.waitstatus_to_exitcode(status) != 0:
                err.seek(0)
                raise RuntimeError(f"{' '.join(argv[:4])} failed: {err.read().strip()[-600:]}")
        cpu = usage.ru_utime + usage.ru_stime  # the command's own CPU time, all its threads
        if record:
            self.rows.append({"side": side, "stage": stage, "seconds": round(took, 2),
                              "cpu_seconds": round(cpu, 2), "load": round(load, 2)})
            self.log(f"  {side:<18} {stage:<26} {took:8.1f} s  cpu {cpu:8.1f} s  "
                     f"(load {load:.2f})")
        return took

    def cf(self, side, stage, name, *args, **kw) -> float:
        return self.run(side, stage, [self.bin / f"cf-{name}", *args], **kw)


def scores(stages: Stages, clusters: Path, truth: Path) -> dict:
    proc = subprocess.run([stages.bin / "cf-eval", clusters, "--truth", truth, "--json", "-q"],
                          capture_output=True, text=True, check=True)
    ev = json.loads(proc.stdout)
    return {"F_P": round(100 * ev["pairwise_f"], 2), "F_B": round(100 * ev["bcubed_f"], 2)}


def links_attrs(path: Path) -> dict:
    import h5py

    with h5py.File(path, "r") as f:
        keep = ("method", "guard_winner", "model_rows")
        return {k: (v.item() if hasattr(v, "item") else str(v))
                for k, v in f.attrs.items() if k in keep}


def run_peer(st: Stages, dl: Path, du: Path, tmp: Path, ks, when: str) -> dict:
    """The peer's two sides, timed under the stage names "knn + grid (<when>)" and
    "knn + infomap (<when>)": it runs before cftools and again after, since a shared
    machine's load drifts over the run."""
    me = [sys.executable, __file__]
    st.run("peer D_L", f"knn + grid ({when})", me + ["--peer-choose", dl, tmp / "choice.json",
                                                     "--peer-ks", ",".join(map(str, ks))])
    st.run("peer D_U", f"knn + infomap ({when})", me + ["--peer-cluster", du,
                                                        tmp / "choice.json", tmp / "peer.npy"])
    choice = json.loads((tmp / "choice.json").read_text())
    inner = json.loads((tmp / "peer.json").read_text())
    import h5py

    with h5py.File(du, "r") as f:
        y = f["labels"][()]
    pred = np.load(tmp / "peer.npy")
    from cftools.core.metrics import bcubed_scores

    return {"choice": choice, "du_inner": inner,
            "F_P": round(100 * pairwise_f(pred, y), 2),
            "F_B": round(100 * bcubed_scores(pred, y)["bcubed_f"], 2)}


def run_cftools(st: Stages, dl: Path, du: Path, tmp: Path, seeds, d: dict) -> list[dict]:
    """D_L searched at K and cut at L once; per training seed, cf-train, then D_U searched
    and cut as far as that model's links read (--for-model, as round.mk does), linked and
    decoded."""
    st.cf("cftools D_L", "cf-knn", "knn", dl, "-o", tmp / "knn_L.h5", "-k", d["K"], "-q")
    st.cf("cftools D_L", "cf-seq", "seq", tmp / "knn_L.h5", "--features", dl, "-o",
          tmp / "seq_L.h5", "-L", d["L"], "-q")
    out = []
    for seed in seeds:
        tag = f"seed {seed}"
        model = tmp / f"model_{seed}.h5"
        st.cf("cftools D_L", f"cf-train ({tag})", "train", tmp / "seq_L.h5", "--features", dl,
              "-o", model, "--preset", d["PRESET"], "-L", d["TRAIN_L"], "--epochs",
              d["TRAIN_EPOCHS"], "--lr", d["TRAIN_LR"], "--seed", seed, "--decoders", d["DECODER"], "-q",
              *(["--distractors", du] if d["GUARD_DISTRACTORS"] == "yes" else []))
        st.cf("cftools D_U", f"cf-knn ({tag})", "knn", du, "-o", tmp / "knn_U.h5",
              "--for-model", model, "-q")
        st.cf("cftools D_U", f"cf-seq ({tag})", "seq", tmp / "knn_U.h5", "--features", du,
              "-o", tmp / "seq_U.h5", "--for-model", model, "-q")
        res = {"seed": seed, "du_length": _length(tmp / "seq_U.h5")}
        for method in ("auto", "model"):
            links = tmp / f"links_{method}_{seed}.h5"
            if method == "model" and res["auto"]["links"].get("method") == "model":
                res["model"] = dict(res["auto"], same_as_auto=True)
                continue
            st.cf("cftools D_U", f"cf-link {method} ({tag})", "link", tmp / "seq_U.h5",
                  "--features", du, "--model", model, "-o", links, "--method", method, "--gate", d["DECODER"],
                  "-q")
            st.cf("cftools D_U", f"cf-merge {method} ({tag})", "merge", links, "-o",
                  tmp / f"clusters_{method}_{seed}.h5", "--method", d["DECODER"], "-q")
            res[method] = {"links": links_attrs(links),
                           **scores(st, tmp / f"clusters_{method}_{seed}.h5", du)}
        st.log(f"  seed {seed}: auto {res['auto']}, model {res['model']}")
        out.append(res)
    return out


def _length(seq: Path) -> int:
    import h5py

    with h5py.File(seq, "r") as f:
        return int(f["order"].shape[1])


def one_size(n: int, args, st: Stages, tmp: Path) -> dict:
    d = round_defaults()
    if args.guard_distractors:
        d["GUARD_DISTRACTORS"] = args.guard_distractors
    dl, du = tmp / "dl.h5", tmp / "du.h5"
    st.cf("data", "demo", "data", "demo", tmp / "all.h5", "-n", n, "-d", args.dim, "--seed",
          args.data_seed, "-q", record=False)
    st.cf("data", "split", "data", "split", tmp / "all.h5", "-L", dl, "-U", du, "--fraction",
          args.fraction, "-q", record=False)
    first = len(st.rows)
    peer = run_peer(st, dl, du, tmp, args.peer_ks, "before")
    st.log(f"  peer: {peer}")
    ours = run_cftools(st, dl, du, tmp, args.train_seeds, d)
    peer_after = run_peer(st, dl, du, tmp, args.peer_ks, "after")
    if (peer_after["choice"]["k"], peer_after["F_P"]) != (peer["choice"]["k"], peer["F_P"]):
        raise RuntimeError(f"the peer's second run differs from its first: {peer_after}")
    return {"n": n, "round_defaults": d, "stages": st.rows[first:], "peer": peer,
            "cftools": ours, "ratios": {key: ratios(st.rows[first:], args.train_seeds, key)
                                      for key in ("seconds", "cpu_seconds")}}


def ratios(rows: list[dict], seeds, key: str) -> dict:
    """cftools' stages against the peer's, per training seed, by wall clock (``key``
    seconds) or CPU time (cpu_seconds)."""
    sec = {(r["side"], r["stage"]): r[key] for r in rows}
    # the peer's time: the mean of its run before cftools and its run after
    peer_dl = (sec[("peer D_L", "knn + grid (before)")] + sec[("peer D_L", "knn + grid (after)")]) / 2
    peer_du = (sec[("peer D_U", "knn + infomap (before)")]
               + sec[("peer D_U", "knn + infomap (after)")]) / 2
    out = {}
    for seed in seeds:
        tag = f"seed {seed}"
        knn, seq = sec[("cftools D_U", f"cf-knn ({tag})")], sec[("cftools D_U", f"cf-seq ({tag})")]
        common = knn + seq
        per = {"cf-train / peer D_L": sec[("cftools D_L", f"cf-train ({tag})")] / peer_dl,
               "cf-knn / peer D_U": knn / peer_du, "cf-seq / peer D_U": seq / peer_du}
        for method in ("auto", "model"):
            link = sec.get(("cftools D_U", f"cf-link {method} ({tag})"),
                           sec[("cftools D_U", f"cf-link auto ({tag})")])
            merge = sec.get(("cftools D_U", f"cf-merge {method} ({tag})"),
                            sec[("cftools D_U", f"cf-merge auto ({tag})")])
            per[f"cf-link {method} / peer D_U"] = link / peer_du
            per[f"cf-merge {method} / peer D_U"] = merge / peer_du
            per[f"D_U side, {method} / peer D_U"] = (common + link + merge) / peer_du
        out[tag] = {k: round(v, 3) for k, v in per.items()}
    return out


def print_size(res: dict) -> None:
    print(f"\nN {res['n']} (D_U of {res['n'] - res['n'] // 5} or so), round defaults "
          f"{res['round_defaults']}")
    print("| side | stage | wall s | CPU s | load at start |\n|---|---|---|---|---|")
    for r in res["stages"]:
        print(f"| {r['side']} | {r['stage']} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | "
              f"{r['load']:.2f} |")
    p = res["peer"]
    print(f"\npeer: k {p['choice']['k']}, min_sim {p['choice']['min_sim']:.4f} "
          f"({p['choice']['runs']} Infomap runs on D_L); D_U F_P {p['F_P']:.2f} F_B {p['F_B']:.2f}")
    for r in res["cftools"]:
        for method in ("auto", "model"):
            m = r[method]
            print(f"cftools seed {r['seed']} {method}: links {m['links']} F_P {m['F_P']:.2f} "
                  f"F_B {m['F_B']:.2f}")
    for key, by_seed in res["ratios"].items():
        for tag, per in by_seed.items():
            print(f"ratios of {key} ({tag}): " + ", ".join(f"{k} {v:.2f}" for k, v in per.items()))


def cpu_name() -> str:
    """The CPU's model name (Linux), for reading one run's seconds against another's."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=lambda t: [int(v) for v in t.split(",")],
                    default=[125_000, 31_250], help="points of the demo set before the split")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--data-seed", type=int, default=5)
    ap.add_argument("--fraction", type=float, default=0.2, help="cf-data split --fraction")
    ap.add_argument("--train-seeds", type=lambda t: [int(v) for v in t.split(",")],
                    default=[0], help="cf-train --seed values (one model each)")
    ap.add_argument("--peer-ks", type=lambda t: [int(v) for v in t.split(",")],
                    default=list(PEER_KS))
    ap.add_argument("--bin", type=Path, default=Path(sys.executable).parent,
                    help="where the cf-* commands are [default: this interpreter's]")
    ap.add_argument("--label", default="", help="a name for this build in the results file")
    ap.add_argument("--guard-distractors", choices=["yes", "no"], default=None,
                    help="the round's GUARD_DISTRACTORS (default: round.mk's): yes, cf-train's "
                         "guard judges among D_U's points too (cf-train --distractors)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--peer-choose", nargs=2, type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--peer-cluster", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.peer_choose:
        peer_choose(*args.peer_choose, args.peer_ks)
        return None
    if args.peer_cluster:
        peer_cluster(*args.peer_cluster)
        return None
    start = dt.datetime.now(dt.timezone.utc)
    stamp = start.strftime("%Y-%m-%dT%H%M%SZ")
    result = {"time": start.isoformat(timespec="seconds"), "label": args.label,
              "bin": str(args.bin), "cpus": os.cpu_count(), "cpu": cpu_name(),
              # cf-train's precision follows the CPU: bfloat16 where it computes it
              # natively, else float32 (epochs take about twice as long)
              "cpu_bf16": cpu_bf16_supported(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
              "gomp_spincount": os.environ.get("GOMP_SPINCOUNT", "unset"),
              "args": {k: str(v) for k, v in vars(args).items()}, "sizes": []}
    for n in args.sizes:
        print(f"cost: N {n} ...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="cf-cost-") as tmp:
            st = Stages(args.bin, lambda m: print(m, file=sys.stderr, flush=True))
            res = one_size(n, args, st, Path(tmp))
        result["sizes"].append(res)
        print_size(res)
        out = args.json or HERE / "results" / (
            f"cost-{'-'.join(map(str, args.sizes))}{'-' + args.label if args.label else ''}"
            f"-{stamp}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))  # after every size: a partial run counts
    print(f"\ncost: results in {out}")
    result["results_file"] = str(out)
    return result


if __name__ == "__main__":
    main()
