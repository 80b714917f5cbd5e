"""cf-train's checkpoints: written atomically after every epoch, holding model,
optimizer, scheduler, scaler, RNG states and epoch, so that a resumed run reaches the
same weights as an uninterrupted one (on CPU, same seed). Only tensors, numbers, strings,
lists and dicts are saved: loadable with ``weights_only=True``, never unpickling code."""

from __future__ import annotations

import random
from dataclasses import asdict

import numpy as np
import torch

from ...errors import CfError
from ...formats.writing import atomic_path


def rng_states() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [name, torch.from_numpy(np.asarray(keys).astype(np.int64)), pos, has_gauss,
                      cached],
            "python": list(random.getstate()[1])}


def set_rng_states(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    name, keys, pos, has_gauss, cached = s["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate((3, tuple(s["python"]), None))


def resumable_settings(cfg) -> dict:
    """The training options a resume must share with its checkpoint: all that shape the
    optimisation (not when to stop early, nor how many rows calibrate afterwards)."""
    return {k: v for k, v in asdict(cfg).items()
            if k not in ("stop_after_epoch", "calibration_points", "patience", "decoders")}


def check_resumable(ck: dict, model_config: dict, split: list, cfg, path) -> None:
    """Refuse a checkpoint made with another model config, identity split or training
    options: the weights would come from one run and the model record from another."""
    if ck.get("model_config") != model_config or ck.get("split") != split:
        raise CfError("checkpoint was made with another model config or data", path)
    saved = ck.get("train_config", {})
    changed = sorted(k for k, v in resumable_settings(cfg).items() if saved.get(k) != v)
    if changed:
        raise CfError("checkpoint was made with other training options ("
                      + ", ".join("--" + k.replace("_", "-") for k in changed)
                      + "); rerun without --resume or with the same options", path)


def save_checkpoint(path, state: dict) -> None:
    """torch.save to a temporary name, then rename: a kill never leaves half a checkpoint.
    Only tensors, numbers, strings, lists and dicts: loadable with weights_only=True."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CfError("no such checkpoint", path) from None
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is one error
        raise CfError(f"not a readable cf-train checkpoint ({type(err).__name__})", path) from err
