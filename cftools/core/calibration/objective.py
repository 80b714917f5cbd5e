"""What calibration maximises, and the one best-F search over scored pairs.

Calibration never sees the set being clustered: it is given labelled data only (D_L or a
held-out part of it). Its objective is the mean of the two F the field reports:

- pairwise F with every identity weighed as if it had at most ``IDENTITY_CAP`` points, so
  that one giant identity of D_L cannot decide a threshold alone (pairwise F counts pairs:
  one identity of 500 images outweighs 400 of 5);
- BCubed F, which weighs every image equally and so counts the points a threshold leaves
  split off their identity. Pairwise F alone barely sees them: where D_U's links are less
  sure than D_L's (a backbone trained on D_L's own identities), a threshold chosen by it
  alone sits above D_U's best and leaves many of D_U's points alone.

Training draws at most ``IDENTITY_CAP`` centres of an identity per epoch for the reason
of the cap.
"""

from __future__ import annotations

import numpy as np

from ..metrics import bcubed_scores, capped_pairwise_f

IDENTITY_CAP = 30  # identities weigh as if they had at most this many points


def calibration_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """The mean of pairwise F (identities capped at IDENTITY_CAP points: plain pairwise F
    where no identity is larger) and BCubed F of ``pred`` against ``truth``; points of
    unknown truth (-1) are not scored (1.0 when none is known)."""
    truth = np.asarray(truth)
    if not (truth >= 0).any():
        return 1.0
    return 0.5 * (capped_pairwise_f(pred, truth, IDENTITY_CAP)
                  + bcubed_scores(pred, truth)["bcubed_f"])


def best_f1_cut(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, int] | None:
    """The cut of pairs by score with the highest F1 as a same-identity classifier: the
    scores sorted falling (in their own dtype) and the index i such that keeping the
    pairs of score >= s[i] scores best. Cuts fall only between distinct scores; among
    equal F1 the highest cut wins. None when no pair is positive."""
    truth = np.asarray(truth).astype(bool)
    if not truth.any():
        return None
    scores = np.asarray(scores)
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    tp = np.cumsum(truth[order])
    claimed = np.arange(1, s.size + 1)
    last = np.r_[s[1:] != s[:-1], True]  # cut only between distinct scores
    f1 = np.where(last, 2 * tp / (claimed + truth.sum()), -1.0)
    return s, int(np.argmax(f1))


def best_f1_threshold(scores: np.ndarray, truth: np.ndarray) -> float:
    """The score threshold (links are score >= t) with the highest F1 on these pairs,
    placed midway to the next lower score so that it is not glued to one sample
    (0.5 when no pair is positive)."""
    cut = best_f1_cut(np.asarray(scores, dtype=np.float64), truth)
    if cut is None:
        return 0.5
    s, i = cut
    return float(s[i] if i + 1 >= s.size else (s[i] + s[i + 1]) / 2)


def link_threshold(indices: np.ndarray, probabilities: np.ndarray, labels) -> float:
    """The link probability that maximises the F1 of the links as a same-identity
    classifier, over valid, non-self links whose two ends have known labels; the cut's
    own value, so that it is one of the links' weights (the median weight when no link
    joins one identity)."""
    labels = np.asarray(labels)
    n = indices.shape[0]
    rows = np.broadcast_to(np.arange(n)[:, None], indices.shape)
    valid = (indices >= 0) & (indices != rows)
    i, j = rows[valid], indices[valid]
    known = (labels[i] >= 0) & (labels[j] >= 0)
    p = probabilities[valid][known]
    cut = best_f1_cut(p, (labels[i] == labels[j])[known]) if p.size else None
    if cut is None:
        return float(np.median(p)) if p.size else 0.5
    s, best = cut
    return float(s[best])
