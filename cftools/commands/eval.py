"""cf-eval: score clusters, or a kNN graph, against ground-truth identities.

A thin recipe: read and validate the inputs, call cftools.core.metrics, print a table on
stderr and (with --json) the numbers on stdout. The definitions live in the core module
and in man/cf-eval.1.

More subcommands plug into the group with one line each at the bottom of this file
(``main.add_command(sweep)``); ``clusters`` stays the default.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import h5py
import numpy as np

from ..artifacts import HDF5_SUFFIXES, open_artifact, require_same_source
from ..cli import CONTEXT_SETTINGS, CfGroup, Reporter, common_options
from ..core import metrics
from ..data.io import load_labels, read_knn_npz, split_spec
from ..errors import CfError


class EvalGroup(CfGroup):
    default_command = "clusters"


@click.group("cf-eval", cls=EvalGroup, context_settings=CONTEXT_SETTINGS, no_args_is_help=False)
def main():
    """Score clusters, or a kNN graph, against ground-truth identities.

    \b
      cf-eval [clusters] PRED --truth TRUTH [--json] [--nmi-average A]
      cf-eval knn KNN --truth TRUTH [--json] [--ranks R1,R2,...]
      cf-eval sweep LINKS --truth TRUTH --method M [--png P]   (diagnosis: an oracle)
      cf-eval identify FEATURES [--distractors D]   (top-1 identification, TAR at FAR)
      cf-eval report WORK [--png P]   (the round's scores per round vs baseline, upper bound)
      cf-eval gallery CLUSTERS --features F -o DIR [--links L] [--truth T]   (HTML site)

    With no subcommand, 'clusters' is meant: cf-eval PRED --truth TRUTH.
    A table goes to stderr; --json writes the numbers, and only them, to stdout.
    Truth labels of -1 (unknown) are excluded from scoring and counted; predicted
    labels of -1 (unassigned) are scored as singletons and counted.
    Options go after the subcommand. See cf-eval(1) for the exact definitions.
    """


# ----------------------------------------------------------------------------- inputs


def _truth(spec: str):
    """Truth labels, and (kind, id) when they come from a cftools file (for source checks)."""
    labels = load_labels(spec)
    path, inner = split_spec(spec)
    source = None
    if inner is None and path.suffix.lower() in HDF5_SUFFIXES:
        with open_artifact(path, ("features", "clusters")) as art:
            source = (art.kind, art.id)
    if not (labels != -1).any():
        raise CfError("no point has a known truth label (all are -1)", spec)
    return labels, source


def _predicted(spec: str):
    """Predicted labels and the attributes of the clusters file (None for other formats)."""
    path, inner = split_spec(spec)
    if inner is None and path.suffix.lower() in HDF5_SUFFIXES:
        with open_artifact(path, "clusters") as art:
            labels = art.read("labels")
            attrs = dict(art.attrs)
        if labels.ndim != 1:
            raise CfError(f"labels must be 1-D, got shape {labels.shape}", path)
        if labels.size and labels.min() < -1:
            raise CfError("cluster labels must be >= 0, or -1 for unassigned", path)
        return labels.astype(np.int64, copy=False), attrs
    return load_labels(spec), None


def _same_length(a_spec, a_n: int, b_spec, b_n: int, what: str) -> None:
    if a_n != b_n:
        raise CfError(f"has {a_n} {what} but the truth {b_spec} has {b_n} labels", a_spec)


def _prog() -> str:
    ctx = click.get_current_context(silent=True)
    return ctx.find_root().info_name if ctx else "cf-eval"


def _emit_json(result: dict) -> None:
    click.echo(json.dumps(result, indent=2, allow_nan=False))


def _pct(x: float) -> str:
    return f"{100.0 * x:.2f}"


# ----------------------------------------------------------------------------- clusters


@main.command("clusters", context_settings=CONTEXT_SETTINGS)
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
def clusters(pred, truth_spec, as_json, nmi_average, attach, quiet, debug):
    """Score predicted clusters PRED against the true identities.

    PRED is a cftools clusters file (its 'labels'; -1 = unassigned, scored as a
    singleton), or labels in .npy, .meta or file.h5:/dataset. Reports pairwise
    precision/recall with F_P their harmonic mean, Fowlkes-Mallows (FMI, their
    geometric mean: not the same number), BCubed P/R/F, NMI (its averaging named),
    the numbers of clusters, singletons and unassigned points, and the noise ratio
    (share of points in clusters of size >= 2 whose identity is not the majority
    identity of their cluster). The table shows percentages; --json gives fractions.
    """
    rep = Reporter(quiet, prog=_prog())
    attached = _attachments(attach)
    labels, pred_attrs = _predicted(pred)
    truth, source = _truth(truth_spec)
    _same_length(pred, labels.shape[0], truth_spec, truth.shape[0], "labels")
    if pred_attrs and "features_id" in pred_attrs and source and source[0] == "features":
        require_same_source(str(pred_attrs["features_id"]), source[1], what="features",
                            path=pred, other_path=truth_spec)
    result = metrics.evaluate(labels, truth, nmi_average=nmi_average)
    rep.table(_clusters_table(pred, result))
    if result["n_excluded"]:
        rep.info(f"{result['n_excluded']} points of unknown truth (-1) were excluded.")
    if as_json:
        _emit_json({**result, **attached})


def _attachments(specs) -> dict:
    """--attach KEY=FILE.json -> {KEY: the object in FILE}."""
    out = {}
    for spec in specs:
        key, sep, path = spec.partition("=")
        if not sep or not key or not path:
            raise click.BadParameter(f"expected KEY=FILE.json, got {spec!r}", param_hint="--attach")
        try:
            out[key] = json.loads(Path(path).read_text())
        except OSError as err:
            raise CfError(f"cannot read: {err.strerror or err}", path) from None
        except ValueError:
            raise CfError("is not a JSON file", path) from None
    return out


def _clusters_table(name, r: dict):
    from rich.table import Table

    t = Table(title=f"cf-eval clusters: {name}", title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    rows = [
        ("pairwise F (F_P, harmonic mean)", _pct(r["pairwise_f"])),
        ("Fowlkes-Mallows (FMI, geometric mean)", _pct(r["fmi"])),
        ("pairwise precision", _pct(r["pairwise_precision"])),
        ("pairwise recall", _pct(r["pairwise_recall"])),
        ("BCubed F", _pct(r["bcubed_f"])),
        ("BCubed precision", _pct(r["bcubed_precision"])),
        ("BCubed recall", _pct(r["bcubed_recall"])),
        (f"NMI ({r['nmi_average']})", _pct(r["nmi"])),
        ("noise ratio", _pct(r["noise_ratio"])),
        ("clusters (true)", f"{r['n_clusters']} ({r['n_true_clusters']})"),
        ("singletons (true)", f"{r['n_singletons']} ({r['n_true_singletons']})"),
        ("unassigned", str(r["n_unassigned"])),
        ("points scored / excluded", f"{r['n_points']} / {r['n_excluded']}"),
    ]
    for row in rows:
        t.add_row(*row)
    return t


# ----------------------------------------------------------------------------- knn


def _parse_ranks(ctx, param, value):
    try:
        ranks = sorted({int(x) for x in str(value).split(",") if x.strip()})
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not ranks or ranks[0] < 1:
        raise click.BadParameter(f"ranks must be integers >= 1, got {value!r}")
    return ranks


def _open_knn(spec: str):
    """(indices, self_first, query_id or None, closer). Indices stay on disk for .h5."""
    path = Path(spec)
    if path.suffix.lower() == ".npz":
        indices, _ = read_knn_npz(path)
        return indices, True, None, lambda: None
    if path.is_file() and not h5py.is_hdf5(path):
        raise CfError("not a cftools knn file (HDF5) nor a learn-to-cluster kNN .npz", path)
    art = open_artifact(path, "knn")
    query_id, base_id = str(art.attrs["query_id"]), str(art.attrs["base_id"])
    if query_id != base_id:
        art.close()
        raise CfError(f"holds neighbours of queries searched in another set (query_id "
                      f"{query_id[:12]} != base_id {base_id[:12]}); cf-eval knn scores the "
                      "kNN of a set within itself", path)
    self_first = art.attrs["self_first"]
    self_first = self_first.lower() == "true" if isinstance(self_first, str) else bool(self_first)
    return art["indices"], self_first, query_id, art.close


@main.command("knn", context_settings=CONTEXT_SETTINGS)
@click.argument("knn", metavar="KNN")
@click.option("-t", "--truth", "truth_spec", required=True, metavar="TRUTH",
              help="True identities, one per row of KNN (same sources as for clusters).")
@click.option("--json", "as_json", is_flag=True,
              help="Write every figure, per-rank lists included, as JSON to stdout.")
@click.option("--ranks", default="1,5,10,20,40,80", show_default=True, callback=_parse_ranks,
              help="Ranks shown in the table (ranks beyond the kNN's are skipped).")
@common_options
def knn(knn, truth_spec, as_json, ranks, quiet, debug):
    """Score a kNN graph KNN against the true identities: how many neighbours share
    the centre's identity at each rank, and the best any decoder could do on it.

    KNN is a cftools knn file (a set searched within itself, self first) or a
    learn-to-cluster kNN .npz. For each rank r (the point itself removed) it reports
    the share of r-th neighbours of the same identity, the precision among the first
    r, and the recall of identity mates among the first r; then the upper bounds:
    the pairwise and BCubed recall (and F, precision being 1) of the connected
    components of the graph that keeps exactly the kNN edges joining two points of
    the same identity. Use it to choose k: past the rank where recall stops growing,
    a larger k only costs time.
    """
    rep = Reporter(quiet, prog=_prog())
    indices, self_first, query_id, close = _open_knn(knn)
    try:
        truth, source = _truth(truth_spec)
        _same_length(knn, indices.shape[0], truth_spec, truth.shape[0], "rows")
        if query_id is not None and source and source[0] == "features":
            require_same_source(query_id, source[1], what="features", path=knn,
                                other_path=truth_spec)
        if indices.shape[1] < (2 if self_first else 1):
            raise CfError("holds no neighbour besides the point itself (k = 1)", knn)
        try:
            result = metrics.knn_quality(indices, truth, self_first=self_first)
        except ValueError as err:  # bad neighbour ids, found while streaming
            raise CfError(str(err), knn) from err
        except (OSError, RuntimeError) as err:  # h5py read failures while streaming
            raise CfError("cannot read dataset 'indices' (truncated or corrupt?)", knn) from err
    finally:
        close()
    shown = [r for r in ranks if r <= result["ranks"]]
    if len(shown) < len(ranks):
        rep.info(f"ranks above {result['ranks']} (the neighbours per point, self excluded) "
                 "are not shown.")
    rep.table(_knn_table(knn, result, shown or [result["ranks"]]))
    rep.table(_bounds_table(result))
    if result.get("n_self_not_first"):
        rep.warn(f"{knn}: {result['n_self_not_first']} rows do not list the point itself first "
                 "(duplicates or approximate search); it was removed where found")
    if as_json:
        _emit_json(result)


def _knn_table(name, r: dict, ranks):
    from rich.table import Table

    t = Table(title=f"cf-eval knn: {name}", title_justify="left",
              caption=(f"{r['n_points']} scored, {r['n_excluded']} excluded, "
                       f"{r['ranks']} ranks"),
              caption_justify="left")
    t.add_column("rank r", justify="right")
    t.add_column("same id at r", justify="right")
    t.add_column("precision@r", justify="right")
    t.add_column("recall@r", justify="right")
    for k in ranks:
        t.add_row(str(k), _pct(r["same_at_rank"][k - 1]), _pct(r["precision_at_rank"][k - 1]),
                  _pct(r["recall_at_rank"][k - 1]))
    return t


def _bounds_table(r: dict):
    from rich.table import Table

    t = Table(title="upper bounds (no wrong merge)", title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row(f"neighbour recall (all {r['ranks']} ranks)", _pct(r["neighbour_recall"]))
    t.add_row("upper bound pairwise recall / F",
              f"{_pct(r['upper_pairwise_recall'])} / {_pct(r['upper_pairwise_f'])}")
    t.add_row("upper bound BCubed recall / F",
              f"{_pct(r['upper_bcubed_recall'])} / {_pct(r['upper_bcubed_f'])}")
    t.add_row("clusters at the bound (true)", f"{r['upper_n_clusters']} ({r['n_true_clusters']})")
    return t


# More subcommands, each in its own module (they import this one's helpers freely).
from .eval_gallery import gallery  # noqa: E402
from .eval_identify import identify  # noqa: E402
from .eval_report import report  # noqa: E402
from .eval_sweep import sweep  # noqa: E402

main.add_command(sweep)
main.add_command(identify)
main.add_command(gallery)
main.add_command(report)

if __name__ == "__main__":
    main(prog_name="cf-eval")  # python -m would otherwise call itself eval.py
