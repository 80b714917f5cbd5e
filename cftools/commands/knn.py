"""cf-knn: features -> k nearest neighbours by cosine (faiss, or exact tiled products in torch)."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from ..cli import (
    CONTEXT_SETTINGS,
    CfCommand,
    Count,
    FiniteFloat,
    Reporter,
    common_options,
    device_option,
    seed_option,
)
from ..core.calibration.guard import links_length
from ..core.neighbours.index import METHODS, KnnParams, check_k
from ..core.neighbours.policy import AUTO_EXACT_BELOW, RECALL_TARGET
from ..core.neighbours.search import (
    BACKENDS,
    check_params,
    find_neighbours,
    plan_backend,
    plan_method,
)
from ..core.neighbours.tiled import PRECISIONS
from ..core.runtime import sharding
from ..errors import CfError
from ..formats.features import load_features, split_spec
from ..formats.inputs import check_distinct_inputs
from ..formats.interop import write_knn_npz
from ..formats.writing import check_output_path

HELP = """Find the K nearest neighbours of every point by cosine similarity.

FEATURES is a cftools features file, FILE.h5:/path/to/dataset, a .npy array, or a
learn-to-cluster .bin (float32; the dimension comes from --dim or the .meta beside it).
Rows must be L2-normalised; rows that are not are normalised with a warning (refused
under --strict). NaN/Inf or all-zero rows are refused.

Each output row holds the point itself first, then its neighbours by falling similarity,
also when the point has exact duplicates. With --queries, the queries are searched
against FEATURES (the index) instead, e.g. new points against an existing set.

With --for-model MODEL, k is the number of neighbours MODEL's links read (the longest of
the lengths cf-train chose on the labelled set, for the model and for cosine links): the
unlabelled side of a round searches no further than its links look (round.mk does so).

OUT ending in .h5/.hdf5 gets a cftools knn file (indices, similarities); OUT ending in
.npz gets learn-to-cluster's (N, 2, k) layout (ids; cosine distance 1 - sim).

Backends (--backend): faiss, or torch: exact search by tiled matrix products with a
running top-k, on CUDA or the CPU, no faiss needed. On CUDA its products run in fp16 on
the tensor cores and each point's best k + k/2 candidates are re-scored in fp32, with a
check per row (a row the check cannot vouch for is searched again in fp32): the result
is exact fp32 search, up to the order of equal similarities. auto (the default) is torch
on a CUDA GPU where faiss has no GPU build, else faiss (on the GPU where its build has
one).

Methods (faiss): auto (the default), exact (flat inner product), ivf (inverted lists:
--nlist, --nprobe) and hnsw (graph: --hnsw-m, --ef-search). auto searches exactly up to
--exact-below points, where exact is cheap; above, it builds IVF and raises nprobe until
recall@k against exact search on the --recall-sample queries reaches --recall-target, or
falls back to exact where IVF would cost more. The choice and the measured recall are
printed and stored in the file (attributes method, auto, recall_at_k). For every
approximate method recall@k is measured the same way. The torch backend searches
exactly at every size (--method auto or exact).

