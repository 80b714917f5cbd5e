"""cf-merge decode: links -> clusters."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from ...cli import CONTEXT_SETTINGS, Count, FiniteFloat, Reporter, common_options, seed_option
from ...core.calibration.objective import IDENTITY_CAP
from ...core.calibration.thresholds import calibrate_links, default_mode
from ...core.decoding.decoders import (
    DECODERS,
    DEFAULT_INTIMACY_RATIO,
    DEFAULT_SIZE_STEP,
)
from ...core.decoding.setting import DecoderSetting
from ...core.decoding.singletons import SINGLETON_POLICIES, cluster_summary
from ...core.decoding.weights import link_weights
from ...errors import CfError, CfUsageError
from ...formats.features import load_labels
from ...formats.inputs import check_distinct_inputs
from ...formats.links import read_links
from ...formats.thresholds import (
    LINK_MODES,
    calibrated_mode,
    calibrated_value,
    link_mode_key,
    pseudo_key,
    resolve_threshold,
    resolved_key,
    threshold_key,
)
from ...formats.writing import check_output_path, write_artifact
from .answers import (
    Outcome,
    corrections_option,
    honour,
    keep_ids,
    lineage,
    load_answers,
    read_previous,
    record,
    recorded_of,
    write_records,
)

DECODE_HELP = """Cluster the points of a links file.

LINKS is a links file (cf-link): for every point its neighbours and the probability
that each shares its identity (with --method cosine links, raw cosine similarities).
The output is a clusters file: one label per point, -1 = unassigned.

\b
Decoders (--method), each keeping the links i -> j with p_ij >= threshold:
  peaks       GCN-V style: confidence c_i = mean over neighbours of (p_ij if p_ij >= t
              else -p_ij); each point joins its most probable neighbour of confidence
              >= its own (minus --peaks-tolerance) when that link is kept; clusters =
              the resulting trees.
  intimacy    STAR-FC style: kept links whose node intimacy
              |N(i) & N(j)| / max(|N(i)|, |N(j)|) is below --intimacy-ratio are cut
              (N(i) = i and its kept neighbours), then connected components.
  infomap     Infomap (two-level, directed) on the kept links weighted by p_ij.
  components  connected components; --max-size splits larger ones by raising their
              threshold in steps of --size-step.
  propagation label propagation over the kept links (each point takes the label with
              the most link weight around it), in torch, on the GPU where there is one:
              the decoder for sizes where Infomap's one thread is too slow. Against
              Infomap on the round's links, mean of 3 seeds on CelebA, lfw-dev and the
              demo: F_P -0.17 to +0.31, F_B +0.06 to +1.24; slower on a CPU below 20K.

Link weights (--reciprocal or --directed): reciprocal replaces every p_ij by
(p_ij + p_ji) / 2, where p_ji = 0 when i is not among j's links, before anything else
(thresholds, decoding, singletons): a link counts as much as both of its ends agree on
it, so a stray point that ranks a crowd highly, unanswered, no longer joins it. --directed
uses p_ij as given (the published Infomap-over-cosine baseline). Neither helps
everywhere (reciprocal lifts model links on CelebA, and takes Infomap over cosine links
of long-tailed faces from F_P 92.2 to 68.9), so by default the mode is chosen like the
threshold: the one that calibrated better (cf-train records it per decoder in the links'
thresholds as link_mode_DECODER; --calibrate tries both); with neither, directed for
cosine links and reciprocal for model links.

