"""The thresholds attribute of models and links: calibrated values by key.

A thresholds dict (JSON in a model's and a links file's ``thresholds`` attribute) holds:

- ``link``: the link classifier's threshold (held-out identities);
- per decoder, under reciprocal link weights: ``<decoder>`` (its threshold),
  ``intimacy_ratio`` and ``peaks_tolerance`` (the decoders' second parameters);
- the same under directed link weights, prefixed: ``directed_<name>``;
- ``link_mode_<decoder>``: the link mode calibration found better for that decoder;
- ``attach``: the least link weight the attach singleton policy joins by (optional).

This module is the one place that builds or reads these keys.
"""

from __future__ import annotations

import math

LINK_MODES = ("reciprocal", "directed")


def threshold_key(name: str, mode: str = "reciprocal") -> str:
    """Key of a calibrated value: reciprocal values under their plain name ("infomap",
    "intimacy_ratio"), directed ones prefixed ("directed_infomap")."""
    return name if mode == "reciprocal" else f"{mode}_{name}"


def link_mode_key(decoder: str) -> str:
    """Key of the link mode calibration chose for ``decoder``."""
    return f"link_mode_{decoder}"


def calibrated_mode(thresholds: dict | None, decoder: str) -> str | None:
    """The link mode calibration chose for ``decoder``, or None."""
    mode = (thresholds or {}).get(link_mode_key(decoder))
    return mode if mode in LINK_MODES else None


def resolve_threshold(method: str, thresholds: dict | None,
                      mode: str = "reciprocal") -> float | None:
    """The calibrated threshold of ``method`` under link ``mode`` from a thresholds dict,
    falling back to "link" (the link classifier's threshold)."""
    key = resolved_key(method, thresholds, mode)
    return None if key is None else float(thresholds[key])  # type: ignore[index]


def resolved_key(method: str, thresholds: dict | None, mode: str = "reciprocal") -> str | None:
    """The key resolve_threshold reads its value from, or None."""
    if not thresholds:
        return None
    for key in (threshold_key(method, mode), "link"):
        value = thresholds.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return key
    return None


def calibrated_value(thresholds: dict | None, name: str, mode: str) -> float | None:
    """A decoder's second parameter ("intimacy_ratio", "peaks_tolerance") under ``mode``."""
    value = (thresholds or {}).get(threshold_key(name, mode))
    return None if value is None else float(value)
