"""What cf-merge decode, add and labels share about a person's answers (--corrections)
and stable ids (--previous): reading and checking them against the set, honouring them,
and what the output records."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import click
import numpy as np

from ...core.corrections import Constraints, constraints_from
from ...core.decoding.constrained import EdgeSource, Enforced, enforce
from ...core.decoding.identities import Carried, carry_ids, next_free_id
from ...errors import CfError
from ...formats.clusters import read_clusters
from ...formats.corrections import (
    Answer,
    Corrections,
    check_fits,
    lineage,
    read_corrections,
    recorded_answers,
)

corrections_option = click.option(
    "--corrections", "corrections_path", default=None, type=click.Path(dir_okay=False),
    help="A corrections file (cf-eval gallery, cf-eval review): its must-links are joined, "
         "its cannot-links split the clusters they fall in, its names name clusters.")


@dataclass
class Answers:
    """The answers to honour (those an input recorded, then a corrections file's), checked
    against the set, and their constraints."""

    file: Corrections | None
    constraints: Constraints
    all: list[Answer]
    recorded_in: str | None = None

    @property
    def ref(self) -> str | None:
        return self.file.ref if self.file else None


@dataclass
class Outcome:
    """What an output records of the answers honoured and the ids kept."""

    attrs: dict = field(default_factory=dict)
    answers: list[str] = field(default_factory=list)  # one JSON text per answer
    changes: np.ndarray | None = None  # id_changes rows of this step
    ref: str | None = None  # how provenance names the corrections file honoured


def load_answers(path, n: int, ids: set[str], against, names=None, recorded=None,
                 size: int | None = None) -> Answers | None:
    """The answers of ``path`` (None: no file) for a set of ``n`` points known by ``ids``,
    after those ``recorded`` = (texts of a dataset 'answers', the file holding it);
    refused with one line when they do not fit the set or contradict each other. None
    when there is none. ``size``: points of the set the constraints apply to, when more
    than ``n`` (an add: the answers name old points only)."""
    answers: list[Answer] = []
    if recorded is not None and len(recorded[0]):
        answers += recorded_answers(recorded[0], recorded[1])
    corr = None
    if path:
        corr = read_corrections(path)
        check_fits(corr, n, ids, against=against, names=names)
        answers += corr.answers
    if not answers:
        return None
    return Answers(corr, constraints_from(answers, size or n,
                                          path or (recorded and recorded[1])),
                   answers, str(recorded[1]) if recorded is not None and len(recorded[0])
                   else None)


def recorded_of(art_path) -> tuple | None:
    """(the answers a clusters file recorded, its path), or None when it holds none."""
    from ...formats.artifacts import open_artifact

    with open_artifact(art_path, "clusters") as art:
        if "answers" not in art:
            return None
        return art.read("answers"), str(art_path)


def honour(labels: np.ndarray, answers: Answers | None, edges: EdgeSource,
           next_id: int | None = None) -> Enforced:
    if answers is None:
        return Enforced(np.asarray(labels, np.int64).copy())
    return enforce(labels, answers.constraints, edges, next_id)


def weighed_edges(indices: np.ndarray, probs: np.ndarray, mode: str) -> EdgeSource:
    """The links among a cluster's members weighed under ``mode``, reading only their rows
    (an add's links are not weighed whole)."""
    from ...core.decoding.constrained import link_edges
    from ...core.incremental.links import edge_weights

    raw = link_edges(indices, probs)

    def edges(members):
        src, dst, w = raw(members)
        if mode != "directed":
            w = edge_weights(indices, probs, src, dst, mode).astype(np.float64)
        return src, dst, w
    return edges


def names_of(labels: np.ndarray, answers: Answers | None) -> dict[str, str]:
    """{cluster id: name} of the named groups."""
    if answers is None:
        return {}
    return {str(int(labels[root])): name for root, name in answers.constraints.names.items()
            if labels[root] >= 0}


def record(answers: Answers | None, enforced: Enforced, labels: np.ndarray, out: Outcome
           ) -> Outcome:
    """The attributes and the answers dataset of an output that honoured ``answers``."""
    if answers is None:
        return out
    c = answers.constraints
    out.attrs["corrections"] = {
        **(answers.file.record() if answers.file else {}),
        "recorded_in": answers.recorded_in, "answers_honoured": len(answers.all),
        "must_groups": len(c.members()),
        "cannot_links": int(c.cannot.shape[0]), "names": len(c.names),
        "merged": [list(m) for m in enforced.merges],
        "split": [{"id": s[0], "new_ids": s[1], "sizes": s[2]} for s in enforced.splits]}
    out.attrs["cluster_names"] = names_of(labels, answers)
    texts = [json.dumps({"answer": a.number, **a.to_json()}, sort_keys=True)
             for a in answers.all]
    out.answers = list(dict.fromkeys(texts))  # an answer recorded and given again: once
    out.ref = answers.ref
    return out


def read_previous(path, n: int, ids: set[str], against) -> tuple[np.ndarray, int, object]:
    """(labels, the least id never used, artifact) of --previous, refused when it is not a
    clustering of these points (or of the points they grew from)."""
    labels, attrs, art = read_clusters(path)
    if labels.shape[0] > n:
        raise CfError(f"has {labels.shape[0]} points, more than the {n} of {against}", path)
    known = {str(attrs.get("features_id", "")), str(attrs.get("links_id", ""))} - {""}
    if known and not known & ids:
        raise CfError(f"is a clustering of other points than {against}", path)
    return labels, next_free_id(labels, attrs.get("next_id")), art


def keep_ids(labels: np.ndarray, previous: tuple | None, step: int = 0
             ) -> tuple[np.ndarray, Carried | None]:
    """``labels`` under the ids of --previous (unchanged without it)."""
    if previous is None:
        return labels, None
    old, next_id, _ = previous
    carried = carry_ids(labels, old, next_id, step)
    return carried.labels, carried


def write_records(f, out: Outcome, changes: np.ndarray | None) -> None:
    """The datasets an output carries about answers and id changes."""
    from ...formats.writing import write_strings

    if out.answers:
        write_strings(f, "answers", out.answers)
    if changes is not None:
        f.create_dataset("id_changes", data=np.asarray(changes, np.int64).reshape(-1, 5))


__all__ = ["Answers", "Outcome", "corrections_option", "load_answers", "honour", "record",
           "read_previous", "keep_ids", "write_records", "lineage", "names_of", "recorded_of"]
