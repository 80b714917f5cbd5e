"""cf-eval review: the decisions of a clustering most likely wrong, as yes/no questions."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ...cli import CONTEXT_SETTINGS, CfCommand, Count, Reporter, common_options, seed_option
from ...errors import CfError
from ...formats.artifacts import open_artifact, require_same_source
from ...formats.inputs import check_distinct_inputs
from ...formats.writing import check_output_path

HELP = """Rank the decisions of a clustering most likely wrong, as yes/no questions.

CLUSTERS was decoded (cf-merge) from LINKS. Every decision about two groups of points is
a candidate question, "is this the same person as that?":

\b
  join    two clusters kept apart though links cross between them (a singleton with a
          strong link just under the threshold is one); a "yes" joins them;
  member  a member with the weakest ties to its cluster (of 3 or more); a "no" takes it
          out;
  cut     a cluster of 4 or more in two parts of 2 or more along a link of its maximum
          spanning tree (where a cluster of a size out of line most often comes apart); a
          "no" splits it there.

Each is ordered by the expected gain of an answer: what it decides times the probability
that the decoder decided it wrong. What it decides (--objective): the point pairs (size
of one side x size of the other; pairwise F counts pairs), or by default each point's
share of them, 2 |A| |B| / (|A| + |B|) (BCubed F averages over points: a singleton joining
a cluster of 300 changes one point's recall much and the 300 others' little).
That probability comes from the links: p(same) = 1 / (1 + exp(-(alpha (e - t) + beta)))
at the decoder's threshold t for the question's evidence e (a join: the median, over the
smaller cluster, of each member's strongest link into the other; a member: its strongest
link to the rest of its cluster; a cut: the median over the smaller part of each member's
strongest link to the other part). Without labels alpha = 1 / s, beta = 0, s a quarter of
the interquartile range of the link weights. With --calibrate LABELLED_LINKS
--calibrate-truth LABELS (links of a labelled set made the same way, e.g. D_L's) the
labelled links are clustered by CLUSTERS' own decoder, questions are asked there and
answered from LABELS, and alpha and beta are fitted per kind by logistic regression: the
calibration never reads the truth of the set under review.

-o writes the best --top questions as JSON (cftools(7) and cf-eval(1), QUESTIONS): each
with the rows shown on each side (the first of each is the point the answer is recorded
about: its side's most central member), the clusters, sizes, pairs, the evidence, p(same),
the expected gain and why it was asked. cf-eval gallery --questions shows them with their
images, to answer in the browser. --corrections leaves out the questions its answers
already decide (review again after cf-merge --corrections).
"""


@click.command("review", cls=CfCommand, help=HELP, context_settings=CONTEXT_SETTINGS)
@click.argument("clusters")
@click.option("--links", required=True, help="The links CLUSTERS was decoded from.")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Output questions file (.json).")
@click.option("--top", type=Count(min=1), default=200, show_default=True,
              help="Questions written, best first.")
@click.option("--features", default=None,
              help="The clustered points' features: their names go into the questions.")
@click.option("--calibrate", default=None, type=click.Path(dir_okay=False),
              help="Labelled links to fit p(same) on (never the links under review).")
@click.option("--calibrate-truth", default=None,
              help="Labels of --calibrate's points (.npy, .meta, features .h5, f.h5:/path).")
@click.option("--objective", type=click.Choice(("bcubed", "pairs")), default="bcubed",
              show_default=True,
              help="What an answer decides: the point pairs (pairwise F) or each point's "
                   "share of them (BCubed F).")
@click.option("--corrections", "corrections_path", default=None,
              type=click.Path(dir_okay=False),
              help="Answers already given: the questions they decide are left out.")
@seed_option
@common_options
def review(clusters, links, out, top, features, calibrate, calibrate_truth, objective,
           corrections_path, seed, quiet):
    from ...core.corrections import constraints_from
    from ...core.decoding.weights import link_weights
    from ...core.review import review as rank
    from ...formats.clusters import read_clusters
    from ...formats.corrections import check_fits, lineage, read_corrections
    from ...formats.links import read_links

    rep = Reporter(quiet, prog="cf-eval review")
    t0 = time.perf_counter()
    if Path(out).suffix.lower() != ".json":
        raise CfError("output must be a questions file ending in .json", out)
    check_output_path(out, [clusters, links, calibrate, corrections_path])
    if bool(calibrate) != bool(calibrate_truth):
        raise click.UsageError("--calibrate and --calibrate-truth go together")
    check_distinct_inputs({"--links": links, "--calibrate": calibrate}, why={
        ("--links", "--calibrate"): "calibrate on labelled data (D_L), never on the set the "
                                    "questions are about"})
    labels, attrs, c_art = read_clusters(clusters)
    for attr in ("links_id", "threshold", "method"):
        if attr not in attrs:
            raise CfError(f"has no attribute '{attr}': not made by cf-merge", clusters)
    indices, probs, l_attrs, _, l_art = read_links(links)
    require_same_source(str(attrs["links_id"]), l_art.id, what="links", path=clusters,
                        other_path=links)
    n = labels.shape[0]
    threshold, mode = float(attrs["threshold"]), str(attrs.get("link_mode", "directed"))
    answered = None
    if corrections_path:
        corr = read_corrections(corrections_path)
        check_fits(corr, n, lineage(l_art, c_art.id), against=clusters)
        answered = constraints_from(corr.answers, n, corrections_path)
    names = _names(features, n, l_attrs)
    cal = _calibration(calibrate, calibrate_truth, attrs, mode, l_art, seed, rep) \
        if calibrate else None
    weights = link_weights(indices, probs, mode)
    pool, cal = rank(labels, indices, weights, threshold, calibration=cal, answered=answered,
                     objective=objective)
    chosen = pool[:top]
    doc = {"clusters_id": c_art.id, "links_id": l_art.id,
           "features_id": str(l_attrs.get("features_id", "")), "n_points": int(n),
           "threshold": threshold, "link_mode": mode, "calibration": cal.to_json(),
           "objective": objective,
           "pool": len(pool), "expected_gain": round(sum(q.gain for q in chosen), 3),
           "questions": [q.to_json(i + 1) for i, q in enumerate(chosen)]}
    if names is not None:
        shown = sorted({r for q in chosen for r in q.a + q.b})
        doc["point_names"] = {str(r): str(names[r]) for r in shown}
    from ...formats.corrections import write_questions

    write_questions(out, doc)
    kinds = {k: sum(q.rule == k for q in chosen) for k in ("join", "member", "cut")}
    rep.info(f"cf-eval review: {len(chosen)} of {len(pool)} candidate questions written to "
             f"{out} ({kinds['join']} joins, {kinds['member']} members, {kinds['cut']} cuts; "
             f"p(same) from {cal.source}); expected pairs corrected {doc['expected_gain']:.0f}; "
             f"{time.perf_counter() - t0:.1f} s")


def _names(features, n: int, l_attrs: dict):
    """The points' names from --features (checked to be the links' features), or None."""
    if not features:
        return None
    with open_artifact(features, "features") as art:
        if art.dims["N"] != n:
            raise CfError(f"has {art.dims['N']} rows but the clusters have {n}", features)
        if l_attrs.get("features_id"):
            require_same_source(str(l_attrs["features_id"]), art.id, what="features",
                                path=features, other_path="the links")
        return art.read("names") if "names" in art else None


def _calibration(path, truth_spec, attrs, mode, l_art, seed, rep):
    """p(same) fitted on a labelled set clustered by CLUSTERS' decoder."""
    from ...core.decoding.setting import DecoderSetting
    from ...core.decoding.weights import link_weights
    from ...core.review import candidates, fit_calibration
    from ...formats.features import load_labels
    from ...formats.links import read_links

    c_idx, c_probs, c_attrs, _, c_art = read_links(path)
    if c_art.id == l_art.id or (c_attrs.get("features_id")
                                and c_attrs.get("features_id") == l_art.attrs.get("features_id")):
        raise CfError("calibration links are the links under review; calibrate on labelled "
                      "data (D_L), never on the set reviewed", path)
    truth = load_labels(truth_spec, n=c_idx.shape[0], for_path=path)
    if not (truth >= 0).any():
        raise CfError("no known label (all are -1)", truth_spec)
    setting = DecoderSetting.recorded(attrs, mode)
    weights = link_weights(c_idx, c_probs, mode)
    labels, _ = setting.decode(c_idx, weights, seed)
    pool, scale = candidates(labels, c_idx, weights, setting.threshold)
    cal = fit_calibration(pool, truth, setting.threshold, scale, str(path))
    rep.info(f"cf-eval review: p(same) fitted on {path} ({c_idx.shape[0]} labelled points, "
             + ", ".join(f"{k} {v} questions" for k, v in (cal.counts or {}).items()) + ")")
    return cal
