"""cf-merge labels: clusters + labelled set -> the next round's training labels."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ...cli import CONTEXT_SETTINGS, Count, Reporter, common_options
from ...core.pseudo_labels import pseudo_labels
from ...errors import CfError
from ...formats.artifacts import require_same_source
from ...formats.clusters import read_clusters
from ...formats.features import load_features, split_spec, write_features
from ...formats.inputs import check_distinct_inputs
from ...formats.interop import write_bin, write_meta
from ...formats.writing import (
    atomic_outputs,
    check_format_name,
    check_output_paths,
)
from .answers import Outcome, corrections_option, honour, lineage, load_answers, record, recorded_of

LABELS_HELP = """Make the training labels of the next round.

CLUSTERS (cf-merge decode of D_U) gives pseudo-identities to the unlabelled features FU;
together with the labelled set FL (which must carry labels, or take --labelled-labels)
they become one features file for retraining the backbone (cf-embed train):

\b
  rows     FL rows with a known label (-1 dropped), then the FU rows whose cluster has at
           least --min-size and at most --max-size points (unassigned points, smaller
           and larger clusters dropped; with --oversized trim, a larger cluster keeps
           its --max-size members nearest its mean instead);
  labels   FL's own ids, then pseudo-identities numbered from max(FL label) + 1 upward,
           so they can never collide with real ones;
  names    carried when either input has them (FILE#ROW for rows that have none).

Datasets 'source' (0 = labelled, 1 = pseudo-labelled) and 'source_rows' (row in its input)
keep where each row came from; the provenance records all three inputs. --meta and --bin
also write the labels (one per line) and the features (raw float32) in learn-to-cluster's
layout.

Answers (--corrections FILE, and those CLUSTERS recorded) are honoured before the
labels are made, as cf-merge decode honours them (clusters split along their members'
cosines, 32 nearest each): answered pairs become labelled pairs of the next backbone's
training set. A named cluster whose name is an identity of FL's label_names takes that
identity's label; other names are kept in the output's label_names.
"""


def _honoured(pred, corrections_path, clusters, cl_ref, fu, rep):
    """The clusters with the answers honoured (split along the members' cosines), what
    the output records of them, and the points the answers name."""
    from ...core.decoding.constrained import cosine_edges

    answers = load_answers(corrections_path, fu.n, lineage(cl_ref, fu.id), clusters,
                           names=fu.names, recorded=recorded_of(clusters))
    if answers is None:
        return pred, Outcome(), np.zeros(0, np.int64)
    enforced = honour(pred, answers, cosine_edges(fu.features))
    rep.info(f"cf-merge: {len(answers.all)} answers honoured: {len(enforced.merges)} clusters "
             f"merged into others, {len(enforced.splits)} split")
    return (enforced.labels, record(answers, enforced, enforced.labels, Outcome()),
            answers.constraints.constrained_rows())


def _names(fl) -> dict | None:
    """The labelled set's {label: name}, when it has one."""
    if fl.artifact is None:
        return None
    value = fl.artifact.json_attr("label_names", None)
    return value if isinstance(value, dict) else None


def _max_size(value):
    v = str(value).strip().lower()
    if v in ("none", "0", ""):
        return 0
    if v == "auto":
        return "auto"
    try:
        n = int(v)
    except ValueError:
        n = -1
    if n < 1:
        raise click.BadParameter(f"expected a positive integer, auto or none, got {value!r}",
                                 param_hint="--max-size")
    return n


@click.command("labels", help=LABELS_HELP, context_settings=CONTEXT_SETTINGS)
@click.argument("clusters")
@click.option("--unlabelled-features", "fu_spec", required=True,
              help="Features of the clustered points (D_U), row for row with CLUSTERS.")
@click.option("--labelled-features", "fl_spec", required=True,
              help="Features of the labelled set (D_L).")
@click.option("--labelled-labels", default=None,
              help="Labels of D_L when its features file carries none.")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Output features file (.h5).")
@click.option("--min-size", type=Count(min=1), default=2, show_default=True,
              help="Drop pseudo-identities with fewer points.")
@click.option("--max-size", default="none", show_default=True, metavar="N|auto|none",
              help="Drop pseudo-identities with more points than N; auto: than the largest "
                   "identity of the labelled set (a cluster bigger than any real identity is "
                   "most likely several merged); none: no upper limit.")
@click.option("--oversized", type=click.Choice(["drop", "trim"]), default="drop",
              show_default=True,
              help="What becomes of a cluster larger than --max-size: drop it, or trim it to "
                   "its --max-size members nearest its mean direction (the identity it is "
                   "mostly of; the rest are left out). A cluster holding a point an answer "
                   "names is never trimmed.")
@click.option("--cores", "cores_path", default=None, type=click.Path(dir_okay=False),
              metavar="STRICT_CLUSTERS",
              help="A clustering of the same points at a stricter threshold (cf-merge "
                   "--pseudo): each cluster keeps only its largest piece there, purer and "
                   "one class per cluster, before the size limits.")
@click.option("--meta", type=click.Path(dir_okay=False), default=None,
              help="Also write the labels as a learn-to-cluster .meta file.")
@click.option("--bin", "bin_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the features as a learn-to-cluster .bin file.")
@corrections_option
@common_options
def labels_cmd(clusters, fu_spec, fl_spec, labelled_labels, out, min_size, max_size, oversized,
               cores_path, meta, bin_out, corrections_path, quiet):
    rep = Reporter(quiet, prog="cf-merge")
    max_size = _max_size(max_size)
    out = Path(out)
    if out.suffix.lower() not in (".h5", ".hdf5"):
        raise CfError("output must be a features file ending in .h5/.hdf5", out)
    check_distinct_inputs({"CLUSTERS": clusters, "--unlabelled-features": fu_spec,
                           "--labelled-features": fl_spec, "--labelled-labels": labelled_labels},
                          may_share=[("--labelled-features", "--labelled-labels"),
                                     ("CLUSTERS", "--unlabelled-features"),
                                     ("CLUSTERS", "--labelled-features")],
                          why={("--unlabelled-features", "--labelled-features"):
                               "the same file cannot be both the labelled and the unlabelled "
                               "set"})
    inputs = [clusters, split_spec(fu_spec)[0], split_spec(fl_spec)[0],
              labelled_labels and split_spec(labelled_labels)[0], corrections_path, cores_path]
    check_output_paths((out, meta, bin_out), inputs)
    for path, fmt in ((meta, "meta"), (bin_out, "bin")):
        if path:
            check_format_name(path, fmt)

    pred, cl_attrs, cl_ref = read_clusters(clusters)
    fu = load_features(fu_spec, reporter=rep)
    if fu.n != pred.shape[0]:
        raise CfError(f"has {pred.shape[0]} labels but the unlabelled features {fu.path} have "
                      f"{fu.n} rows", clusters)
    if cl_attrs.get("features_id") and fu.artifact is not None:
        require_same_source(cl_attrs["features_id"], fu.id, what="features", path=clusters,
                            other_path=fu.path)
    fl = _labelled(fl_spec, labelled_labels, fu, pred, rep)
    strict, strict_id = _strict(cores_path, pred, cl_attrs, clusters)

    pred, outcome, answered = _honoured(pred, corrections_path, clusters, cl_ref, fu, rep)
    chosen = pseudo_labels(pred, fl.labels, min_size=min_size, max_size=max_size,
                           names=outcome.attrs.get("cluster_names"),
                           labelled_names=_names(fl),
                           trim=fu.features if oversized == "trim" else None, exempt=answered,
                           cores=strict)
    keep_l, keep_u, labels = chosen.labelled_rows, chosen.unlabelled_rows, chosen.labels
    feats = np.concatenate([fl.features[keep_l], fu.features[keep_u]])
    source = np.r_[np.zeros(keep_l.size, np.int8), np.ones(keep_u.size, np.int8)]
    source_rows = np.r_[keep_l, keep_u].astype(np.int64)
    names = None
    if fl.names is not None or fu.names is not None:
        names = fl.names_of(keep_l) + fu.names_of(keep_u)
    attrs = {**chosen.counts, "oversized": oversized,
             "clusters_id": cl_attrs.get("cftools_id", ""), "cores_id": strict_id}
    if "corrections" in outcome.attrs:
        attrs["corrections"] = outcome.attrs["corrections"]
    if chosen.label_names:
        attrs["label_names"] = chosen.label_names
    with atomic_outputs((out, meta, bin_out)) as (out_tmp, meta_tmp, bin_tmp):  # all or none
        write_features(out_tmp, feats, labels=labels, names=names,
                       inputs={"clusters": cl_ref, "unlabelled": fu.provenance_ref,
                               "labelled": fl.provenance_ref, "corrections": outcome.ref},
                       attrs=attrs, datasets={"source": source, "source_rows": source_rows})
        if meta:
            write_meta(meta_tmp, labels)
        if bin_out:
            write_bin(bin_tmp, feats)
    _report(chosen, min_size, oversized, rep)
    rep.info(f"cf-merge: wrote {out}" + (f", {meta}" if meta else "") +
             (f", {bin_out}" if bin_out else ""))


def _labelled(fl_spec, labelled_labels, fu, pred, rep):
    """The labelled features: labelled, of the unlabelled set's dimension, not that set,
    and with room after their largest label for the pseudo-identities."""
    fl = load_features(fl_spec, labels=labelled_labels, reporter=rep)
    if fl.labels is None:
        raise CfError("labelled features carry no labels; give --labelled-labels", fl.path)
    if fl.dim != fu.dim:
        raise CfError(f"has dimension {fl.dim} but the unlabelled features {fu.path} have "
                      f"{fu.dim}", fl.path)
    if fu.id == fl.id:
        raise CfError(f"labelled features are the unlabelled features {fu.path} (the same "
                      "values): a set cannot be both", fl.path)
    known = fl.labels[fl.labels >= 0]
    room = np.iinfo(np.int64).max - (int(known.max()) if known.size else -1)
    if room <= np.unique(pred[pred >= 0]).size:
        raise CfError(f"its largest label {int(known.max())} leaves no room for the "
                      "pseudo-identities numbered after it within int64; renumber the labels",
                      labelled_labels or fl.path)
    return fl


def _report(chosen, min_size, oversized, rep) -> None:
    """The summary line of what was kept and left out."""
    keep_l, keep_u = chosen.labelled_rows, chosen.unlabelled_rows
    c = chosen.counts
    rep.info(f"cf-merge: {keep_l.size} labelled rows ({c['n_labelled_ids']} ids) + "
             f"{keep_u.size} pseudo-labelled rows ({c['n_pseudo_ids']} pseudo-ids from "
             f"{chosen.offset}); dropped {c['dropped_unassigned']} unassigned and "
             f"{c['dropped_small']} in clusters of fewer than {min_size}"
             + (f", {c['dropped_large']} in clusters of more than {chosen.max_size}"
                if chosen.max_size else "")
             + (f"; {c['trimmed']} trimmed from clusters of more than {chosen.max_size}"
                if oversized == "trim" and chosen.max_size else "")
             + (f"; {c['outside_cores']} outside their cluster's core"
                if c["outside_cores"] else ""))


def _strict(cores_path, pred, cl_attrs, clusters):
    """(the --cores clustering's labels, its id) or (None, ""): the same points as
    CLUSTERS (as many, of the same features where both say)."""
    if not cores_path:
        return None, ""
    strict, attrs, _ = read_clusters(cores_path)
    if strict.shape != pred.shape:
        raise CfError(f"has {strict.shape[0]} labels but CLUSTERS {clusters} has "
                      f"{pred.shape[0]}: --cores must cluster the same points", cores_path)
    if attrs.get("features_id") and cl_attrs.get("features_id"):
        require_same_source(attrs["features_id"], cl_attrs["features_id"], what="features",
                            path=cores_path, other_path=clusters)
    return strict, str(attrs.get("cftools_id", ""))
