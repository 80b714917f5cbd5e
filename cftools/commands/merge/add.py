"""cf-merge add: new points into an existing clustering, without clustering everything
again."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from ...cli import (
    CONTEXT_SETTINGS,
    Count,
    FiniteFloat,
    Reporter,
    batch_size_option,
    bf16_inference_option,
    common_options,
    device_option,
    seed_option,
)
from ...core.calibration.thresholds import default_mode
from ...core.decoding.decoders import DECODERS
from ...core.decoding.setting import DecoderSetting
from ...core.decoding.singletons import SINGLETON_POLICIES
from ...core.runtime.device import torch_device
from ...errors import CfError
from ...formats.artifacts import open_artifact, require_same_source
from ...formats.clusters import read_clusters
from ...formats.features import load_features, split_spec
from ...formats.inputs import check_distinct_inputs
from ...formats.links import read_links
from ...formats.thresholds import LINK_MODES
from ...formats.writing import check_output_paths
from .answers import (
    Outcome,
    corrections_option,
    honour,
    lineage,
    load_answers,
    record,
    recorded_of,
    weighed_edges,
)

ADD_HELP = """Add new points to an existing clustering, without clustering everything again.

CLUSTERS is a clusters file made by cf-merge (decode, or an earlier add) from LINKS
(--links), which cf-link made from FEATURES (--features) and, for model links, MODEL
(--model). NEW holds the new points' features (any format cf-knn reads), of the same
dimension and from the same backbone. Three files come out, together or not at all: the
clusters of old + new (-o), their links (--links-out) and features (--features-out),
rows in the order old, then new; they are the CLUSTERS, --links and --features of the
next add.

\b
What it does, only where the new points reach:
  1. the neighbours of the new points among old + new (exact search while small, else
     an inverted-file index with nprobe tuned on a sample of the new points to recall
     0.95 against exact search; --knn-method);
  2. the old points a new point enters the top L of (L: the links' width, the model's
     sequence length) get their sequences rebuilt: the old neighbours and the entrants,
     centre first, by falling similarity;
  3. links for the new points and the rebuilt rows by the path that made LINKS (the
     model's probabilities, or raw cosine, as the links file records: the same as
     cf-link --method auto). For model links a rebuilt row is, by default (--relink
     mirror), not run through the model again: its old neighbours keep their
     probabilities and an entrant j gets p_ij = p_ji from j's own row (0 where the row's
     point is not in it); a model pass per entered row (~23 per new point at 1M points)
     would be most of the add's time. --relink model runs the rebuilt rows through the
     model: under reciprocal weights only rows where an entrant could make a kept link
     (p_ji >= 2t - 1 from the entrant's side), and only rows where an entrant's cosine
     reaches the cosine floor (--cosine-quantile of the cosines of the links the decoder
     keeps, on a sample of 4096 old rows; recorded in the batch entry as cosine_floor);
     the others keep their links;
  4. the decoder, threshold and link mode CLUSTERS was made with (calibrated at
     training), run on the local graph: the new points and, as one node each, the old
     clusters they have kept links to;
  5. a new point joins the existing cluster it holds the most kept link weight to
     within its local cluster; local clusters with no old point become new clusters,
     numbered above the largest existing id; new singletons follow CLUSTERS' singleton
     policy.

Existing cluster ids are kept. An old point changes cluster only when two old clusters
fall in one local cluster and new links reach at least --merge-links distinct members,
and three quarters, of each (through new points with kept links into both, or old-old
links kept now that were not before): the larger keeps its id. Every merge is reported on stderr
and recorded in
the output (dataset 'merges': batch, kept id, merged id, members reached on the weaker
side).

The output says where every point came from: dataset 'batch' (0 = the original set,
then 1, 2, ... per add) and attribute 'batches' (per batch: source file and id, time,
size, points that joined existing clusters, new clusters, merges, timings).

With --redecode, step 4 decodes again, point by point, where new links join old clusters
and where old clusters have grown. A new point is joined to the unit (old cluster,
unassigned old point, new point) holding the most of its kept link weight and to every
unit holding a third of it; a group of units with one old cluster and no unassigned old
point only joins its new points to that cluster, as the default add does, unless the
cluster's size crosses a step of 1.1^k times its members in the original set (then it is
decoded again with them: each cluster is looked at again each time it grows by a tenth).
The other groups are the region: old clusters (every member) and unassigned old points
that new points join together, with those new points, and new points that reach no old
cluster. The region is decoded over the links among its points (links leaving it
dropped) and takes the old ids by largest overlap, one to one (as cf-merge --previous):
two old clusters may become one (the larger's id kept), one may split (its larger part
keeps the id, the rest get ids never used before), so an add no longer freezes old
mistakes where new links bear on them. It costs the decode of the region (the batch entry
records region_points, region_old_clusters, grown_old_clusters, joined_old_clusters and
joined_without_decode).

