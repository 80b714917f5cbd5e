"""cf-merge: links -> clusters (decode), and clusters + labelled set -> next round's labels."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from ..artifacts import (atomic_outputs, check_finite, check_output_path, check_output_paths,
                         open_artifact, require_same_source,
                         write_artifact, write_strings, create_rows)
from ..cli import (CONTEXT_SETTINGS, CfGroup, Reporter, batch_size_option, bf16_inference_option,
                   common_options, device_option, seed_option)
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
      cf-merge add CLUSTERS --new NEW --links LINKS --features F [--model M]
                   -o CL2.h5 --links-out LI2.h5 --features-out F2.h5

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


# ----------------------------------------------------------------------------- add


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
links kept now that were not before): the larger keeps its id. Every merge is reported on stderr and recorded in
the output (dataset 'merges': batch, kept id, merged id, members reached on the weaker
side).

The output says where every point came from: dataset 'batch' (0 = the original set,
then 1, 2, ... per add) and attribute 'batches' (per batch: source file and id, time,
size, points that joined existing clusters, new clusters, merges, timings).

Cost: the index search and the copying of old rows touch every point; the rest grows
with the new points and the rows they enter, not with the size of the existing set.

Refused, before any output: NEW of another dimension, a MODEL that is not the one that
made LINKS (or one for another dimension or length), LINKS that did not make CLUSTERS,
FEATURES that did not make LINKS.
"""


@main.command("add", help=ADD_HELP, context_settings=CONTEXT_SETTINGS)
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
@click.option("--merge-links", type=click.IntRange(min=1), default=3, show_default=True,
              help="Members of each of two existing clusters that new links must reach "
                   "(and 3/4 of each) to merge them.")
@click.option("--knn-method", type=click.Choice(("auto", "exact", "ivf")), default="auto",
              show_default=True, help="Search of the new points' neighbours.")
@click.option("--relink", type=click.Choice(("mirror", "model")), default="mirror",
              show_default=True,
              help="Model links of the old rows new points enter: mirror the entrants' own "
                   "links (no model pass), or run the model on those rows.")
@click.option("--cosine-quantile", type=click.FloatRange(0, 0.5), default=0.005,
              show_default=True,
              help="With --relink model: relink an entered old row only where an entrant's "
                   "cosine reaches this quantile of the cosines of kept links (a sample of "
                   "the old rows); 0 relinks every entered row.")
