"""cf-knn: features -> k nearest neighbours by cosine (faiss)."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from ..artifacts import check_output_path, create_rows, write_artifact
from ..cli import CONTEXT_SETTINGS, CfCommand, Reporter, batch_size_option, common_options, \
    device_option, seed_option
from ..core import neighbours as nb
from ..core.device import faiss_use_gpu
from ..data.io import load_features, split_spec, write_knn_npz
from ..errors import CfError

HELP = """Find the K nearest neighbours of every point by cosine similarity.

FEATURES is a cftools features file, FILE.h5:/path/to/dataset, a .npy array, or a
learn-to-cluster .bin (float32; the dimension comes from --dim or the .meta beside it).
Rows must be L2-normalised; rows that are not are normalised with a warning (refused
under --strict). NaN/Inf or all-zero rows are refused.

Each output row holds the point itself first, then its neighbours by falling similarity,
also when the point has exact duplicates. With --queries, the queries are searched
against FEATURES (the index) instead, e.g. new points against an existing set.

OUT ending in .h5/.hdf5 gets a cftools knn file (indices, similarities); OUT ending in
.npz gets learn-to-cluster's (N, 2, k) layout (ids; cosine distance 1 - sim).

Methods: exact (flat inner product), ivf (inverted lists: --nlist, --nprobe) and hnsw
(graph: --hnsw-m, --ef-search). For the approximate methods recall@k against exact search
is measured on --recall-sample queries, printed and stored in the file (attribute
recall_at_k). faiss runs on the GPU when it has one (--device).
"""


@click.command("cf-knn", cls=CfCommand, help=HELP, context_settings=CONTEXT_SETTINGS)
@click.argument("features")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Output knn file (.h5) or learn-to-cluster .npz.")
@click.option("-k", "k", type=int, default=80, show_default=True,
              help="Neighbours per point, the point itself included.")
@click.option("--queries", default=None,
              help="Search these features against FEATURES instead of FEATURES themselves.")
@click.option("--method", type=click.Choice(nb.METHODS), default="exact", show_default=True,
              help="exact, ivf or hnsw.")
@click.option("--nlist", type=click.IntRange(min=1), default=None,
              help="IVF: number of inverted lists [default: ~4 sqrt(N)].")
@click.option("--nprobe", type=click.IntRange(min=1), default=None,
              help="IVF: lists visited per query [default: max(16, nlist/64)].")
@click.option("--hnsw-m", type=click.IntRange(min=2), default=32, show_default=True,
              help="HNSW: links per node.")
@click.option("--ef-search", type=click.IntRange(min=1), default=None,
              help="HNSW: search breadth [default: max(128, 2k)].")
@click.option("--dim", type=click.IntRange(min=1), default=None,
              help="Dimension of raw .bin features when no .meta lies beside them.")
@click.option("--recall-sample", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Queries checked against exact search for approximate methods (0: skip).")
@click.option("--strict", is_flag=True, help="Refuse rows that are not of unit norm.")
@batch_size_option(16384)
@device_option
@seed_option
@common_options
def main(features, out, k, queries, method, nlist, nprobe, hnsw_m, ef_search, dim,
         recall_sample, strict, batch_size, device, seed, quiet, debug):
    rep = Reporter(quiet)
    out = Path(out)
    if out.suffix.lower() not in (".h5", ".hdf5", ".npz"):
        raise CfError("output must end in .h5/.hdf5 (knn file) or .npz (learn-to-cluster)", out)
    inputs = [split_spec(features)[0]] + ([split_spec(queries)[0]] if queries else [])
    check_output_path(out, inputs)
    if k < 1:  # a usage error, refused before any reading
        raise click.BadParameter("k must be at least 1", param_hint="'-k'")
    use_gpu = faiss_use_gpu(device)

    t0 = time.perf_counter()
    base = load_features(features, dim=dim, strict=strict, reporter=rep)
    nb.check_k(k, base.n, base.path, self_search=not queries)
    q = None
    if queries:
        q = load_features(queries, dim=dim, strict=strict, reporter=rep)
        if q.dim != base.dim:
            raise CfError(f"queries have dimension {q.dim}, the index features {base.path} "
                          f"have {base.dim}", q.path)
    t_load = time.perf_counter() - t0

    params = nb.KnnParams(method=method, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m,
                          ef_search=ef_search, use_gpu=use_gpu, batch_size=batch_size, seed=seed)
    resolved = params.resolved(base.n, k)
    if method == "ivf" and resolved["nlist"] > base.n:  # faiss cannot train more lists than points
        raise CfError(f"--nlist {resolved['nlist']} is more inverted lists than the {base.n} "
                      "points to train them on; lower --nlist (or use --method exact)", base.path)
    where = "GPU" if use_gpu and method != "hnsw" else "CPU"
    rep.info(f"cf-knn: {method} k={k} over {base.n} x {base.dim} on {where}"
             + (f", {q.n} queries" if q else "")
             + "".join(f", {key}={val}" for key, val in resolved.items() if key != "method"))
    t1 = time.perf_counter()
    index = nb.build_index(base.features, params, k)
    nq = q.n if q else base.n
    with rep.progress(total=nq, desc="searching", unit="pt") as bar:
        indices, sims = nb.search(index, q.features if q else base.features, k, batch_size, bar)
    del index
    if q is None:
        nb.put_self_first(indices, sims)
    t_search = time.perf_counter() - t1

    recall = None
    if method != "exact" and recall_sample > 0:
        recall, checked = nb.sample_recall(base.features, q.features if q else None, indices, k,
                                           recall_sample, seed, self_search=q is None)
        rep.info(f"cf-knn: recall@{k} against exact search on {checked} queries: {recall:.4f}")
    missing = int((indices < 0).sum())
    if missing:
        rep.warn(f"{missing} neighbour slots could not be filled by the {method} index "
                 "(id -1, similarity -inf); raise --nprobe or --ef-search")

    if out.suffix.lower() == ".npz":
        write_knn_npz(out, indices, sims)
    else:
        attrs = {"query_id": q.id if q else base.id, "base_id": base.id, "method": method,
                 "self_first": q is None, "k": k, "params": resolved, "device": where,
                 "base_n": base.n}
        if recall is not None:
            attrs.update(recall_at_k=float(recall), recall_sample=int(checked))
        inputs_ref = {"features": base.provenance_ref}
        if q:
            inputs_ref["queries"] = q.provenance_ref
        with write_artifact(out, "knn", inputs=inputs_ref, attrs=attrs) as f:
            create_rows(f, "indices", indices.shape, np.int64, data=indices)
            create_rows(f, "similarities", sims.shape, np.float32, data=sims)
    rep.info(f"cf-knn: wrote {out} ({nq} x {k}) in {time.perf_counter() - t0:.1f} s "
             f"(load {t_load:.1f} s, search {t_search:.1f} s)")


if __name__ == "__main__":
    main()