Answers (--corrections FILE, and those CLUSTERS recorded from an earlier --corrections)
are honoured after step 5 as cf-merge decode honours them, and recorded in the output, so
the next add honours them again. Every point whose id changed (merges, splits) is
counted in dataset id_changes (batch, kind 1 split or 2 merged, old id, new id, points);
ids once gone are never given again (attribute next_id).

Cost: the index search and the copying of old rows touch every point; the rest grows
with the new points and the rows they enter, not with the size of the existing set.

Refused, before any output: NEW of another dimension, a MODEL that is not the one that
made LINKS (or one for another dimension or length), LINKS that did not make CLUSTERS,
FEATURES that did not make LINKS.
"""


@click.command("add", help=ADD_HELP, context_settings=CONTEXT_SETTINGS)
@click.argument("clusters")
@click.option("--new", "new_spec", required=True,
              help="Features of the new points (.h5, FILE.h5:/path, .npy, .bin).")
@click.option("--links", "links_path", required=True,
              help="The links file CLUSTERS was decoded from.")
@click.option("--features", "features_spec", required=True,
              help="The features LINKS was made from (the existing set).")
@click.option("--model", "model_path", default=None,
              help="The model that made LINKS (needed for model links).")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Output clusters file of old + new (.h5).")
@click.option("--links-out", required=True, type=click.Path(dir_okay=False),
              help="Output links file of old + new (.h5).")
@click.option("--features-out", required=True, type=click.Path(dir_okay=False),
              help="Output features file of old + new (.h5).")
@click.option("--merge-links", type=Count(min=1), default=3, show_default=True,
              help="Members of each of two existing clusters that new links must reach "
                   "(and 3/4 of each) to merge them.")
@click.option("--knn-method", type=click.Choice(("auto", "exact", "ivf")), default="auto",
              show_default=True, help="Search of the new points' neighbours.")
@click.option("--relink", type=click.Choice(("mirror", "model")), default="mirror",
              show_default=True,
              help="Model links of the old rows new points enter: mirror the entrants' own "
                   "links (no model pass), or run the model on those rows.")
@click.option("--cosine-quantile", type=FiniteFloat(0, 0.5), default=0.005,
              show_default=True,
              help="With --relink model: relink an entered old row only where an entrant's "
                   "cosine reaches this quantile of the cosines of kept links (a sample of "
                   "the old rows); 0 relinks every entered row.")
@click.option("--redecode", is_flag=True,
              help="Decode again the old clusters new links join together, and those grown "
                   "by a tenth, keeping their ids by largest overlap (old clusters may merge "
                   "or split; recorded).")
@corrections_option
@bf16_inference_option
@batch_size_option(256)
@device_option
@seed_option
@common_options
def add_cmd(clusters, new_spec, links_path, features_spec, model_path, out, links_out,
            features_out, merge_links, knn_method, relink, cosine_quantile, redecode,
            corrections_path, bf16, batch_size, device, seed, quiet):
    from ...core.incremental.add import add_points
    from ...core.incremental.outputs import write_add

    rep = Reporter(quiet, prog="cf-merge")
    outs = (out, links_out, features_out)
    for o in outs:
        if Path(o).suffix.lower() not in (".h5", ".hdf5"):
            raise CfError("output must be an HDF5 file ending in .h5/.hdf5", o)
    check_distinct_inputs({"--new": new_spec, "--features": features_spec})
    check_output_paths(outs, [clusters, links_path, split_spec(features_spec)[0],
                              split_spec(new_spec)[0], model_path, corrections_path])
    t0 = time.perf_counter()
    old, indices, probs, model = _existing(clusters, links_path, features_spec, model_path,
                                           device, rep)
    new = load_features(new_spec, reporter=rep)
    if new.dim != old.features.dim:
        raise CfError(f"new features have dimension {new.dim}, the existing features "
                      f"{old.features.path} have {old.features.dim}", new.path)
    if new.artifact is not None and new.id == old.features.id:
        raise CfError(f"new features are the existing features {old.features.path} (the same "
                      "values): nothing to add", new.path)
    n0 = indices.shape[0]
    answers = load_answers(corrections_path, n0, lineage(old.links_art, old.features.id,
                                                         old.clusters_art.id), clusters,
                           names=old.features.names, recorded=recorded_of(clusters),
                           size=n0 + new.n)

    # the decoder CLUSTERS was made with, as it was made
    link_method = str(old.links_attrs.get("method"))
    setting = DecoderSetting.recorded(old.attrs, str(old.attrs.get(
        "link_mode", default_mode(str(old.attrs["method"]), old.thresholds, link_method))))
    n0, length = indices.shape
    min_sim = old.links_attrs.get("min_sim", "none")  # the links' sequences masked below it
    rep.info(f"cf-merge: adding {new.n} points to {n0} ({int((old.labels >= 0).sum())} in "
             f"clusters) as batch {old.next_batch}: {setting.method} ({setting.mode}) at "
             f"threshold {setting.threshold:.6g}, {link_method} links of length {length}")
    with rep.progress(total=new.n, desc="neighbours", unit="pt") as bar:
        res = add_points(
            old.features.features, new.features, indices, probs, old.labels,
            link_method=link_method, model=model, decoder=setting.method,
            threshold=setting.threshold, mode=setting.mode,
            intimacy_ratio=setting.intimacy_ratio, peaks_tolerance=setting.peaks_tolerance,
            max_size=setting.max_size, size_step=setting.size_step,
            singletons=setting.singletons, attach_threshold=setting.attach_threshold,
            merge_links=merge_links, seed=seed, knn_method=knn_method, batch_size=batch_size,
            device=str(torch_device(device)) if link_method == "model" else "cpu", bf16=bf16,
            progress=bar, cosine_quantile=cosine_quantile, relink=relink,
            min_sim=None if str(min_sim) == "none" else float(min_sim), redecode=redecode,
            next_id=old.attrs.get("next_id"), step=old.next_batch, old_batch=old.batch)
    del indices, probs
    outcome = _honour(res, answers, setting.mode, rep)
    t_write = time.perf_counter()
    summary = write_add(outs, old, new, res, mode=setting.mode, merge_links=merge_links,
                        extra_attrs=outcome.attrs, answers=outcome.answers,
                        corrections_ref=answers.ref if answers else None)
    t_write = time.perf_counter() - t_write
    _report(rep, res, old.next_batch, outs, n0 + new.n, summary, time.perf_counter() - t0,
            t_write)


def _honour(res, answers, mode, rep) -> Outcome:
    """The answers honoured on the add's clusters (res updated); what the output records."""
    from ...core.decoding.identities import next_free_id

    res.counts["redecode"] = bool(res.changes is not None)
    if answers is None:
        return Outcome()
    enforced = honour(res.labels, answers, weighed_edges(res.indices, res.probabilities, mode),
                      next_id=res.next_id)
    res.labels = enforced.labels
    res.next_id = next_free_id(res.labels, res.next_id)
    rep.info(f"cf-merge: {len(answers.all)} answers honoured: {len(enforced.merges)} clusters "
             f"merged into others, {len(enforced.splits)} split")
    return record(answers, enforced, res.labels, Outcome())


