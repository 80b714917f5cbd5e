"""cf-seq: kNN -> sequences (the visual grammar), with per-position targets where labels are known."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from ..cli import CONTEXT_SETTINGS, CfCommand, Count, FiniteFloat, Reporter, common_options
from ..core.calibration.guard import links_length
from ..core.clusformer.grammar import build_sequences
from ..errors import CfError
from ..formats.artifacts import open_artifact, require_same_source, row_blocks
from ..formats.features import load_features, split_spec
from ..formats.writing import (
    check_hdf5_name,
    check_output_path,
    create_rows,
    write_artifact,
)

HELP = """Turn every point's nearest neighbours into a sequence: the point itself first (the
centre), then its neighbours by falling cosine similarity, L positions in all (L <= k).

KNN is a knn file made by cf-knn from FEATURES themselves (its query and base ids must be
the features' id; a knn file made from other features is refused, naming both files). The
centre is put first explicitly, never assumed to be neighbour 0: with duplicate images a
twin may come first.

With --for-model MODEL, L is the length MODEL's links read (the longest of the lengths
cf-train chose on the labelled set, for the model and for cosine links), as cf-knn
--for-model searched it.

Positions are masked, never dropped: a neighbour below --min-sim, or a slot with no
neighbour (approximate kNN may leave some), is masked (mask false; it holds the centre's
own id). When labels are known (the features file's own, or --labels), each position gets
a target: 1 when the neighbour has the centre's label, 0 when not, -1 (left out of the
loss) when either label is unknown (-1) or the position is masked.

