"""cf-merge: links -> clusters (decode), and clusters + labelled set -> next round's labels."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from ..artifacts import (atomic_outputs, check_finite, check_output_path, check_output_paths,
                         open_artifact, require_same_source,
                         write_artifact, write_strings, create_rows)
from ..cli import CONTEXT_SETTINGS, CfGroup, Reporter, common_options, seed_option
from ..core import decoding
from ..core.selection import calibrate_links
from ..data.io import load_features, load_labels, split_spec, write_bin, write_meta
from ..errors import CfError


class MergeGroup(CfGroup):
    default_command = "decode"


@click.group("cf-merge", cls=MergeGroup, context_settings=CONTEXT_SETTINGS)
def main():
    """Turn links into clusters, and clusters into the next round's training labels.

    \b
      cf-merge [decode] LINKS -o CLUSTERS.h5 --method peaks|intimacy|infomap|components
      cf-merge labels CLUSTERS --unlabelled-features FU --labelled-features FL -o OUT.h5

    With no subcommand, 'decode' is meant: cf-merge LINKS -o CL.h5 --method peaks.
    Options go after the subcommand. See cf-merge(1).
    """


# ----------------------------------------------------------------------------- inputs


def read_links(path, reporter=None):
    """(indices, probabilities, artifact attrs, artifact) of a links file, validated."""
    art = open_artifact(path, "links")
    try:
        check_finite(art, "probabilities")
        indices = art.read("indices")
        probabilities = art.read("probabilities")
        attrs = dict(art.attrs)
        thresholds = art.json_attr("thresholds", None)
    except BaseException:
        art.close()
        raise
    art.close()
    low = -1.0 if attrs.get("method") == "cosine" else 0.0  # cosine links hold similarities
    bad = (probabilities < low - 1e-5) | (probabilities > 1.0 + 1e-5)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise CfError(f"dataset 'probabilities' holds values outside [{low:g}, 1] "
                      f"(first at row {row})", path)
    try:
        decoding.check_links(indices, probabilities)
    except ValueError as err:
        raise CfError(str(err), path) from None
    if thresholds is not None and not isinstance(thresholds, dict):
        raise CfError("attribute 'thresholds' must be a JSON object of decoder -> threshold", path)
    return indices, probabilities, attrs, thresholds, art


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

The threshold comes from, in this order: --threshold; --calibrate LABELLED_LINKS with
--calibrate-truth LABELS (the threshold maximising pairwise F on that labelled set, each
identity weighed as if it had at most 30 points so that no giant identity decides, e.g.
the links of D_L made the same way, weighted the same way); the 'thresholds' the links
file carries (set by cf-train's calibration on its labelled set: key = decoder, or
directed_DECODER under --directed; else "link"). Without any of them the command stops:
thresholds are never chosen on the set being clustered.
Model links from a model that lost cf-train's guard (see cf-train(1)) are clustered, with
a warning on stderr.
--intimacy-ratio and --peaks-tolerance come from the same places (else 0.5 and 0).

\b
Singletons (--singletons): keep (own clusters), unassign (-1), or attach (join the
cluster of its most probable neighbour that lies in a cluster of 2+, when that link has
p >= --attach-threshold; the others stay singletons). The counts go to stderr and into
the file (attribute singleton_counts).
"""


@main.command("decode", help=DECODE_HELP, context_settings=CONTEXT_SETTINGS)
@click.argument("links")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Output clusters file (.h5).")
@click.option("--method", type=click.Choice(decoding.DECODERS), default="peaks",
              show_default=True, help="Decoder.")
@click.option("--threshold", type=float, default=None,
              help="Keep links with p >= this [default: calibrated, see above].")
@click.option("--calibrate", "calibrate", default=None, type=click.Path(dir_okay=False),
              help="Labelled links file to choose the threshold on (never the set to cluster).")
@click.option("--calibrate-truth", default=None,
              help="Labels of --calibrate's points (.npy, .meta, features/clusters .h5, f.h5:/path).")
