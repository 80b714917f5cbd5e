"""cf-eval sweep: F_P / F_B of one decoder across thresholds, against the truth (diagnosis).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
import numpy as np

from ...cli import CONTEXT_SETTINGS, CfCommand, Count, FiniteFloat, Reporter, common_options, seed_option
from ...core.decoding.decoders import DECODERS, DEFAULT_INTIMACY_RATIO, decode
from ...core.decoding.weights import link_weights
from ...errors import CfError
from ...formats.features import load_labels
from ...formats.links import read_links
from ...formats.thresholds import calibrated_value, resolve_threshold
from ...formats.writing import check_format_name, check_output_path

ORACLE_NOTE = ("diagnosis only: these scores use the ground truth of the evaluated set, so a "
               "threshold chosen from this sweep is an oracle, not a result; report thresholds "
               "calibrated on labelled data (cf-merge --calibrate, cf-train)")

HELP = f"""Sweep a decoder's threshold over a links file and score each clustering.

For each threshold, LINKS is decoded by --method (as cf-merge decode does, with the
same --reciprocal/--directed link weights, singletons kept) and scored against --truth: pairwise
F (F_P), BCubed F (F_B), NMI, clusters and
singletons. A table goes to stderr; --json writes the rows to stdout; --png draws F_P
and F_B against the threshold, with the threshold the links file carries from
calibration (if any) marked.

This is a diagnosis tool: {ORACLE_NOTE}.

