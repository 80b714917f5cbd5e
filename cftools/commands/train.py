"""cf-train: sequences of the labelled set -> a Clusformer model (HDF5, no pickle)."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from ..cli import (
    CONTEXT_SETTINGS,
    CfCommand,
    ChoiceList,
    Count,
    FiniteFloat,
    LengthList,
    Reporter,
    batch_size_option,
    checkpoint_options,
    common_options,
    device_option,
    seed_option,
)
from ..core.calibration.guard import GUARD_DECODER
from ..core.calibration.length import model_lengths
from ..core.clusformer.calibrate import choose_data_length
from ..core.clusformer.grammar import make_targets
from ..core.clusformer.judge import judge
from ..core.clusformer.model import ENCODINGS, PRESETS, make_config, save_model
from ..core.clusformer.sequences import (
    EPOCH_BUDGET,
    PATIENCE,
    SequenceData,
    split_rows,
    truncated,
)
from ..core.clusformer.training import TrainConfig, train
from ..core.decoding.decoders import DECODERS
from ..core.runtime.device import torch_device
from ..core.runtime.distributed import init_distributed, leave_process_group
from ..core.runtime.memory import keep_freed_memory
from ..errors import CfError
from ..formats.artifacts import open_artifact, require_same_source
from ..formats.features import load_features, split_spec
from ..formats.sequences import check_sequence_rows
from ..formats.writing import check_hdf5_name, check_output_path

HELP = """Train Clusformer on the sequences of a labelled set (made by cf-seq with labels).

Each token is a neighbour's feature with its row of the L x L cosine matrix (the Cosine
Distance Encoding, computed on the fly); an encoder-decoder transformer with L learned
decoder queries gives, per position, the probability that the neighbour shares the
centre's identity. Loss: binary cross-entropy over real, labelled positions. AdamW with
warm-up, then linear (the paper) or cosine decay; bf16/fp16 mixed precision where the
hardware has it.

Validation is held out by identity: --val-fraction of the centres' identities, drawn at
random (and the largest identity when none drawn is half its size: short link lists split
large identities, and only a large one shows it to the guard), are never trained on
(their faces are masked out of the training sequences too) and their rows are
linked like unlabelled data after every epoch (past 2048 rows, whole held-out identities
holding up to 2048): link precision, recall, F1 and ROC-AUC are printed, with raw cosine
to the centre scored once on all the held-out pairs for comparison. The link threshold
that maximises F1 on every held-out row, linked by the kept epoch, is stored in the model.
The decoders' thresholds (cf-merge, each decoder under both link modes) are then
calibrated on the whole labelled set linked by the trained model, as the unlabelled set
will be: the held-out rows alone hold too few look-alike identities and give thresholds
far too lax. Above --calibration-points rows a random subset of identities is used.
--decoders limits this to the decoders named (and Infomap, the guard's): the round
calibrates only its DECODER. cf-link passes all the thresholds on to the links file;
cf-merge asks for --threshold or --calibrate with a decoder left out.

Built for long-tailed identity sizes (most identities of one or two images, a few of
hundreds), where a model trained naively loses to raw cosine:

\b
- the model starts as calibrated cosine: its logit is a * cos + b (fitted to the training
  links first) plus the transformer's correction, which starts at zero; the epoch kept is
  the one with the best held-out ROC-AUC, the untrained one (epoch 0) included;
- an identity gives at most --identity-cap centres to an epoch, drawn afresh each epoch;
- thresholds maximise the mean of pairwise F, with every identity weighed as if it had
  at most 30 points (so one giant identity cannot decide them), and BCubed F (which
  counts the points a threshold leaves split off); the link mode (reciprocal or
  directed) is chosen the same way, per decoder;
- -L auto: two lengths, apart: cosine links' length, the one under which Infomap over the
  labelled set's cosine links clusters it best on a coarse grid of thresholds (near ties
  go to the longer; the chosen length is then calibrated on the fine grid too), and the
  model's, L 31 (or the sequences' own if shorter). --model-lengths 21,31,51 trains a
  model at each length the sequences hold and keeps the one the jury scores best (near
  ties go to the shorter): training runs once per length;
