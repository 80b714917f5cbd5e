"""The corrections file: a person's answers about a clustering, as one JSON document.

It names points by their row in the clustered set (rows never move: an add appends its
points after the old ones), so one file stays valid across re-runs and adds of the same
set. The format (man cftools(7), CORRECTIONS FILE):

    {"cftools_kind": "corrections", "cftools_format": 1,
     "features_id": ID,        the features whose rows the answers name (or an ancestor
                               of the set they are applied to: an add's input)
     "n_points": N,            rows of that set when the answers were given
     "point_names": {"12": "a/b.jpg", ...},   optional: names of the rows answered, checked
                               against the features' names where both are known
     "answers": [
       {"kind": "same", "a": [12], "b": [40, 41]},        every point of a is the same
                                                          identity as every point of b
       {"kind": "different", "a": [12], "b": [40, 41]},   none of a is of b's identity
       {"kind": "name", "points": [40, 41], "name": "Alice"}   these points are "Alice"
     ]}

Each answer may also carry "question" (the review question it answers), "action"
(what the person did: answer, not-this-identity, merge, name) and "time"; they are kept
as written. Reading validates the structure and refuses with one line naming the file.
Whether the answers agree with each other is core.corrections' concern; whether they
fit a data set, ``check_fits``'s.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CfError
from .writing import atomic_path

KIND = "corrections"
VERSION = 1
ANSWER_KINDS = ("same", "different", "name")
MAX_BYTES = 256 << 20  # a corrections file is answers typed by people: refuse a huge file


@dataclass
class Answer:
    number: int  # 1-based position in the file, as messages name it
    kind: str  # one of ANSWER_KINDS
    a: tuple[int, ...]  # same/different: one side; name: the points named
    b: tuple[int, ...] = ()
    name: str | None = None
    extra: dict = field(default_factory=dict)  # question, action, time: kept as written
    origin: str = ""  # where it was recorded, when not in the file being read

    @property
    def label(self) -> str:
        """How messages name it."""
        return f"{self.number}" + (f" (recorded in {self.origin})" if self.origin else "")

    def to_json(self) -> dict:
        out: dict = {"kind": self.kind}
        if self.kind == "name":
            out.update(points=list(self.a), name=self.name)
        else:
            out.update(a=list(self.a), b=list(self.b))
        out.update(self.extra)
        return out

    def rows(self) -> tuple[int, ...]:
        return self.a + self.b


@dataclass
class Corrections:
    path: str
    features_id: str
    n_points: int
    answers: list[Answer]
    point_names: dict[int, str]
    sha1: str  # of the file's bytes: what a clusters file records

    @property
    def ref(self) -> str:
        """How a provenance step names this input."""
        return f"corrections:{self.sha1}"

    def record(self) -> dict:
        """What an output records about the file it honoured."""
        return {"path": self.path, "sha1": self.sha1, "features_id": self.features_id,
                "n_points": self.n_points, "answers": len(self.answers)}


def _rows(value, path, number: int, key: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise CfError(f"answer {number}: '{key}' must be a non-empty list of row numbers", path)
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int):
            raise CfError(f"answer {number}: '{key}' holds {v!r}, not a row number", path)
        if v < 0:
            raise CfError(f"answer {number}: row {v} does not exist (rows count from 0)", path)
    return tuple(int(v) for v in value)


def _answer(item, path, number: int) -> Answer:
    if not isinstance(item, dict):
        raise CfError(f"answer {number} is not a JSON object", path)
    kind = item.get("kind")
    if kind not in ANSWER_KINDS:
        raise CfError(f"answer {number}: kind {kind!r} is not one of {', '.join(ANSWER_KINDS)}",
                      path)
    extra = {k: v for k, v in item.items() if k not in ("kind", "a", "b", "points", "name")}
    if kind == "name":
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise CfError(f"answer {number}: a name answer needs a non-empty 'name'", path)
        return Answer(number, kind, _rows(item.get("points"), path, number, "points"),
                      name=name.strip(), extra=extra)
    return Answer(number, kind, _rows(item.get("a"), path, number, "a"),
                  _rows(item.get("b"), path, number, "b"), extra=extra)


def read_corrections(path) -> Corrections:
    """A corrections file, its structure checked; refused with one line naming it."""
    p = Path(path)
    if not p.exists():
        raise CfError("no such file", path)
    if not p.is_file():
        raise CfError("is not a regular file", path)
    if p.stat().st_size > MAX_BYTES:
        raise CfError(f"is larger than {MAX_BYTES >> 20} MiB: not a corrections file", path)
    data = p.read_bytes()
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise CfError(f"not a corrections file (invalid JSON: {str(err).splitlines()[0]})",
                      path) from None
    if not isinstance(doc, dict) or doc.get("cftools_kind") != KIND:
        raise CfError("not a corrections file (cftools_kind is not 'corrections')", path)
    version = doc.get("cftools_format")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= VERSION:
        raise CfError(f"corrections format {version!r} is not one this cftools reads "
                      f"(1..{VERSION})", path)
    fid, n = doc.get("features_id"), doc.get("n_points")
    if not isinstance(fid, str) or not fid:
        raise CfError("has no 'features_id': it must say which data set it answers about",
                      path)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise CfError("'n_points' must be a whole number >= 0", path)
    answers = doc.get("answers")
    if not isinstance(answers, list):
        raise CfError("'answers' must be a list", path)
    names = doc.get("point_names", {}) or {}
    if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
        raise CfError("'point_names' must map row numbers to names", path)
    try:
        point_names = {int(k): v for k, v in names.items()}
    except ValueError:
        raise CfError("'point_names' must map row numbers to names", path) from None
    return Corrections(str(path), fid, n, [_answer(a, path, i + 1) for i, a in enumerate(answers)],
                       point_names, hashlib.sha1(data).hexdigest())


def recorded_answers(texts, origin) -> list[Answer]:
    """The answers an output recorded (its dataset 'answers': one JSON object each, with
    its number), to be honoured again by a later step."""
    out = []
    for i, text in enumerate(texts):
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        try:
            item = json.loads(text)
        except ValueError:
            raise CfError(f"dataset 'answers' row {i} is not JSON", origin) from None
        number = item.pop("answer", i + 1) if isinstance(item, dict) else i + 1
        ans = _answer(item, origin, int(number))
        ans.origin = str(origin)
        out.append(ans)
    return out


def write_corrections(out, features_id: str, n_points: int, answers: list[Answer], *,
                      point_names: dict[int, str] | None = None, extra: dict | None = None
                      ) -> None:
    """Write a corrections file atomically."""
    doc = {"cftools_kind": KIND, "cftools_format": VERSION, "features_id": features_id,
           "n_points": int(n_points), **(extra or {}),
           "point_names": {str(k): v for k, v in sorted((point_names or {}).items())},
           "answers": [a.to_json() for a in answers]}
    with atomic_path(out) as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def check_fits(corr: Corrections, n: int, lineage: set[str], *, against, names=None) -> None:
    """Refuse answers that do not belong to a set of ``n`` points whose features are known
    by the ids in ``lineage`` (the set's own features and every input it grew from):
    a file made for another data set, or naming a row the set does not have, or a row
    whose name differs from the one the answer was given about."""
    if corr.features_id not in lineage:
        raise CfError(f"answers about features {corr.features_id[:12]}, which are not "
                      f"{against}'s nor any set they grew from: a file from another data set",
                      corr.path)
    for ans in corr.answers:
        bad = [r for r in ans.rows() if r >= n]
        if bad:
            raise CfError(f"answer {ans.number} names point {bad[0]}, which does not exist "
                          f"({against} has {n} points)", corr.path)
    if names is not None:
        for row, name in corr.point_names.items():
            if row < n and str(names[row]) != name:
                raise CfError(f"row {row} was answered about as {name!r} but is "
                              f"{str(names[row])!r} in {against}: a file from another data "
                              "set", corr.path)


def lineage(art, *ids) -> set[str]:
    """The ids a set is known by: ``ids`` (its features' id, ...), the artifact's own id and
    every id its provenance names (the inputs it grew from: an add's links name the links
    and features of the set before the add)."""
    out = {str(i) for i in ids if i}
    if art is not None:
        out.add(str(art.id))
        for key in ("features_id",):
            if art.attrs.get(key):
                out.add(str(art.attrs[key]))
        for step in art.provenance or []:
            if isinstance(step, dict):
                out.update(str(v) for v in (step.get("inputs") or {}).values())
                if step.get("output"):
                    out.add(str(step["output"]))
    return out


QUESTIONS_KIND = "questions"


def write_questions(out, doc: dict) -> None:
    """Write a questions file (cf-eval review) atomically: one JSON document."""
    doc = {"cftools_kind": QUESTIONS_KIND, "cftools_format": VERSION, **doc}
    with atomic_path(out) as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def read_questions(path, n: int, features_id: str | None = None) -> dict:
    """A questions file, checked to be about a set of ``n`` points (and these features
    when both know their id); refused with one line naming it."""
    p = Path(path)
    if not p.is_file():
        raise CfError("no such file" if not p.exists() else "is not a regular file", path)
    if p.stat().st_size > MAX_BYTES:
        raise CfError(f"is larger than {MAX_BYTES >> 20} MiB: not a questions file", path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise CfError(f"not a questions file (invalid JSON: {str(err).splitlines()[0]})",
                      path) from None
    if not isinstance(doc, dict) or doc.get("cftools_kind") != QUESTIONS_KIND:
        raise CfError("not a questions file (cftools_kind is not 'questions'; made by "
                      "cf-eval review)", path)
    if doc.get("n_points") != n:
        raise CfError(f"asks about {doc.get('n_points')} points, the clusters have {n}", path)
    if features_id and doc.get("features_id") and doc["features_id"] != features_id:
        raise CfError("asks about other features than the gallery's", path)
    qs = doc.get("questions")
    if not isinstance(qs, list) or not all(
            isinstance(q, dict) and isinstance(q.get("a"), list) and isinstance(q.get("b"), list)
            and all(isinstance(r, int) and 0 <= r < n for r in q["a"] + q["b"]) and q["a"]
            and q["b"] for q in qs):
        raise CfError("'questions' must be a list of questions about rows of the set", path)
    return doc
