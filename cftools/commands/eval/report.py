"""cf-eval report: the round's scores side by side, per round and against the references.

Reads a round's work folder (``make round`` writes it): ``round<r>/eval.json`` (clusters
of D_U against their truth, and the backbone's ``recognition`` of the test part),
``round<r>/recognition.json``, ``baseline/recognition.json`` and
``upper-bound/recognition.json`` where they exist, and the backbones' training summaries.
Prints a markdown table on stdout and, with --png, draws the figures. The arithmetic is
in pure functions (``gain_recovered``, ``collect``, ``markdown``) that tests call.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import click

from ...cli import CONTEXT_SETTINGS, Reporter, common_options
from ...errors import CfError
from ...formats.eval_json import check_round_json
from ...formats.inputs import read_json

REFERENCES = (("baseline", "baseline", "D_L only, as many steps as round 2"),
              ("upper-bound", "upper bound", "D_L + D_U's true identities, same steps"))


def gain_recovered(value, baseline, upper):
    """Share of the upper bound's gain over the baseline that ``value`` recovers:
    (value - baseline) / (upper - baseline). 1 = as good as perfect pseudo-labels, 0 = no
    better than the baseline, < 0 = worse. None when a figure is missing or the upper
    bound does not beat the baseline (the share is then undefined)."""
    if value is None or baseline is None or upper is None:
        return None
    if not upper > baseline:
        return None
    return (value - baseline) / (upper - baseline)


def _read_json(path: Path):
    """A round's JSON file, None where there is none; one of the wrong shape is refused
    naming it (formats.inputs.read_json: a regular file, bounded)."""
    if not path.exists():
        return None
    doc = read_json(path, "round's JSON file", want=dict, allow_nan=True)
    check_round_json(doc, path)
    return doc


def _backbone_summary(path: Path) -> dict:
    """{steps, train_images, classes} of a cf-embed backbone file, {} when absent."""
    if not path.is_file():
        return {}
    try:
        import h5py

        with h5py.File(path, "r") as f:
            config = json.loads(f.attrs["config"])
    except Exception:  # noqa: BLE001 (a summary is optional; the scores do not need it)
        return {}
    # steps from random weights: a fine-tuned backbone counts its start's steps too
    return {"steps": config.get("total_steps") or config.get("steps"),
            "train_images": config.get("train_images"),
            "classes": config.get("classes")}


def _recognition_figures(rec: dict | None) -> dict:
    if not rec:
        return {"top1": None, "top1_e": None, "top1_loo": None, "tar_at_far": {}, "auc": None, "probes": None}
    ver = rec.get("verification") or {}
    return {"top1": rec.get("top1"), "top1_e": (rec.get("expected") or {}).get("top1"),
            "top1_loo": (rec.get("leave_one_out") or {}).get("top1"),
            "tar_at_far": dict(ver.get("tar_at_far") or {}),
            "auc": ver.get("auc"), "probes": rec.get("probes")}


def collect(work) -> list[dict]:
    """Rows of the report, rounds in order then the references that exist:
    {name, trained_on, steps, train_images, pairwise_f, bcubed_f, top1, tar_at_far, auc}."""
    work = Path(work)
    rows = []
    rounds = sorted((int(m.group(1)), p) for p in work.glob("round*")
                    if p.is_dir() and (m := re.fullmatch(r"round(\d+)", p.name)))
    for r, folder in rounds:
        ev = _read_json(folder / "eval.json")
        rec = (ev or {}).get("recognition") or _read_json(folder / "recognition.json")
        if ev is None and rec is None:
            continue
        row = {"name": f"round {r}",
               "trained_on": "D_L" if r == 1 else f"D_L + round-{r - 1} pseudo-labels",
               "pairwise_f": (ev or {}).get("pairwise_f"), "bcubed_f": (ev or {}).get("bcubed_f")}
        row.update(_backbone_summary(folder / "backbone.h5"))
        row.update(_recognition_figures(rec))
        rows.append(row)
    for folder, name, trained_on in REFERENCES:
        rec = _read_json(work / folder / "recognition.json")
        if rec is None:
            continue
        row = {"name": name, "trained_on": trained_on, "pairwise_f": None, "bcubed_f": None}
        row.update(_backbone_summary(work / folder / "backbone.h5"))
        row.update(_recognition_figures(rec))
        rows.append(row)
    return rows


def recovered(rows: list[dict]) -> list[dict]:
    """Per round: the share of the upper bound's gain recovered, for top-1 and each TAR."""
    ref = {r["name"]: r for r in rows}
    base, upper = ref.get("baseline"), ref.get("upper bound")
    if base is None or upper is None:
        return []
    out = []
    for row in rows:
        if not row["name"].startswith("round "):
            continue
        shares = {"name": row["name"],
                  "top1": gain_recovered(row["top1"], base["top1"], upper["top1"]),
                  "top1_e": gain_recovered(row.get("top1_e"), base.get("top1_e"),
                                           upper.get("top1_e")),
                  "top1_loo": gain_recovered(row.get("top1_loo"), base.get("top1_loo"),
                                             upper.get("top1_loo")),
                  "tar_at_far": {f: gain_recovered(row["tar_at_far"].get(f),
                                                    base["tar_at_far"].get(f),
                                                    upper["tar_at_far"].get(f))
                                 for f in row["tar_at_far"]}}
        out.append(shares)
    return out