def _existing(clusters, links_path, features_spec, model_path, device, rep):
    """The existing set, its files checked to belong together before any work:
    (Existing, link indices, probabilities, the model for model links or None)."""
    from ...core.incremental.outputs import Existing

    old_labels, cl_attrs, cl_ref = read_clusters(clusters)
    with open_artifact(clusters, "clusters") as cl:
        old_batch = cl.read("batch") if "batch" in cl else None
        old_merges = cl.read("merges") if "merges" in cl else np.zeros((0, 4), np.int64)
        old_changes = cl.read("id_changes") if "id_changes" in cl else None
        batches = cl.json_attr("batches", None)
    for attr in ("links_id", "method", "threshold"):
        if attr not in cl_attrs:
            raise CfError(f"has no attribute '{attr}': not made by cf-merge decode or add",
                          clusters)
    for attr, allowed in (("method", DECODERS), ("link_mode", LINK_MODES),
                          ("singletons", SINGLETON_POLICIES)):
        if attr in cl_attrs and cl_attrs[attr] not in allowed:
            raise CfError(f"attribute '{attr}' is {str(cl_attrs[attr])[:40]!r}, not one of "
                          f"{', '.join(allowed)}", clusters)
    indices, probs, l_attrs, stored, l_art = read_links(links_path)
    require_same_source(str(cl_attrs["links_id"]), l_art.id, what="links", path=clusters,
                        other_path=links_path)
    feats = load_features(features_spec, reporter=rep)
    require_same_source(str(l_attrs.get("features_id")), feats.id, what="features",
                        path=links_path, other_path=feats.path)
    n0, length = indices.shape
    if feats.n != n0 or old_labels.shape[0] != n0:
        raise CfError(f"has {old_labels.shape[0]} labels, the links {links_path} {n0} rows and "
                      f"the features {feats.path} {feats.n}", clusters)
    link_method = str(l_attrs.get("method"))
    if link_method not in ("model", "cosine"):
        raise CfError(f"links of unknown method {link_method!r}", links_path)
    if link_method == "model" and not model_path:
        raise CfError("holds model links: give --model, the model that made them", links_path)
    model = m_art = None
    if model_path:
        model, m_art = _model(model_path, str(l_attrs.get("model_id", "none")), link_method,
                              links_path, feats.dim, length, device)
    old = Existing(str(clusters), old_labels, cl_attrs, old_batch, old_merges, batches, cl_ref,
                   l_art, l_attrs, stored, feats, m_art, old_changes)
    return old, indices, probs, model


