"""The guard: is the model's linking better than cosine's on identities it never saw?

The model's links (at the model's own length) and cosine links (at cosine's), each
decoded with its own calibrated thresholds inside all of D_L's links (with cf-train
--distractors, among unlabelled points searched together with them), are scored on the
held-out identities by the jury (calibration.jury). The verdict is recorded in the model
(its ``training`` attribute, key ``guard``, with both lengths); cf-link --method auto uses
the winner at the winner's length, and a user who links with a model that lost is told so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ...errors import CfError
from .jury import JURY_DECODER, Contender, HeldOut, decode_contender, mean_f, resample_lead

GUARD_DECODER = JURY_DECODER  # the decoder the guard (and the length choice) scores with
GUARD_RESAMPLES = 200  # random halves of the held-out identities the guard scores
GUARD_CONFIDENCE = 0.9  # the share of them the model must lead to be used
# Fewer held-out identities than this are too few for a verdict for the model, however
# far it leads among them (bench/results/code-choices.md): cosine links are kept
GUARD_MIN_IDENTITIES = 50
WINNERS = ("model", "cosine")


@dataclass(frozen=True)
class GuardVerdict:
    """What the guard found; recorded in the model's training summary under "guard"."""

    decoder: str
    points: int  # rows decoded (all of D_L's calibration rows)
    held_out: int  # held-out points scored among them
    model: dict  # {"pairwise_f", "bcubed_f"} of the model's links on the held-out identities
    cosine: dict  # the same of cosine links
    resamples: int
    model_ahead: float  # share of the resamples the model led on
    winner: str  # "model" or "cosine"
    model_length: int  # the length each contender links at
    cosine_length: int
    identities: int = 0  # held-out identities the verdict rests on
    distractors: int = 0  # unlabelled rows among ``points`` (cf-train --distractors)

    def as_dict(self) -> dict:
        return asdict(self)


def recorded_winner(training: dict) -> str:
    """The guard's verdict recorded in a model's ``training`` attribute: "model" or
    "cosine" ("model" where no guard ran: a model trained without held-out identities)."""
    winner = (training.get("guard") or {}).get("winner", "model")
    return winner if winner in WINNERS else "model"


def recorded_cosine_length(training: dict, model_length: int) -> int:
    """The length cosine links are written at with this model: the one cf-train chose for
    them and calibrated their thresholds at (the guard's record, or the length choice's
    where no guard ran), else the model's own (models made before the two were chosen
    apart)."""
    cosine = ((training.get("length_selection") or {}).get("cosine") or {}).get("length")
    return int((training.get("guard") or {}).get("cosine_length") or cosine or model_length)


def links_length(path) -> int:
    """How many neighbours the links of the model file ``path`` read: the longest of the
    model's own length and cosine links' (cf-train chose both on D_L). cf-knn and cf-seq
    --for-model search and cut the unlabelled side to it: neighbours past it are never read."""
    from ...formats.artifacts import open_artifact
    from ...formats.schema import model_subtype
    from ..clusformer.model import ClusformerConfig

    with open_artifact(path, "model") as art:
        if model_subtype(art.json_attr("config")) != "clusformer":
            raise CfError("is not a Clusformer model made by cf-train (--for-model wants one)",
                          art.path)
        config = ClusformerConfig.from_json(art.attrs["config"], art.path)
        training = art.json_attr("training", {}) or {}
    if not isinstance(training, dict):
        raise CfError("attribute 'training' is not a JSON object; not a model cf-train wrote",
                      path)
    try:
        cosine = recorded_cosine_length(training, config.seq_len)
    except (AttributeError, TypeError, ValueError):
        raise CfError("attribute 'training' records no usable cosine length; not a model "
                      "cf-train wrote", path) from None
    return max(config.seq_len, cosine)


def guard(model: Contender, cosine: Contender, labels: np.ndarray, held_ids: np.ndarray, *,
          seed: int = 0, resamples: int = GUARD_RESAMPLES,
          min_identities: int | None = None,
          model_pred: np.ndarray | None = None, distractors: int = 0) -> GuardVerdict:
    """Decode each contender's links of all its rows (the same rows, each at its own
    length) and score the held-out identities ``held_ids`` (the mean of pairwise and
    BCubed F; ``labels`` of all points). The model wins only when it is ahead on the
    held-out identities as a whole AND on at least GUARD_CONFIDENCE of ``resamples``
    random halves of them, and only when there are at least ``min_identities`` of them
    (default GUARD_MIN_IDENTITIES): a few dozen held-out identities are a noisy jury (a
    lead there has turned into a loss on D_U: bench/results/code-choices.md), and a model
    that loses costs more than cosine left in place. ``model_pred``: the model's clusters,
    where already decoded (the length choice decodes them). ``distractors``: how many of
    the rows are unlabelled points crowding the jury (each its own identity in
    ``labels``), recorded in the verdict."""
    if not np.array_equal(model.order[:, 0], cosine.order[:, 0]):
        raise ValueError("the guard's contenders must link the same rows")
    if min_identities is None:
        min_identities = GUARD_MIN_IDENTITIES
    n_points = labels.shape[0]
    truth = labels[model.order[:, 0]]
    jury = HeldOut(truth, held_ids)
    preds = {"model": model_pred if model_pred is not None else
             decode_contender(model, n_points, seed),
             "cosine": decode_contender(cosine, n_points, seed)}
    scores = {k: jury.scores(preds[k]) for k in WINNERS}
    model_ahead = resample_lead(jury, preds["model"], preds["cosine"], resamples=resamples,
                                seed=seed)
    winner = "model" if (mean_f(scores["model"]) >= mean_f(scores["cosine"])
                         and model_ahead >= GUARD_CONFIDENCE
                         and jury.held_ids.size >= min_identities) else "cosine"
    return GuardVerdict(GUARD_DECODER, int(truth.size), int(jury.held.sum()), scores["model"],
                        scores["cosine"], int(resamples if jury.held_ids.size >= 2 else 0),
                        model_ahead, winner, int(model.order.shape[1]),
                        int(cosine.order.shape[1]), int(jury.held_ids.size), int(distractors))