The threshold comes from, in this order: --threshold; --pseudo (the stricter threshold
cf-train --pseudo-threshold chose for the next round's pseudo-labels, key pseudo_METHOD);
--calibrate LABELLED_LINKS with --calibrate-truth LABELS (the threshold maximising the
mean of pairwise F, each identity weighed as if it had at most 30 points so that no giant
identity decides, and BCubed F on that labelled set, e.g. the links of D_L made the same
way, weighted the same way); the 'thresholds' the links file carries (set by cf-train's
calibration on its labelled set: key = decoder, or directed_DECODER under --directed;
else "link", only where cf-train calibrated no decoder: one trained with --decoders
carries the decoders it named and Infomap alone). Without any of them the command stops:
thresholds are never chosen on the set being clustered. Model links from a model that
lost cf-train's guard (see cf-train(1)) are clustered, with a warning on stderr.
--intimacy-ratio and --peaks-tolerance come from the same places (else 0.5 and 0).

\b
Singletons (--singletons): keep (own clusters), unassign (-1), or attach (join the
cluster of its most probable neighbour that lies in a cluster of 2+, when that link has
p >= --attach-threshold; the others stay singletons). The counts go to stderr and into
the file (attribute singleton_counts).

A person's answers (--corrections FILE, from cf-eval gallery or review; rows of this
set, or of a set it grew from by cf-merge add) are honoured after decoding: the clusters
a must-link group spans are merged, a cluster holding a cannot-linked pair is split along
its weakest links (strongest links first, never joining what an answer keeps apart; the
largest part keeps the id), named groups give their cluster its name (attribute
cluster_names). Every answer is kept in the output (dataset answers, attribute
corrections). A file about other points, naming rows that do not exist, or contradicting
itself is refused before any work.

