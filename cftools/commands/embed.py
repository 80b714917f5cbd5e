"""cf-embed: images -> features, with a ResNet backbone trained by ArcFace.

    cf-embed train  IMAGES -o backbone.h5     train a backbone on labelled images
    cf-embed extract MODEL IMAGES -o feats.h5 embed images with a backbone
    cf-embed demo OUTDIR                      draw the synthetic demo image set
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..cli import (
    CONTEXT_SETTINGS,
    MAX_DIM,
    MAX_WORKERS,
    CfGroup,
    Count,
    FiniteFloat,
    Reporter,
    batch_size_option,
    checkpoint_options,
    common_options,
    device_option,
    seed_option,
)
from ..errors import CfError


def _milestones(ctx, param, value):
    if value is None or not value.strip():
        return []
    try:
        values = [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter("expected epochs separated by commas, e.g. 12,16") from None
    if any(v < 1 for v in values):
        raise click.BadParameter("milestones are epochs >= 1")
    return values


@click.group("cf-embed", cls=CfGroup, context_settings=CONTEXT_SETTINGS)
def main():
    """Turn images into features with a ResNet backbone trained with ArcFace.

    \b
    cf-embed train IMAGES -o MODEL.h5      train a backbone on labelled images
    cf-embed extract MODEL.h5 IMAGES -o FEATURES.h5
                                           embed images (L2-normalised float32)
    cf-embed demo OUTDIR                   draw the synthetic demo image set

    IMAGES is a folder with one sub-folder per identity (searched recursively), a list
    file with one image path per line (optionally PATH<TAB>LABEL), or a cftools features
    file whose 'names' are image paths and 'labels' identities (e.g. pseudo-labels from
    cf-merge labels; label -1 is skipped in training). See man cf-embed.
    """


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("images", type=click.Path(path_type=Path), nargs=-1, required=True)
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True,
              help="Backbone model file to write (HDF5, kind 'model').")
@click.option("--depth", type=click.Choice(["18", "34", "50"]), default="18", show_default=True,
              help="ResNet depth: 18 and 34 use basic blocks, 50 bottlenecks.")
@click.option("--width", type=Count(min=1, max=1024), default=64, show_default=True,
              help="Channels of the first stage (then x2, x4, x8); 16 is a tiny CPU model.")
@click.option("--dim", type=Count(min=1, max=MAX_DIM), default=256, show_default=True,
              help="Dimension of the embedding.")
@click.option("--image-size", type=Count(min=8, max=4096), default=112, show_default=True,
              help="Images are resized to this square: 112 for faces, 224 for landmarks.")
@click.option("--epochs", type=Count(min=1), default=20, show_default=True)
@click.option("--steps", type=Count(min=1), default=None,
              help="Train for exactly this many optimisation steps, with the learning-rate "
                   "schedule of an --epochs run laid out on them [default: --epochs epochs].")
@click.option("--match-steps", type=click.Path(path_type=Path), default=None, metavar="IMAGES",
              help="Train for as many steps as --epochs epochs over IMAGES (e.g. round 2's "
                   "retrain.h5) would take at this --batch-size: a reference trained on other "
                   "data for the same number of steps.")
@click.option("--init", "init_model", type=click.Path(path_type=Path), default=None,
              metavar="MODEL",
              help="Fine-tune this backbone (cf-embed train's output, same --depth, --width, "
                   "--dim, --image-size) instead of starting from random weights; the ArcFace "
                   "head starts at each class's mean embedding under it.")
@batch_size_option(128)
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=0.1, show_default=True,
              help="Peak learning rate of SGD (momentum 0.9).")
@click.option("--weight-decay", type=FiniteFloat(min=0), default=5e-4, show_default=True)
@click.option("--milestones", callback=_milestones, default="", metavar="E1,E2,...",
              help="Epochs after which the learning rate is multiplied by --gamma "
                   "[default: 60% and 85% of --epochs].")
@click.option("--gamma", type=FiniteFloat(min=0, min_open=True), default=0.1, show_default=True)
@click.option("--warmup", "warmup_epochs", type=FiniteFloat(min=0), default=1.0,
              show_default=True, help="Epochs of linear learning-rate warm-up.")
@click.option("--scale", type=FiniteFloat(min=0, min_open=True), default=64.0,
              show_default=True, help="ArcFace scale s.")
@click.option("--margin", type=FiniteFloat(min=0), default=0.5, show_default=True,
              help="ArcFace additive angular margin m (radians).")
@click.option("--easy-margin", is_flag=True,
              help="Apply the margin only where cos(theta) > 0 (else the reference "
                   "implementation's threshold rule).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto",
              show_default=True,
              help="auto: fp16 autocast on GPU, fp32 on CPU; bf16: bf16 autocast anywhere.")
@click.option("--workers", type=Count(min=0, max=MAX_WORKERS), default=2, show_default=True,
              help="Image-decoding worker processes.")
@checkpoint_options("OUTPUT.h5.ckpt, beside -o")
@click.option("--keep-checkpoint", is_flag=True, help="Keep the checkpoint after success.")
@click.option("--stop-after-epoch", type=Count(min=1), default=None, hidden=True)
@click.option("--max-warnings", type=Count(min=0), default=20, show_default=True,
              help="Unreadable images listed one by one before only counting them.")
@device_option
@seed_option
@common_options
def train(images, out, depth, width, dim, image_size, epochs, steps, match_steps, init_model,
          batch_size, lr,
          weight_decay,
          milestones, gamma, warmup_epochs, scale, margin, easy_margin, precision, workers,
          checkpoint, resume, keep_checkpoint, stop_after_epoch, max_warnings, device, seed,
          quiet):
    """Train a backbone on labelled IMAGES (from scratch, or from --init) and write it to OUTPUT.

    Several IMAGES are trained on as one set, each in a label space of its own (e.g.
    D_L's folder and D_U's folder with its true identities: the round's upper bound).

    A ResNet whose pooling and classifier are replaced by a linear DIM-d embedding,
    trained with an ArcFace head (s=64, m=0.5), SGD with momentum 0.9, weight decay 5e-4,
    step decay at --milestones and horizontal flips. Unreadable images are skipped with a
    warning. A checkpoint is saved atomically after every epoch; --resume continues an
    interrupted run. Run under torchrun for several processes (DDP; gloo on CPU, nccl on
    GPU). The backbone is saved as weights only: loading it never runs code.
    """
    from ..core.recognition.backbone import (
        BackboneConfig,
        count_parameters,
        model_summary,
    )
    from ..core.recognition.training import TrainConfig, train_backbone
    from ..core.runtime.device import torch_device
    from ..core.runtime.memory import keep_freed_memory
    from ..data.images import BadImages, check_trainable, combine, open_images
    from ..formats.inputs import check_distinct_inputs
    from ..formats.writing import check_hdf5_name, check_output_path

    report = Reporter(quiet or not _is_main_process())  # under torchrun, rank 0 talks
    if steps is not None and match_steps is not None:
        raise click.UsageError("give --steps or --match-steps, not both")
    roles = {f"IMAGES ({i + 1} of {len(images)})" if len(images) > 1 else "IMAGES": x
             for i, x in enumerate(images)}
    check_distinct_inputs(roles)
    image_set = combine([open_images(i, require_labels=True) for i in images])
    check_output_path(check_hdf5_name(out), [*images, match_steps, init_model])
    checkpoint = checkpoint or out.with_name(out.name + ".ckpt")
    check_output_path(checkpoint, [*images, match_steps, out, init_model])
    if match_steps is not None:
        steps = _matched_steps(match_steps, batch_size, epochs, report)
    check_trainable(image_set, image_size)  # not one image of a single identity, nor all broken
    if resume is False and checkpoint.exists() and stop_after_epoch is None:
        report.info(f"overwriting the old checkpoint {checkpoint} (use --resume to continue it)")
    bconf = BackboneConfig(depth=int(depth), width=width, dim=dim, image_size=image_size)
    init, init_art, init_steps = None, None, 0
    if init_model is not None:
        init, bconf, init_art, init_steps = _init(init_model, bconf)
        report.info(f"fine-tuning {init_model} ({init_steps} steps so far)")
    tconf = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                        milestones=milestones, gamma=gamma, warmup_epochs=warmup_epochs,
                        scale=scale, margin=margin, easy_margin=easy_margin, precision=precision,
                        workers=workers, seed=seed, steps=steps)
    if any(m > epochs for m in tconf.milestones):
        raise click.BadParameter("milestones must not exceed --epochs", param_hint="--milestones")
    dev = torch_device(device)
    keep_freed_memory()  # no page-fault storm from per-batch temporaries
    labelled = int((image_set.labels >= 0).sum())
    report.info(f"training {model_summary(bconf)} on {labelled} images of "
                f"{len(set(image_set.labels[image_set.labels >= 0].tolist()))} identities, on {dev}")
    bad = BadImages(report, cap=max_warnings)
    result = train_backbone(image_set.paths, image_set.labels, bconf, tconf, device=dev,
                            checkpoint=checkpoint, resume=resume, stop_after_epoch=stop_after_epoch,
                            reporter=report, bad=bad, source=image_set.source, init=init)
    bad.summary()
    if not result.finished:
        report.info(f"stopped after epoch {stop_after_epoch}; continue with --resume")
        return 0
    if not _is_main_process():
        return 0
    _save(out, result, images, image_set, init_art, init_model, init_steps, len(bad),
          epochs=epochs, scale=scale, margin=margin, easy_margin=easy_margin, seed=seed)
    if not keep_checkpoint:
        checkpoint.unlink(missing_ok=True)
    report.info(f"wrote {out} ({count_parameters(result.model) / 1e6:.2f}M parameters)")
    return 0


def _matched_steps(match_steps, batch_size: int, epochs: int, report) -> int:
    """--match-steps: as many optimisation steps as ``epochs`` epochs over the labelled
    images of another set."""
    from ..core.recognition.training import steps_of
    from ..data.images import open_images

    reference = open_images(match_steps, require_labels=True)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    labelled = int((reference.labels >= 0).sum())
    steps = steps_of(labelled, batch_size, epochs, world)
    report.info(f"{steps} optimisation steps: as many as {epochs} epochs over the {labelled} "
                f"labelled images of {match_steps}")
    return steps


def _save(out, result, images, image_set, init_art, init_model, init_steps: int,
          unreadable: int, **settings) -> None:
    """The backbone file, with the run's settings and history in its config; refused when
    training diverged (a learning rate far too high: NaN weights no command could use)."""
    import torch

    from ..core.recognition.backbone import save_backbone

    if not all(bool(torch.isfinite(t).all()) for t in result.model.state_dict().values()
               if t.is_floating_point()):
        raise CfError("training diverged: the weights hold NaN or Inf; nothing was written "
                      "(lower --lr or --scale)", out)

    inputs = {"images": image_set.artifact if image_set.artifact is not None
              else str(image_set.source)}
    if len(images) > 1:
        inputs = {f"images{i + 1}": str(i_) for i, i_ in enumerate(images)}
    if init_art is not None:
        inputs["init"] = init_art
    run_steps = int(sum(h.get("steps", 0) for h in result.history))
    save_backbone(out, result.model, inputs=inputs, extra={
        "classes": result.classes, "train_images": result.images,
        "epochs": settings["epochs"], "steps": run_steps, "total_steps": init_steps + run_steps,
        "init": str(init_model) if init_model is not None else None,
        "scale": settings["scale"], "margin": settings["margin"],
        "easy_margin": settings["easy_margin"], "seed": settings["seed"],
        "history": result.history, "unreadable_images": unreadable})


def _init(init_model, bconf):
    """(the backbone to fine-tune, its config, its artifact, the steps it has had),
    refused when its shape is not the one asked for."""
    from ..core.recognition.backbone import load_backbone

    init, iconf, init_art = load_backbone(init_model, "cpu")
    differ = [f"--{k.replace('_', '-')} {getattr(iconf, k)}"
              for k in ("depth", "width", "dim", "image_size")
              if getattr(iconf, k) != getattr(bconf, k)]
    if differ:
        raise CfError(f"is a backbone of another shape; train with {', '.join(differ)} to "
                      "fine-tune it", init_model)
    raw = init_art.json_attr("config")
    return init, iconf, init_art, int(raw.get("total_steps") or raw.get("steps") or 0)


def _is_main_process() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True,
              help="Features file to write (HDF5: features, labels, names).")
@batch_size_option(256)
@click.option("--workers", type=Count(min=0, max=MAX_WORKERS), default=2, show_default=True,
              help="Image-decoding worker processes.")
@click.option("--flip-test", is_flag=True,
              help="Embed each image and its mirror image and average the two.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto",
              show_default=True,
              help="auto: fp16 autocast on GPU, fp32 on CPU; bf16: bf16 autocast anywhere.")
@click.option("--max-warnings", type=Count(min=0), default=20, show_default=True,
              help="Unreadable images listed one by one before only counting them.")
@device_option
@common_options
def extract(model, images, out, batch_size, workers, flip_test, precision, max_warnings, device,
            quiet):
    """Embed IMAGES with the backbone MODEL and write a features file.

    The features are L2-normalised float32 rows, one per readable image, with 'labels'
    (the identity sub-folder, or the labels of a features file / list file; -1 when
    unknown) and 'names' (the image paths). Unreadable or corrupt images are listed on
    stderr (up to --max-warnings) and skipped; they never stop the run.
    """
    import numpy as np

    from ..core.recognition.backbone import load_backbone, model_summary
    from ..core.recognition.extraction import extract_features
    from ..core.runtime import sharding
    from ..core.runtime.device import torch_device
    from ..core.runtime.memory import keep_freed_memory
    from ..data.images import BadImages, open_images
    from ..formats.writing import check_hdf5_name, check_output_path

    dev = torch_device(device)
    sh = sharding.join(use_cuda=dev.type == "cuda")  # one process, or one rank of torchrun's
    report = Reporter(quiet or not sh.main)  # under torchrun, rank 0 talks (warnings: all)
    keep_freed_memory()  # no page-fault storm from per-batch temporaries
    backbone, config, model_art = load_backbone(model, dev)
    image_set = open_images(images)
    check_output_path(check_hdf5_name(out), [model, images])
    first, last = sh.rows(len(image_set))  # this rank's images (all of them in one process)
    paths = image_set.paths[first:last]
    report.info(f"embedding {len(image_set)} images with {model_summary(config)} on {dev}"
                + (f", {sh.world} ranks" if sh.active else ""))
    bad = BadImages(report, cap=max_warnings)
    feats, ok = extract_features(backbone, config, paths, batch_size=batch_size,
                                 workers=workers, device=dev, flip_test=flip_test,
                                 precision=precision, reporter=report, bad=bad)
    bad.summary()
    readable, skipped = (int(v) for v in sh.sum([ok.sum(), (~ok).sum()]))
    if not readable:
        raise CfError("no readable images", images)
    names = [p for p, good in zip(paths, ok) if good]
    attrs = {"flip_test": bool(flip_test), "skipped_images": skipped}
    if image_set.label_names:
        attrs["label_names"] = {str(k): v for k, v in image_set.label_names.items()}
    inputs = {"model": model_art,
              "images": image_set.artifact if image_set.artifact is not None else str(image_set.source)}
    labels = image_set.labels[first:last][ok]
    with sharding.ShardedOutput(out, "features", sh, inputs=inputs, attrs=attrs) as w:
        w.create_rows("features", feats.shape, np.float32, data=feats)
        w.create_rows("labels", labels.shape, np.int64, data=labels)
        w.write_strings("names", names)
    sharding.leave(sh)
    report.info(f"wrote {out}: {readable} x {feats.shape[1]} features"
                + (f" ({skipped} unreadable images skipped)" if skipped else ""))
    return 0


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("outdir", type=click.Path(path_type=Path))
@click.option("--identities", type=Count(min=2, max=1_000_000), default=300, show_default=True)
@click.option("--image-size", type=Count(min=8, max=4096), default=64, show_default=True)
@click.option("--labelled-fraction", type=FiniteFloat(0, 1, min_open=True, max_open=True),
              default=0.5, show_default=True,
              help="Fraction of the identities that form the labelled part.")
@click.option("--mean-images", type=FiniteFloat(min=1, max=10_000), default=12.0, show_default=True,
              help="Mean images per identity (counts are long-tailed).")
@click.option("--test-identities", type=Count(min=0, max=1_000_000), default=None,
              help="Identities of the test part (OUTDIR/test), drawn apart from D_L and D_U "
                   "[default: a fifth of --identities, at least 2; 0: none].")
@seed_option
@common_options
def demo(outdir, identities, image_size, labelled_fraction, mean_images, test_identities, seed,
         quiet):
    """Draw the synthetic demo image set into OUTDIR (which must not exist, or be empty).

    Each identity is a random pattern of coloured shapes and Gabor-like blobs; each of
    its images shows it under random rotation, scale, shift, illumination, blur, noise
    and occlusion, with some hard samples and long-tailed counts per identity. The
    identities are split into OUTDIR/labelled/<id>/*.png and OUTDIR/unlabelled/<id>/*.png;
    --test-identities more, in neither part, go to OUTDIR/test/<id>/*.png: the held-out
    identities on which the round scores its backbones' recognition.
    """
    from ..data.demo_images import make_demo

    report = Reporter(quiet)
    summary = make_demo(outdir, identities=identities, image_size=image_size, seed=seed,
                        labelled_fraction=labelled_fraction, mean_images=mean_images,
                        test_identities=test_identities, reporter=report)
    report.info(f"wrote {outdir}: {summary['labelled_images']} labelled images of "
                f"{summary['labelled_identities']} identities, {summary['unlabelled_images']} "
                f"unlabelled images of {summary['unlabelled_identities']} identities, "
                f"{summary['test_images']} test images of {summary['test_identities']} "
                "identities in neither")
    return 0


if __name__ == "__main__":
    main()
