"""After training: the model length the jury prefers, the guard's verdict against cosine
links, and (when asked) the threshold of the next round's pseudo-labels, all recorded in
the kept model's training summary."""

from __future__ import annotations

import numpy as np

from ...formats.thresholds import calibrated_mode, pseudo_key, resolve_threshold
from ..calibration.guard import GUARD_DECODER, GUARD_MIN_IDENTITIES, GuardVerdict, guard
from ..calibration.jury import Contender, HeldOut, decode_contender
from ..calibration.length import choose_model_length
from ..calibration.pseudo import PseudoThreshold, choose_pseudo_threshold
from ..calibration.thresholds import COSINE_MODES, calibration_rows, decoder_thresholds
from .calibrate import crowded_contenders
from .gate import recorded_gate
from .sequences import SequenceData, split_rows
from .training import TrainConfig, TrainResult


def judge(results: dict, data: SequenceData, features, cosine_sel: dict, tcfg: TrainConfig,
          log, crowd: np.ndarray | None = None, pseudo: bool = False) -> TrainResult:
    """The model of the length the jury prefers, with the guard's verdict against cosine
    links at cosine's own length and the cosine thresholds at that length; ``crowd``: the
    --distractors features, among which the guard judges (calibrate.crowded_contenders).
    ``pseudo``: also the pseudo-labels' threshold of the winner's links (calibration.pseudo),
    under the thresholds key pseudo_infomap of the winner's links; measured among the
    distractors, or without ``crowd`` among the labelled set's points of unknown label
    (cf-train requires one or the other)."""
    import torch

    from .inference import cosine_to_centre, predict

    centre_labels = data.labels[data.order[:, 0]]
    _, val_rows, held_ids = split_rows(data, tcfg.val_fraction, tcfg.seed)
    rows = np.union1d(calibration_rows(centre_labels, tcfg.calibration_points, tcfg.seed),
                      val_rows)
    order, mask = data.order[rows], data.mask[rows]
    features_t = torch.from_numpy(features)
    n_cos = int(cosine_sel["length"])
    cos = cosine_to_centre(features_t, order[:, :n_cos], mask[:, :n_cos])
    cos_t = (results[n_cos].summary.get("cosine_thresholds") if n_cos in results else None) or \
        decoder_thresholds(order[:, :n_cos], mask[:, :n_cos], {"cosine": (cos, COSINE_MODES)},
                           data.labels, seed=tcfg.seed, log=log, decoders=tcfg.decoders)["cosine"]
    if held_ids.size == 0:  # nothing to judge with: the one model trained, no guard
        chosen = next(iter(results))
        result = results[chosen]
        result.summary["cosine_thresholds"] = cos_t
        result.summary["length_selection"] = {"length": chosen, "cosine": cosine_sel}
        if pseudo:  # nothing to measure precision on: the clusters' own threshold
            found = unmeasured_pseudo_threshold(result.thresholds, log)
            result.thresholds[pseudo_key(GUARD_DECODER)] = found["threshold"]
            result.summary["pseudo_labels"] = found
        return result
    contenders, preds, scores = {}, {}, {}
    jury = HeldOut(centre_labels[rows], held_ids)
    for n, res in results.items():
        linked = res.calibration_probs  # the same rows, linked by calibration already
        probs = linked[1] if linked is not None and np.array_equal(linked[0], rows) else \
            predict(res.model, features_t, order[:, :n], mask[:, :n])
        contenders[n] = Contender("model", order[:, :n], mask[:, :n], probs, res.thresholds)
        preds[n] = decode_contender(contenders[n], data.labels.shape[0], tcfg.seed)
        scores[n] = jury.scores(preds[n])
    chosen = choose_model_length(scores, log) if len(results) > 1 else next(iter(results))
    result = results[chosen]
    if crowd is None:
        m, c = contenders[chosen], Contender("cosine", order[:, :n_cos], mask[:, :n_cos], cos,
                                             cos_t)
        verdict = guard(m, c, data.labels, held_ids, seed=tcfg.seed, model_pred=preds[chosen])
        labels = data.labels  # its points of unknown label (-1) crowd the jury (cf-train)
    else:
        from ..runtime.precision import autocast_dtype

        model = result.model
        log(f"guard: linking the held-out identities' neighbourhood among the "
            f"{features.shape[0]} labelled and {crowd.shape[0]} distractor points, searched "
            "together (exact kNN)")
        m, c, labels = crowded_contenders(
            model, features, data.labels, crowd, held_ids, (result.thresholds, cos_t),
            (chosen, n_cos), amp=autocast_dtype(next(model.parameters()).device, tcfg.bf16),
            gate=recorded_gate(result.summary, GUARD_DECODER))
        verdict = guard(m, c, labels, held_ids, seed=tcfg.seed,
                        distractors=int((m.order[:, 0] >= features.shape[0]).sum()))
    if pseudo:  # into the thresholds the winner's links will carry (cf-link)
        winner = m if verdict.winner == "model" else c
        found = pseudo_threshold(winner, labels, held_ids, tcfg.seed, log)
        (result.thresholds if winner is m else cos_t)[pseudo_key(GUARD_DECODER)] = \
            found["threshold"]
        result.summary["pseudo_labels"] = found
    log_verdict(verdict, log, crowded=crowd is not None)
    result.summary.update({
        "guard": verdict.as_dict(), "cosine_thresholds": cos_t,
        "length_selection": {"length": chosen, "candidates": sorted(results),
                             "jury": {str(n): s for n, s in scores.items()},
                             "seconds": {str(n): r.summary["seconds"] for n, r in results.items()},
                             "cosine": cosine_sel}})
    return result


