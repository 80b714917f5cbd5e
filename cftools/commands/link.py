"""cf-link: model + sequences -> per point, the probability each neighbour shares its identity."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from ..cli import (
    CONTEXT_SETTINGS,
    CfCommand,
    Count,
    Reporter,
    batch_size_option,
    bf16_inference_option,
    common_options,
    device_option,
)
from ..core.calibration.guard import recorded_cosine_length, recorded_winner
from ..core.clusformer.gate import recorded_gate
from ..core.clusformer.inference import (
    METHODS,
    LinkStats,
    cast_for_inference,
    check_fits,
    link_blocks,
)
from ..core.clusformer.model import load_model, unit_rows
from ..core.decoding.decoders import DECODERS
from ..core.runtime import sharding
from ..core.runtime.device import torch_device
from ..core.runtime.memory import keep_freed_memory
from ..core.runtime.precision import autocast_dtype
from ..errors import CfError
from ..formats.artifacts import open_artifact, require_same_source
from ..formats.features import load_features, split_spec
from ..formats.sequences import check_sequences
from ..formats.writing import check_hdf5_name, check_output_path

HELP = """Link every point to its neighbours: for each position of its sequence (made by
cf-seq), the probability that the neighbour there shares the point's identity.

Output (a links file): indices (N x L) are the sequence itself, the point first, then its
neighbours by falling similarity; probabilities (N x L) the model's output. Masked
positions (below cf-seq --min-sim, or no neighbour) keep their id and get probability 0.
The model's calibrated thresholds are carried into the links file (attribute thresholds),
where cf-merge takes its defaults from.

--method cosine writes the raw cosine similarity to the point instead of the model's
output: a training-free baseline that needs no --model (with --model, the links carry the
cosine thresholds cf-train calibrated; without, none). --method auto (the default)
follows cf-train's guard: the model's links where the model clustered its held-out
identities at least as well as cosine links, else cosine links, said on stderr.