@click.option("--reciprocal/--directed", "reciprocal", default=None,
              help="Weigh each link by the mean of both directions (p_ji = 0 when absent), "
                   "or by p_ij alone [default: the mode calibration chose (see above)].")
@click.option("--max-size", type=click.IntRange(min=1), default=None,
              help="components: split clusters larger than this.")
@click.option("--size-step", type=click.FloatRange(min=0, min_open=True),
              default=decoding.DEFAULT_SIZE_STEP, show_default=True,
              help="components: threshold raise per split round.")
@click.option("--intimacy-ratio", type=click.FloatRange(0, 1), default=None,
              help="intimacy: cut links of lower node intimacy [default: calibrated, else "
                   f"{decoding.DEFAULT_INTIMACY_RATIO}].")
@click.option("--peaks-tolerance", type=click.FloatRange(min=0), default=None,
              help="peaks: join neighbours with confidence >= own - this [default: "
                   "calibrated, else 0].")
@click.option("--singletons", type=click.Choice(decoding.SINGLETON_POLICIES), default="keep",
              show_default=True, help="What to do with clusters of one point.")
@click.option("--attach-threshold", type=float, default=None,
              help="attach: least link probability to attach a singleton by [default: the "
                   "links file's thresholds['attach']].")
@seed_option
@common_options
def decode_cmd(links, out, method, threshold, calibrate, calibrate_truth, reciprocal, max_size,
               size_step,
               intimacy_ratio, peaks_tolerance, singletons, attach_threshold, seed, quiet, debug):
    rep = Reporter(quiet, prog="cf-merge")
    out = Path(out)
    if out.suffix.lower() not in (".h5", ".hdf5"):
        raise CfError("output must be a clusters file ending in .h5/.hdf5", out)
    check_output_path(out, [links, calibrate])
    if calibrate and not calibrate_truth:
        raise CfError("--calibrate needs --calibrate-truth LABELS (the identities of its points)")
    if calibrate_truth and not calibrate:
        raise CfError("--calibrate-truth needs --calibrate LABELLED_LINKS")
    if calibrate and threshold is not None:
        raise CfError("give either --threshold or --calibrate, not both")
    if max_size and method != "components":
        rep.warn(f"--max-size applies to --method components only; ignored by {method}")

    t0 = time.perf_counter()
    indices, probs, attrs, stored, art = read_links(links)
    n, k = indices.shape
    link_method = attrs.get("method")
    mode = None if reciprocal is None else ("reciprocal" if reciprocal else "directed")
    if mode is None and not calibrate:
        mode = default_mode(method, stored, link_method)
    if attrs.get("guard_winner") == "cosine" and link_method == "model":
        rep.warn(f"these model links come from a model that lost to cosine "
                 f"links on its held-out identities (cf-train's guard); cf-link --method auto "
                 f"would have written cosine links")
    if attach_threshold is not None and not np.isfinite(attach_threshold):
        raise CfError(f"--attach-threshold must be a finite number, got {attach_threshold}")
    if singletons == "attach" and attach_threshold is None:
        attach_threshold = (stored or {}).get("attach")
        if attach_threshold is None:
            raise CfError("--singletons attach needs --attach-threshold P (the least link "
                          "probability to attach a singleton by)")

    source = None
    extra = {}  # the decoder's second parameter when calibration chose it
    c_art = None
    if threshold is not None and not np.isfinite(threshold):
        raise CfError(f"--threshold must be a finite number, got {threshold}")
    if threshold is not None:
        source = "--threshold"
    elif calibrate:
        threshold, extra, c_art, mode = _calibrate(calibrate, calibrate_truth, method, mode, art,
                                                   link_method, seed, rep)
        source = f"calibrated on {calibrate}"
    else:
        threshold = decoding.resolve_threshold(method, stored, mode)
        if threshold is None:
            raise CfError(f"no threshold for --method {method}: the links file carries none "
                          "calibrated at training; pass --threshold T, or --calibrate "
                          "LABELLED_LINKS --calibrate-truth LABELS", links)
        key = decoding.threshold_key(method, mode)
        key = key if key in (stored or {}) else "link"
        source = f"links file thresholds[{key!r}]"
    probs = decoding.link_weights(indices, probs, mode)
    ratio, tol = intimacy_ratio, peaks_tolerance
    calibrated = {name: value for name in ("intimacy_ratio", "peaks_tolerance")
                  if (value := (stored or {}).get(decoding.threshold_key(name, mode))) is not None}
    calibrated.update(extra)  # --calibrate's choice wins over the links file's
    if ratio is None:
        ratio = float(calibrated.get("intimacy_ratio", decoding.DEFAULT_INTIMACY_RATIO))
    if tol is None:
        tol = float(calibrated.get("peaks_tolerance", 0.0))

    detail = f", intimacy ratio {ratio:g}" if method == "intimacy" else ""
    detail += f", confidence tolerance {tol:g}" if method == "peaks" else ""
    detail += f", max size {max_size}" if max_size and method == "components" else ""
    rep.info(f"cf-merge: {method} over {n} points x {k} {link_method} links ({mode}), threshold "
             f"{threshold:.6g} ({source}){detail}")
    t1 = time.perf_counter()
    labels = decoding.decode(method, indices, probs, threshold, max_size=max_size,
                             size_step=size_step, intimacy_ratio=ratio, peaks_tolerance=tol,
                             seed=seed)
    labels, counts = decoding.apply_singletons(labels, indices, probs, singletons,
                                               attach_threshold)
    t_decode = time.perf_counter() - t1
    summary = decoding.cluster_summary(labels)

    out_attrs = {
        "method": method, "link_mode": mode, "threshold": float(threshold),
        "threshold_source": source,
        "links_id": art.id, "link_method": str(link_method), "singletons": singletons,
        "singleton_counts": counts, "summary": summary, "seed": seed,
    }
    if "features_id" in attrs:
        out_attrs["features_id"] = attrs["features_id"]
    if method == "intimacy":
        out_attrs["intimacy_ratio"] = float(ratio)
    if method == "peaks":
        out_attrs["peaks_tolerance"] = float(tol)
    if method == "components" and max_size:
        out_attrs.update(max_size=int(max_size), size_step=float(size_step))
    if singletons == "attach":
        out_attrs["attach_threshold"] = float(attach_threshold)
    inputs = {"links": art, "calibration_links": c_art}
    with write_artifact(out, "clusters", inputs=inputs, attrs=out_attrs) as f:
        f.create_dataset("labels", data=labels, chunks=True, compression="gzip", shuffle=True)

    rep.info(f"cf-merge: {summary['n_clusters']} clusters ({summary['clustered_points']} points "
             f"in clusters of 2+, largest {summary['largest']}), {summary['n_unassigned']} "
             f"unassigned")
    rep.info(f"cf-merge: singletons: {counts['singletons']} found; {counts['kept']} kept as own "
             f"clusters, {counts['unassigned']} unassigned, {counts['attached']} attached "
             f"(--singletons {singletons})")
    rep.info(f"cf-merge: wrote {out} in {time.perf_counter() - t0:.1f} s (decode {t_decode:.1f} s)")


