"""cf-eval identify: top-1 identification of a backbone's features, with distractors, and
verification (TAR at given FARs) over all pairs.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ...cli import CONTEXT_SETTINGS, Reporter, common_options


def _parse_fars(ctx, param, value):
    try:
        fars = sorted({float(x) for x in str(value).split(",") if x.strip()})
    except ValueError:
        raise click.BadParameter(f"expected comma-separated rates, got {value!r}") from None
    if not fars or not all(0 < f < 1 for f in fars):
        raise click.BadParameter(f"false accept rates lie strictly between 0 and 1, got {value!r}")
    return fars


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


@click.command("identify", context_settings=CONTEXT_SETTINGS)
@click.argument("features", type=click.Path(path_type=Path))
@click.option("--distractors", type=click.Path(path_type=Path), default=None,
              help="Features file whose rows all join the gallery as distractors.")
@click.option("--far", "fars", default="0.001,0.01", show_default=True, callback=_parse_fars,
              metavar="F1,F2,...",
              help="False accept rates at which verification's TAR is reported.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON on stdout.")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), default=None,
              help="Also write the JSON figures to this file (atomically).")
@common_options
def identify(features, distractors, fars, as_json, out, quiet):
    """Top-1 identification (MegaFace protocol in miniature) of labelled FEATURES.

    For every identity with two or more images, its first image goes into the gallery and
    the others are probes; images of identities seen once, and all rows of --distractors,
    join the gallery as distractors. Reports the fraction of probes whose most
    cosine-similar gallery image is of their identity, the number of probes, the gallery
    size and the number of distractors. Rows labelled -1 take no part.

    Leave-one-out top-1 (JSON key leave_one_out; table column top-1 LOO): every image of
    an identity with two or more images is a probe against all the other rows of
    FEATURES; no gallery image is chosen, so on a small test part it varies less.
    Expected top-1 (JSON key expected; column top-1 E): the protocol's top-1 averaged
    exactly over every random choice of one gallery image per identity, instead of the
    first one; the same score without the luck of the draw.

    Verification: every pair of labelled rows of FEATURES is a trial (genuine when both
    share an identity); TAR (true accept rate) is reported at each --far, the threshold
    being the score that that share of impostor pairs exceeds, with the ROC AUC.

    The score means what its FEATURES are: on identities the backbone never trained on
    (the round's test part) it measures recognition; on images it trained on (D_L, or
    D_U after a retraining on its pseudo-labels) it is transductive and can reward
    memorisation. See cf-eval(1), TRANSDUCTIVE SCORES.
    """
    from ...core.recognition.identification import identification_split, recognition
    from ...errors import CfError
    from ...formats.features import load_features
    from ...formats.inputs import check_distinct_inputs
    from ...formats.writing import atomic_path, check_format_name, check_output_path

    report = Reporter(quiet)
    check_distinct_inputs({"FEATURES": features, "--distractors": distractors})
    if out is not None:
        check_output_path(check_format_name(out, "json"), [features, distractors])
    feats = load_features(features, reporter=report)
    if feats.labels is None:
        raise CfError("features file has no labels (identities) to identify", features)
    extra = None
    if distractors is not None:
        loaded = load_features(distractors, reporter=report)
        extra = loaded.features
        if extra.shape[1] != feats.dim:
            raise CfError(f"distractors have dimension {extra.shape[1]} but {features} has "
                          f"{feats.dim}", distractors)
        if loaded.id == feats.id:
            raise CfError(f"distractors are the features {features} themselves (the same "
                          "values): every probe would find itself", distractors)
    if identification_split(feats.labels)[1].size == 0:
        raise CfError("no identity has two or more images, so there are no probes", features)
    result = recognition(feats.features, feats.labels, fars, extra)
    result["features"] = str(features)
    if out is not None:
        with atomic_path(out) as tmp:
            Path(tmp).write_text(json.dumps(result, indent=1) + "\n")
    if as_json:
        click.echo(json.dumps(result))
    if not quiet:
        from rich.table import Table

        ver = result["verification"]
        table = Table(title=f"top-1 identification (cosine): {features}")
        for col in ("top-1", "top-1 E", "top-1 LOO", "probes", "gallery", "distractors", "identities"):
            table.add_column(col, justify="right")
        for f in ver["tar_at_far"]:
            table.add_column(f"TAR@FAR={f}", justify="right")
        table.add_column("AUC", justify="right")
        cells = [_fmt(v) for v in ver["tar_at_far"].values()] + [_fmt(ver["auc"])]
        table.add_row(f"{result['top1']:.4f}", f"{result['expected']['top1']:.4f}",
                      f"{result['leave_one_out']['top1']:.4f}",
                      str(result["probes"]), str(result["gallery"]),
                      str(result["distractors"]), str(result["identities"]), *cells)
        report.table(table)
    return 0
