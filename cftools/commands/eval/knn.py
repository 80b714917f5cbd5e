"""cf-eval knn: a kNN graph scored against the true identities."""

from __future__ import annotations

from pathlib import Path

import click
import h5py

from ...cli import CONTEXT_SETTINGS, Reporter, common_options
from ...core.neighbours.quality import knn_quality
from ...errors import CfError
from ...formats.artifacts import open_artifact, require_same_source
from ...formats.inputs import regular_file
from ...formats.interop import read_knn_npz
from .common import emit_json, pct, prog, read_truth, same_length


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
    regular_file(path, "knn file")
    if not h5py.is_hdf5(path):
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


@click.command("knn", context_settings=CONTEXT_SETTINGS)
@click.argument("knn", metavar="KNN")
@click.option("-t", "--truth", "truth_spec", required=True, metavar="TRUTH",
              help="True identities, one per row of KNN (same sources as for clusters).")
@click.option("--json", "as_json", is_flag=True,
              help="Write every figure, per-rank lists included, as JSON to stdout.")
@click.option("--ranks", default="1,5,10,20,40,80", show_default=True, callback=_parse_ranks,
              help="Ranks shown in the table (ranks beyond the kNN's are skipped).")
@common_options
def knn(knn, truth_spec, as_json, ranks, quiet):
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
    rep = Reporter(quiet, prog=prog())
    indices, self_first, query_id, close = _open_knn(knn)
    try:
        truth, source = read_truth(truth_spec)
        same_length(knn, indices.shape[0], truth_spec, truth.shape[0], "rows")
        if query_id is not None and source and source[0] == "features":
            require_same_source(query_id, source[1], what="features", path=knn,
                                other_path=truth_spec)
        if indices.shape[1] < (2 if self_first else 1):
            raise CfError("holds no neighbour besides the point itself (k = 1)", knn)
        try:
            result = knn_quality(indices, truth, self_first=self_first)
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
        emit_json(result)


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
        t.add_row(str(k), pct(r["same_at_rank"][k - 1]), pct(r["precision_at_rank"][k - 1]),
                  pct(r["recall_at_rank"][k - 1]))
    return t


def _bounds_table(r: dict):
    from rich.table import Table

    t = Table(title="upper bounds (no wrong merge)", title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row(f"neighbour recall (all {r['ranks']} ranks)", pct(r["neighbour_recall"]))
    t.add_row("upper bound pairwise recall / F",
              f"{pct(r['upper_pairwise_recall'])} / {pct(r['upper_pairwise_f'])}")
    t.add_row("upper bound BCubed recall / F",
              f"{pct(r['upper_bcubed_recall'])} / {pct(r['upper_bcubed_f'])}")
    t.add_row("clusters at the bound (true)", f"{r['upper_n_clusters']} ({r['n_true_clusters']})")
    return t