def default_mode(method: str, stored: dict | None, link_method) -> str:
    """The link mode when none is asked for: the one cf-train's calibration found better
    for this decoder (link_mode_DECODER in the links' thresholds), else directed for cosine
    links (averaging both directions hurts them: Infomap's F_P 92.2 -> 68.9 on long-tailed
    faces) and reciprocal for model links."""
    mode = (stored or {}).get(f"link_mode_{method}")
    if mode in decoding.LINK_MODES:
        return mode
    return "directed" if link_method == "cosine" else "reciprocal"


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
    rep.info(f"cf-merge: calibrating {method} on {path} ({c_idx.shape[0]} labelled points)")
    modes = (mode,) if mode else decoding.LINK_MODES
    found, scores = calibrate_links(c_idx, c_raw, truth, (method,), seed, modes=modes)
    for m in modes:
        rep.info(f"cf-merge: calibrated threshold {found[decoding.threshold_key(method, m)]:.6g} "
                 f"({m} links; pairwise F {100 * scores[method][m]:.2f} on the labelled set, "
                 f"identities capped at {decoding.CALIBRATION_CAP})")
    mode = found[f"link_mode_{method}"]  # the better mode (ties: directed)
    extra = {key: found[k] for key in ("intimacy_ratio", "peaks_tolerance")
             if (k := decoding.threshold_key(key, mode)) in found}
    return found[decoding.threshold_key(method, mode)], extra, c_art, mode


