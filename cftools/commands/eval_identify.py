"""cf-eval identify: top-1 identification of a backbone's features, with distractors.

Attached to the cf-eval group by ``main.add_command(identify)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..cli import CONTEXT_SETTINGS, Reporter, common_options


@click.command("identify", context_settings=CONTEXT_SETTINGS)
@click.argument("features", type=click.Path(path_type=Path))
@click.option("--distractors", type=click.Path(path_type=Path), default=None,
              help="Features file whose rows all join the gallery as distractors.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON on stdout.")
@common_options
def identify(features, distractors, as_json, quiet, debug):
    """Top-1 identification (MegaFace protocol in miniature) of labelled FEATURES.

    For every identity with two or more images, its first image goes into the gallery and
    the others are probes; images of identities seen once, and all rows of --distractors,
    join the gallery as distractors. Reports the fraction of probes whose most
    cosine-similar gallery image is of their identity, the number of probes, the gallery
    size and the number of distractors. Rows labelled -1 take no part.
    """
    from ..core.identification import top1_identification
    from ..data.io import load_features
    from ..errors import CfError

    report = Reporter(quiet)
    feats = load_features(features, reporter=report)
    if feats.labels is None:
        raise CfError("features file has no labels (identities) to identify", features)
    extra = None
    if distractors is not None:
        extra = load_features(distractors, reporter=report).features
        if extra.shape[1] != feats.dim:
            raise CfError(f"distractors have dimension {extra.shape[1]} but {features} has "
                          f"{feats.dim}", distractors)
    result = top1_identification(feats.features, feats.labels, extra)
    if result["probes"] == 0:
        raise CfError("no identity has two or more images, so there are no probes", features)
    result["features"] = str(features)
    if as_json:
        click.echo(json.dumps(result))
    if not quiet:
        from rich.table import Table

        table = Table(title="top-1 identification (cosine)")
        for col in ("top-1", "probes", "gallery", "distractors", "identities"):
            table.add_column(col, justify="right")
        table.add_row(f"{result['top1']:.4f}", str(result["probes"]), str(result["gallery"]),
                      str(result["distractors"]), str(result["identities"]))
        report.table(table)
    return 0


if __name__ == "__main__":
    from ..cli import CfCommand

    # standalone use (tests): the same command with cf-eval's one-line errors
    CfCommand(name="identify", params=identify.params, callback=identify.callback,
              help=identify.help, context_settings=CONTEXT_SETTINGS).main()