def pseudo_threshold(winner: Contender, labels: np.ndarray, held_ids: np.ndarray, seed: int,
                     log) -> dict:
    """The pseudo-labels' threshold on the crowded jury's ``winner`` links, and what the
    jury measured there (PseudoThreshold.as_dict), for the training summary."""
    mode, calibrated = _calibrated(winner.thresholds, winner.name)
    chosen = choose_pseudo_threshold(winner, labels, held_ids, seed=seed, mode=mode,
                                     calibrated=calibrated)
    log(f"pseudo-labels: {winner.name} links cut at {chosen.threshold:.4g} instead of "
        f"{calibrated:.4g} for the next round's labels: pairwise precision "
        f"{chosen.precision:.3f} (recall {chosen.recall:.3f}) on the held-out identities "
        f"among the distractors, against {chosen.precision_at_calibrated:.3f} "
        f"({chosen.recall_at_calibrated:.3f})")
    return chosen.as_dict()


def unmeasured_pseudo_threshold(thresholds: dict, log) -> dict:
    """Where no identity is held out: the pseudo-labels' threshold is the calibrated one."""
    mode, calibrated = _calibrated(thresholds, "model")
    log("pseudo-labels: no identity is held out to measure precision on; the next round's "
        f"labels keep the calibrated threshold {calibrated:.4g}")
    return PseudoThreshold(GUARD_DECODER, mode, calibrated, calibrated).as_dict()


def _calibrated(thresholds: dict, whose: str) -> tuple[str, float]:
    """(link mode, threshold) calibration chose for the guard's decoder in ``thresholds``."""
    mode = calibrated_mode(thresholds, GUARD_DECODER) or "reciprocal"
    calibrated = resolve_threshold(GUARD_DECODER, thresholds, mode)
    if calibrated is None:
        raise ValueError(f"no calibrated {GUARD_DECODER} threshold for the {whose}'s links")
    return mode, calibrated


def log_verdict(verdict: GuardVerdict, log, crowded: bool) -> None:
    few = (f" (fewer than {GUARD_MIN_IDENTITIES} identities: too few to trust the model)"
           if verdict.identities < GUARD_MIN_IDENTITIES else "")
    among = (f"all {verdict.points} labelled rows" if not crowded else
             f"{verdict.points - verdict.distractors} labelled and {verdict.distractors} "
             "distractor rows")
    log("guard: {ids} held-out identities among {among} ({decoder}): "
        "model links (L {ml}) F_P {mp:.4f} F_B {mb:.4f}, cosine links (L {cl}) F_P {cp:.4f} "
        "F_B {cb:.4f}; the model leads on {ahead:.0%} of {n} random halves of these "
        "identities: {w} wins{few}".format(ids=verdict.identities, few=few,
                                           among=among, decoder=verdict.decoder,
                                           ml=verdict.model_length, mp=verdict.model["pairwise_f"],
                                           mb=verdict.model["bcubed_f"], cl=verdict.cosine_length,
                                           cp=verdict.cosine["pairwise_f"],
                                           cb=verdict.cosine["bcubed_f"],
                                           ahead=verdict.model_ahead, n=verdict.resamples,
                                           w=verdict.winner))