@bf16_inference_option
@batch_size_option(256)
@device_option
@seed_option
@common_options
def add_cmd(clusters, new_spec, links_path, features_spec, model_path, out, links_out,
            features_out, merge_links, knn_method, relink, cosine_quantile, bf16, batch_size,
            device, seed, quiet, debug):
    import datetime as _dt

    from ..core import incremental
    from ..core.device import torch_device

    rep = Reporter(quiet, prog="cf-merge")
    outs = (out, links_out, features_out)
    for o in outs:
        if Path(o).suffix.lower() not in (".h5", ".hdf5"):
            raise CfError("output must be an HDF5 file ending in .h5/.hdf5", o)
    inputs = [clusters, links_path, split_spec(features_spec)[0], split_spec(new_spec)[0],
              model_path]
    check_output_paths(outs, inputs)
    t0 = time.perf_counter()

    # ---- the existing set, checked to belong together before any work
    with open_artifact(clusters, "clusters") as cl:
        old_labels = cl.read("labels")
        cl_attrs = dict(cl.attrs)
        old_batch = cl.read("batch") if "batch" in cl else None
        old_merges = cl.read("merges") if "merges" in cl else np.zeros((0, 4), np.int64)
        batches = cl.json_attr("batches", None)
        cl_ref = cl
    if old_labels.ndim != 1 or (old_labels.size and old_labels.min() < -1):
        raise CfError("cluster labels must be 1-D, >= 0 or -1", clusters)
    for attr in ("links_id", "method", "threshold"):
        if attr not in cl_attrs:
            raise CfError(f"has no attribute '{attr}': not made by cf-merge decode or add",
                          clusters)
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
    # the links' sequences masked neighbours below cf-seq --min-sim: so do the add's
    min_sim = l_attrs.get("min_sim", "none")
    min_sim = None if str(min_sim) == "none" else float(min_sim)
    if link_method not in ("model", "cosine"):
        raise CfError(f"links of unknown method {link_method!r}", links_path)
    made_by = str(l_attrs.get("model_id", "none"))
    model = m_art = None
    if link_method == "model" and not model_path:
        raise CfError("holds model links: give --model, the model that made them", links_path)
    if model_path:
        from ..core.linking import check_fits
        from ..core.model import load_model

        m_art = open_artifact(model_path, "model")
        m_art.close()
        if made_by != "none" and m_art.id != made_by:
            raise CfError(f"is not the model that made the links {links_path} (id "
                          f"{m_art.id[:12]} != {made_by[:12]})", model_path)
        if link_method == "model":
            dev = torch_device(device)
            model, _ = load_model(model_path, dev)
            check_fits(model, feats.dim, length, model_path)
            if model.config.seq_len != length:
                raise CfError(f"model reads sequences of length L={model.config.seq_len}, the "
                              f"links {links_path} have L={length}", model_path)
    new = load_features(new_spec, reporter=rep)
    if new.dim != feats.dim:
        raise CfError(f"new features have dimension {new.dim}, the existing features "
                      f"{feats.path} have {feats.dim}", new.path)
    if new.artifact is not None and new.id == feats.id:
        raise CfError("new features are the existing features", new.path)

    # ---- the decoder CLUSTERS was made with, as it was made
    decoder = str(cl_attrs["method"])
    mode = str(cl_attrs.get("link_mode", default_mode(decoder, stored, link_method)))
    threshold = float(cl_attrs["threshold"])
    singletons = str(cl_attrs.get("singletons", "keep"))
    attach = cl_attrs.get("attach_threshold")
    batch_no = (int(old_batch.max()) if old_batch is not None and old_batch.size else 0) + 1
    rep.info(f"cf-merge: adding {new.n} points to {n0} ({int((old_labels >= 0).sum())} in "
             f"clusters) as batch {batch_no}: {decoder} ({mode}) at threshold {threshold:.6g}, "
             f"{link_method} links of length {length}")
    dev_name = str(torch_device(device)) if link_method == "model" else "cpu"
    with rep.progress(total=new.n, desc="neighbours", unit="pt") as bar:
        res = incremental.add_points(
            feats.features, new.features, indices, probs, old_labels, link_method=link_method,
            model=model, decoder=decoder, threshold=threshold, mode=mode,
            intimacy_ratio=float(cl_attrs.get("intimacy_ratio",
                                              decoding.DEFAULT_INTIMACY_RATIO)),
            peaks_tolerance=float(cl_attrs.get("peaks_tolerance", 0.0)),
            max_size=cl_attrs.get("max_size"),
            size_step=float(cl_attrs.get("size_step", decoding.DEFAULT_SIZE_STEP)),
            singletons=singletons, attach_threshold=None if attach is None else float(attach),
            merge_links=merge_links, seed=seed, knn_method=knn_method, batch_size=batch_size,
            device=dev_name, bf16=bf16, progress=bar, cosine_quantile=cosine_quantile,
            relink=relink, min_sim=min_sim)
    del indices, probs

    # ---- three outputs, all or none
    n = n0 + new.n
    batch = np.concatenate([old_batch if old_batch is not None else np.zeros(n0, np.int32),
                            np.full(new.n, batch_no, np.int32)]).astype(np.int32)
    merges = np.concatenate([old_merges.reshape(-1, 4).astype(np.int64),
                             np.array([(batch_no, k, g, m) for k, g, m in res.merges],
                                      np.int64).reshape(-1, 4)])
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if batches is None:
        batches = [{"batch": 0, "n": int(n0), "source": str(clusters),
                    "source_id": cl_attrs.get("cftools_id", "")}]
    entry = {"batch": batch_no, "n": int(new.n), "source": str(new.path), "source_id": new.id,
             "time": now, "merge_links": int(merge_links), **res.counts,
             "knn": res.knn_info, "seconds": {k: round(v, 3) for k, v in res.seconds.items()}}
    batches = list(batches) + [entry]
    labels_all = _concat_optional(feats.labels, new.labels, n0, new.n, -1)
    names_all = None
    if feats.names is not None or new.names is not None:
        names_all = [*(_names_or_rows(feats)), *(_names_or_rows(new))]
    summary = decoding.cluster_summary(res.labels)
    t_write = time.perf_counter()
    with atomic_outputs(outs) as (c_tmp, l_tmp, f_tmp):
        with write_artifact(f_tmp, "features", inputs={"features": feats.provenance_ref,
                                                       "new": new.provenance_ref},
                            attrs={"batches": [{"batch": b["batch"], "n": b["n"]}
                                               for b in batches]}) as f:
            create_rows(f, "features", (n, feats.dim), np.float32,
                        data=_Rows(feats.features, new.features))
            if labels_all is not None:
                f.create_dataset("labels", data=labels_all)
            if names_all is not None:
                write_strings(f, "names", names_all)
            f_id = str(f.attrs["cftools_id"])
        l_attrs_out = {key: l_attrs[key] for key in ("method", "model_id", "guard_winner",
                                                     "min_sim") if key in l_attrs}
        l_attrs_out.update(features_id=f_id, sequences_id="cf-merge add",
                           thresholds=stored or {})
        with write_artifact(l_tmp, "links", inputs={"links": l_art, "new": new.provenance_ref,
                                                    "model": m_art}, attrs=l_attrs_out) as f:
            create_rows(f, "indices", res.indices.shape, np.int64, data=res.indices)
            create_rows(f, "probabilities", res.probabilities.shape, np.float32,
                        data=res.probabilities)
            links_id = str(f.attrs["cftools_id"])
        c_attrs = {key: value for key, value in cl_attrs.items()
                   if not key.startswith("cftools_") and key not in ("summary", "batches")}
        c_attrs.update(links_id=links_id, features_id=f_id, summary=summary, batches=batches,
                       link_mode=mode)
        with write_artifact(c_tmp, "clusters", inputs={"clusters": cl_ref, "links": l_art,
                                                       "features": feats.provenance_ref,
                                                       "new": new.provenance_ref,
                                                       "model": m_art},
                            attrs=c_attrs) as f:
            f.create_dataset("labels", data=res.labels, chunks=True, compression="gzip",
                             shuffle=True)
            f.create_dataset("batch", data=batch, chunks=True, compression="gzip", shuffle=True)
            f.create_dataset("merges", data=merges)
    t_write = time.perf_counter() - t_write

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
    rep.info(f"cf-merge: wrote {out}, {links_out}, {features_out} ({n} points, "
             f"{summary['n_clusters']} clusters) in {time.perf_counter() - t0:.1f} s "
             f"({secs}, write {t_write:.1f})")


class _Rows:
    """Two arrays read as one by row slices (no concatenated copy)."""

    def __init__(self, a, b):
        self.a, self.b = a, b
        self.n0 = a.shape[0]

    def __getitem__(self, sl):
        start, stop = sl.start, sl.stop
        if stop <= self.n0:
            return self.a[start:stop]
        if start >= self.n0:
            return self.b[start - self.n0:stop - self.n0]
        return np.concatenate([self.a[start:], self.b[:stop - self.n0]])


def _concat_optional(a, b, na, nb, fill):
    if a is None and b is None:
        return None
    a = a if a is not None else np.full(na, fill, np.int64)
    b = b if b is not None else np.full(nb, fill, np.int64)
    return np.concatenate([a, b]).astype(np.int64)


def _names_or_rows(f):
    if f.names is not None:
        return [str(s) for s in f.names]
    return [f"{f.path}#{r}" for r in range(f.n)]


if __name__ == "__main__":
    main()
