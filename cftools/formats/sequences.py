"""The sequences format check (cf-seq's output, read by cf-train and cf-link): streamed
by row blocks, so a file made elsewhere cannot pass for one."""

from __future__ import annotations

import numpy as np

from ..errors import CfError
from .artifacts import Artifact, row_blocks


def check_sequence_rows(order: np.ndarray, mask: np.ndarray, targets: np.ndarray | None,
                        start: int, n_points: int, path) -> None:
    """Refuse rows ``start``.. of a sequences file that break its format: column 0 not the
    row's own point (the centre), ids outside [0, n_points), the centre masked, targets
    other than -1, 0 and 1."""
    rows = np.arange(start, start + order.shape[0])
    bad = order[:, 0] != rows
    if bad.any():
        r = int(np.argmax(bad))
        raise CfError(f"row {start + r} of dataset 'order' starts with {int(order[r, 0])}, not "
                      "its own point: column 0 must be the centre (made by cf-seq?)", path)
    bad = (order < 0) | (order >= n_points)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise CfError(f"dataset 'order' holds id {int(order[r, c])} at row {start + r}, "
                      f"outside [0, {n_points})", path)
    if not mask[:, 0].all():
        r = int(np.argmin(mask[:, 0]))
        raise CfError(f"row {start + r} of dataset 'mask' masks the centre", path)
    if targets is not None:
        bad = (targets < -1) | (targets > 1)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise CfError(f"dataset 'targets' holds {int(targets[r, c])} at row {start + r}: "
                          "targets are 1 (same identity), 0 (not) or -1 (unknown)", path)


def check_sequences(art: Artifact, n_points: int) -> None:
    """Stream a sequences artifact through check_sequence_rows."""
    for start, stop in row_blocks(art["order"]):
        rows = slice(start, stop)
        targets = art.read("targets", rows) if "targets" in art else None
        check_sequence_rows(art.read("order", rows), art.read("mask", rows), targets, start,
                            n_points, art.path)
