"""The JSON files cftools reads back from cf-eval and cf-train (sweep --json, knn --json,
eval.json and recognition.json, a model's training summary): read with
inputs.read_json, then checked here for the shape the code that uses them expects, so a
wrong file is one line naming it, not an internal error deep in a plot."""

from __future__ import annotations

from pathlib import Path

from ..errors import CfError
from .inputs import read_json


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numbers(v, *, empty: bool = False) -> bool:
    return isinstance(v, list) and (empty or bool(v)) and all(
        x is None or _number(x) for x in v)


def read_sweep_json(path) -> dict:
    """The output of cf-eval sweep --json: 'rows' of {threshold, pairwise_f, bcubed_f}."""
    doc = read_json(path, "cf-eval sweep --json output")
    rows = doc.get("rows")
    if not isinstance(rows, list) or not rows or not all(
            isinstance(r, dict) and all(_number(r.get(k)) for k in
                                        ("threshold", "pairwise_f", "bcubed_f"))
            for r in rows):
        raise CfError("not the output of cf-eval sweep --json: 'rows' must be a list of "
                      "{threshold, pairwise_f, bcubed_f} numbers", path)
    if doc.get("calibrated_threshold") is not None and not _number(doc["calibrated_threshold"]):
        raise CfError("'calibrated_threshold' must be a number or null", path)
    return doc


def read_knn_json(path) -> dict:
    """The output of cf-eval knn --json: precision_at_rank and recall_at_rank (and
    same_at_rank), lists of numbers of one length."""
    doc = read_json(path, "cf-eval knn --json output")
    lists = [doc.get(k) for k in ("precision_at_rank", "recall_at_rank")]
    same = doc.get("same_at_rank")
    if not all(_numbers(v) for v in lists) or len({len(v) for v in lists}) != 1 or \
            (same is not None and not (_numbers(same) and len(same) == len(lists[0]))):
        raise CfError("not the output of cf-eval knn --json: 'precision_at_rank' and "
                      "'recall_at_rank' must be lists of numbers of one length", path)
    return doc


def check_training(training, path) -> None:
    """A model's training summary as its plot reads it: 'history' a list of {epoch, loss}
    numbers (val_roc_auc a number or null), 'validation' an object."""
    def wrong(what):
        raise CfError(f"attribute 'training': {what}; not a model cf-train wrote", path)

    if not isinstance(training, dict):
        wrong("not a JSON object")
    history = training.get("history") or []
    if not isinstance(history, list) or not all(
            isinstance(h, dict) and _number(h.get("epoch")) and _number(h.get("loss")) and
            (h.get("val_roc_auc") is None or _number(h["val_roc_auc"])) for h in history):
        wrong("'history' must be a list of {epoch, loss} numbers")
    validation = training.get("validation") or {}
    if not isinstance(validation, dict) or not all(
            isinstance(validation.get(k) or {}, dict) and
            ((validation.get(k) or {}).get("roc_auc") is None or
             _number((validation.get(k) or {})["roc_auc"])) for k in ("cosine", "model")):
        wrong("'validation' must hold {cosine, model} objects with a number roc_auc")


_NUMBER_KEYS = ("pairwise_f", "bcubed_f", "top1", "auc", "probes")
_OBJECT_KEYS = ("recognition", "expected", "leave_one_out", "verification")


def check_round_json(doc: dict, path: Path, depth: int = 0) -> None:
    """eval.json and recognition.json as cf-eval writes them (cf-eval report reads
    them): figures numbers or null, 'recognition', 'expected', 'leave_one_out' and
    'verification' objects, 'tar_at_far' an object of numbers."""
    def wrong(key, want):
        raise CfError(f"'{key}' must be {want}, got {type(doc[key]).__name__}; not a file "
                      "cf-eval wrote (remove it and rerun make)", path)

    for key in _NUMBER_KEYS:
        if doc.get(key) is not None and not _number(doc[key]):
            wrong(key, "a number")
    for key in _OBJECT_KEYS:
        if doc.get(key) is not None:
            if not isinstance(doc[key], dict):
                wrong(key, "an object")
            if depth < 3:
                check_round_json(doc[key], path, depth + 1)
    tar = doc.get("tar_at_far")
    if tar is not None and (not isinstance(tar, dict) or
                            not all(v is None or _number(v) for v in tar.values())):
        wrong("tar_at_far", "an object of rate -> number")
