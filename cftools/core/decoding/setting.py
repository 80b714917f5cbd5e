"""A decoder with every parameter it runs with: what cf-merge decodes by, records in the
clusters file, and what cf-merge add reads back to decode new points the same way."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .decoders import DEFAULT_INTIMACY_RATIO, DEFAULT_SIZE_STEP, decode
from .singletons import apply_singletons


@dataclass
class DecoderSetting:
    method: str  # one of decoders.DECODERS
    threshold: float
    mode: str  # link mode: reciprocal or directed
    intimacy_ratio: float = DEFAULT_INTIMACY_RATIO
    peaks_tolerance: float = 0.0
    max_size: int | None = None  # components only
    size_step: float = DEFAULT_SIZE_STEP
    singletons: str = "keep"
    attach_threshold: float | None = None

    def decode(self, indices: np.ndarray, weights: np.ndarray, seed: int = 0
               ) -> tuple[np.ndarray, dict]:
        """(labels, singleton counts) of links weighed under ``mode``."""
        labels = decode(self.method, indices, weights, self.threshold, max_size=self.max_size,
                        size_step=self.size_step, intimacy_ratio=self.intimacy_ratio,
                        peaks_tolerance=self.peaks_tolerance, seed=seed)
        return apply_singletons(labels, indices, weights, self.singletons,
                                self.attach_threshold)

    def record(self) -> dict:
        """The clusters file's attributes that say how it was decoded."""
        out: dict = {"method": self.method, "link_mode": self.mode,
                     "threshold": float(self.threshold), "singletons": self.singletons}
        if self.method == "intimacy":
            out["intimacy_ratio"] = float(self.intimacy_ratio)
        if self.method == "peaks":
            out["peaks_tolerance"] = float(self.peaks_tolerance)
        if self.method == "components" and self.max_size:
            out.update(max_size=int(self.max_size), size_step=float(self.size_step))
        if self.singletons == "attach" and self.attach_threshold is not None:
            out["attach_threshold"] = float(self.attach_threshold)
        return out

    @classmethod
    def recorded(cls, attrs: dict, mode: str) -> DecoderSetting:
        """The setting a clusters file was decoded with (``mode``: its link_mode, or the
        default when an older file lacks it)."""
        attach = attrs.get("attach_threshold")
        max_size = attrs.get("max_size")
        return cls(method=str(attrs["method"]), threshold=float(attrs["threshold"]), mode=mode,
                   intimacy_ratio=float(attrs.get("intimacy_ratio", DEFAULT_INTIMACY_RATIO)),
                   peaks_tolerance=float(attrs.get("peaks_tolerance", 0.0)),
                   max_size=None if max_size is None else int(max_size),
                   size_step=float(attrs.get("size_step", DEFAULT_SIZE_STEP)),
                   singletons=str(attrs.get("singletons", "keep")),
                   attach_threshold=None if attach is None else float(attach))
