"""cf-eval gallery: a static HTML site of a clustering, with thumbnails and plots.

A thin recipe: read and check the inputs, call cftools.report.gallery and
cftools.report.plots.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click
import numpy as np

from ...cli import CONTEXT_SETTINGS, MAX_WORKERS, CfCommand, Count, FiniteFloat, Reporter, common_options
from ...data.images import IMAGE_SUFFIXES
from ...errors import CfError
from ...formats.artifacts import open_artifact, require_same_source
from ...formats.eval_json import check_training, read_knn_json, read_sweep_json
from ...formats.features import load_labels
from ...formats.inputs import check_distinct_inputs
from ...formats.writing import AtomicDir
from ...report import cluster_view as V
from ...report import gallery as G
from ...report import thumbnails as T

HELP = f"""Write a static HTML gallery of the clusters CLUSTERS into the folder DIR.

DIR/index.html opens from disk in any browser: no server, no network, nothing
outside DIR but links to the original images. Every cluster of 2 or more members is a
card, largest first, with its members as {T.THUMB_PX} px thumbnails ordered by how
strongly they belong: their mean link weight to the rest of the cluster with --links
((p_ij + p_ji) / 2, a missing link counting 0), else their mean cosine to the rest of
the cluster (from --features). Likely strays are marked (dashed red): in clusters of
{V.STRAY_MIN_SIZE} or more, members whose value is below --stray-ratio times the cluster's
median ({V.STRAY_RATIO["link weight"]} for links, {V.STRAY_RATIO["cosine"]} for cosine), and with
--stray-below, any
member below that value.

\b
Pages hold at most --per-page members (a larger cluster continues on the next
page); singletons and unassigned points have pages of their own. The search box
finds names by substring, or a cluster by #label; its index is split into files
of {G.SHARD_ROWS} names that the search page loads one by one.

\b
With --truth: each card's purity (share of members of its majority identity) and
majority identity, members of another identity outlined in orange, and splits.html,
the identities spread over the most clusters.

