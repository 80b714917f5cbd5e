"""The sequence length L: how many neighbours a point's links reach, chosen on D_L, for
cosine links and for the model apart.

Cosine's length: Infomap over the (directed) cosine links of D_L is calibrated at every
candidate length no longer than the sequences, on the coarse threshold grid alone, and the
best length by the calibration objective is kept; near ties go to the longer length (it
reaches larger identities, which D_U may hold). The decoders' calibration of cosine links
at the chosen length then adds the fine grid to that scan (thresholds._SCANNED): the fine
grids of the other lengths cost a third of the choice and changed it only where the
lengths' scores were within the Infomap seed's noise (bench/studies/length-grid).
Why a choice at all: a fixed L 32 reaches 31 neighbours, and an identity
of hundreds of faces cannot be joined through that few, while where no identity is
large, longer lists only add look-alikes.

The model's length: L 31 by default (one training), or each of the lengths asked for, the
jury (calibration.jury: held-out identities decoded inside all of D_L's links) keeping
the best, near ties going to the shorter (cheaper to link). The length that suits
cosine is not imposed on the model: a model reads a neighbourhood and corrects cosine
inside it, and it can use more neighbours than cosine's threshold can (on omniglot-bg
cosine is best at L 11 and the model at a longer length: bench/results/code-choices.md).
"""

from __future__ import annotations

from .guard import GUARD_DECODER
from .thresholds import COSINE_MODES, calibrate_links_many, local_links

CANDIDATE_LENGTHS = (11, 21, 31, 51, 81)  # the centre and k = 10 ... 80 neighbours
# The length the model is trained at by default: one training. More lengths
# (cf-train --model-lengths) let the jury choose, each a training of its own.
MODEL_LENGTHS = (31,)
LENGTH_TIE = 1e-3  # calibration scores this close are a tie (the objective on a 0-1 scale)


def candidate_lengths(seq_len: int) -> list[int]:
    """The lengths tried for sequences of ``seq_len`` positions: every candidate that
    fits, and ``seq_len`` itself."""
    return sorted({n for n in CANDIDATE_LENGTHS if n < seq_len} | {seq_len})


def choose_length(order, mask, cosine, labels, *, seed: int = 0, log=print) -> dict:
    """The sequence length (and link mode) under which Infomap over cosine links clusters
    these labelled rows best. ``order``/``mask``/``cosine`` are the rows' sequences at
    full length and their cosine to the centre; ``labels`` of all points."""
    lengths = candidate_lengths(order.shape[1])
    centre_labels = labels[order[:, 0]]
    link_sets = [(*local_links(order[:, :n], mask[:, :n], cosine[:, :n], labels.shape[0]),
                  centre_labels, (GUARD_DECODER,), seed, COSINE_MODES) for n in lengths]
    table = {n: scores[GUARD_DECODER]
             for n, (_, scores) in zip(lengths, calibrate_links_many(link_sets, fine=0))}
    best = max(max(s.values()) for s in table.values())
    chosen = max(n for n, s in table.items() if max(s.values()) >= best - LENGTH_TIE)
    log("sequence length from cosine Infomap on the labelled set (coarse grid): " + ", ".join(
        f"L {n}: {max(s.values()):.4f}" for n, s in table.items()) + f" -> L {chosen}")
    return {"length": int(chosen), "candidates": lengths,
            "scores": {str(n): s for n, s in table.items()}}


def model_lengths(seq_len: int, wanted=MODEL_LENGTHS) -> list[int]:
    """The lengths the model is trained at for sequences of ``seq_len`` positions: every
    one of ``wanted`` that fits, else ``seq_len`` alone."""
    return sorted({n for n in wanted if n <= seq_len}) or [seq_len]


def choose_model_length(scores: dict, log=print) -> int:
    """The model's length from the jury's ``scores`` {length: {"pairwise_f", "bcubed_f"}}:
    the best mean of the two, near ties (LENGTH_TIE) to the shorter length."""
    mean = {int(n): (s["pairwise_f"] + s["bcubed_f"]) / 2 for n, s in scores.items()}
    best = max(mean.values())
    chosen = min(n for n, v in mean.items() if v >= best - LENGTH_TIE)
    log("model length from the jury (held-out identities among all of the labelled set): "
        + ", ".join(f"L {n}: F_P {scores[n]['pairwise_f']:.4f} F_B {scores[n]['bcubed_f']:.4f}"
                    for n in sorted(mean)) + f" -> L {chosen}")
    return chosen
