"""What the cf-eval subcommands share: reading the truth, checking lengths, the JSON on
stdout and percentages in tables."""

from __future__ import annotations

import json

import click

from ...errors import CfError
from ...formats.artifacts import open_artifact
from ...formats.features import load_labels, split_spec
from ...formats.schema import HDF5_SUFFIXES


def read_truth(spec: str):
    """Truth labels, and (kind, id) when they come from a cftools file (for source checks)."""
    labels = load_labels(spec)
    path, inner = split_spec(spec)
    source = None
    if inner is None and path.suffix.lower() in HDF5_SUFFIXES:
        with open_artifact(path, ("features", "clusters")) as art:
            source = (art.kind, art.id)
    if not (labels != -1).any():
        raise CfError("no point has a known truth label (all are -1)", spec)
    return labels, source


def same_length(a_spec, a_n: int, b_spec, b_n: int, what: str) -> None:
    if a_n != b_n:
        raise CfError(f"has {a_n} {what} but the truth {b_spec} has {b_n} labels", a_spec)


def prog() -> str:
    ctx = click.get_current_context(silent=True)
    return ctx.find_root().info_name if ctx else "cf-eval"


def emit_json(result: dict) -> None:
    click.echo(json.dumps(result, indent=2, allow_nan=False))


def pct(x: float) -> str:
    return f"{100.0 * x:.2f}"