- the guard (and the jury): the model's links at its length and cosine links at cosine's,
  each decoded by Infomap at its own calibrated threshold over all the labelled rows
  calibration uses, are scored on the held-out identities, the others standing by as
  distractors, as in the unlabelled set; the model wins only when it leads there and on
  90% of random halves of them, with at least 50 identities held out. The verdict is
  recorded, and cf-link --method auto (the default) writes cosine links, at cosine's
  length, when the model lost. The labelled set is less crowded than an unlabelled set
  several times its size, and cosine links lose more than the model's as the set grows:
  --distractors U.h5 (the unlabelled features) has the guard judge among those points
  too, each counted as another identity: on 15 models of the 125K demo, omniglot-bg,
  lfw-dev and CelebA its verdict was the one D_U's labels give, every time
  (bench/studies/guard-density); the round passes D_U this way by default. It searches
  and links the held-out identities' neighbourhood among both sets (exact kNN; the model
  reads the rows its gate reads, as cf-link does).

PSEUDO-LABELS: the clusters cf-merge writes are cut where F is best, and a backbone
retrained on them learns their strays as their identity. With --pseudo-threshold the
guard's links of the winner (the held-out identities among the distractors) are decoded by
Infomap at its calibrated threshold and at every multiple of 0.02 above it up to 0.98,
and the threshold with the best F_0.5 of the held-out pairs (precision weighed twice) is
stored under the thresholds key pseudo_infomap, with what the jury measured there in the
training summary (pseudo_labels); the pairwise precision measured this way followed
D_U's on omniglot-bg (bench/studies/pseudo-labels). Without --distractors, the labelled
set's own points of unknown label (-1) are the crowd: a labelled set that holds all of
D_U, pseudo-labelled in part (cf-data carry-labels), as the round's second pass of the
link side trains on.

Cost: an epoch reads at most --epoch-budget centres whatever the size of the labelled
set; what grows with it, up to --calibration-points rows, is cosine's length choice,
linking the labelled rows with the trained model, the decoders' calibration and the
guard. On 2 CPU cores with bfloat16, 25K labelled points (bench/cost.py) took about 2
minutes: about 60 s of epochs and about 2 s per 1,000 labelled points for the rest. A
CPU without bfloat16 (AVX2 only) trains in float32: epochs took about twice as long.

A checkpoint is written after every epoch (--checkpoint, default MODEL.h5.ckpt, and
MODEL.h5.ckpt.L21 and so on when several lengths are trained); --resume
continues from it and ends with the same weights as an uninterrupted run (same seed, on
CPU). Under torchrun (several processes or nodes) the same command line trains with DDP
(nccl on GPUs, gloo on CPUs); --batch-size is the global batch and only rank 0 writes.

