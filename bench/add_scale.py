"""Adding new points to a large clustering against clustering it again (issue 14).

One run, one machine, side by side: N demo features (1M by default, identity sizes
P(s) ~ 1/s, --d dimensions) are clustered by the commands (cf-knn auto, cf-seq, cf-link,
cf-merge infomap), then --new more points of the same generator are added by
`cf-merge add`; the ratio of the two wall times is the figure (issue 14: under 5%).

Links: cosine (--links cosine, the path cf-train's guard picked on both real face sets;
no model to train at this size) or a model's (--links model: a small model trained on a
labelled demo sample first, untimed). The threshold of the decoder is calibrated on a
separate labelled sample of the same generator (untimed), never on the set clustered.

    python bench/add_scale.py                              # 1M + 10K, cosine links
    python bench/add_scale.py --n 100000 --new 1000 --links model
    python bench/add_scale.py --links model --relink mirror model   # both ways, one run
    python bench/add_scale.py --reuse --redecode yes   # the add that decodes again alone
    python bench/add_scale.py --adds 10    # 10 adds of 10K in a row, each timed

Each add is timed both ways by default (--redecode both): keeping old clusters whole, and
with --redecode (old clusters new links join together, and those grown by a tenth, decoded
again, issue 26).

--adds K chains K adds of --new points each (add i reads what add i - 1 wrote), each
timed against the same clustering again of the --n points: later adds show what an add
costs once the clusters have grown (the growth ladder of --redecode, issue 26).

Writes bench/results/add-scale-<links>-<n>-<time>.json (with --adds K, one file per
chain, every add in it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"


def load() -> float:
    return os.getloadavg()[0]


def cmd(*args) -> dict:
    c = [str(BIN / args[0])] + [str(a) for a in args[1:]] + ["-q"]
    before = load()
    t = time.perf_counter()
    p = subprocess.run(c, capture_output=True, text=True)
    took = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(c)} failed:\n{p.stderr}")
    print(f"  {args[0]} {args[1] if len(args) > 1 else ''}: {took:.1f} s (load {before:.1f})",
          file=sys.stderr)
    return {"seconds": round(took, 2), "load_before": round(before, 2)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--new", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("-k", type=int, default=32, help="Neighbours, and the sequence length L.")
    ap.add_argument("--tail", type=float, default=1.0)
    ap.add_argument("--links", choices=("cosine", "model"), default="cosine")
    ap.add_argument("--calibration-n", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=2, help="cf-train epochs (--links model).")
    ap.add_argument("--relink", nargs="+", choices=("mirror", "model"), default=["mirror"],
                    help="cf-merge add --relink (model links); several: each timed in turn "
                         "against the same clustering.")
    ap.add_argument("--redecode", choices=("no", "yes", "both"), default="both",
                    help="Time cf-merge add without --redecode, with it, or both in turn.")
    ap.add_argument("--adds", type=int, default=1,
                    help="Adds of --new points in a row, each timed (data: --n + adds x --new).")
    ap.add_argument("--work", default=str(ROOT / "work" / "add_scale"))
    ap.add_argument("--reuse", action="store_true",
                    help="Keep the data and the clustering of an earlier run in --work (its "
                         "stage times from once.json) and time the add alone again.")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from cftools.core.calibration.thresholds import calibrate_thresholds
    from cftools.core.clusformer.grammar import build_sequences
    from cftools.core.neighbours.index import knn
    from cftools.data.demo import make_demo_features
    from cftools.formats.features import write_features

    w = Path(a.work) / (f"{a.links}-{a.n}" + (f"-e{a.epochs}" if a.epochs != 2 else ""))
    w.mkdir(parents=True, exist_ok=True)
    if a.reuse:
        return timed_adds(a, w, json.loads((w / "once.json").read_text()))
    for p in w.glob("*.h5"):
        p.unlink()
    t = time.perf_counter()
    x, y = make_demo_features(a.n + a.new * a.adds, a.d, seed=1, tail=a.tail)
    perm = np.random.default_rng(0).permutation(x.shape[0])
    x, y = x[perm], y[perm]
    write_features(w / "old.h5", x[:a.n], labels=y[:a.n])
    for i in range(1, a.adds + 1):
        np.save(w / new_file(i), x[a.n + (i - 1) * a.new:a.n + i * a.new])
    del x
    print(f"data: {a.n} + {a.adds} x {a.new} x {a.d} in {time.perf_counter() - t:.0f} s", file=sys.stderr)

    # untimed: the decoder's threshold (and a model) from a labelled sample of the generator
    xc, yc = make_demo_features(a.calibration_n, a.d, seed=7, tail=a.tail)
    model_args = []
    if a.links == "model":
        write_features(w / "cal.h5", xc, labels=yc)
        cmd("cf-knn", w / "cal.h5", "-o", w / "cal_knn.h5", "-k", a.k)
        cmd("cf-seq", w / "cal_knn.h5", "--features", w / "cal.h5", "-o", w / "cal_seq.h5", "-L",
            a.k)
        cmd("cf-train", w / "cal_seq.h5", "--features", w / "cal.h5", "-o", w / "model.h5",
            "--preset", "small", "-L", a.k, "--epochs", a.epochs, "--seed", 0)
        model_args = ["--model", w / "model.h5", "--method", "model"]
        threshold_args, mode = [], "as calibrated by cf-train"
    else:
        i, s = knn(xc, a.k)
        o, m, _ = build_sequences(i, s, a.k)
        probs = (np.einsum("nd,nld->nl", xc, xc[o]) * m).astype(np.float32)
        th = calibrate_thresholds(o, probs, yc, ("infomap",))["infomap"]
        threshold_args, mode = ["--threshold", th, "--directed"], f"directed, {th:.4f}"
        model_args = ["--method", "cosine"]
    print(f"decoder threshold: {mode}", file=sys.stderr)

    print(f"clustering {a.n} points:", file=sys.stderr)
    once = {
        "knn": cmd("cf-knn", w / "old.h5", "-o", w / "knn.h5", "-k", a.k),
        "seq": cmd("cf-seq", w / "knn.h5", "--features", w / "old.h5", "-o", w / "seq.h5",
                   "-L", a.k),
        "link": cmd("cf-link", w / "seq.h5", "--features", w / "old.h5", "-o", w / "links.h5",
                    *model_args),
        "merge": cmd("cf-merge", w / "links.h5", "-o", w / "clusters.h5", "--method", "infomap",
                     *threshold_args),
    }
    (w / "once.json").write_text(json.dumps({"stages": once, "threshold": mode}))
    timed_adds(a, w, {"stages": once, "threshold": mode})


def timed_adds(a, w: Path, saved: dict) -> None:
    """One timed add per --relink mode (cosine links: one add) and --redecode choice
    against the same clustering."""
    for relink in (a.relink if a.links == "model" else [None]):
        for redecode in {"no": [False], "yes": [True], "both": [False, True]}[a.redecode]:
            timed_add(a, w, saved, relink, redecode)


def new_file(i: int) -> str:
    """The points of add i (the first keeps the name of single-add runs)."""
    return "new.npy" if i == 1 else f"new{i}.npy"


def timed_add(a, w: Path, saved: dict, relink: str | None, redecode: bool = False) -> None:
    once, mode = saved["stages"], saved["threshold"]
    total = sum(s["seconds"] for s in once.values())
    import h5py

    tag = ("r" if redecode else "") + (relink or "")
    src = (w / "clusters.h5", w / "links.h5", w / "old.h5")
    adds = []
    for i in range(1, a.adds + 1):
        if not (w / new_file(i)).exists():
            raise SystemExit(f"{w / new_file(i)} not found: run without --reuse for --adds {a.adds}")
        out = (w / f"clusters2{tag}-{i}.h5", w / f"links2{tag}-{i}.h5",
               w / f"features2{tag}-{i}.h5")
        print(f"adding {a.new} points ({i} of {a.adds}):", file=sys.stderr)
        add = cmd("cf-merge", "add", src[0], "--new", w / new_file(i), "--links", src[1],
                  "--features", src[2],
                  *(["--model", w / "model.h5", "--relink", relink] if a.links == "model"
                    else []),
                  "-o", out[0], "--links-out", out[1], "--features-out", out[2],
                  *(["--redecode"] if redecode else []))
        with h5py.File(out[0], "r") as f:
            entry = json.loads(f.attrs["batches"])[-1]
        if i > 1:  # the previous add's outputs, read now
            for p in src:
                p.unlink()
        src = out
        adds.append({"add": add, "add_stages": entry.get("seconds"),
                     "add_counts": {k: v for k, v in entry.items() if k != "seconds"},
                     "ratio": round(add["seconds"] / total, 4)})
    ratios = [x["ratio"] for x in adds]
    res = {"n": a.n, "new": a.new, "adds_in_a_row": a.adds, "d": a.d, "k": a.k, "L": a.k,
           "tail": a.tail, "links": a.links, "relink": relink, "redecode": redecode,
           "decoder": "infomap", "threshold": mode,
           "cluster_again": once, "cluster_again_seconds": round(total, 2),
           **adds[0], "adds": adds if a.adds > 1 else None,
           "ratio_mean": round(float(np.mean(ratios)), 4), "ratio_max": max(ratios),
           "cpus": os.cpu_count(), "reused_clustering": a.reuse,
           "omp_threads": os.environ.get("OMP_NUM_THREADS"),
           "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    relinked = ("" if relink is None else f" (relink {relink})") + \
        (" --redecode" if redecode else "")
    first = adds[0]
    print(f"\n{a.links} links{relinked}, {a.n} x {a.d}, k = L = {a.k}: clustering again "
          f"{total:.1f} s (knn {once['knn']['seconds']}, seq {once['seq']['seconds']}, link "
          f"{once['link']['seconds']}, merge {once['merge']['seconds']}); adding {a.new}: "
          f"{first['add']['seconds']:.1f} s = {100 * first['ratio']:.2f}% (stages "
          f"{first['add_stages']})" + (f"; {a.adds} adds in a row: "
                                       + ", ".join(f"{100 * r:.2f}%" for r in ratios)
                                       + f" (mean {100 * res['ratio_mean']:.2f}%)"
                                       if a.adds > 1 else ""))
    out = ROOT / "bench" / "results" / (f"add-scale-{a.links}-{a.n}-"
                                        + (f"{relink}-" if relink else "")
                                        + ("redecode-" if redecode else "")
                                        + (f"x{a.adds}-" if a.adds > 1 else "")
                                        + datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
                                        + ".json")
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
