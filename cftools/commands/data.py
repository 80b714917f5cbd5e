"""cf-data: make, import, split and export features files, and carry labels across them."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ..cli import (
    CONTEXT_SETTINGS,
    MAX_DIM,
    CfGroup,
    Count,
    FiniteFloat,
    Reporter,
    common_options,
    seed_option,
)
from ..core.pseudo_labels import carried_labels
from ..data import demo
from ..errors import CfError
from ..formats.artifacts import open_artifact
from ..formats.features import load_features, split_spec, write_features
from ..formats.inputs import check_distinct_inputs, read_lines
from ..formats.interop import load_npy, write_bin, write_meta
from ..formats.writing import (
    atomic_outputs,
    check_format_name,
    check_hdf5_name,
    check_output_path,
    check_output_paths,
    create_rows,
    write_artifact,
)

HELP = """Make, import, split and export cftools features files, and carry labels across them.

\b
  cf-data demo OUT.h5 -n 100000      a demo set like face embeddings, with labels
  cf-data import FEATURES -o OUT.h5  .npy / .bin / FILE.h5:/dataset (+ labels) -> cftools
  cf-data split IN.h5 -L L.h5 -U U.h5   split by identity into labelled / unlabelled
  cf-data export IN.h5 --bin X.bin --meta X.meta   -> learn-to-cluster files
  cf-data carry-labels RETRAIN.h5 --labelled L.h5 --unlabelled U.h5 -o OUT.h5
                                     a retraining set's labels onto new features of its points