def _model(model_path, made_by, link_method, links_path, dim, length, device):
    """(the model on its device for model links, else None; its artifact), refused when it
    is not the model that made the links or does not fit them."""
    from ...core.clusformer.inference import check_fits
    from ...core.clusformer.model import load_model

    m_art = open_artifact(model_path, "model")
    m_art.close()
    if made_by != "none" and m_art.id != made_by:
        raise CfError(f"is not the model that made the links {links_path} (id "
                      f"{m_art.id[:12]} != {made_by[:12]})", model_path)
    if link_method != "model":
        return None, m_art
    model, _ = load_model(model_path, torch_device(device))
    check_fits(model, dim, length, model_path)
    if model.config.seq_len != length:
        raise CfError(f"model reads sequences of length L={model.config.seq_len}, the "
                      f"links {links_path} have L={length}", model_path)
    return model, m_art


def _report(rep, res, batch_no, outs, n, summary, seconds, t_write) -> None:
    c = res.counts
    for kept, gone, m in res.merges:
        rep.info(f"cf-merge: batch {batch_no}: existing cluster {gone} merged into {kept} "
                 f"(new links reach {m}+ members of each)")
    rep.info(f"cf-merge: batch {batch_no}: {c['joined_existing']} new points joined existing "
             f"clusters, {c['in_new_clusters']} formed {c['new_clusters']} new clusters "
             f"({c['new_singletons']} singletons), {c['merges']} merges of existing clusters; "
             f"{c['relinked_old_rows']} of {c['entered_old_rows']} old rows entered were "
             f"relinked ({c['relink']}); search {res.knn_info.get('method')}"
             + (f" (nprobe {res.knn_info['nprobe']}, recall "
                f"{res.knn_info['recall_at_k']:.3f})" if "nprobe" in res.knn_info else ""))
    secs = " ".join(f"{k} {v:.1f}" for k, v in res.seconds.items())
    out, links_out, features_out = outs
    rep.info(f"cf-merge: wrote {out}, {links_out}, {features_out} ({n} points, "
             f"{summary['n_clusters']} clusters) in {seconds:.1f} s ({secs}, write "
             f"{t_write:.1f})")