# ----------------------------------------------------------------------------- labels


LABELS_HELP = """Make the training labels of the next round.

CLUSTERS (cf-merge decode of D_U) gives pseudo-identities to the unlabelled features FU;
together with the labelled set FL (which must carry labels, or take --labelled-labels)
they become one features file for retraining the backbone (cf-embed train):

\b
  rows     FL rows with a known label (-1 dropped), then the FU rows whose cluster has at
           least --min-size and at most --max-size points (unassigned points, smaller
           and larger clusters dropped);
  labels   FL's own ids, then pseudo-identities numbered from max(FL label) + 1 upward,
           so they can never collide with real ones;
  names    carried when either input has them (FILE#ROW for rows that have none).

Datasets 'source' (0 = labelled, 1 = pseudo-labelled) and 'source_rows' (row in its input)
keep where each row came from; the provenance records all three inputs. --meta and --bin
also write the labels (one per line) and the features (raw float32) in learn-to-cluster's
layout.
"""


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


@main.command("labels", help=LABELS_HELP, context_settings=CONTEXT_SETTINGS)
@click.argument("clusters")
@click.option("--unlabelled-features", "fu_spec", required=True,
              help="Features of the clustered points (D_U), row for row with CLUSTERS.")
@click.option("--labelled-features", "fl_spec", required=True,
              help="Features of the labelled set (D_L).")
@click.option("--labelled-labels", default=None,
              help="Labels of D_L when its features file carries none.")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Output features file (.h5).")
@click.option("--min-size", type=click.IntRange(min=1), default=2, show_default=True,
              help="Drop pseudo-identities with fewer points.")
@click.option("--max-size", default="none", show_default=True, metavar="N|auto|none",
              help="Drop pseudo-identities with more points than N; auto: than the largest "
                   "identity of the labelled set (a cluster bigger than any real identity is "
                   "most likely several merged); none: no upper limit.")
@click.option("--meta", type=click.Path(dir_okay=False), default=None,
              help="Also write the labels as a learn-to-cluster .meta file.")