"""


@click.group("cf-data", cls=CfGroup, help=HELP, context_settings=CONTEXT_SETTINGS)
def main():
    pass


@main.command("demo", context_settings=CONTEXT_SETTINGS)
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("-n", "n", type=Count(min=1), default=100_000, show_default=True,
              help="Number of points.")
@click.option("-d", "--dim", type=Count(min=2, max=MAX_DIM), default=256, show_default=True,
              help="Feature dimension.")
@click.option("--hard-fraction", type=FiniteFloat(0, 1), default=0.1, show_default=True,
              help="Share of samples far from their identity's centre.")
@click.option("--noise-fraction", type=FiniteFloat(0, 1), default=0.05, show_default=True,
              help="Share of samples nearer another identity's centre than their own.")
@click.option("--max-size", type=Count(min=1), default=300, show_default=True,
              help="Largest identity.")
@click.option("--separable", is_flag=True,
              help="Tight, well separated identities, no hard or noisy samples.")
@seed_option
@common_options
def demo_cmd(out, n, dim, hard_fraction, noise_fraction, max_size, separable, seed, quiet):
    """Write a demo features file: identities as directions on the unit sphere, long-tailed
    identity sizes, hard and noisy samples, labels included. Streams any N to disk."""
    rep = Reporter(quiet)
    out = check_hdf5_name(check_output_path(out))
    spec = demo.DemoSpec(n=n, dim=dim, seed=seed, hard_fraction=hard_fraction,
                         noise_fraction=noise_fraction, max_size=max_size, separable=separable)
    attrs = {"demo": {"n": n, "dim": dim, "seed": seed, "hard_fraction": hard_fraction,
                      "noise_fraction": noise_fraction, "max_size": max_size,
                      "separable": separable}}
    with write_artifact(out, "features", attrs=attrs) as f:
        feats = create_rows(f, "features", (n, dim), np.float32)
        labels = f.create_dataset("labels", shape=(n,), dtype=np.int64)
        row = 0
        with rep.progress(total=n, desc="demo", unit="pt") as bar:
            for block_x, block_y in demo.iter_demo_blocks(spec):
                feats[row:row + len(block_x)] = block_x
                labels[row:row + len(block_y)] = block_y
                row += len(block_x)
                bar.update(len(block_x))
        n_ids = int(np.unique(labels[()]).size)
    rep.info(f"cf-data: wrote {out}: {n} points of {n_ids} identities, d={dim}")


@main.command("import", context_settings=CONTEXT_SETTINGS)
@click.argument("features")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Output cftools features file.")
@click.option("--labels", default=None, help="Labels: .npy, .meta, FILE.h5:/path.")
@click.option("--names", "names_file", default=None, type=click.Path(dir_okay=False),
              help="Text file, one name (e.g. image path) per line.")
@click.option("--dim", type=Count(min=1), default=None,
              help="Dimension of raw .bin features when no .meta lies beside them.")
@click.option("--strict", is_flag=True, help="Refuse rows that are not of unit norm.")
@common_options
def import_cmd(features, out, labels, names_file, dim, strict, quiet):
    """Import features (.npy, learn-to-cluster .bin, FILE.h5:/dataset) and optional labels
    into a cftools features file, normalising rows that are not of unit norm."""
    rep = Reporter(quiet)
    check_distinct_inputs({"FEATURES": features, "--labels": labels, "--names": names_file})
    inputs = [split_spec(features)[0], labels and split_spec(labels)[0], names_file]
    out = check_hdf5_name(check_output_path(out, inputs))
    src = load_features(features, labels=labels, dim=dim, strict=strict, reporter=rep)
    names = None
    if names_file:
        names = read_lines(names_file, "names file")
        if len(names) != src.n:
            raise CfError(f"has {len(names)} names but the features have {src.n} rows", names_file)
    write_features(out, src.features, labels=src.labels, names=names if names else src.names,
                   inputs={"features": src.provenance_ref})
    rep.info(f"cf-data: wrote {out}: {src.n} x {src.dim}"
             + (", with labels" if src.labels is not None else ""))


@main.command("split", context_settings=CONTEXT_SETTINGS)
@click.argument("features")
@click.option("-L", "--labelled", "labelled_out", required=True, type=click.Path(dir_okay=False),
              help="Output: the labelled part (D_L).")
@click.option("-U", "--unlabelled", "unlabelled_out", required=True,
              type=click.Path(dir_okay=False), help="Output: the unlabelled part (D_U).")
@click.option("--fraction", type=FiniteFloat(0, 1), default=0.5, show_default=True,
              help="Share of identities that go to the labelled part.")
@click.option("--labels", default=None, help="Labels, if FEATURES has none.")
@click.option("--rows", "rows_file", default=None, type=click.Path(dir_okay=False),
              help="A .npy of row indices of the labelled part (a given split); the rest "
                   "is unlabelled.")
@seed_option
@common_options
def split_cmd(features, labelled_out, unlabelled_out, fraction, labels, rows_file, seed, quiet):
    """Split a labelled features file BY IDENTITY (no identity on both sides) into a
    labelled and an unlabelled part. Both keep their labels, as ground truth for cf-eval."""
    rep = Reporter(quiet)
    ctx = click.get_current_context()
    if rows_file and ctx.get_parameter_source("fraction") != click.core.ParameterSource.DEFAULT:
        raise click.UsageError("--rows and --fraction exclude each other: --rows gives the split")
    check_distinct_inputs({"FEATURES": features, "--labels": labels, "--rows": rows_file})
    inputs = [split_spec(features)[0], labels and split_spec(labels)[0], rows_file]
    check_output_paths((labelled_out, unlabelled_out), inputs,
                       hdf5=(labelled_out, unlabelled_out))
    src = load_features(features, labels=labels, reporter=rep)
    if src.labels is None:
        raise CfError("has no labels to split by identity; pass --labels", src.path)
    if rows_file:
        rows = load_npy(Path(rows_file))
        if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer) or \
                (rows.size and (rows.min() < 0 or rows.max() >= src.n)):
            raise CfError(f"must be a 1-D array of row indices in [0, {src.n})", rows_file)
        lab_rows, counts = np.unique(rows, return_counts=True)
        if (counts > 1).any():
            raise CfError(f"row {int(lab_rows[np.argmax(counts > 1)])} is given more than once",
                          rows_file)
        unl_rows = np.setdiff1d(np.arange(src.n), lab_rows)
    else:
        lab_rows, unl_rows = demo.split_by_identity(src.labels, fraction, seed=seed)
    if lab_rows.size == 0 or unl_rows.size == 0:
        side = "labelled" if lab_rows.size == 0 else "unlabelled"
        if rows_file:
            raise CfError(f"leaves the {side} part empty: --rows must name some rows of "
                          f"{src.path}, and not all {src.n}", rows_file)
        raise CfError(f"the split leaves the {side} part empty; change --fraction", src.path)
    shared = np.intersect1d(src.labels[lab_rows], src.labels[unl_rows])
    shared = shared[shared >= 0]
    if shared.size:
        rep.warn(f"{shared.size} identities fall on both sides of the given split")
    with atomic_outputs((labelled_out, unlabelled_out)) as tmps:  # both parts or neither
        for out, tmp, rows in ((labelled_out, tmps[0], lab_rows),
                               (unlabelled_out, tmps[1], unl_rows)):
            write_features(tmp, src.features[rows], labels=src.labels[rows],
                           names=None if src.names is None else src.names[rows],
                           inputs={"features": src.provenance_ref},
                           attrs={"split_rows_of": src.id})
            rep.info(f"cf-data: wrote {out}: {rows.size} points of "
                     f"{np.unique(src.labels[rows]).size} identities")


@main.command("export", context_settings=CONTEXT_SETTINGS)
@click.argument("source")
@click.option("--npy", type=click.Path(dir_okay=False), default=None,
              help="Write the features (or cluster labels) as .npy.")
@click.option("--bin", "bin_out", type=click.Path(dir_okay=False), default=None,
              help="Write the features as learn-to-cluster raw float32 .bin.")
@click.option("--meta", type=click.Path(dir_okay=False), default=None,
              help="Write the labels as learn-to-cluster .meta (one per line).")
@common_options
def export_cmd(source, npy, bin_out, meta, quiet):
    """Export a features or clusters file to .npy, learn-to-cluster .bin and .meta."""
    rep = Reporter(quiet)
    if not (npy or bin_out or meta):
        raise click.UsageError("name at least one of --npy, --bin, --meta")
    check_output_paths((npy, bin_out, meta), [source])
    for out, fmt in ((npy, "npy"), (bin_out, "bin"), (meta, "meta")):
        if out:
            check_format_name(out, fmt)
    with open_artifact(source, ("features", "clusters")) as art:
        if art.kind == "clusters":
            if bin_out:
                raise CfError("a clusters file has no features for --bin", source)
            data, labels = None, art.read("labels")
        else:
            data = art.read("features")
            labels = art.read("labels") if "labels" in art else None
    if meta and labels is None:
        raise CfError("has no labels for --meta", source)
    # all outputs or none; np.save would append .npy to a temporary name without it
    with atomic_outputs((npy, bin_out, meta), (".npy", "", "")) as (npy_tmp, bin_tmp, meta_tmp):
        if npy:
            np.save(npy_tmp, data if data is not None else labels)
        if bin_out:
            write_bin(bin_tmp, data)
        if meta:
            write_meta(meta_tmp, labels)
    rep.info("cf-data: wrote " + ", ".join(p for p in (npy, bin_out, meta) if p))


CARRY_HELP = """Carry the labels of a retraining set onto features of all its points.