Under torchrun (--nproc_per_node=P, --nnodes=M) the same command line splits the queries
among the P x M processes, each on its own GPU where there is one; rank 0 writes the one
output file when all succeeded. See man cf-knn.
"""


@click.command("cf-knn", cls=CfCommand, help=HELP, context_settings=CONTEXT_SETTINGS)
@click.argument("features")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Output knn file (.h5) or learn-to-cluster .npz.")
@click.option("-k", "k", type=Count(), default=80, show_default=True,
              help="Neighbours per point, the point itself included.")
@click.option("--for-model", "for_model", default=None, type=click.Path(dir_okay=False),
              help="Search as many neighbours as this cf-train model's links read (its own "
                   "length or cosine links', the longer) instead of -k.")
@click.option("--queries", default=None,
              help="Search these features against FEATURES instead of FEATURES themselves.")
@click.option("--method", type=click.Choice(METHODS), default="auto", show_default=True,
              help="auto (exact when small, else IVF tuned to --recall-target), exact, ivf "
                   "or hnsw.")
@click.option("--exact-below", type=Count(min=1), default=AUTO_EXACT_BELOW,
              show_default=True,
              help="auto: exact search up to this many points (queries x base <= its square).")
@click.option("--recall-target", type=FiniteFloat(0, 1, min_open=True),
              default=RECALL_TARGET, show_default=True,
              help="auto: raise nprobe until recall@k on the sample reaches this.")
@click.option("--nlist", type=Count(min=1), default=None,
              help="IVF: number of inverted lists [default: ~4 sqrt(N)].")
@click.option("--nprobe", type=Count(min=1), default=None,
              help="IVF: lists visited per query [default: max(16, nlist/64); auto: tuned].")
@click.option("--hnsw-m", type=Count(min=2, max=512), default=32, show_default=True,
              help="HNSW: links per node.")
@click.option("--ef-search", type=Count(min=1, max=1 << 16), default=None,
              help="HNSW: search breadth [default: max(128, 2k)].")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="faiss, or torch (exact tiled products; no faiss needed); auto: torch on "
                   "CUDA where faiss has no GPU build, else faiss.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="torch: the products' precision; fp16 and bf16 candidates are re-scored in "
                   "fp32 (exact result) [auto: fp16 on CUDA, fp32 on the CPU].")
@click.option("--tile", type=Count(min=1), default=None,
              help="torch: base rows multiplied at once; lower it (or --batch-size) to use "
                   "less memory [default: 65536].")
@click.option("--gpu-shard", is_flag=True,
              help="GPU: split the index across all GPUs of the host (for a set larger than "
                   "one GPU) instead of one copy per process.")
@click.option("--dim", type=Count(min=1), default=None,
              help="Dimension of raw .bin features when no .meta lies beside them.")
@click.option("--recall-sample", type=Count(min=0), default=1000, show_default=True,
              help="Queries checked against exact search for approximate methods (0: skip).")
@click.option("--strict", is_flag=True, help="Refuse rows that are not of unit norm.")
@click.option("--batch-size", type=Count(min=1), default=None,
              help="Queries searched at once; lower it to use less memory [default: 16384; "
                   "torch: 8192 on CUDA, 1024 on the CPU].")
@device_option
@seed_option
@common_options
def main(features, out, k, for_model, queries, method, exact_below, recall_target, nlist, nprobe, hnsw_m,
         ef_search, backend, precision, tile, gpu_shard, dim, recall_sample, strict,
         batch_size, device, seed, quiet):
    out = Path(out)
    if out.suffix.lower() not in (".h5", ".hdf5", ".npz"):
        raise CfError("output must end in .h5/.hdf5 (knn file) or .npz (learn-to-cluster)", out)
    check_distinct_inputs({"FEATURES": features, "--queries": queries})
    inputs = [split_spec(features)[0]] + ([split_spec(queries)[0]] if queries else []) \
        + ([for_model] if for_model else [])
    check_output_path(out, inputs)
    if for_model:
        k = links_length(for_model)
    _check_usage(k, method, recall_sample, backend)
    backend, use_gpu = plan_backend(backend, method, device)
    sh = sharding.join(use_cuda=use_gpu)  # one process, or one rank of torchrun's
    rep = Reporter(quiet or not sh.main)  # under torchrun, rank 0 talks

    t0 = time.perf_counter()
    base = load_features(features, dim=dim, strict=strict, reporter=rep)
    check_k(k, base.n, base.path, self_search=not queries)
    q = _load_queries(queries, base, dim=dim, strict=strict, rep=rep) if queries else None
    t_load = time.perf_counter() - t0
    nq = base.n if q is None else q.n
    chosen = plan_method(method, base.n, nq, exact_below, backend)
    torch_dev = "cpu"
    if backend == "torch" and use_gpu:
        torch_dev = f"cuda:{sh.dist.local_rank}" if sh.active else "cuda"
    params = KnnParams(method=chosen, backend=backend, device=torch_dev, precision=precision,
                       query_block=batch_size, tile=tile, nlist=nlist, nprobe=nprobe,
                       hnsw_m=hnsw_m, ef_search=ef_search, use_gpu=use_gpu and backend == "faiss",
                       batch_size=batch_size or KnnParams.batch_size, seed=seed,
                       gpu=sh.dist.local_rank if sh.active else None, gpu_shard=gpu_shard)
    try:
        resolved = check_params(params, base.n, k)
    except CfError as err:
        raise CfError(str(err), base.path) from None
    where = "GPU" if use_gpu and chosen != "hnsw" else "CPU"
    rep.info(f"cf-knn: {method} k={k} over {base.n} x {base.dim} on {where} ({backend})"
             + (f", {q.n} queries" if q else "")
             + (f", {sh.world} ranks" if sh.active else "")
             + "".join(f", {key}={val}" for key, val in resolved.items()
                       if key != "method" and not (method == "auto" and key == "nprobe"
                                                   and nprobe is None))
             + (f", exact (torch; --method {method})" if backend == "torch" else ""))
    found = find_neighbours(base.features, None if q is None else q.features, k, params,
                            requested=method, exact_below=exact_below,
                            recall_target=recall_target, recall_sample=recall_sample, sh=sh,
                            log=rep.info, progress=rep.progress)
    indices, sims = found.indices, found.similarities
    where = "GPU" if use_gpu and found.method != "hnsw" else "CPU"
    _mark_missing(found, out, rep)

    if out.suffix.lower() == ".npz":
        gathered = sharding.gather_rows(sh, [indices, sims])
        if sh.main:
            write_knn_npz(out, *gathered)
    else:
        attrs = {"query_id": q.id if q else base.id, "base_id": base.id, "method": found.method,
                 "self_first": q is None, "k": k, "params": {"backend": backend, **found.params},
                 "device": where,
                 "base_n": base.n}
        if found.auto is not None:
            attrs.update(method_requested="auto", auto=found.auto)
        if found.recall is not None:
            attrs.update(recall_at_k=float(found.recall), recall_sample=int(found.recall_sample))
        inputs_ref = {"features": base.provenance_ref}
        if q:
            inputs_ref["queries"] = q.provenance_ref
        with sharding.ShardedOutput(out, "knn", sh, inputs=inputs_ref, attrs=attrs) as w:
            w.create_rows("indices", indices.shape, np.int64, data=indices)
            w.create_rows("similarities", sims.shape, np.float32, data=sims)
    sharding.leave(sh)
    rep.info(f"cf-knn: wrote {out} ({nq} x {k}) in {time.perf_counter() - t0:.1f} s "
             f"(load {t_load:.1f} s, search {found.seconds['search']:.1f} s)")


def _check_usage(k: int, method: str, recall_sample: int, backend: str) -> None:
    """Usage errors, refused before any reading."""
    if k < 1:
        raise click.BadParameter("k must be at least 1", param_hint="'-k'")
    if method == "auto" and recall_sample == 0:
        raise click.BadParameter("--method auto measures recall on --recall-sample queries; "
                                 "give it at least 1 (or choose --method ivf)",
                                 param_hint="'--recall-sample'")
    if backend == "torch" and method not in ("auto", "exact"):
        raise click.BadParameter(f"--backend torch searches exactly; --method {method} needs "
                                 "--backend faiss", param_hint="'--method'")


def _load_queries(queries, base, *, dim, strict, rep):
    """--queries' features: of the base's dimension, and not the base itself."""
    q = load_features(queries, dim=dim, strict=strict, reporter=rep)
    if q.dim != base.dim:
        raise CfError(f"queries have dimension {q.dim}, the index features {base.path} "
                      f"have {base.dim}", q.path)
    if q.id == base.id:
        raise CfError(f"queries are the features {base.path} themselves (the same "
                      "values); drop --queries to search a set within itself", q.path)
    return q


def _mark_missing(found, out: Path, rep) -> None:
    """Neighbour slots the search left unfilled: in a .h5 knn file id -1 and similarity -1
    (finite, as the format wants every similarity; faiss leaves -inf or -FLT_MAX there);
    a .npz, whose layout cannot mark them, is refused."""
    if not found.missing:
        return
    if out.suffix.lower() == ".npz":
        raise CfError(f"{found.missing} neighbour slots were not filled by the {found.method} "
                      "search, and learn-to-cluster's .npz cannot mark a missing neighbour: "
                      "raise --nprobe or --ef-search, use --method exact, or write a .h5 knn "
                      "file", out)
    rep.warn(f"{found.missing} neighbour slots could not be filled by the {found.method} "
             "index (id -1, similarity -1); raise --nprobe or --ef-search")
    found.similarities[found.indices < 0] = -1.0


if __name__ == "__main__":
    main()
