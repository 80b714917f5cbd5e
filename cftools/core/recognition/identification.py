"""Top-1 identification with distractors: the MegaFace protocol in miniature.

For every identity with at least two images, its first image (in file order) goes into the
gallery and the others are probes. Images of identities seen only once, and any extra
distractor features, join the gallery as distractors. A probe is identified correctly
when its most cosine-similar gallery image is its own identity's gallery image.
Rows labelled -1 (unknown identity) take no part: they could be anyone.
"""

from __future__ import annotations

import numpy as np


def identification_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (gallery rows of identities with probes, probe rows, single-image distractor rows)."""
    labels = np.asarray(labels, dtype=np.int64)
    known = np.flatnonzero(labels >= 0)
    _, first, counts = np.unique(labels[known], return_index=True, return_counts=True)
    first_rows = known[first]
    mates = first_rows[counts >= 2]
    singles = first_rows[counts == 1]
    is_probe = np.zeros(labels.shape[0], dtype=bool)
    is_probe[known] = True
    is_probe[first_rows] = False
    return mates, np.flatnonzero(is_probe), singles


def top1_identification(features: np.ndarray, labels: np.ndarray,
                        distractors: np.ndarray | None = None, *,
                        batch_size: int = 4096) -> dict:
    """Top-1 accuracy by cosine similarity (rows are taken as L2-normalised).

    Returns {top1, probes, gallery, distractors, identities, unknown}."""
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    mates, probes, singles = identification_split(labels)
    extra = (np.zeros((0, features.shape[1]), np.float32) if distractors is None
             else np.asarray(distractors, dtype=np.float32))
    if extra.shape[1] != features.shape[1]:
        raise ValueError(f"distractors have dimension {extra.shape[1]}, features {features.shape[1]}")
    gallery = np.concatenate([features[mates], features[singles], extra])
    gallery_labels = np.concatenate([labels[mates], np.full(len(singles) + len(extra), -1)])
    correct = 0
    for start in range(0, len(probes), batch_size):
        rows = probes[start:start + batch_size]
        best = np.argmax(features[rows] @ gallery.T, axis=1) if len(gallery) else np.zeros(0, int)
        correct += int((gallery_labels[best] == labels[rows]).sum())
    return {
        "top1": correct / len(probes) if len(probes) else float("nan"),
        "probes": int(len(probes)),
        "gallery": int(len(gallery)),
        "distractors": int(len(singles) + len(extra)),
        "identities": int(len(mates)),
        "unknown": int((labels < 0).sum()),
    }


def top1_leave_one_out(features: np.ndarray, labels: np.ndarray, *,
                       batch_size: int = 4096) -> dict:
    """Top-1 with every labelled image as a probe: each row of an identity with two or more
    images is identified by its most cosine-similar other labelled row (all the rest form
    the gallery, single-image identities as distractors). No gallery image is chosen, so
    the score does not hinge on which image happens to come first, and every image is a
    probe: on a small test part it varies less than the one-gallery-image protocol.
    Returns {top1, probes}."""
    x, y = _labelled_rows(features, labels)
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    probes = np.flatnonzero(counts[inverse] >= 2)
    correct = 0
    for start in range(0, len(probes), batch_size):
        rows = probes[start:start + batch_size]
        sims = x[rows] @ x.T
        sims[np.arange(len(rows)), rows] = -np.inf  # not itself
        correct += int((y[np.argmax(sims, axis=1)] == y[rows]).sum())
    return {"top1": correct / len(probes) if len(probes) else float("nan"),
            "probes": int(len(probes))}


def top1_expected(features: np.ndarray, labels: np.ndarray, *, batch_size: int = 1024) -> dict:
    """The one-gallery-image protocol's top-1, averaged exactly over every choice of the
    gallery images instead of taking each identity's first one: each identity with two or
    more images puts one image, drawn uniformly, into the gallery (single-image identities
    are always there as distractors); every other image is a probe. For probe p of identity
    c, P(correct) = mean over c's other images g of prod over the other identities j of
    P(j's drawn image is less similar to p than g) (ties count as wrong); p is a probe in
    (n_c - 1) / n_c of the draws. The weighted mean over all images is the expected top-1
    under a random gallery: the protocol's own score
    without the luck of which image is first, so on a small test part it varies less.
    Returns {top1, probes}."""
    x, y = _labelled_rows(features, labels)
    ids, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    multi = counts >= 2
    order = np.argsort(inverse, kind="stable")
    bounds = np.r_[0, np.cumsum(counts)]
    probes = np.flatnonzero(multi[inverse])
    single_rows = np.flatnonzero(~multi[inverse])  # always in the gallery, as distractors
    total = 0.0
    for start in range(0, len(probes), batch_size):
        rows = probes[start:start + batch_size]
        sims = x[rows] @ x.T
        for k, p in enumerate(rows):
            s = sims[k]
            c = inverse[p]
            mine = order[bounds[c]:bounds[c + 1]]
            g = s[mine[mine != p]]  # the candidates for c's gallery image
            logp = np.zeros(g.size)
            if single_rows.size:
                logp = np.where(g > s[single_rows].max(), logp, -np.inf)
            for j in np.flatnonzero(multi):
                if j == c:
                    continue
                sj = np.sort(s[order[bounds[j]:bounds[j + 1]]])
                below = np.searchsorted(sj, g, side="left") / sj.size  # P(s_j < g)
                with np.errstate(divide="ignore"):
                    logp = logp + np.log(below)
            # p is a probe in (n_c - 1) / n_c of the draws
            total += float(np.exp(logp).mean()) * (counts[c] - 1) / counts[c]
    n_probes = int((counts[multi] - 1).sum())  # probes in every draw
    return {"top1": float(total / n_probes) if n_probes else float("nan"), "probes": n_probes}


# ----------------------------------------------------------------------------- verification

DEFAULT_FARS = (1e-3, 1e-2)


def verification(features: np.ndarray, labels: np.ndarray, fars=DEFAULT_FARS, *,
                 batch_size: int = 2048) -> dict:
    """Verification over all pairs of labelled rows: TAR at each FAR, and the ROC AUC.

    Every unordered pair of two different rows (labels >= 0) is a trial: genuine when both
    share an identity, impostor otherwise; its score is the cosine of the two rows. For a
    false accept rate f the threshold is the smallest score that at most f of the impostor
    pairs exceed (strictly), and TAR is the share of genuine pairs above it. A FAR below
    1 / (impostor pairs) cannot be resolved: its TAR is None. AUC counts ties as half.
    Returns {tar_at_far: {str(f): TAR or None}, auc, genuine_pairs, impostor_pairs}."""
    x, y = _labelled_rows(features, labels)
    genuine_parts, impostor_parts = [], []
    for start in range(0, len(y), batch_size):
        block = x[start:start + batch_size] @ x.T
        for i in range(block.shape[0]):
            r = start + i
            s = block[i, r + 1:]
            same = y[r + 1:] == y[r]
            genuine_parts.append(s[same])
            impostor_parts.append(s[~same])
    genuine = np.sort(np.concatenate(genuine_parts)) if genuine_parts else np.zeros(0, np.float32)
    impostor = (np.sort(np.concatenate(impostor_parts)) if impostor_parts
                else np.zeros(0, np.float32))
    tar: dict = {}
    out: dict = {"tar_at_far": tar, "auc": None, "genuine_pairs": int(genuine.size),
                 "impostor_pairs": int(impostor.size)}
    if genuine.size == 0 or impostor.size == 0:
        out["tar_at_far"] = {_far_key(f): None for f in fars}
        return out
    for f in fars:
        allowed = int(np.floor(f * impostor.size + 1e-9))  # impostor pairs allowed above
        if allowed < 1:
            tar[_far_key(f)] = None
            continue
        threshold = impostor[impostor.size - allowed - 1]  # exactly `allowed` above (ties aside)
        tar[_far_key(f)] = float((genuine > threshold).mean())
    # AUC = P(genuine score > impostor score) + half the ties
    below = np.searchsorted(impostor, genuine, side="left")
    below_eq = np.searchsorted(impostor, genuine, side="right")
    out["auc"] = float((below + below_eq).sum() / (2.0 * genuine.size * impostor.size))
    return out


def _far_key(f: float) -> str:
    return f"{f:g}"


def _labelled_rows(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) of the rows with a known identity (label >= 0)."""
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    known = np.flatnonzero(labels >= 0)
    return features[known], labels[known]


def recognition(features: np.ndarray, labels: np.ndarray, fars=DEFAULT_FARS,
                distractors: np.ndarray | None = None) -> dict:
    """Top-1 identification (gallery: the first image of each identity, plus any
    ``distractors``), leave-one-out and expected top-1, and verification (TAR at each FAR
    over all pairs) of one labelled features set: the recognition score of a backbone on
    identities it never saw. Returns {top1, probes, ..., leave_one_out, expected,
    verification}."""
    result = top1_identification(features, labels, distractors)
    result["leave_one_out"] = top1_leave_one_out(features, labels)
    result["expected"] = top1_expected(features, labels)
    result["verification"] = verification(features, labels, fars)
    return result
