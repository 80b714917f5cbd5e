"""What an add writes, all or none: the features, links and clusters of old + new, rows
in the order old, then new. They are the next add's inputs. The clusters file says where
every point came from: dataset ``batch`` (0 = the original set, then 1, 2, ... per add),
``merges`` (batch, kept id, merged id, members reached) and attribute ``batches`` (per
batch: source, time, counts, timings)."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import numpy as np

from ...formats.artifacts import Artifact
from ...formats.features import Features
from ...formats.writing import (
    atomic_outputs,
    create_rows,
    write_artifact,
    write_strings,
)
from ..decoding.identities import id_changes
from ..decoding.singletons import cluster_summary
from .add import AddResult


@dataclass
class Existing:
    """The set an add starts from, its files checked to belong together."""

    clusters_path: str
    labels: np.ndarray  # (N0,) cluster ids
    attrs: dict  # the clusters file's attributes
    batch: np.ndarray | None  # (N0,) its dataset 'batch', when an add made it
    merges: np.ndarray  # (M, 4) its dataset 'merges'
    batches: list | None  # its attribute 'batches'
    clusters_art: Artifact  # the clusters artifact (closed), for provenance
    links_art: Artifact
    links_attrs: dict
    thresholds: dict | None
    features: Features  # the existing set's features
    model_art: Artifact | None
    id_changes: np.ndarray | None = None  # its dataset 'id_changes'

    @property
    def next_batch(self) -> int:
        return (int(self.batch.max()) if self.batch is not None and self.batch.size else 0) + 1


class _Rows:
    """Two arrays read as one by row slices (no concatenated copy)."""

    def __init__(self, a, b):
        self.a, self.b = a, b
        self.n0 = a.shape[0]

    def __getitem__(self, sl):
        start, stop = sl.start, sl.stop
        if stop <= self.n0:
            return self.a[start:stop]
        if start >= self.n0:
            return self.b[start - self.n0:stop - self.n0]
        return np.concatenate([self.a[start:], self.b[:stop - self.n0]])


def _concat_optional(a, b, na, nb, fill):
    if a is None and b is None:
        return None
    a = a if a is not None else np.full(na, fill, np.int64)
    b = b if b is not None else np.full(nb, fill, np.int64)
    return np.concatenate([a, b]).astype(np.int64)


def batch_entry(old: Existing, new, res: AddResult, merge_links: int) -> dict:
    """The record of this batch in the clusters file's attribute 'batches'."""
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return {"batch": old.next_batch, "n": int(new.n), "source": str(new.path),
            "source_id": new.id, "time": now, "merge_links": int(merge_links), **res.counts,
            "knn": res.knn_info, "seconds": {k: round(v, 3) for k, v in res.seconds.items()}}


def write_add(outs, old: Existing, new, res: AddResult, *, mode: str, merge_links: int,
              extra_attrs: dict | None = None, answers: list[str] | None = None,
              corrections_ref: str | None = None) -> dict:
    """Write the three outputs of an add (paths: clusters, links, features) all or none;
    returns the summary of the clusters. ``extra_attrs``, ``answers``: what the clusters
    file records of the answers honoured (--corrections); every id change of an old point
    (merges, --redecode's splits, the answers') goes to dataset id_changes."""
    n0, feats = old.labels.shape[0], old.features
    n = n0 + new.n
    batch_no = old.next_batch
    batch = np.concatenate([old.batch if old.batch is not None else np.zeros(n0, np.int32),
                            np.full(new.n, batch_no, np.int32)]).astype(np.int32)
    merges = np.concatenate([old.merges.reshape(-1, 4).astype(np.int64),
                             np.array([(batch_no, k, g, m) for k, g, m in res.merges],
                                      np.int64).reshape(-1, 4)])
    batches = old.batches
    if batches is None:
        batches = [{"batch": 0, "n": int(n0), "source": str(old.clusters_path),
                    "source_id": old.attrs.get("cftools_id", "")}]
    batches = list(batches) + [batch_entry(old, new, res, merge_links)]
    labels_all = _concat_optional(feats.labels, new.labels, n0, new.n, -1)
    names_all = None
    if feats.names is not None or new.names is not None:
        names_all = feats.names_of(range(feats.n)) + new.names_of(range(new.n))
    summary = cluster_summary(res.labels)
    changes = np.concatenate([np.zeros((0, 5), np.int64) if old.id_changes is None
                              else old.id_changes.reshape(-1, 5),
                              id_changes(old.labels, res.labels[:n0], batch_no)])
    with atomic_outputs(outs) as (c_tmp, l_tmp, f_tmp):
        with write_artifact(f_tmp, "features", inputs={"features": feats.provenance_ref,
                                                       "new": new.provenance_ref},
                            attrs={"batches": [{"batch": b["batch"], "n": b["n"]}
                                               for b in batches]}) as f:
            create_rows(f, "features", (n, feats.dim), np.float32,
                        data=_Rows(feats.features, new.features))
            if labels_all is not None:
                f.create_dataset("labels", data=labels_all)
            if names_all is not None:
                write_strings(f, "names", names_all)
            f_id = str(f.attrs["cftools_id"])
        l_attrs_out = {key: old.links_attrs[key] for key in ("method", "model_id", "guard_winner",
                                                             "min_sim") if key in old.links_attrs}
        l_attrs_out.update(features_id=f_id, sequences_id="cf-merge add",
                           thresholds=old.thresholds or {})
        with write_artifact(l_tmp, "links", inputs={"links": old.links_art,
                                                    "new": new.provenance_ref,
                                                    "model": old.model_art},
                            attrs=l_attrs_out) as f:
            create_rows(f, "indices", res.indices.shape, np.int64, data=res.indices)
            create_rows(f, "probabilities", res.probabilities.shape, np.float32,
                        data=res.probabilities)
            links_id = str(f.attrs["cftools_id"])
        c_attrs = {key: value for key, value in old.attrs.items()
                   if not key.startswith("cftools_")
                   and key not in ("summary", "batches", "corrections", "cluster_names",
                                   "previous_id")}
        c_attrs.update(links_id=links_id, features_id=f_id, summary=summary, batches=batches,
                       link_mode=mode, next_id=int(res.next_id or 0), **(extra_attrs or {}))
        with write_artifact(c_tmp, "clusters", inputs={"clusters": old.clusters_art,
                                                       "links": old.links_art,
                                                       "features": feats.provenance_ref,
                                                       "new": new.provenance_ref,
                                                       "model": old.model_art,
                                                       "corrections": corrections_ref},
                            attrs=c_attrs) as f:
            f.create_dataset("labels", data=res.labels, chunks=True, compression="gzip",
                             shuffle=True)
            f.create_dataset("batch", data=batch, chunks=True, compression="gzip", shuffle=True)
            f.create_dataset("merges", data=merges)
            f.create_dataset("id_changes", data=changes)
            if answers:
                write_strings(f, "answers", answers)
    return summary