A model reads sequences of its own length L (cf-train -L auto chooses it); longer
sequences are cut to their first L positions. Cosine links with --model are cut to the
length cf-train chose for cosine links (chosen apart from the model's, on D_L).

Model links are gated: the model's logit is calibrated cosine (a * cos + b) plus a learned
correction, and cf-train measured on its held-out identities how far from each decoder's
threshold the correction still changed a decision (the gate, recorded in the model). The
model reads only the rows with a link within that reach of the threshold of --gate's
decoder (infomap, the round's, by default); every other row gets calibrated cosine,
sigmoid(a * cos + b): the very weight the model gives where its correction is zero, on
the side of that threshold the model would put it. Attribute model_rows of the links
says how many rows the model read, attribute gate the gate used. --gate none: the model
reads every row.

Inference is batched and streamed: sequences are read and links written in row blocks,
on the GPU when there is one, in bfloat16 where the hardware supports it (the weights are
cast to bf16; the features are centred and normalised once in float32, then kept in
bf16). GPUs without bf16 use fp16 autocast. The model runs its own inference path (fused
QKV, batched-matmul attention, query-only work once per batch): about 4000 sequences/s
on 2 CPU cores at L 64 (small preset). A model made for another feature dimension or a
longer sequence length is refused.
"""


@click.command("cf-link", cls=CfCommand, help=HELP, context_settings=CONTEXT_SETTINGS)
@click.argument("sequences")
@click.option("--features", required=True, help="The features the sequences were built from.")
@click.option("--model", "model_path", default=None, help="Model file made by cf-train.")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Output links file (.h5).")
@click.option("--method", type=click.Choice(("auto",) + METHODS), default="auto",
              show_default=True,
              help="auto: the winner of cf-train's guard (the model, or cosine where the "
                   "model lost; cosine without --model); model: Clusformer's probabilities; "
                   "cosine: raw similarity.")
@click.option("--gate", "gate_for", type=click.Choice(DECODERS + ("none",)), default="infomap",
              show_default=True,
              help="Model links: read with the model only the rows where it can change this "
                   "decoder's decisions (by the reach cf-train measured on held-out rows); "
                   "the others keep calibrated cosine. none: the model reads every row.")
@bf16_inference_option
@click.option("--dim", type=Count(min=1), default=None,
              help="Dimension of raw .bin features when no .meta lies beside them.")
@batch_size_option(256)
@device_option
@common_options
def main(sequences, features, model_path, out, method, gate_for, bf16, dim, batch_size, device,
         quiet):
    import torch

    rep = Reporter(quiet)  # until the process group is joined
    out = Path(out)
    if method == "model" and not model_path:
        raise click.UsageError("--method model needs --model (or use --method cosine)")
    check_output_path(check_hdf5_name(out), [sequences, split_spec(features)[0], model_path])
    dev = torch_device(device)
    sh = sharding.join(use_cuda=dev.type == "cuda")  # one process, or one rank of torchrun's
    rep = Reporter(quiet or not sh.main)  # under torchrun, rank 0 talks
    keep_freed_memory()  # no page-fault storm from per-batch temporaries
    t0 = time.perf_counter()
    seq = open_artifact(sequences, "sequences")
    feats = load_features(features, dim=dim, reporter=rep)
    require_same_source(str(seq.attrs["features_id"]), feats.id, what="features", path=seq.path,
                        other_path=feats.path)
    n, L = seq.dims["N"], seq.dims["L"]
    if n != feats.n:
        raise CfError(f"has {n} rows but the features {feats.path} have {feats.n}", seq.path)
    check_sequences(seq, feats.n)
    model = model_art = gate = winner = None
    thresholds: dict = {}
    length = L
    if model_path:
        model, model_art, method, thresholds, winner, length, gate = _model(
            model_path, method, dev, feats.dim, L, rep, gate_for)
    elif method == "auto":
        method = "cosine"
    amp = autocast_dtype(dev, bf16) if method == "model" else None
    rep.info(f"cf-link: {n} sequences of length {length}, method {method} on {dev}"
             + (f" ({amp})".replace("torch.", "") if amp else ""))
    if amp is torch.bfloat16:  # bf16 weights beat bf16 autocast (no casts per op)
        model, amp = cast_for_inference(model, torch.bfloat16), None
    features_t = torch.from_numpy(feats.features).to(dev)
    unit = None
    if model is not None:
        if model.needs_cosine:  # raw cosine to the centre: the rows at unit length, float32
            unit = unit_rows(features_t)
        # centred and normalised once: in place when the model runs in float32; as a bf16
        # copy (half the size, the float32 array then dropped) when its weights are bf16
        features_t = model.prepare(features_t, inplace=True, dtype=model.input_proj.weight.dtype)
        feats.features = None
    attrs = {"features_id": feats.id, "sequences_id": seq.id, "method": method,
             "model_id": model_art.id if model_art else "none", "thresholds": thresholds,
             "guard_winner": winner or "none",
             "gate": gate.as_dict() if gate is not None else {},
             # cf-merge add builds the sequences of new points the way cf-seq built these
             "min_sim": seq.attrs.get("min_sim", "none")}
    inputs = {"sequences": seq, "features": feats.provenance_ref}
    if model_art is not None:
        inputs["model"] = model_art
    t1 = time.perf_counter()
    first, last = sh.rows(n)  # this rank's share (all rows in one process)
    stats = LinkStats()
    with sharding.ShardedOutput(out, "links", sh, inputs=inputs, attrs=attrs) as w:
        ind_ds = w.create_rows("indices", (last - first, length), np.int64)
        prob_ds = w.create_rows("probabilities", (last - first, length), np.float32)
        with rep.progress(total=last - first, desc="linking", unit="seq") as bar:
            for start, stop, indices, probs in link_blocks(seq, features_t, model=model,
                                                           method=method, batch_size=batch_size,
                                                           amp=amp,
                                                           prepared=model is not None,
                                                           unit=unit, length=length,
                                                           progress=bar, rows=(first, last),
                                                           gate=gate, stats=stats):
                ind_ds[start - first:stop - first] = indices
                prob_ds[start - first:stop - first] = probs
        w.attrs["model_rows"] = model_rows = _summed(sh, stats.model_rows)
    seq.close()
    sharding.leave(sh)
    took = time.perf_counter() - t1
    rep.info(f"cf-link: wrote {out} ({n} x {length}) in {time.perf_counter() - t0:.1f} s "
             f"({n / max(took, 1e-9):.0f} sequences/s)" + (
                 f"; the model read {model_rows} rows ({model_rows / max(n, 1):.1%}), the "
                 f"others were outside its reach at {gate.decoder}'s threshold"
                 if gate is not None else ""))


def _summed(sh, count: int) -> int:
    """``count`` summed over the ranks (itself in one process)."""
    if not sh.active:
        return count
    import torch.distributed as dist

    box: list = [None] * sh.world
    dist.all_gather_object(box, count)
    return int(sum(box))


def _model(model_path, method: str, dev, dim: int, seq_len: int, rep, gate_for: str):
    """(the model to run, or None for cosine links; its artifact, closed; the method; the
    thresholds the links carry; the guard's winner; the length the links are written at,
    the model's or cosine's as cf-train chose it; the gate for --gate's decoder, or None),
    as --method and cf-train's guard decide."""
    model, info = load_model(model_path, dev)
    check_fits(model, dim, seq_len, model_path)
    training = info["training"]
    winner = recorded_winner(training)
    if method == "auto":
        method = winner
        if winner == "cosine":
            rep.warn("the model lost to cosine links on its held-out identities "
                     "(cf-train's guard): writing cosine links (--method model to override)")
    elif method == "model" and winner == "cosine":
        rep.warn(f"{model_path} lost to cosine links on its held-out identities (cf-train's "
                 "guard); --method auto would use cosine links")
    thresholds = info["thresholds"] if method == "model" else \
        training.get("cosine_thresholds", {})
    art = open_artifact(model_path, "model")
    art.close()
    gate = None
    if method == "model" and gate_for != "none" and model.needs_cosine:
        gate = recorded_gate(training, gate_for)
        if gate is None:
            rep.info(f"cf-link: {model_path} records no gate for {gate_for}: the model reads "
                     "every row")
    length = model.config.seq_len if method == "model" else \
        min(seq_len, recorded_cosine_length(training, model.config.seq_len))
    if length < seq_len:
        rep.info(f"cf-link: sequences cut to the model's length {length}" if method == "model"
                 else f"cf-link: sequences cut to cosine links' length {length} (cf-train's)")
    return (model if method == "model" else None), art, method, thresholds, winner, length, gate


if __name__ == "__main__":
    main()
