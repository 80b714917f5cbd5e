"""cf-eval clusters: predicted clusters scored against the true identities."""

from __future__ import annotations

import click

from ...cli import CONTEXT_SETTINGS, Reporter, common_options
from ...core import metrics
from ...formats.artifacts import require_same_source
from ...formats.clusters import read_predicted
from ...formats.inputs import check_distinct_inputs, read_json
from .common import emit_json, pct, prog, read_truth, same_length


@click.command("clusters", context_settings=CONTEXT_SETTINGS)
@click.argument("pred", metavar="PRED")
@click.option("-t", "--truth", "truth_spec", required=True, metavar="TRUTH",
              help="True identities: a features file with labels, a clusters file, .npy, "
                   ".meta, or file.h5:/dataset. -1 = unknown (excluded, counted).")
@click.option("--json", "as_json", is_flag=True,
              help="Write every metric as one JSON object to stdout (fractions in [0, 1]).")
@click.option("--nmi-average", type=click.Choice(list(metrics.NMI_AVERAGES)),
              default="arithmetic", show_default=True,
              help="Mean of the two entropies that normalises NMI (arithmetic = scikit-learn's "
                   "default).")
@click.option("--attach", "attach", multiple=True, metavar="KEY=FILE.json",
              help="Add the JSON object in FILE under KEY to the --json output (the round "
                   "puts its backbone's recognition scores beside the cluster metrics). "
                   "Repeatable.")
@common_options
def clusters(pred, truth_spec, as_json, nmi_average, attach, quiet):
    """Score predicted clusters PRED against the true identities.

    PRED is a cftools clusters file (its 'labels'; -1 = unassigned, scored as a
    singleton), or labels in .npy, .meta or file.h5:/dataset. Reports pairwise
    precision/recall with F_P their harmonic mean, Fowlkes-Mallows (FMI, their
    geometric mean: not the same number), BCubed P/R/F, NMI (its averaging named),
    the numbers of clusters, singletons and unassigned points, and the noise ratio
    (share of points in clusters of size >= 2 whose identity is not the majority
    identity of their cluster). The table shows percentages; --json gives fractions.
    """
    rep = Reporter(quiet, prog=prog())
    check_distinct_inputs({"PRED": pred, "--truth": truth_spec})
    attached = _attachments(attach)
    labels, pred_attrs = read_predicted(pred)
    truth, source = read_truth(truth_spec)
    same_length(pred, labels.shape[0], truth_spec, truth.shape[0], "labels")
    if pred_attrs and "features_id" in pred_attrs and source and source[0] == "features":
        require_same_source(str(pred_attrs["features_id"]), source[1], what="features",
                            path=pred, other_path=truth_spec)
    result = metrics.evaluate(labels, truth, nmi_average=nmi_average)
    rep.table(_clusters_table(pred, result))
    if result["n_excluded"]:
        rep.info(f"{result['n_excluded']} points of unknown truth (-1) were excluded.")
    clash = sorted(set(attached) & set(result))
    if clash:
        raise click.BadParameter(f"key {clash[0]!r} is a metric of cf-eval clusters; an "
                                 "attachment never replaces one (choose another KEY)",
                                 param_hint="--attach")
    if as_json:
        emit_json({**result, **attached})


def _attachments(specs) -> dict:
    """--attach KEY=FILE.json -> {KEY: the JSON object in FILE} (formats.inputs.read_json:
    a regular file, bounded, no NaN), each KEY once."""
    out = {}
    for spec in specs:
        key, sep, path = spec.partition("=")
        if not sep or not key or not path:
            raise click.BadParameter(f"expected KEY=FILE.json, got {spec!r}", param_hint="--attach")
        if key in out:
            raise click.BadParameter(f"key {key!r} is attached twice", param_hint="--attach")
        out[key] = read_json(path, "JSON file to attach", want=dict)
    return out


def _clusters_table(name, r: dict):
    from rich.table import Table

    t = Table(title=f"cf-eval clusters: {name}", title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    rows = [
        ("pairwise F (F_P, harmonic mean)", pct(r["pairwise_f"])),
        ("Fowlkes-Mallows (FMI, geometric mean)", pct(r["fmi"])),
        ("pairwise precision", pct(r["pairwise_precision"])),
        ("pairwise recall", pct(r["pairwise_recall"])),
        ("BCubed F", pct(r["bcubed_f"])),
        ("BCubed precision", pct(r["bcubed_precision"])),
        ("BCubed recall", pct(r["bcubed_recall"])),
        (f"NMI ({r['nmi_average']})", pct(r["nmi"])),
        ("noise ratio", pct(r["noise_ratio"])),
        ("clusters (true)", f"{r['n_clusters']} ({r['n_true_clusters']})"),
        ("singletons (true)", f"{r['n_singletons']} ({r['n_true_singletons']})"),
        ("unassigned", str(r["n_unassigned"])),
        ("points scored / excluded", f"{r['n_points']} / {r['n_excluded']}"),
    ]
    for row in rows:
        t.add_row(*row)
    return t