The model file holds the weights as float32 datasets and the config, thresholds and a
training summary as JSON attributes; loading it never runs code.
"""


@click.command("cf-train", cls=CfCommand, help=HELP, context_settings=CONTEXT_SETTINGS)
@click.argument("sequences")
@click.option("--features", required=True, help="The features the sequences were built from.")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Output model file (.h5).")
@click.option("--labels", default=None,
              help="Identity labels (-1 unknown), instead of the features file's own.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="small", show_default=True,
              help="small: 2+2 layers, width 128, CDE-only tokens (minutes on a CPU); "
                   "paper: 6+6 layers, 8 heads, width 512, feature + CDE tokens.")
@click.option("--width", type=Count(min=1), default=None, help="Override: model width.")
@click.option("--heads", type=Count(min=1), default=None, help="Override: attention heads.")
@click.option("--encoder-layers", type=Count(min=0), default=None,
              help="Override: encoder layers.")
@click.option("--decoder-layers", type=Count(min=1), default=None,
              help="Override: decoder layers.")
@click.option("--ffn", type=Count(min=1), default=None, help="Override: FFN size.")
@click.option("--dropout", type=FiniteFloat(0, 1, max_open=True), default=None,
              help="Override: dropout.")
@click.option("--encoding", type=click.Choice(ENCODINGS), default=None,
              help="Position/context encoding (the paper's ablation) [default: cde].")
@click.option("--token-features/--no-token-features", default=None,
              help="Override: whether tokens carry the raw features beside the CDE row.")
@click.option("--center/--no-center", default=None,
              help="Subtract the features' mean before the CDE [default: center].")
@click.option("-L", "--length", default="auto", show_default=True,
              help="Sequence length the model reads (centre + L-1 neighbours), at most the "
                   "sequences' own: auto = --model-lengths for the model, cosine links' own "
                   "length chosen apart (see above); cf-link cuts longer sequences to it.")
@click.option("--model-lengths", default="31", show_default=True, type=LengthList(),
              help="With -L auto: the lengths the model is trained at, comma-separated; with "
                   "several, the one the jury scores best is kept (one training each).")
@click.option("--epochs", type=Count(min=1), default=20, show_default=True)
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=1e-4, show_default=True,
              help="Peak learning rate (AdamW).")
@click.option("--weight-decay", type=FiniteFloat(min=0), default=1e-4, show_default=True)
@click.option("--schedule", type=click.Choice(["linear", "cosine"]), default="linear",
              show_default=True, help="Decay after warm-up.")
@click.option("--warmup", type=FiniteFloat(0, 1), default=0.05, show_default=True,
              help="Share of all steps spent warming up.")
@click.option("--val-fraction", type=FiniteFloat(0, 1, max_open=True), default=0.2,
              show_default=True, help="Share of identities held out for validation (0: none).")
@click.option("--calibration-points", type=Count(min=2), default=100_000,
              show_default=True,
              help="Most labelled rows the decoders' thresholds are calibrated on.")
@click.option("--decoders", type=ChoiceList(DECODERS), default=",".join(DECODERS),
              show_default=True,
              help="The decoders (cf-merge --method) whose thresholds are calibrated, "
                   "comma-separated; infomap always is (the guard decodes with it). cf-merge "
                   "asks for --threshold or --calibrate with any other.")
@click.option("--identity-cap", type=Count(min=0), default=30, show_default=True,
              help="Most centres one identity gives an epoch (0: no cap).")
@click.option("--epoch-budget", type=Count(min=0), default=EPOCH_BUDGET,
              show_default=True,
              help="Most centres an epoch reads, stratified by identity, first those "
                   "whose sequence holds a pair cosine decides wrongly or nearly (0: all the "
                   "capped centres): an epoch costs the same at any size of the labelled set.")
@click.option("--patience", type=Count(min=0), default=PATIENCE, show_default=True,
              help="Stop once the held-out ROC-AUC has not risen by 5e-4 for this many "
                   "epochs, but not before half of --epochs (0: train every --epochs).")
@checkpoint_options("MODEL.h5.ckpt, beside -o")
@click.option("--bf16/--no-bf16", default=None,
              help="bfloat16 autocast [default: where the CPU/GPU supports it; GPUs without "
                   "it use fp16 with a gradient scaler].")
@click.option("--corrections", default=None, type=click.Path(dir_okay=False),
              help="A corrections file (cf-eval gallery): its answered pairs become labelled "
                   "pairs of these sequences (cf-merge(1), ANSWERS).")
@click.option("--distractors", default=None, type=click.Path(dir_okay=False),
              metavar="FEATURES",
              help="Unlabelled features (the set to be clustered, or one like it) searched "
                   "together with the labelled set for the guard: the held-out identities "
                   "are judged in a graph as crowded as the unlabelled set, each of these "
                   "points counting as another identity. Assumes they share no identity "
                   "with the labelled set. Costs an exact kNN of the held-out identities' "
                   "neighbourhood among both sets and the model's links of it.")
@click.option("--pseudo-threshold", is_flag=True, default=False,
              help="Also choose the stricter threshold the next round's pseudo-labels are "
                   "cut at (needs --distractors, or points of unknown label in the "
                   "labelled set; see PSEUDO-LABELS); cf-merge --pseudo uses it. A few "
                   "Infomap runs over the guard's rows.")
@click.option("--stop-after-epoch", type=Count(min=1), default=None, hidden=True)
@batch_size_option(128)
@device_option
@seed_option
@common_options
def main(sequences, features, out, labels, preset, width, heads, encoder_layers, decoder_layers,
         ffn, dropout, encoding, token_features, center, length, model_lengths, epochs, lr,
         weight_decay, schedule, warmup, val_fraction, calibration_points, decoders, identity_cap,
         epoch_budget, patience, checkpoint, resume, bf16, corrections, distractors,
         pseudo_threshold, stop_after_epoch, batch_size, device, seed, quiet):
    import torch

    if length != "auto":
        try:
            length = int(length)
        except ValueError:
            raise click.BadParameter(f"must be 'auto' or a whole number, got {length!r}",
                                     param_hint="'-L' / '--length'") from None
    dist = init_distributed(device)
    rep = Reporter(quiet or not dist.main)
    out = Path(out)
    checkpoint = str(checkpoint or out.with_name(out.name + ".ckpt"))
    check_output_path(check_hdf5_name(out), [sequences, split_spec(features)[0]]
                      + ([split_spec(distractors)[0]] if distractors else []))
    if resume and not (Path(checkpoint).is_file()
                       or any(Path(checkpoint).parent.glob(Path(checkpoint).name + ".L*"))):
        raise CfError("no checkpoint to resume from (see --checkpoint)", checkpoint)
    dev = torch_device(device)
    keep_freed_memory()  # no page-fault storm from per-batch temporaries
    if dev.type == "cuda" and dist.world > 1:
        dev = torch.device("cuda", dist.local_rank)
    torch.set_num_threads(max(1, torch.get_num_threads() // max(1, dist.world)) if dev.type == "cpu"
                          else torch.get_num_threads())

    t0 = time.perf_counter()
    seq, feats, data = _read(sequences, features, labels, rep)
    if corrections:  # answered pairs as labelled pairs (core/corrections.py)
        from ..core.corrections import train_on_answers
        data = train_on_answers(data, corrections, feats, rep.info)
    crowd = _distractors(distractors, feats, rep)
    if pseudo_threshold and crowd is None and not (data.labels < 0).any():
        raise click.UsageError("--pseudo-threshold needs --distractors, or points of unknown "
                               "label (-1) in the labelled set: precision is measured among "
                               "unlabelled points")
    if crowd is not None and split_rows(data, val_fraction, seed)[2].size == 0:
        rep.warn("--distractors unused: no identity is held out, so no guard runs")
    log = rep.info if dist.main else (lambda m: None)
    tcfg = TrainConfig(epochs=epochs, lr=lr, weight_decay=weight_decay, schedule=schedule,
                       warmup=warmup, batch_size=batch_size, val_fraction=val_fraction, seed=seed,
                       bf16=bf16, stop_after_epoch=stop_after_epoch,
                       calibration_points=calibration_points,
                       decoders=_calibrated(decoders),
                       identity_cap=identity_cap or None, epoch_budget=epoch_budget or None,
                       patience=patience or None)
    cosine_sel, lengths = _lengths(length, model_lengths, data, feats.features, tcfg, log)
    checkpoints = {n: checkpoint if len(lengths) == 1 else f"{checkpoint}.L{n}" for n in lengths}
    for path in checkpoints.values():
        check_output_path(path, [sequences, split_spec(features)[0], out])
    overrides = dict(width=width, heads=heads, encoder_layers=encoder_layers,
                     decoder_layers=decoder_layers, ffn=ffn, dropout=dropout, encoding=encoding,
                     features=token_features, center=center)
    results = _train_all(lengths, data, feats, preset, overrides, tcfg, dev, dist, checkpoints,
                         resume, sequences, rep, cosine_length=int(cosine_sel["length"]))
    if results is None:  # another rank, or stopped by --stop-after-epoch
        return
    result = judge(results, data, feats.features, cosine_sel, tcfg, log, crowd,
                   pseudo=pseudo_threshold)
    result.summary["seconds"] = round(time.perf_counter() - t0, 1)
    result.summary["preset"] = preset
    save_model(out, result.model, thresholds=result.thresholds, training=result.summary,
               inputs={"sequences": seq, "features": feats.provenance_ref})
    rep.info(f"cf-train: wrote {out} in {result.summary['seconds']} s; thresholds "
             + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in result.thresholds.items()))


def _train_all(lengths, data, feats, preset, overrides, tcfg, dev, dist, checkpoints, resume,
               sequences, rep, cosine_length: int) -> dict | None:
    """{length: train()'s result} of a model trained at each length in turn (None on
    ranks other than 0, and when stopped early by --stop-after-epoch); cosine links'
    thresholds are calibrated with the model of ``cosine_length`` alone (judge
    calibrates them where no model has that length)."""
    results = {}
    try:
        for n in lengths:
            mcfg = make_config(preset, feats.dim, n, **overrides)
            rep.info(f"cf-train: {data.order.shape[0]} sequences (L={n}, d={feats.dim}), preset "
                     f"{preset}, {tcfg.epochs} epochs on {dev}"
                     + (f" x {dist.world} processes" if dist.world > 1 else ""))
            t0 = time.perf_counter()
            ckpt = checkpoints[n]
            try:
                results[n] = train(truncated(data, n) if n < data.order.shape[1] else data,
                                   feats.features, mcfg, tcfg, device=dev, dist=dist,
                                   checkpoint=ckpt,
                                   resume=ckpt if resume and Path(ckpt).is_file() else None,
                                   log=rep.info, progress=rep.progress,
                                   calibrate_cosine=n == cosine_length)
            except CfError as err:  # what train() finds wrong with the data is the sequences'
                if err.path is None:
                    raise CfError(str(err), sequences) from None
                raise
            if tcfg.stop_after_epoch is not None and results[n] is None:
                if dist.main:
                    rep.info(f"cf-train: stopped after epoch {tcfg.stop_after_epoch}; rerun "
                             f"with --resume to continue from {ckpt}")
                return None
            if results[n] is not None:
                results[n].summary["seconds"] = round(time.perf_counter() - t0, 1)
    finally:
        leave_process_group(dist)
    return results if dist.main else None


def _read(sequences, features, labels, rep):
    """(sequences artifact, features, the labelled sequences in memory), checked to belong
    together and to carry labels."""
    seq = open_artifact(sequences, "sequences")
    feats = load_features(features, labels=labels, reporter=rep)
    require_same_source(str(seq.attrs["features_id"]), feats.id, what="features", path=seq.path,
                        other_path=feats.path)
    if feats.labels is None or not (feats.labels >= 0).any():
        if labels:
            raise CfError("training needs identity labels: every label is -1 (unknown)", labels)
        raise CfError("training needs identity labels: the features file has none; give --labels",
                      feats.path)
    if "targets" not in seq:
        raise CfError("has no targets (made without labels); rerun cf-seq with labels", seq.path)
    if seq.dims["N"] != feats.n:
        raise CfError(f"has {seq.dims['N']} rows but the features {feats.path} have {feats.n}",
                      seq.path)
    order, mask, targets = seq.read("order"), seq.read("mask"), seq.read("targets")
    check_sequence_rows(order, mask, targets, 0, feats.n, seq.path)
    data = SequenceData(order, mask, targets, feats.labels)
    if labels is not None:  # targets follow the labels given now, not those cf-seq saw
        data.targets = make_targets(data.order, data.mask, feats.labels)
    return seq, feats, data


def _calibrated(decoders: tuple[str, ...]) -> tuple[str, ...]:
    """The decoders calibrated for --decoders: those asked, and the guard's (the jury
    decodes with it), in DECODERS' order."""
    return tuple(d for d in DECODERS if d in decoders or d == GUARD_DECODER)