@click.option("--bin", "bin_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the features as a learn-to-cluster .bin file.")
@common_options
def labels_cmd(clusters, fu_spec, fl_spec, labelled_labels, out, min_size, max_size, meta,
               bin_out, quiet, debug):
    rep = Reporter(quiet, prog="cf-merge")
    max_size = _max_size(max_size)
    out = Path(out)
    if out.suffix.lower() not in (".h5", ".hdf5"):
        raise CfError("output must be a features file ending in .h5/.hdf5", out)
    inputs = [clusters, split_spec(fu_spec)[0], split_spec(fl_spec)[0]]
    check_output_paths((out, meta, bin_out), inputs)

    with open_artifact(clusters, "clusters") as cl:
        pred = cl.read("labels")
        cl_attrs = dict(cl.attrs)
        cl_ref = cl
    if pred.ndim != 1 or (pred.size and pred.min() < -1):
        raise CfError("cluster labels must be 1-D, >= 0 or -1", clusters)
    fu = load_features(fu_spec, reporter=rep)
    if fu.n != pred.shape[0]:
        raise CfError(f"has {pred.shape[0]} labels but the unlabelled features {fu.path} have "
                      f"{fu.n} rows", clusters)
    if cl_attrs.get("features_id") and fu.artifact is not None:
        require_same_source(cl_attrs["features_id"], fu.id, what="features", path=clusters,
                            other_path=fu.path)
    fl = load_features(fl_spec, labels=labelled_labels, reporter=rep)
    if fl.labels is None:
        raise CfError("labelled features carry no labels; give --labelled-labels", fl.path)
    if fl.dim != fu.dim:
        raise CfError(f"has dimension {fl.dim} but the unlabelled features {fu.path} have "
                      f"{fu.dim}", fl.path)
    if fu.artifact is not None and fl.artifact is not None and fu.id == fl.id:
        raise CfError("labelled and unlabelled features are the same file", fl.path)

    keep_l = np.flatnonzero(fl.labels >= 0)
    assigned = pred >= 0
    sizes = np.bincount(pred[assigned]) if assigned.any() else np.zeros(0, np.int64)
    big = assigned.copy()
    if max_size == "auto":
        max_size = int(np.bincount(np.unique(fl.labels[keep_l], return_inverse=True)[1]).max()
                       if keep_l.size else 0)
    big[assigned] = sizes[pred[assigned]] >= min_size
    if max_size:
        big[assigned] &= sizes[pred[assigned]] <= max_size
    keep_u = np.flatnonzero(big)
    offset = int(fl.labels[keep_l].max()) + 1 if keep_l.size else 0
    _, pseudo = np.unique(pred[keep_u], return_inverse=True)
    pseudo = pseudo.astype(np.int64) + offset
    n_pseudo_ids = int(pseudo.max() - offset + 1) if pseudo.size else 0

    feats = np.concatenate([fl.features[keep_l], fu.features[keep_u]])
    labels = np.concatenate([fl.labels[keep_l], pseudo])
    source = np.r_[np.zeros(keep_l.size, np.int8), np.ones(keep_u.size, np.int8)]
    source_rows = np.r_[keep_l, keep_u].astype(np.int64)
    names = None
    if fl.names is not None or fu.names is not None:
        def _names(f, rows):
            if f.names is not None:
                return [str(s) for s in f.names[rows]]
            return [f"{f.path}#{r}" for r in rows]
        names = _names(fl, keep_l) + _names(fu, keep_u)

    dropped_small = int(((sizes < min_size)[pred[assigned]]).sum()) if assigned.any() else 0
    dropped_large = int(assigned.sum() - keep_u.size - dropped_small)
    attrs = {
        "n_labelled": int(keep_l.size), "n_pseudo": int(keep_u.size),
        "n_labelled_ids": int(np.unique(fl.labels[keep_l]).size), "n_pseudo_ids": n_pseudo_ids,
        "pseudo_label_offset": offset, "min_size": int(min_size),
        "max_size": int(max_size or 0), "dropped_unassigned": int((~assigned).sum()),
        "dropped_small": dropped_small, "dropped_large": dropped_large,
        "dropped_unlabelled_rows_of_labelled_set": int(fl.n - keep_l.size),
        "clusters_id": cl_attrs.get("cftools_id", ""),
    }
    with atomic_outputs((out, meta, bin_out)) as (out_tmp, meta_tmp, bin_tmp):  # all or none
        with write_artifact(out_tmp, "features",
                            inputs={"clusters": cl_ref, "unlabelled": fu.provenance_ref,
                                    "labelled": fl.provenance_ref}, attrs=attrs) as f:
            create_rows(f, "features", feats.shape, np.float32, data=feats)
            f.create_dataset("labels", data=labels)
            if names is not None:
                write_strings(f, "names", names)
            f.create_dataset("source", data=source)
            f.create_dataset("source_rows", data=source_rows)
        if meta:
            write_meta(meta_tmp, labels)
        if bin_out:
            write_bin(bin_tmp, feats)
    rep.info(f"cf-merge: {keep_l.size} labelled rows ({attrs['n_labelled_ids']} ids) + "
             f"{keep_u.size} pseudo-labelled rows ({n_pseudo_ids} pseudo-ids from {offset}); "
             f"dropped {attrs['dropped_unassigned']} unassigned and {dropped_small} in clusters "
             f"of fewer than {min_size}"
             + (f", {dropped_large} in clusters of more than {max_size}" if max_size else ""))
    rep.info(f"cf-merge: wrote {out}" + (f", {meta}" if meta else "") +
             (f", {bin_out}" if bin_out else ""))


if __name__ == "__main__":
    main()
