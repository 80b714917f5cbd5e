"""The thresholds attribute of models and links: calibrated values by key.

A thresholds dict (JSON in a model's and a links file's ``thresholds`` attribute) holds:

- ``link``: the link classifier's threshold (held-out identities);
- per decoder, under reciprocal link weights: ``<decoder>`` (its threshold),
  ``intimacy_ratio`` and ``peaks_tolerance`` (the decoders' second parameters);
- the same under directed link weights, prefixed: ``directed_<name>``;
- ``link_mode_<decoder>``: the link mode calibration found better for that decoder;
- ``attach``: the least link weight the attach singleton policy joins by (optional);
- ``pseudo_<decoder>``: the stricter threshold the next round's pseudo-labels are cut at
  (cf-train --pseudo-threshold; cf-merge --pseudo), in the decoder's calibrated link mode.

This module is the one place that builds or reads these keys.
"""

from __future__ import annotations

import math

LINK_MODES = ("reciprocal", "directed")


def threshold_key(name: str, mode: str = "reciprocal") -> str:
    """Key of a calibrated value: reciprocal values under their plain name ("infomap",
    "intimacy_ratio"), directed ones prefixed ("directed_infomap")."""
    return name if mode == "reciprocal" else f"{mode}_{name}"


def pseudo_key(decoder: str) -> str:
    """Key of the threshold the next round's pseudo-labels are cut at."""
    return f"pseudo_{decoder}"


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
    falling back to "link" (the link classifier's threshold) where no decoder was calibrated."""
    key = resolved_key(method, thresholds, mode)
    return None if key is None else float(thresholds[key])  # type: ignore[index]


def resolved_key(method: str, thresholds: dict | None, mode: str = "reciprocal") -> str | None:
    """The key resolve_threshold reads its value from, or None. "link" stands in only
    where no decoder was calibrated: thresholds calibrated for some decoders (cf-train
    --decoders) say nothing of the others."""
    if not thresholds:
        return None
    calibrated = any(str(k).startswith("link_mode_") for k in thresholds)
    for key in (threshold_key(method, mode),) + (() if calibrated else ("link",)):
        value = thresholds.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return key
    return None


def calibrated_value(thresholds: dict | None, name: str, mode: str) -> float | None:
    """A decoder's second parameter ("intimacy_ratio", "peaks_tolerance") under ``mode``."""
    value = (thresholds or {}).get(threshold_key(name, mode))
    return None if value is None else float(value)


def check_thresholds(thresholds: dict, low: float = 0.0) -> None:
    """Raise ValueError, naming the key, unless every value of a thresholds dict is what
    its key says: ``link_mode_*`` a link mode; ``intimacy_ratio`` a number in [0, 1];
    ``peaks_tolerance`` a finite number >= 0; every other key (thresholds: "link", the
    decoders', "attach", directed_ ones) a number in [``low``, 1] (``low`` -1 for cosine
    links, 0 for probabilities). A bad value is never replaced by another key's."""
    for key, value in thresholds.items():
        name = str(key)
        if name.startswith("link_mode_"):
            if value not in LINK_MODES:
                raise ValueError(f"thresholds[{name!r}] is {value!r}, expected one of "
                                 f"{', '.join(LINK_MODES)}")
            continue
        base = name[len("directed_"):] if name.startswith("directed_") else name
        lo, hi = (0.0, 1.0) if base == "intimacy_ratio" else \
            (0.0, math.inf) if base == "peaks_tolerance" else (low, 1.0)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or not lo <= value <= hi:
            where = f"in [{lo:g}, {hi:g}]" if math.isfinite(hi) else f">= {lo:g}"
            raise ValueError(f"thresholds[{name!r}] is {value!r}, expected a number {where}")


def check_model_thresholds(thresholds, training) -> None:
    """A model's thresholds (probabilities: [0, 1]) and its training summary's
    cosine_thresholds ([-1, 1]): ValueError naming the attribute and key unless each is a
    JSON object of values check_thresholds accepts."""
    cosine = training.get("cosine_thresholds") if isinstance(training, dict) else None
    for what, values, low in (("thresholds", thresholds, 0.0),
                              ("training's cosine_thresholds", cosine, -1.0)):
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ValueError(f"attribute {what} must be a JSON object")
        try:
            check_thresholds(values, low)
        except ValueError as err:
            raise ValueError(f"attribute {what}: {err}") from None
