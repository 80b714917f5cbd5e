"""PNG plots of a round's results (matplotlib, Agg backend: no display needed).

- ``cluster_sizes``: how many clusters of each size, predicted and true, log-log; and
  each predicted cluster's size against the size of its majority identity.
- ``sweep``: F_P and F_B of a decoder against its threshold (cf-eval sweep), the
  calibrated threshold marked.
- ``knn_curves``: precision@r and recall@r of a kNN graph per rank r (cf-eval knn).
- ``training_curves``: cf-train's loss and held-out ROC-AUC per epoch (the model file's
  ``training`` attribute), the held-out AUC of raw cosine drawn as a line beside it.

Every function writes one PNG atomically (temporary name, then rename).
"""

from __future__ import annotations

import numpy as np

from ..formats.writing import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, png) -> None:
    plt = _plt()
    try:
        with atomic_path(png, ".png") as tmp:  # savefig picks the format by the suffix
            fig.savefig(tmp)
    finally:
        plt.close(fig)


def size_histogram(labels) -> tuple[np.ndarray, np.ndarray]:
    """(sizes, number of clusters of each size); unassigned (-1) points count as singletons."""
    labels = np.asarray(labels, dtype=np.int64)
    assigned = labels[labels >= 0]
    counts = np.unique(assigned, return_counts=True)[1] if assigned.size else np.zeros(0, int)
    counts = np.concatenate([counts, np.ones(int((labels < 0).sum()), dtype=np.int64)])
    return np.unique(counts, return_counts=True)


def cluster_sizes(png, pred, truth=None) -> None:
    """Cluster-size distributions (log-log), and with truth, predicted size vs the size of
    the cluster's majority identity."""
    plt = _plt()
    panels = 2 if truth is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4), dpi=110, squeeze=False)
    ax = axes[0, 0]
    s, c = size_histogram(pred)
    ax.loglog(s, c, "o-", ms=3, label=f"predicted ({int(c.sum())} clusters)")
    if truth is not None:
        t = np.asarray(truth)
        s2, c2 = size_histogram(t[t >= 0])
        ax.loglog(s2, c2, "s-", ms=3, label=f"true ({int(c2.sum())} identities)")
    ax.set_xlabel("cluster size")
    ax.set_ylabel("number of clusters")
    ax.set_title("cluster sizes", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if truth is not None:
        from .cluster_view import dense_clusters, truth_summary

        cid, sizes, _ = dense_clusters(pred)
        maj, _, known, _ = truth_summary(cid, sizes.size, truth)
        t = np.asarray(truth, dtype=np.int64)
        tsize = np.bincount(t[t >= 0]) if (t >= 0).any() else np.zeros(1, int)
        ok = (maj >= 0) & (sizes > 1)
        ax = axes[0, 1]
        x, y = tsize[maj[ok]], sizes[ok]
        ax.loglog(x, y, ".", alpha=0.5, ms=4)
        hi = max(2, int(x.max()) if x.size else 2, int(y.max()) if y.size else 2)
        ax.loglog([1, hi], [1, hi], "k--", lw=0.8, label="predicted = true")
        ax.set_xlabel("size of the majority identity (true)")
        ax.set_ylabel("size of the cluster (predicted)")
        ax.set_title("each cluster of 2+ against its identity", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, png)


def sweep(png, rows, method, calibrated, title) -> None:
    """F_P and F_B against the threshold, the calibrated threshold (if any) marked."""
    plt = _plt()
    t = [r["threshold"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(t, [100 * r["pairwise_f"] for r in rows], "o-", label="pairwise F (F_P)")
    ax.plot(t, [100 * r["bcubed_f"] for r in rows], "s-", label="BCubed F (F_B)")
    if calibrated is not None:
        ax.axvline(calibrated, color="k", ls="--", lw=1, label=f"calibrated {calibrated:.4g}")
        at = _interp(t, rows, calibrated)
        if at is not None:
            ax.plot([calibrated], [100 * at], "k*", ms=12, label=f"F_P at it {100 * at:.1f}")
    ax.set_xlabel(f"{method} threshold")
    ax.set_ylabel("score (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.text(0.5, 0.005, "diagnosis only: thresholds chosen on the evaluated set are an oracle",
             ha="center", va="bottom", fontsize=7, color="0.3")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    _save(fig, png)


def _interp(t, rows, x):
    if not t or x < min(t) or x > max(t):
        return None
    order = np.argsort(t)
    return float(np.interp(x, np.asarray(t)[order],
                           np.asarray([r["pairwise_f"] for r in rows])[order]))


def sweep_from_json(png, doc: dict) -> None:
    """The plot of ``cf-eval sweep --json``'s output."""
    from ..errors import CfError

    if not isinstance(doc, dict) or not doc.get("rows"):
        raise CfError("not the output of cf-eval sweep --json (no 'rows')")
    sweep(png, doc["rows"], doc.get("method", "decoder"), doc.get("calibrated_threshold"),
          f"{doc.get('method', '')} sweep over {doc.get('links', '')} (oracle diagnosis)")


def knn_curves(png, precision, recall, same=None, title: str = "kNN quality") -> None:
    """precision@r and recall@r (and the share of same-identity r-th neighbours)."""
    plt = _plt()
    r = np.arange(1, len(precision) + 1)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(r, 100 * np.asarray(precision), "-", label="precision@r")
    ax.plot(r, 100 * np.asarray(recall), "-", label="recall@r")
    if same is not None:
        ax.plot(r, 100 * np.asarray(same), ":", label="same identity at rank r")
    ax.set_xlabel("rank r (the point itself excluded)")
    ax.set_ylabel("%")
    ax.set_ylim(0, 101)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, png)


def knn_from_json(png, doc: dict) -> None:
    """The plot of ``cf-eval knn --json``'s output."""
    from ..errors import CfError

    if not isinstance(doc, dict) or "precision_at_rank" not in doc:
        raise CfError("not the output of cf-eval knn --json (no 'precision_at_rank')")
    knn_curves(png, doc["precision_at_rank"], doc["recall_at_rank"], doc.get("same_at_rank"),
               f"kNN quality ({doc.get('n_points', '?')} points)")


def training_curves(png, training: dict) -> None:
    """Loss and held-out ROC-AUC per epoch from a model's ``training`` attribute, with the
    held-out AUC of raw cosine (one number: it does not change with epochs) as a line."""
    plt = _plt()
    hist = training.get("history") or []
    ep = [h["epoch"] for h in hist]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    a1.plot(ep, [h["loss"] for h in hist], "o-", ms=3)
    a1.set_xlabel("epoch")
    a1.set_ylabel("training loss (BCE)")
    a1.set_title("loss", fontsize=10)
    a1.grid(alpha=0.3)
    auc = [h.get("val_roc_auc") for h in hist]
    if any(a is not None for a in auc):
        a2.plot(ep, auc, "o-", ms=3, label="model")
    cos = ((training.get("validation") or {}).get("cosine") or {}).get("roc_auc")
    if cos is not None:
        a2.axhline(cos, color="C1", ls="--", label=f"cosine {cos:.4f}")
    final = ((training.get("validation") or {}).get("model") or {}).get("roc_auc")
    if final is not None:
        a2.set_title(f"held-out ROC-AUC (final model {final:.4f})", fontsize=10)
    else:
        a2.set_title("held-out ROC-AUC", fontsize=10)
    a2.set_xlabel("epoch")
    a2.set_ylabel("ROC-AUC of links")
    a2.grid(alpha=0.3)
    if a2.get_legend_handles_labels()[0]:
        a2.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, png)