--thresholds A:B:N sweeps N evenly spaced values from A to B; the default is 21 values
between the 5% and 99.5% quantiles of the link probabilities.
"""


def parse_range(text: str) -> np.ndarray:
    """A:B:N -> N evenly spaced values from A to B. A bad value is a usage error (exit 2)."""
    try:
        a, b, n = text.split(":")
        a, b, n = float(a), float(b), int(n)
    except ValueError:
        raise click.BadParameter(f"must be A:B:N (e.g. 0.3:0.9:13), got {text!r}",
                                 param_hint="'--thresholds'") from None
    if n < 1 or n > 10000 or not (np.isfinite(a) and np.isfinite(b)):
        raise click.BadParameter(f"{text!r}: N must be in 1..10000 and A, B finite",
                                 param_hint="'--thresholds'")
    return np.linspace(a, b, n)


def _thresholds(ctx, param, value):
    return None if value is None else parse_range(value)


def default_thresholds(indices, probabilities, n: int = 21) -> np.ndarray:
    valid = (indices >= 0) & (indices != np.arange(indices.shape[0])[:, None])
    values = probabilities[valid]
    if values.size == 0:
        raise CfError("the links hold no neighbour besides the points themselves")
    lo, hi = np.quantile(values, [0.05, 0.995])
    return np.linspace(lo, hi, n)


def sweep_scores(method, indices, probabilities, truth, thresholds, *, max_size=None,
                 intimacy_ratio=DEFAULT_INTIMACY_RATIO, peaks_tolerance=0.0, seed=0,
                 progress=None):
    """One row of scores per threshold."""
    from ...core.metrics import evaluate

    rows = []
    for t in thresholds:
        labels = decode(method, indices, probabilities, float(t), max_size=max_size,
                                 intimacy_ratio=intimacy_ratio, peaks_tolerance=peaks_tolerance,
                                 seed=seed)
        e = evaluate(labels, truth)
        rows.append({"threshold": float(t),
                     **{key: e[key] for key in ("pairwise_f", "pairwise_precision",
                                                "pairwise_recall", "bcubed_f", "nmi",
                                                "n_clusters", "n_singletons")}})
        if progress is not None:
            progress.update(1)
    return rows


def draw(png, rows, method, calibrated, title):
    from ...report.plots import sweep as draw_sweep

    draw_sweep(png, rows, method, calibrated, title)


@click.command("sweep", cls=CfCommand, help=HELP, context_settings=CONTEXT_SETTINGS)
@click.argument("links")
@click.option("-t", "--truth", required=True, metavar="TRUTH",
              help="True identities of LINKS' points (.npy, .meta, features/clusters .h5, f.h5:/path).")
@click.option("--method", type=click.Choice(DECODERS), default="peaks", show_default=True,
              help="Decoder to sweep.")
@click.option("--thresholds", "thresholds", default=None, callback=_thresholds, metavar="A:B:N",
              help="N values from A to B.")
@click.option("--reciprocal/--directed", "reciprocal", default=True, show_default=True,
              help="Link weights as in cf-merge: mean of both directions, or p_ij alone.")
@click.option("--max-size", type=Count(min=1), default=None,
              help="components: split clusters larger than this.")
@click.option("--intimacy-ratio", type=FiniteFloat(0, 1), default=None,
              help="intimacy: node-intimacy cut [default: the links file's, else "
                   f"{DEFAULT_INTIMACY_RATIO}].")
@click.option("--peaks-tolerance", type=FiniteFloat(min=0), default=None,
              help="peaks: confidence tie tolerance [default: the links file's, else 0].")
@click.option("--png", type=click.Path(dir_okay=False), default=None,
              help="Draw the sweep into this PNG file.")
@click.option("--json", "as_json", is_flag=True, help="Write the rows as JSON to stdout.")
@seed_option
@common_options
def sweep(links, truth, method, thresholds, reciprocal, max_size, intimacy_ratio, peaks_tolerance,
          png, as_json,
          seed, quiet):
    rep = Reporter(quiet, prog="cf-eval sweep")
    if png:
        check_output_path(check_format_name(png, "png"), [links, truth])
    indices, probs, attrs, stored, art = read_links(links)
    mode = "reciprocal" if reciprocal else "directed"
    probs = link_weights(indices, probs, mode)
    labels = load_labels(truth, n=indices.shape[0], for_path=links)
    if not (labels >= 0).any():
        raise CfError("no point has a known truth label (all are -1)", truth)
    if thresholds is None:
        thresholds = default_thresholds(indices, probs)
    if intimacy_ratio is None:
        found = calibrated_value(stored, "intimacy_ratio", mode)
        intimacy_ratio = DEFAULT_INTIMACY_RATIO if found is None else found
    if peaks_tolerance is None:
        found = calibrated_value(stored, "peaks_tolerance", mode)
        peaks_tolerance = 0.0 if found is None else found
    calibrated = resolve_threshold(method, stored, mode)

    rep.warn(ORACLE_NOTE)
    t0 = time.perf_counter()
    with rep.progress(total=len(thresholds), desc=f"sweeping {method}", unit="thr") as bar:
        rows = sweep_scores(method, indices, probs, labels, thresholds, max_size=max_size,
                            intimacy_ratio=intimacy_ratio, peaks_tolerance=peaks_tolerance,
                            seed=seed, progress=bar)
    best = max(rows, key=lambda r: r["pairwise_f"])

    from rich.table import Table

    table = Table(title=f"cf-eval sweep: {method} over {links} (oracle diagnosis)")
    for col in ("threshold", "F_P", "P_P", "R_P", "F_B", "NMI", "clusters", "singletons"):
        table.add_column(col, justify="right")
    for r in rows:
        mark = " *" if r is best else ""
        table.add_row(f"{r['threshold']:.4f}{mark}", f"{100 * r['pairwise_f']:.2f}",
                      f"{100 * r['pairwise_precision']:.2f}", f"{100 * r['pairwise_recall']:.2f}",
                      f"{100 * r['bcubed_f']:.2f}", f"{100 * r['nmi']:.2f}",
                      str(r["n_clusters"]), str(r["n_singletons"]))
    rep.table(table)
    rep.info("cf-eval sweep: * = highest F_P on the evaluated set (an oracle, not a result)"
             + (f"; calibrated threshold in the links file: {calibrated:.4g}"
                if calibrated is not None else "")
             + f"; {time.perf_counter() - t0:.1f} s")
    if png:
        draw(png, rows, method, calibrated, f"{method} sweep over {Path(links).name}")
        rep.info(f"cf-eval sweep: wrote {png}")
    if as_json:
        json.dump({"links": str(links), "links_id": art.id, "method": method, "link_mode": mode,
                   "note": ORACLE_NOTE, "calibrated_threshold": calibrated,
                   "intimacy_ratio": intimacy_ratio if method == "intimacy" else None,
                   "peaks_tolerance": peaks_tolerance if method == "peaks" else None,
                   "rows": rows, "oracle_best": best}, sys.stdout, indent=2)
        sys.stdout.write("\n")