RETRAIN is what cf-merge labels wrote for the next round: D_L's rows and the pseudo-labelled
rows of D_U, each with its label and where it came from (datasets 'source' and
'source_rows'). FL and FU are features of the same two sets, in the same row order: the
ones RETRAIN was made from, or new ones such as the next round's backbone gives. OUT holds
every row of FL, then every row of FU, with the label RETRAIN gives that point and -1
(unknown) where RETRAIN holds none: D_L's identities, the pseudo-identities, and the rest
of D_U unlabelled.

The round on images trains its link model a second time on OUT, made from the retraining
set of its own first pass (round.mk, LINK_SELF=yes): the model learns D_U's look-alikes
from the pseudo-identities and reads its sequences among all of D_U's points, as it will
when it links them.

Where RETRAIN and FL or FU have names (image paths), every carried row must name the same
point, or nothing is written. OUT keeps 'source' and 'source_rows' (0 = FL, 1 = FU).
"""


@main.command("carry-labels", help=CARRY_HELP, context_settings=CONTEXT_SETTINGS)
@click.argument("retrain")
@click.option("--labelled", "fl_spec", required=True, metavar="FL",
              help="New features of RETRAIN's labelled set (D_L), row for row.")
@click.option("--unlabelled", "fu_spec", required=True, metavar="FU",
              help="New features of RETRAIN's unlabelled set (D_U), row for row.")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Output cftools features file: FL's rows, then FU's, labelled.")
@common_options
def carry_labels_cmd(retrain, fl_spec, fu_spec, out, quiet):
    rep = Reporter(quiet)
    check_distinct_inputs({"RETRAIN": retrain, "--labelled": fl_spec, "--unlabelled": fu_spec})
    out = check_hdf5_name(check_output_path(
        out, [retrain, split_spec(fl_spec)[0], split_spec(fu_spec)[0]]))
    with open_artifact(retrain, "features") as art:
        missing = [k for k in ("labels", "source", "source_rows") if k not in art]
        if missing:
            raise CfError(f"has no {', '.join(repr(k) for k in missing)}: not a retraining set "
                          "(cf-merge labels writes one)", retrain)
        labels, source = art.read("labels"), art.read("source")
        source_rows = art.read("source_rows")
        names = art.read("names") if "names" in art else None
    fl = load_features(fl_spec, reporter=rep)
    fu = load_features(fu_spec, reporter=rep)
    if fl.dim != fu.dim:
        raise CfError(f"has dimension {fu.dim} but the labelled features {fl.path} have "
                      f"{fl.dim}", fu.path)
    try:
        lab_l, lab_u = carried_labels(source, source_rows, labels, (fl.n, fu.n))
    except ValueError as e:
        raise CfError(str(e), retrain) from None
    _check_same_points(retrain, names, source, source_rows, (fl, fu), rep)
    feats = np.concatenate([fl.features, fu.features])
    out_names = None
    if fl.names is not None or fu.names is not None:
        out_names = fl.names_of(np.arange(fl.n)) + fu.names_of(np.arange(fu.n))
    with atomic_outputs((out,)) as (tmp,):
        write_features(tmp, feats, labels=np.concatenate([lab_l, lab_u]), names=out_names,
                       inputs={"retrain": art, "labelled": fl.provenance_ref,
                               "unlabelled": fu.provenance_ref},
                       datasets={"source": np.r_[np.zeros(fl.n, np.int8), np.ones(fu.n, np.int8)],
                                 "source_rows": np.r_[np.arange(fl.n), np.arange(fu.n)]})
    known_u = lab_u >= 0
    rep.info(f"cf-data: wrote {out}: {fl.n} labelled rows ({int((lab_l >= 0).sum())} with a "
             f"label), then {fu.n} unlabelled rows ({int(known_u.sum())} pseudo-labelled, "
             f"{np.unique(lab_u[known_u]).size} pseudo-identities; the rest unknown, -1)")


def _check_same_points(retrain, names, source, source_rows, sides, rep) -> None:
    """Every row RETRAIN carries names the point of the new features it goes to, where both
    have names; a warning where nothing can be checked."""
    if names is None or any(side.names is None for side in sides):
        rep.warn("no names on both sides: cannot check that RETRAIN's rows are the same "
                 "points as the new features'; they are taken row for row")
        return
    for s, side in enumerate(sides):
        at = np.flatnonzero(source == s)
        theirs = np.asarray(side.names[source_rows[at]]).astype(str)
        ours = np.asarray(names[at]).astype(str)
        wrong = np.flatnonzero(theirs != ours)
        if wrong.size:
            i = at[wrong[0]]
            raise CfError(f"row {int(i)} is {ours[wrong[0]]!r} but row "
                          f"{int(source_rows[i])} of {side.path} is {theirs[wrong[0]]!r}: not "
                          f"the same points ({wrong.size} rows differ)", retrain)


if __name__ == "__main__":
    main()