def _distractors(spec, feats, rep) -> np.ndarray | None:
    """The --distractors features (unit rows), checked against the labelled ones."""
    if spec is None:
        return None
    crowd = load_features(spec, reporter=rep)
    if crowd.features.shape[1] != feats.features.shape[1]:
        raise CfError(f"has {crowd.features.shape[1]}-dimensional features, the labelled "
                      f"features {feats.path} have {feats.features.shape[1]}", crowd.path)
    return crowd.features


def _lengths(length, wanted: list[int], data: SequenceData, features, tcfg: TrainConfig, log
             ) -> tuple[dict, list[int]]:
    """(cosine's length choice on D_L, the lengths the model is trained at): for auto,
    every length of ``wanted`` the sequences hold (one, cosine's, where no identity can
    be held out to judge several), else the length given."""
    if length != "auto" and not 2 <= length <= data.order.shape[1]:
        raise click.BadParameter(f"must be 'auto' or a length in [2, {data.order.shape[1]}] "
                                 f"(the sequences' L), got {length}",
                                 param_hint="'-L' / '--length'")
    cosine_sel = choose_data_length(data, features, tcfg.calibration_points, tcfg.seed, log)
    if length != "auto":
        return cosine_sel, [length]
    lengths = model_lengths(data.order.shape[1], wanted)
    if len(lengths) > 1 and split_rows(data, tcfg.val_fraction, tcfg.seed)[2].size == 0:
        return cosine_sel, [cosine_sel["length"]]
    log(f"cf-train: the model is trained at L {', '.join(map(str, lengths))}"
        + (" and judged on held-out identities" if len(lengths) > 1 else "")
        + f" (cosine links: L {cosine_sel['length']})")
    return cosine_sel, lengths


if __name__ == "__main__":
    main()