\b
Thumbnails: when every name in --features is an image file (as cf-embed extract
writes them; relative names are looked up under --images-root, else the current
folder, else the features file's folder), thumbnails are made in parallel
(--workers) and named by the SHA-1 of the image's bytes, so a rebuild of DIR reuses
them. Otherwise (features without images, or --names-only) the cards show names.

\b
Plots (PNG under DIR/plots, shown on the index page): cluster sizes predicted and
true (log-log; with --truth), the threshold sweep of cf-eval sweep --json (--sweep),
kNN precision and recall per rank of cf-eval knn --json (--knn-eval), and the
training curves stored in a model file (--model).

\b
Answering: every cluster card lets a person mark a member "not this identity" (the x
beside it), merge the cluster with another ("merge", then "merge here" on the other
card) and name it; with --questions (cf-eval review's output) review.html shows each
question with its images, to answer "same person" or "different". The answers stay in
the browser (local storage, shared by every page of galleries of the same features) and
"save corrections" downloads them as corrections.json, the --corrections of cf-merge,
cf-merge add and cf-merge labels. The site stays static (a download, not a server): it
opens from disk as before, nothing listens on a port, and the file lands where the
browser saves downloads.

DIR is built beside itself and swapped in when complete; an existing DIR is
replaced only if it is empty or an earlier gallery. The path of index.html goes to
stdout.
"""


def _read_features(path, n: int):
    """(names, label_names, reader of rows, features id) of a features file."""
    art = open_artifact(path, "features")
    if art.dims["N"] != n:
        art.close()
        raise CfError(f"has {art.dims['N']} rows but the clusters have {n} labels", path)
    names = art.read("names") if "names" in art else None
    label_names = art.json_attr("label_names", None)
    return art, names, label_names


def _image_paths(names, features_path, images_root):
    """Resolved image paths when every name is an image file name, else None."""
    if names is None or not all(os.path.splitext(s)[1].lower() in IMAGE_SUFFIXES
                                for s in names):
        return None
    bases = [Path(images_root)] if images_root else [Path("."), Path(features_path).parent]
    probe = str(names[0])
    for base in bases:
        if os.path.isabs(probe) or (base / probe).exists():
            return [s if os.path.isabs(s) else os.path.abspath(base / s) for s in names]
    return [s if os.path.isabs(s) else os.path.abspath(bases[0] / s) for s in names]


@click.command("gallery", cls=CfCommand, help=HELP, context_settings=CONTEXT_SETTINGS)
@click.argument("clusters", metavar="CLUSTERS")
@click.option("-o", "--out", "out", required=True, metavar="DIR",
              help="Folder to write (built beside it, then swapped in).")
@click.option("-f", "--features", "features", required=True, metavar="FEATURES",
              help="The clustered points' features file (names, and the cosine order).")
@click.option("--links", default=None, metavar="LINKS",
              help="Links file (cf-link) of the same points: members ordered by link weight.")
@click.option("-t", "--truth", "truth_spec", default=None, metavar="TRUTH",
              help="True identities (features file with labels, .npy, .meta, f.h5:/path); "
                   "-1 = unknown.")
@click.option("--images-root", type=click.Path(file_okay=False), default=None, metavar="R",
              help="Folder the relative image names are under.")
@click.option("--names-only", is_flag=True, help="Show names, never thumbnails.")
@click.option("--model", default=None, metavar="MODEL",
              help="Model file (cf-train): plot its training curves.")
@click.option("--sweep", "sweep_json", default=None, metavar="JSON",
              help="Output of cf-eval sweep --json: plot the threshold curve.")
@click.option("--knn-eval", "knn_json", default=None, metavar="JSON",
              help="Output of cf-eval knn --json: plot precision and recall per rank.")
@click.option("--stray-ratio", type=FiniteFloat(0, 1), default=None, metavar="R",
              help="Strays: below this share of their cluster's median [default: "
                   f"{V.STRAY_RATIO['link weight']} with --links, {V.STRAY_RATIO['cosine']} with cosine].")
@click.option("--stray-below", type=FiniteFloat(), default=None, metavar="V",
              help="Strays also: every member whose value is below this.")
@click.option("--per-page", type=Count(min=10, max=2000), default=V.PER_PAGE, metavar="N",
              show_default=True, help="Most members (images or names) on one page.")
@click.option("--title", default=None, metavar="T", help="Title of the site [default: CLUSTERS' name].")
@click.option("--workers", type=Count(min=1, max=MAX_WORKERS), default=None, metavar="W",
              help="Processes making thumbnails [default: the CPUs].")
@click.option("--questions", "questions_path", default=None, metavar="JSON",
              help="cf-eval review's questions: shown on review.html, to answer.")
@common_options
def gallery(clusters, out, features, links, truth_spec, images_root, names_only, model,
            sweep_json, knn_json, stray_ratio, stray_below, per_page, title, workers,
            questions_path, quiet):
    from ...formats.clusters import read_predicted as _predicted

    rep = Reporter(quiet, prog="cf-eval gallery")
    t0 = time.perf_counter()
    inputs = {"CLUSTERS": clusters, "--features": features, "--links": links,
              "--truth": truth_spec, "--model": model, "--sweep": sweep_json,
              "--knn-eval": knn_json}
    check_distinct_inputs({"CLUSTERS": clusters, "--truth": truth_spec})
    # refuses a bad DIR, and an input inside the DIR it replaces, before any work
    target = AtomicDir(out, marker=G.MARKER, inputs=[*inputs.values(), images_root])
    sweep_doc = read_sweep_json(sweep_json) if sweep_json else None
    knn_doc = read_knn_json(knn_json) if knn_json else None
    training = _training(model) if model else None
    labels, pred_attrs = _predicted(clusters)
    n = labels.shape[0]
    art, names, label_names = _read_features(features, n)
    try:
        if pred_attrs and "features_id" in pred_attrs:
            require_same_source(str(pred_attrs["features_id"]), art.id, what="features",
                                path=clusters, other_path=features)
        cid, sizes, label_of = V.dense_clusters(labels)
        if links:
            strength, kind = _link_strength(links, cid, sizes, art.id, features), "link weight"
        else:
            ds = art["features"]
            strength = V.strength_from_features(cid, sizes, lambda a, b: ds[a:b], n)
            kind = "cosine"
    finally:
        art.close()
    ratio = stray_ratio if stray_ratio is not None else V.STRAY_RATIO[kind]
    stray = V.likely_strays(cid, sizes, strength, ratio=ratio, below=stray_below)
    truth, truth_names = None, None
    if truth_spec:
        truth = load_labels(truth_spec, n=n, for_path=clusters)
        truth_names = _label_names(truth_spec) or label_names
    if names is None:
        names = np.array([str(i) for i in range(n)], dtype=object)
    questions = None
    if questions_path:
        from ...formats.corrections import read_questions

        questions = read_questions(questions_path, n, art.id)
    shown = np.array([_printable(s) for s in names], dtype=object)
    data = G.GalleryData(names=shown, cid=cid, sizes=sizes, label_of=label_of,
                         strength=strength, stray=stray, truth=truth,
                         truth_names=truth_names, strength_kind=kind, features_id=art.id,
                         clusters_id=str((pred_attrs or {}).get("cftools_id", "")),
                         questions=questions)
    paths = None if names_only else _image_paths(names, features, images_root)
    with target as tmp:
        if paths is not None:
            with rep.progress(total=n, desc="thumbnails", unit="img") as bar:
                thumbs, errors = T.make_thumbnails(paths, tmp, old_root=target.previous,
                                                   workers=workers, progress=bar)
            if errors:
                first = next(iter(errors.items()))
                rep.warn(f"{len(errors)} of {n} images could not be read (names shown "
                         f"instead); first: {first[0]}: {first[1]}")
            data.thumbs = thumbs
            data.links = [Path(p).as_uri() for p in paths]
        plots = _plots(tmp, rep, labels=labels, truth=truth, model=model, training=training,
                       sweep_doc=sweep_doc, knn_doc=knn_doc)
        figures = G.build(tmp, data, title=title or Path(clusters).name, plots=plots,
                          summary=_scores(labels, truth), per_page=per_page,
                          progress=rep.progress)
    index = Path(out) / "index.html"
    rep.info(f"cf-eval gallery: {figures['cards']} cluster cards on {figures['cluster_pages']} "
             f"pages, {figures['singletons']} singletons on {figures['singleton_pages']}, "
             f"{figures['strays']} likely strays, {len(plots)} plots"
             + (", names shown (no images)" if data.thumbs is None else
                f", {sum(t is not None for t in data.thumbs)} thumbnails")
             + f"; {time.perf_counter() - t0:.1f} s")
    click.echo(str(index))


def _scores(labels, truth) -> dict:
    """The headline scores of the clustering against the truth, for the index page."""
    if truth is None or not (truth >= 0).any():
        return {}
    from ...core.metrics import evaluate

    r = evaluate(labels, truth)
    from .common import pct
    return {"pairwise F (F_P)": pct(r["pairwise_f"]),
            "pairwise precision / recall": f"{pct(r['pairwise_precision'])} / "
                                           f"{pct(r['pairwise_recall'])}",
            "BCubed F (F_B)": pct(r["bcubed_f"]), f"NMI ({r['nmi_average']})": pct(r["nmi"]),
            "noise ratio": pct(r["noise_ratio"]),
            "clusters (true identities)": f"{r['n_clusters']} ({r['n_true_clusters']})",
            "singletons (true)": f"{r['n_singletons']} ({r['n_true_singletons']})"}


def _label_names(spec):
    path = Path(str(spec))
    if path.suffix.lower() in (".h5", ".hdf5", ".hdf") and path.is_file():
        try:
            with open_artifact(path, ("features", "clusters")) as a:
                return a.json_attr("label_names", None)
        except CfError:
            return None
    return None


def _link_strength(links, cid, sizes, features_id, features_path):
    from ...core.decoding.weights import link_weights
    from ...formats.links import read_links

    indices, probs, attrs, _, _ = read_links(links)
    if indices.shape[0] != cid.shape[0]:
        raise CfError(f"has {indices.shape[0]} rows but the clusters have {cid.shape[0]} "
                      "labels", links)
    if "features_id" in attrs:
        require_same_source(str(attrs["features_id"]), features_id, what="features",
                            path=links, other_path=features_path)
    weights = link_weights(indices, probs, "reciprocal")
    return V.strength_from_links(cid, sizes, indices, weights)


def _printable(name) -> str:
    """A name as a page shows it: bytes that are not UTF-8 (kept as surrogate escapes, so
    the image still opens) shown as U+FFFD."""
    return str(name).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _training(model) -> dict:
    """A model's training summary, checked before any work (it is plotted)."""
    with open_artifact(model, "model") as m:
        training = m.json_attr("training", {}) or {}
    check_training(training, model)
    return training


def _plots(tmp, rep, *, labels, truth, model, training, sweep_doc, knn_doc) -> dict:
    """Draw the plots there are inputs for into tmp/plots; {title: relative path}."""
    from ...report import plots as P

    out = {}
    (Path(tmp) / "plots").mkdir(exist_ok=True)

    def target(name):
        return Path(tmp) / "plots" / name

    P.cluster_sizes(target("sizes.png"), labels, truth)
    out["cluster sizes"] = "plots/sizes.png"
    if sweep_doc:
        P.sweep_from_json(target("sweep.png"), sweep_doc)
        out["decoder threshold sweep"] = "plots/sweep.png"
    if knn_doc:
        P.knn_from_json(target("knn.png"), knn_doc)
        out["kNN precision and recall per rank"] = "plots/knn.png"
    if model:
        if not training.get("history"):
            rep.warn(f"{model}: holds no training history; no training plot")
        else:
            P.training_curves(target("training.png"), training)
            out["training curves"] = "plots/training.png"
    return out
