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
from ..core import sharding
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

Methods: auto (the default), exact (flat inner product), ivf (inverted lists: --nlist,
--nprobe) and hnsw (graph: --hnsw-m, --ef-search). auto searches exactly up to
--exact-below points, where exact is cheap; above, it builds IVF and raises nprobe until
recall@k against exact search on the --recall-sample queries reaches --recall-target, or
falls back to exact where IVF would cost more. The choice and the measured recall are
printed and stored in the file (attributes method, auto, recall_at_k). For every
approximate method recall@k is measured the same way. faiss runs on the GPU when it has
one (--device).

Under torchrun (--nproc_per_node=P, --nnodes=M) the same command line splits the queries
among the P x M processes, each on its own GPU where there is one; rank 0 writes the one
output file when all succeeded. See man cf-knn.
"""


@click.command("cf-knn", cls=CfCommand, help=HELP, context_settings=CONTEXT_SETTINGS)
@click.argument("features")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Output knn file (.h5) or learn-to-cluster .npz.")
@click.option("-k", "k", type=int, default=80, show_default=True,
              help="Neighbours per point, the point itself included.")
@click.option("--queries", default=None,
              help="Search these features against FEATURES instead of FEATURES themselves.")
@click.option("--method", type=click.Choice(nb.METHODS), default="auto", show_default=True,
              help="auto (exact when small, else IVF tuned to --recall-target), exact, ivf "
                   "or hnsw.")
@click.option("--exact-below", type=click.IntRange(min=1), default=nb.AUTO_EXACT_BELOW,
              show_default=True,
              help="auto: exact search up to this many points (queries x base <= its square).")
@click.option("--recall-target", type=click.FloatRange(0, 1, min_open=True),
              default=nb.RECALL_TARGET, show_default=True,
              help="auto: raise nprobe until recall@k on the sample reaches this.")
@click.option("--nlist", type=click.IntRange(min=1), default=None,
              help="IVF: number of inverted lists [default: ~4 sqrt(N)].")
@click.option("--nprobe", type=click.IntRange(min=1), default=None,
              help="IVF: lists visited per query [default: max(16, nlist/64); auto: tuned].")
@click.option("--hnsw-m", type=click.IntRange(min=2), default=32, show_default=True,
              help="HNSW: links per node.")
@click.option("--ef-search", type=click.IntRange(min=1), default=None,
              help="HNSW: search breadth [default: max(128, 2k)].")
@click.option("--gpu-shard", is_flag=True,
              help="GPU: split the index across all GPUs of the host (for a set larger than "
                   "one GPU) instead of one copy per process.")
@click.option("--dim", type=click.IntRange(min=1), default=None,
              help="Dimension of raw .bin features when no .meta lies beside them.")
@click.option("--recall-sample", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Queries checked against exact search for approximate methods (0: skip).")
@click.option("--strict", is_flag=True, help="Refuse rows that are not of unit norm.")
@batch_size_option(16384)
@device_option
@seed_option
@common_options
def main(features, out, k, queries, method, exact_below, recall_target, nlist, nprobe, hnsw_m,
         ef_search, gpu_shard, dim, recall_sample, strict, batch_size, device, seed, quiet,
         debug):
    out = Path(out)
    if out.suffix.lower() not in (".h5", ".hdf5", ".npz"):
        raise CfError("output must end in .h5/.hdf5 (knn file) or .npz (learn-to-cluster)", out)
    inputs = [split_spec(features)[0]] + ([split_spec(queries)[0]] if queries else [])
    check_output_path(out, inputs)
    if k < 1:  # a usage error, refused before any reading
        raise click.BadParameter("k must be at least 1", param_hint="'-k'")
    if method == "auto" and recall_sample == 0:
        raise click.BadParameter("--method auto measures recall on --recall-sample queries; "
                                 "give it at least 1 (or choose --method ivf)",
                                 param_hint="'--recall-sample'")
    use_gpu = faiss_use_gpu(device)
    sh = sharding.join(use_cuda=use_gpu)  # one process, or one rank of torchrun's
    rep = Reporter(quiet or not sh.main)  # under torchrun, rank 0 talks

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
    self_search = q is None
    all_queries = base.features if self_search else q.features
    nq = all_queries.shape[0]

    chosen = method
    if method == "auto":
        chosen = "exact" if nb.auto_uses_exact(base.n, nq, exact_below) else "ivf"
    params = nb.KnnParams(method=chosen, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m,
                          ef_search=ef_search, use_gpu=use_gpu, batch_size=batch_size, seed=seed,
                          gpu=sh.dist.local_rank if sh.active else None, gpu_shard=gpu_shard)
    resolved = params.resolved(base.n, k)
    if chosen == "ivf" and resolved["nlist"] > base.n:  # faiss cannot train more lists than points
        raise CfError(f"--nlist {resolved['nlist']} is more inverted lists than the {base.n} "
                      "points to train them on; lower --nlist (or use --method exact)", base.path)
    where = "GPU" if use_gpu and chosen != "hnsw" else "CPU"
    rep.info(f"cf-knn: {method} k={k} over {base.n} x {base.dim} on {where}"
             + (f", {q.n} queries" if q else "")
             + (f", {sh.world} ranks" if sh.active else "")
             + "".join(f", {key}={val}" for key, val in resolved.items()
                       if key != "method" and not (method == "auto" and key == "nprobe"
                                                   and nprobe is None)))
    t1 = time.perf_counter()
    index = nb.build_index(base.features, params, k)

    rows = exact_ids = None  # the recall sample and its exact neighbours
    auto = None
    if method == "auto":
        auto = {"exact_below": exact_below, "recall_target": recall_target, "chosen": chosen}
        if chosen == "exact":
            rep.info(f"cf-knn: auto: {nq} x {base.n} points, at most {exact_below}^2: exact "
                     "search (cheap at this size)")
        else:
            rows = nb.sample_rows(nq, recall_sample, seed)
            t_exact = time.perf_counter()
            exact_ids = nb.exact_of(base.features, all_queries[rows], k,
                                    centres=rows if self_search else None)
            t_exact = time.perf_counter() - t_exact
            if nprobe is None:
                found, reached, trials = nb.tune_nprobe(
                    index, all_queries[rows], exact_ids, k, n_base=base.n,
                    nlist=resolved["nlist"], target=recall_target,
                    centres=rows if self_search else None, use_gpu=use_gpu,
                    exact_seconds=t_exact)
                found, trials = sh.broadcast([found, trials])  # rank 0's choice, everywhere
                # the file keeps what repeats (nprobe, recall); the timings go to stderr
                auto["trials"] = [t[:2] for t in trials]
                rep.info(f"cf-knn: auto: exact search of the {len(rows)} sample queries took "
                         f"{t_exact:.2f} s; IVF (nprobe, recall, s): "
                         + " ".join(f"{p}:{r:.3f}:{sec:.2f}" for p, r, sec in trials))
                if found is None:
                    chosen = auto["chosen"] = "exact"
                    rep.info(f"cf-knn: auto: IVF reaches only recall@{k} {reached:.4f} "
                             f"(nprobe {trials[-1][0] if trials else 0}) before it would cost "
                             f"more than exact search (target {recall_target}; neighbourhoods "
                             "not clustered at this k?): exact search")
                    params.method = "exact"
                    resolved = params.resolved(base.n, k)
                    where = "GPU" if use_gpu else "CPU"
                    del index
                    index = nb.build_index(base.features, params, k)
                    rows = exact_ids = None
                else:
                    resolved["nprobe"] = found
                    nb.set_nprobe(index, found, use_gpu)
                    rep.info(f"cf-knn: auto: {nq} x {base.n} points, above {exact_below}^2: "
                             f"IVF nlist={resolved['nlist']}, nprobe {found} reaches recall@{k} "
                             f"{reached:.4f} >= {recall_target} on {len(rows)} queries "
                             f"(~{1 / nb.ivf_relative_cost(base.n, resolved['nlist'], found):.0f}"
                             "x fewer operations than exact)")
    start, stop = sh.rows(nq)
    with rep.progress(total=stop - start, desc="searching", unit="pt") as bar:
        indices, sims = nb.search(index, all_queries[start:stop], k, batch_size, bar)
    del index
    if self_search:
        nb.put_self_first(indices, sims, centres=np.arange(start, stop))
    t_search = time.perf_counter() - t1

    recall = None
    if chosen != "exact" and recall_sample > 0:
        if rows is None:
            rows = nb.sample_rows(nq, recall_sample, seed)
        mine = (rows >= start) & (rows < stop)
        if exact_ids is not None:
            ex = exact_ids[mine]
        else:
            ex = nb.exact_of(base.features, all_queries[rows[mine]], k,
                             centres=rows[mine] if self_search else None)
        hits, slots = sh.sum([nb.recall_hits(indices[rows[mine] - start], ex), ex.size])
        recall, checked = hits / max(slots, 1), len(rows)
        rep.info(f"cf-knn: recall@{k} against exact search on {checked} queries: {recall:.4f}")
    missing = int(sh.sum([(indices < 0).sum()])[0])
    if missing:
        rep.warn(f"{missing} neighbour slots could not be filled by the {chosen} index "
                 "(id -1, similarity -inf); raise --nprobe or --ef-search")

    if out.suffix.lower() == ".npz":
        gathered = sharding.gather_rows(sh, [indices, sims])
        if sh.main:
            write_knn_npz(out, *gathered)
    else:
        attrs = {"query_id": q.id if q else base.id, "base_id": base.id, "method": chosen,
                 "self_first": self_search, "k": k, "params": resolved, "device": where,
                 "base_n": base.n}
        if auto is not None:
            attrs.update(method_requested="auto", auto=auto)
        if recall is not None:
            attrs.update(recall_at_k=float(recall), recall_sample=int(checked))
        inputs_ref = {"features": base.provenance_ref}
        if q:
            inputs_ref["queries"] = q.provenance_ref
        with sharding.ShardedOutput(out, "knn", sh, inputs=inputs_ref, attrs=attrs) as w:
            w.create_rows("indices", indices.shape, np.int64, data=indices)
            w.create_rows("similarities", sims.shape, np.float32, data=sims)
    sharding.leave(sh)
    rep.info(f"cf-knn: wrote {out} ({nq} x {k}) in {time.perf_counter() - t0:.1f} s "
             f"(load {t_load:.1f} s, search {t_search:.1f} s)")


if __name__ == "__main__":
    main()