def _fars(rows) -> list[str]:
    fars = []
    for row in rows:
        for f in row["tar_at_far"]:
            if f not in fars:
                fars.append(f)
    return sorted(fars, key=float)


def _pct(v, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100.0 * v:.{digits}f}"


def markdown(rows: list[dict], shares: list[dict]) -> str:
    """The report as markdown: one table of scores, one of the gain recovered."""
    fars = _fars(rows)
    # expected and leave-one-out top-1, when the recognition files carry them
    extra = [(k, name) for k, name in (("top1_e", "top-1 E"), ("top1_loo", "top-1 LOO"))
             if any(r.get(k) is not None for r in rows)]
    head = (["backbone", "trained on", "steps from scratch", "F_P (D_U)", "F_B (D_U)", "top-1 (test)"]
            + [f"{name} (test)" for _, name in extra] + [f"TAR@FAR={f} (test)" for f in fars])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        cells = [row["name"], row["trained_on"], str(row.get("steps") or "-"),
                 _pct(row["pairwise_f"]), _pct(row["bcubed_f"]), _pct(row["top1"])]
        cells += [_pct(row.get(k)) for k, _ in extra]
        cells += [_pct(row["tar_at_far"].get(f)) for f in fars]
        lines.append("| " + " | ".join(cells) + " |")
    if shares:
        lines += ["", "Share of the upper bound's gain over the baseline recovered, "
                      "(round - baseline) / (upper bound - baseline):", ""]
        head = ["backbone", "top-1"] + [name for _, name in extra] + [f"TAR@FAR={f}" for f in fars]
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for s in shares:
            keys = ["top1"] + [k for k, _ in extra]
            cells = [s["name"]] + [_pct(s.get(k), 0) + ("%" if s.get(k) is not None else "")
                                   for k in keys]
            cells += [_pct(s["tar_at_far"].get(f), 0) + ("%" if s["tar_at_far"].get(f) is not None
                                                          else "") for f in fars]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Scores per round (lines) against the references (horizontal lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...formats.writing import atomic_path

    rounds = [r for r in rows if r["name"].startswith("round ")]
    refs = {r["name"]: r for r in rows if not r["name"].startswith("round ")}
    x = [int(r["name"].split()[1]) for r in rounds]
    fars = _fars(rows)
    far = fars[-1] if fars else None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    for key, label in (("pairwise_f", "F_P"), ("bcubed_f", "F_B")):
        ys = [r[key] for r in rounds]
        if any(v is not None for v in ys):
            ax.plot(x, [100 * v if v is not None else float("nan") for v in ys], "o-", label=label)
    ax.set_title("clusters of D_U")
    ax.set_xlabel("round")
    ax.set_ylabel("%")
    ax.legend()
    ax = axes[1]
    metrics = [("top1", "top-1 identification")] + ([(far, f"TAR@FAR={far}")] if far else [])
    for (key, label), colour in zip(metrics, ("C0", "C1")):
        def value(r, key=key):
            v = r["top1"] if key == "top1" else r["tar_at_far"].get(key)
            return 100 * v if v is not None else float("nan")
        ax.plot(x, [value(r) for r in rounds], "o-", color=colour, label=f"{label}: rounds")
        for name, style in (("baseline", ":"), ("upper bound", "--")):
            if name in refs:
                ax.axhline(value(refs[name]), color=colour, linestyle=style,
                           label=f"{label}: {name}")
    ax.set_title("recognition of the test part")
    ax.set_xlabel("round (backbone)")
    ax.set_ylabel("%")
    ax.legend(fontsize=7)
    for ax in axes:
        if x:
            ax.set_xticks(x)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


@click.command("report", context_settings=CONTEXT_SETTINGS)
@click.argument("work", type=click.Path(path_type=Path))
@click.option("--png", type=click.Path(path_type=Path), default=None,
              help="Also draw the scores per round against the references into this PNG.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the rows and shares as JSON on stdout instead of markdown.")
@common_options
def report(work, png, as_json, quiet):
    """The round's scores per round against the references, from its work folder WORK.

    One row per round (F_P and F_B of D_U's clusters; top-1 identification, its expected
    value over random gallery draws (E), leave-one-out top-1 (LOO: every test image a
    probe) and TAR at each FAR of its backbone on the test part, identities in neither D_L nor D_U) and one
    per reference that exists: the baseline (D_L only, as many optimisation steps as
    round 2) and the upper bound (D_L + D_U's true identities). With both references,
    the share of the upper bound's gain each round recovers:
    (round - baseline) / (upper bound - baseline). Markdown on stdout.
    """
    from ...formats.writing import check_format_name, check_output_path

    rep = Reporter(quiet)
    if not work.is_dir():
        raise CfError("no such folder (run make round first)", work)
    if png is not None:
        check_output_path(check_format_name(png, "png"), [work])
    rows = collect(work)
    if not rows:
        raise CfError("holds no scored round (round<r>/eval.json); run make round first", work)
    shares = recovered(rows)
    if as_json:
        click.echo(json.dumps({"rows": rows, "recovered": shares}, indent=1))
    else:
        click.echo(markdown(rows, shares), nl=False)
    names = {r["name"] for r in rows}
    missing = [m for _, m, _ in REFERENCES if m not in names]
    if missing:
        rep.info(f"not made yet: {', '.join(missing)} (make baseline upper-bound)")
    if png is not None:
        plot(rows, png, f"cftools round: {work}")
        rep.info(f"wrote {png}")
    return 0