The L x L cosine matrix the model reads (the Cosine Distance Encoding) is not stored: it
is computed from the features batch by batch by cf-train and cf-link.
"""


@click.command("cf-seq", cls=CfCommand, help=HELP, context_settings=CONTEXT_SETTINGS)
@click.argument("knn")
@click.option("--features", required=True,
              help="The features the kNN was computed from (.h5, FILE.h5:/path, .npy, .bin).")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Output sequences file (.h5).")
@click.option("-L", "--length", "length", type=Count(min=2), default=64,
              show_default=True, help="Sequence length, the centre included (at most k).")
@click.option("--for-model", "for_model", default=None, type=click.Path(dir_okay=False),
              help="Sequences as long as this cf-train model's links read (its own length "
                   "or cosine links', the longer) instead of -L.")
@click.option("--min-sim", type=FiniteFloat(-1, 1), default=None,
              help="Mask neighbours whose cosine similarity is below this.")
@click.option("--labels", default=None,
              help="Identity labels (-1 unknown) for the targets, instead of the features "
                   "file's own (.npy, .meta, .h5, FILE.h5:/path).")
@click.option("--dim", type=Count(min=1), default=None,
              help="Dimension of raw .bin features when no .meta lies beside them.")
@common_options
def main(knn, features, out, length, for_model, min_sim, labels, dim, quiet):
    rep = Reporter(quiet)
    out = Path(out)
    if Path(knn).suffix.lower() == ".npz":
        raise CfError("is a learn-to-cluster kNN .npz, which does not say which features it "
                      "was made from; cf-seq needs a cftools knn file: make one with "
                      "cf-knn FEATURES -o KNN.h5", knn)
    check_hdf5_name(out)
    check_output_path(out, [knn, split_spec(features)[0]] + ([split_spec(labels)[0]] if labels else [])
                      + ([for_model] if for_model else []))
    if for_model:
        length = links_length(for_model)
    t0 = time.perf_counter()
    knn_art = open_artifact(knn, "knn")
    if str(knn_art.attrs["query_id"]) != str(knn_art.attrs["base_id"]):
        raise CfError("holds the neighbours of queries searched in another set (cf-knn "
                      "--queries: query_id != base_id); cf-seq needs the kNN of a set within "
                      "itself (cf-knn FEATURES without --queries)", knn_art.path)
    feats = load_features(features, labels=labels, dim=dim, reporter=rep)
    for attr in ("base_id", "query_id"):
        require_same_source(str(knn_art.attrs[attr]), feats.id, what="features", path=knn_art.path,
                            other_path=feats.path)
    n, k = knn_art.dims["N"], knn_art.dims["k"]
    if n != feats.n:
        raise CfError(f"has {n} rows but the features {feats.path} have {feats.n}", knn_art.path)
    if length > k:
        raise CfError(f"-L {length} is longer than the k={k} neighbours of each point", knn_art.path)
    has_labels = feats.labels is not None and bool((feats.labels >= 0).any())
    rep.info(f"cf-seq: {n} sequences of length {length} from k={k}"
             + (f", masking below similarity {min_sim}" if min_sim is not None else "")
             + (", with targets" if has_labels else ", no labels: no targets"))
    attrs = {"knn_id": knn_art.id, "features_id": feats.id, "L": length,
             "min_sim": "none" if min_sim is None else float(min_sim)}
    masked = positives = known = usable = 0
    with write_artifact(out, "sequences", inputs={"knn": knn_art, "features": feats.provenance_ref},
                        attrs=attrs) as f:
        order_ds = create_rows(f, "order", (n, length), np.int64)
        mask_ds = create_rows(f, "mask", (n, length), bool)
        targets_ds = create_rows(f, "targets", (n, length), np.int8) if has_labels else None
        with rep.progress(total=n, desc="sequences", unit="pt") as bar:
            for start, stop in row_blocks(knn_art["indices"]):
                idx = knn_art.read("indices", slice(start, stop))
                sim = knn_art.read("similarities", slice(start, stop))
                _check_block(idx, sim, start, feats.n, knn_art.path)
                order, mask, targets = build_sequences(
                    idx, sim, length, centres=np.arange(start, stop), min_sim=min_sim,
                    labels=feats.labels if has_labels else None)
                order_ds[start:stop] = order
                mask_ds[start:stop] = mask
                masked += int((~mask).sum())
                usable += int(mask[:, 1:].sum())
                if targets_ds is not None:
                    targets_ds[start:stop] = targets
                    positives += int((targets[:, 1:] == 1).sum())
                    known += int((targets[:, 1:] >= 0).sum())
                bar.update(stop - start)
        if usable == 0:
            raise CfError("every neighbour position is masked: no sequence has a usable "
                          "position" + (f" at --min-sim {min_sim}" if min_sim is not None else ""),
                          knn_art.path)
    knn_art.close()
    share = masked / (n * length)
    msg = f"cf-seq: wrote {out} ({n} x {length}; {share:.1%} of positions masked"
    if has_labels:
        msg += f"; {positives} of {known} labelled neighbour positions share the centre's identity"
    rep.info(msg + f") in {time.perf_counter() - t0:.1f} s")


def _check_block(idx, sim, start: int, n: int, path) -> None:
    """Refuse a block of a knn file that is not one: a similarity NaN, infinite or outside
    [-1, 1] (cosine; 1e-4 of float32 rounding) where a neighbour was found, an id below -1
    (-1: not found; older files hold -inf there) or past the features."""
    found = idx >= 0
    bad = ~np.isfinite(sim) & found
    if bad.any():
        r, c = np.argwhere(bad)[0]
        what = "NaN" if np.isnan(sim[r, c]) else "Inf"
        raise CfError(f"dataset 'similarities' holds {what} (first at row {start + r})", path)
    bad = (np.abs(sim) > 1.0 + 1e-4) & found
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise CfError(f"dataset 'similarities' holds {float(sim[r, c]):g} at row {start + r}, "
                      "not a cosine similarity in [-1, 1]", path)
    bad = (idx < -1) | (idx >= n)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise CfError(f"dataset 'indices' holds {int(idx[r, c])} at row {start + r}: ids lie "
                      f"in [0, {n}) (-1: not found)", path)


if __name__ == "__main__":
    main()
