"""Several seeds of bench/recognition.sh as one table: every seed's round 1, round 2,
baseline and upper bound on the test part, and round 2's share of the upper bound's gain.

    python bench/recognition_table.py NAME OUT/att-s0 OUT/att-s1 ... > table.md
    (also writes the figures as JSON with --json FILE)
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from cftools.commands.eval.report import collect, gain_recovered

FOLDERS = {"round 1": "round1", "round 2": "round2", "baseline": "baseline",
           "upper bound": "upper-bound"}


def rescore(work: Path, rows: dict) -> None:
    """Top-1 (first image, expected over gallery draws, leave-one-out) recomputed from each
    backbone's test.h5, so runs scored before a figure existed get it too."""
    from cftools.core.recognition.identification import top1_expected, top1_leave_one_out
    from cftools.formats.features import load_features

    for name, folder in FOLDERS.items():
        path = work / folder / "test.h5"
        if name in rows and path.is_file():
            f = load_features(path)
            rows[name]["top1_e"] = top1_expected(f.features, f.labels)["top1"]
            rows[name]["top1_loo"] = top1_leave_one_out(f.features, f.labels)["top1"]


def seed_row(work: Path) -> dict:
    rows = {r["name"]: r for r in collect(work)}
    rescore(work, rows)
    out = {"work": str(work), "seed": work.name.rsplit("-s", 1)[-1]}
    for key, name in (("r1", "round 1"), ("r2", "round 2"), ("base", "baseline"),
                      ("upper", "upper bound")):
        r = rows.get(name, {})
        out[key] = {"top1": r.get("top1"), "top1_e": r.get("top1_e"),
                    "top1_loo": r.get("top1_loo"),
                    "tar": r.get("tar_at_far", {}), "steps": r.get("steps"),
                    "pairwise_f": r.get("pairwise_f")}
    return out


def pct(v):
    return "-" if v is None else f"{100 * v:.1f}"


def share(v, b, u):
    s = gain_recovered(v, b, u)
    return "-" if s is None else f"{100 * s:.0f}%"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("works", nargs="+", type=Path)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    seeds = [seed_row(w) for w in a.works]
    lines = [f"{a.name}: top-1 identification on the test part (%), every seed", "",
             "| seed | F_P r1 / r2 | steps r2 / base / upper | top-1 r1 | r2 | baseline | upper | "
             "r2 - base | share | E top-1 r1 | r2 | baseline | upper | r2 - base | share | "
             "LOO top-1 r1 | r2 | baseline | upper | r2 - base | share | "
             "TAR@1e-2 r2 / base / upper |",
             "|" + "---|" * 23]
    diffs = {"top1": [], "top1_e": [], "top1_loo": [], "tar": [], "upper_top1": [],
             "upper_top1_e": [], "upper_top1_loo": []}
    for s in seeds:
        r1, r2, b, u = s["r1"], s["r2"], s["base"], s["upper"]
        cells = [s["seed"], f"{pct(r1['pairwise_f'])} / {pct(r2['pairwise_f'])}",
                 f"{r2['steps']} / {b['steps']} / {u['steps']}"]
        for k in ("top1", "top1_e", "top1_loo"):
            d = (r2[k] - b[k]) if None not in (r2[k], b[k]) else None
            cells += [pct(r1[k]), pct(r2[k]), pct(b[k]), pct(u[k]),
                      "-" if d is None else f"{100 * d:+.1f}", share(r2[k], b[k], u[k])]
            if d is not None:
                diffs[k].append(d)
                if u[k] is not None:
                    diffs["upper_" + k].append(u[k] - b[k])
        t = [x["tar"].get("0.01") for x in (r2, b, u)]
        cells.append(" / ".join(pct(v) for v in t))
        if None not in t[:2]:
            diffs["tar"].append(t[0] - t[1])
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for k, label in (("top1", "top-1"), ("top1_e", "expected top-1"),
                     ("top1_loo", "leave-one-out top-1"), ("tar", "TAR@FAR=0.01")):
        d = diffs[k]
        if d:
            sd = statistics.stdev(d) if len(d) > 1 else 0.0
            lines.append(f"- round 2 - baseline, {label}: mean {100 * statistics.mean(d):+.1f} "
                         f"(sd {100 * sd:.1f}) over {len(d)} seeds; round 2 ahead in "
                         f"{sum(x > 0 for x in d)}, level in {sum(x == 0 for x in d)}, behind in "
                         f"{sum(x < 0 for x in d)}")
    for k, label in (("upper_top1", "top-1"), ("upper_top1_e", "expected top-1"),
                     ("upper_top1_loo", "leave-one-out top-1")):
        d = diffs[k]
        if d:
            lines.append(f"- upper bound - baseline, {label}: mean {100 * statistics.mean(d):+.1f}"
                         f" (per seed {', '.join(f'{100 * x:+.1f}' for x in d)})")
    print("\n".join(lines))
    if a.json:
        a.json.write_text(json.dumps({"name": a.name, "seeds": seeds}, indent=1) + "\n")


if __name__ == "__main__":
    main()