--previous OLD keeps the cluster ids of OLD (a clustering of these points, or of the
first rows of them): each new cluster takes the id of the old cluster it overlaps most,
one to one, largest overlaps first (a split keeps its id on the larger part); the others
get ids never used before (attribute next_id). Every point whose id changed is counted in
dataset id_changes (step 0, kind 1 split or 2 merged, old id, new id, points). Without
it clusters are numbered 0..C-1 in order of their smallest member.
"""


@click.command("decode", cls=click.Command, help=DECODE_HELP, context_settings=CONTEXT_SETTINGS)
@click.argument("links")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Output clusters file (.h5).")
@click.option("--method", type=click.Choice(DECODERS), default="peaks",
              show_default=True, help="Decoder.")
@click.option("--threshold", type=FiniteFloat(-1, 1), default=None,
              help="Keep links with p >= this [default: calibrated, see above].")
@click.option("--calibrate", "calibrate", default=None, type=click.Path(dir_okay=False),
              help="Labelled links file to choose the threshold on (never the set to cluster).")
@click.option("--pseudo", is_flag=True, default=False,
              help="Cut at the stricter threshold cf-train --pseudo-threshold chose for the "
                   "next round's pseudo-labels (the links' thresholds key pseudo_METHOD), in "
                   "the link mode it was chosen in.")
@click.option("--calibrate-truth", default=None,
              help="Labels of --calibrate's points (.npy, .meta, features/clusters .h5, f.h5:/path).")
@click.option("--reciprocal/--directed", "reciprocal", default=None,
              help="Weigh each link by the mean of both directions (p_ji = 0 when absent), "
                   "or by p_ij alone [default: the mode calibration chose (see above)].")
@click.option("--max-size", type=Count(min=1), default=None,
              help="components: split clusters larger than this.")
@click.option("--size-step", type=FiniteFloat(min=1e-6),
              default=DEFAULT_SIZE_STEP, show_default=True,
              help="components: threshold raise per split round.")
@click.option("--intimacy-ratio", type=FiniteFloat(0, 1), default=None,
              help="intimacy: cut links of lower node intimacy [default: calibrated, else "
                   f"{DEFAULT_INTIMACY_RATIO}].")
@click.option("--peaks-tolerance", type=FiniteFloat(min=0), default=None,
              help="peaks: join neighbours with confidence >= own - this [default: "
                   "calibrated, else 0].")
@click.option("--singletons", type=click.Choice(SINGLETON_POLICIES), default="keep",
              show_default=True, help="What to do with clusters of one point.")
@click.option("--attach-threshold", type=FiniteFloat(-1, 1), default=None,
              help="attach: least link probability to attach a singleton by [default: the "
                   "links file's thresholds['attach']].")
@corrections_option
@click.option("--previous", "previous_path", default=None, type=click.Path(dir_okay=False),
              help="A clustering of these points whose cluster ids to keep (see above).")
@seed_option
@common_options
def decode_cmd(links, out, method, threshold, calibrate, pseudo, calibrate_truth, reciprocal,
               max_size, size_step, intimacy_ratio, peaks_tolerance, singletons,
               attach_threshold, corrections_path, previous_path, seed, quiet):
    rep = Reporter(quiet, prog="cf-merge")
    out = Path(out)
    if out.suffix.lower() not in (".h5", ".hdf5"):
        raise CfError("output must be a clusters file ending in .h5/.hdf5", out)
    _check_calibration_usage(links, calibrate, calibrate_truth, threshold, pseudo)
    check_output_path(out, [links, calibrate, calibrate_truth, corrections_path, previous_path])
    if max_size and method != "components":
        rep.warn(f"--max-size applies to --method components only; ignored by {method}")

    t0 = time.perf_counter()
    indices, probs, attrs, stored, art = read_links(links)
    n, k = indices.shape
    known = lineage(art)
    previous = read_previous(previous_path, n, known, links) if previous_path else None
    answers = load_answers(corrections_path, n, known, links,
                           recorded=recorded_of(previous_path) if previous_path else None)
    link_method = attrs.get("method")
    _check_range(link_method, threshold=threshold, attach_threshold=attach_threshold)
    mode = None if reciprocal is None else ("reciprocal" if reciprocal else "directed")
    if mode is None and not calibrate:
        mode = default_mode(method, stored, link_method)
    if attrs.get("guard_winner") == "cosine" and link_method == "model":
        rep.warn("these model links come from a model that lost to cosine links on its "
                 "held-out identities (cf-train's guard); cf-link --method auto would have "
                 "written cosine links")
    if singletons == "attach" and attach_threshold is None:
        attach_threshold = (stored or {}).get("attach")
        if attach_threshold is None:
            raise CfUsageError("--singletons attach needs --attach-threshold P (the least link "
                               "probability to attach a singleton by): the links file "
                               "carries none", links)

    threshold, source, extra, c_art, mode = _threshold(threshold, pseudo, calibrate,
                                                       calibrate_truth, method, mode, stored,
                                                       art, link_method, links, seed, rep)
    setting = DecoderSetting(
        method, float(threshold), mode,
        intimacy_ratio=_second(intimacy_ratio, "intimacy_ratio", extra, stored, mode,
                               DEFAULT_INTIMACY_RATIO),
        peaks_tolerance=_second(peaks_tolerance, "peaks_tolerance", extra, stored, mode, 0.0),
        max_size=max_size, size_step=size_step, singletons=singletons,
        attach_threshold=None if attach_threshold is None else float(attach_threshold))
    weights = link_weights(indices, probs, mode)
    rep.info(f"cf-merge: {method} over {n} points x {k} {link_method} links ({mode}), threshold "
             f"{threshold:.6g} ({source}){_detail(setting)}")
    t1 = time.perf_counter()
    labels, counts = setting.decode(indices, weights, seed)
    labels, outcome, changes = _honoured(labels, answers, previous, indices, weights, rep)
    t_decode = time.perf_counter() - t1
    summary = cluster_summary(labels)

    out_attrs = {**setting.record(), "threshold_source": source, "links_id": art.id,
                 "link_method": str(link_method), "singleton_counts": counts,
                 "summary": summary, "seed": seed, **outcome.attrs}
    if "features_id" in attrs:
        out_attrs["features_id"] = attrs["features_id"]
    inputs = {"links": art, "calibration_links": c_art,
              "corrections": answers.ref if answers else None,
              "previous": previous[2] if previous else None}
    with write_artifact(out, "clusters", inputs=inputs, attrs=out_attrs) as f:
        f.create_dataset("labels", data=labels, chunks=True, compression="gzip", shuffle=True)
        write_records(f, outcome, changes)

    rep.info(f"cf-merge: {summary['n_clusters']} clusters ({summary['clustered_points']} points "
             f"in clusters of 2+, largest {summary['largest']}), {summary['n_unassigned']} "
             f"unassigned")
    rep.info(f"cf-merge: singletons: {counts['singletons']} found; {counts['kept']} kept as own "
             f"clusters, {counts['unassigned']} unassigned, {counts['attached']} attached "
             f"(--singletons {singletons})")
    rep.info(f"cf-merge: wrote {out} in {time.perf_counter() - t0:.1f} s (decode {t_decode:.1f} s)")


def _check_calibration_usage(links, calibrate, calibrate_truth, threshold, pseudo) -> None:
    """--calibrate and --calibrate-truth go together, apart from --threshold, on D_L;
    --pseudo alone."""
    if pseudo and (calibrate or threshold is not None):
        raise click.UsageError("--pseudo reads the links' own pseudo-label threshold: give it "
                               "without --threshold or --calibrate")
    if calibrate and not calibrate_truth:
        raise click.UsageError("--calibrate needs --calibrate-truth LABELS (the identities of "
                               "its points)")
    if calibrate_truth and not calibrate:
        raise click.UsageError("--calibrate-truth needs --calibrate LABELLED_LINKS")
    if calibrate and threshold is not None:
        raise click.UsageError("give either --threshold or --calibrate, not both")
    check_distinct_inputs({"LINKS": links, "--calibrate": calibrate}, why={
        ("LINKS", "--calibrate"): "calibrate on labelled data (D_L), never on the set to "
                                  "cluster"})


def _honoured(labels, answers, previous, indices, weights, rep):
    """(labels, what the output records, id changes or None): the answers honoured, then
    the ids of --previous kept (else clusters renumbered by their smallest member)."""
    from ...core.decoding.constrained import link_edges
    from ...core.decoding.graph import relabel

    enforced = honour(labels, answers, link_edges(indices, weights))
    if answers is not None:
        rep.info(f"cf-merge: {len(answers.all)} answers honoured: "
                 f"{len(enforced.merges)} clusters merged into others, "
                 f"{len(enforced.splits)} split")
    labels, carried = keep_ids(enforced.labels, previous)
    if carried is None:
        labels = relabel(labels)
    outcome = record(answers, enforced, labels, Outcome())
    top = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
    outcome.attrs["next_id"] = carried.next_id if carried else top
    if carried is not None:
        outcome.attrs["previous_id"] = previous[2].id
        s = carried.summary()
        rep.info(f"cf-merge: ids of {previous[2].path}: {s['ids_kept']} kept, {s['ids_new']} "
                 f"new; {s['points_changed']} points changed id ({s['split_rows']} split, "
                 f"{s['merged_rows']} merged pieces)")
    return labels, outcome, None if carried is None else carried.changes


def _threshold(threshold, pseudo, calibrate, calibrate_truth, method, mode, stored, art,
               link_method, links, seed, rep):
    """(threshold, where it came from, the decoder's second parameter when calibration
    chose it, the calibration links' artifact or None, the link mode): --threshold, else
    --pseudo, else --calibrate, else the links file's calibrated thresholds."""
    if threshold is not None:
        return threshold, "--threshold", {}, None, mode
    if pseudo:
        return pseudo_threshold(method, stored, mode, links), \
            f"links file thresholds[{pseudo_key(method)!r}] (--pseudo)", {}, None, mode
    if calibrate:
        threshold, extra, c_art, mode = _calibrate(calibrate, calibrate_truth, method, mode, art,
                                                   link_method, seed, rep)
        return threshold, f"calibrated on {calibrate}", extra, c_art, mode
    threshold = resolve_threshold(method, stored, mode)
    if threshold is None:
        raise CfError(f"no threshold for --method {method}: the links file carries none "
                      "calibrated at training (cf-train --decoders); pass --threshold T, or "
                      "--calibrate LABELLED_LINKS --calibrate-truth LABELS", links)
    return threshold, f"links file thresholds[{resolved_key(method, stored, mode)!r}]", {}, \
        None, mode


def pseudo_threshold(method, stored, mode, links) -> float:
    """The pseudo-labels' threshold of ``method`` the links carry (cf-train
    --pseudo-threshold), refused in another link mode than it was chosen in."""
    value = (stored or {}).get(pseudo_key(method))
    if value is None:
        raise CfError(f"carries no pseudo-label threshold for --method {method} (thresholds key "
                      f"{pseudo_key(method)!r}: made by cf-train --pseudo-threshold, which "
                      "chooses it for infomap)", links)
    chosen = calibrated_mode(stored, method)
    if chosen is not None and mode != chosen:
        raise CfUsageError(f"the pseudo-label threshold was chosen under {chosen} links; "
                           f"--pseudo cannot decode {mode} ones", links)
    return float(value)


def _check_range(link_method, **given) -> None:
    """Thresholds given on the command line lie where the links' values do: [0, 1] for
    model probabilities, [-1, 1] for cosine (the option's own range); past it every link
    is kept, or none, without a word."""
    low = -1.0 if link_method == "cosine" else 0.0
    for name, value in given.items():
        if value is not None and not low <= value <= 1.0:
            option = "--" + name.replace("_", "-")
            raise click.BadParameter(f"{value:g} lies outside [{low:g}, 1], where the "
                                     f"{link_method} links' values lie", param_hint=option)


def _second(given, name: str, calibrated_now: dict, stored, mode: str, default: float) -> float:
    """A decoder's second parameter: as given, else as --calibrate chose it, else as the
    links file carries it, else the default."""
    if given is not None:
        return float(given)
    if name in calibrated_now:
        return float(calibrated_now[name])
    value = calibrated_value(stored, name, mode)
    return default if value is None else value


def _detail(s: DecoderSetting) -> str:
    detail = f", intimacy ratio {s.intimacy_ratio:g}" if s.method == "intimacy" else ""
    detail += f", confidence tolerance {s.peaks_tolerance:g}" if s.method == "peaks" else ""
    detail += f", max size {s.max_size}" if s.max_size and s.method == "components" else ""
    return detail


def _calibrate(path, truth_spec, method, mode, art, link_method, seed, rep):
    """(threshold, extra parameters, calibration artifact, mode): calibrated on labelled
    links; with ``mode`` None under both link modes, keeping the better."""
    c_idx, c_raw, c_attrs, _, c_art = read_links(path)
    if c_art.id == art.id or (c_attrs.get("features_id") is not None
                              and c_attrs.get("features_id") == art.attrs.get("features_id")):
        raise CfError("calibration links are the links being clustered; calibrate on labelled "
                      "data (D_L), never on the set to cluster", path)
    if c_attrs.get("method") != link_method:
        raise CfError(f"calibration links were made by method {c_attrs.get('method')!r} but the "
                      f"links to cluster by {link_method!r}; thresholds do not transfer", path)
    truth = load_labels(truth_spec, n=c_idx.shape[0], for_path=path)
    if not (truth >= 0).any():
        raise CfError("no known label (all are -1)", truth_spec)
    _, counts = np.unique(truth[truth >= 0], return_counts=True)
    if not (counts >= 2).any():
        raise CfError("no two points share an identity: a threshold cannot be calibrated "
                      "without pairs of the same identity (pairwise F would be 0 at any)",
                      truth_spec)
    rep.info(f"cf-merge: calibrating {method} on {path} ({c_idx.shape[0]} labelled points)")
    modes = (mode,) if mode else LINK_MODES
    found, scores = calibrate_links(c_idx, c_raw, truth, (method,), seed, modes=modes)
    for m in modes:
        rep.info(f"cf-merge: calibrated threshold {found[threshold_key(method, m)]:.6g} "
                 f"({m} links; mean of pairwise F, identities capped at {IDENTITY_CAP}, and "
                 f"BCubed F: {100 * scores[method][m]:.2f} on the labelled set)")
    mode = found[link_mode_key(method)]  # the better mode (ties: directed)
    extra = {key: found[k] for key in ("intimacy_ratio", "peaks_tolerance")
             if (k := threshold_key(key, mode)) in found}
    return found[threshold_key(method, mode)], extra, c_art, mode
