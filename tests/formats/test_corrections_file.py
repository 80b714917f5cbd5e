"""The corrections file (formats/corrections.py): read back as written, its structure and
its fit to a data set checked with one line naming it."""

from __future__ import annotations

import json

import pytest

from cftools.errors import CfError
from cftools.formats.corrections import (
    Answer,
    check_fits,
    read_corrections,
    recorded_answers,
    write_corrections,
)


def doc(**over):
    base = {"cftools_kind": "corrections", "cftools_format": 1, "features_id": "F1",
            "n_points": 10, "answers": [{"kind": "same", "a": [1], "b": [2, 3]}]}
    base.update(over)
    return base


def test_written_and_read_back(tmp_path):
    answers = [Answer(1, "same", (1,), (2, 3), extra={"question": 4}),
               Answer(2, "name", (5, 6), name="Ann"), Answer(3, "different", (0,), (9,))]
    write_corrections(tmp_path / "c.json", "F1", 10, answers, point_names={1: "a.jpg"})
    corr = read_corrections(tmp_path / "c.json")
    assert [a.to_json() for a in corr.answers] == [a.to_json() for a in answers]
    assert corr.features_id == "F1" and corr.point_names == {1: "a.jpg"} and len(corr.sha1) == 40
    assert recorded_answers([json.dumps({"answer": 7, **answers[1].to_json()})],
                            "c.h5")[0].label == "7 (recorded in c.h5)"


@pytest.mark.parametrize("content, says", [
    ("{not json", "invalid JSON"),
    (json.dumps([1, 2]), "not a corrections file"),
    (json.dumps(doc(cftools_kind="links")), "not a corrections file"),
    (json.dumps(doc(cftools_format=7)), "corrections format 7"),
    (json.dumps(doc(features_id="")), "no 'features_id'"),
    (json.dumps(doc(answers=[{"kind": "maybe", "a": [1], "b": [2]}])), "answer 1: kind"),
    (json.dumps(doc(answers=[{"kind": "same", "a": [1], "b": []}])), "non-empty list"),
    (json.dumps(doc(answers=[{"kind": "same", "a": [1.5], "b": [2]}])), "not a row number"),
    (json.dumps(doc(answers=[{"kind": "same", "a": [-2], "b": [2]}])), "row -2 does not exist"),
    (json.dumps(doc(answers=[{"kind": "name", "points": [1]}])), "non-empty 'name'"),
])
def test_malformed_files_are_refused(tmp_path, content, says):
    (tmp_path / "c.json").write_text(content)
    with pytest.raises(CfError, match=says) as err:
        read_corrections(tmp_path / "c.json")
    assert str(err.value).startswith(str(tmp_path / "c.json")) and "\n" not in str(err.value)


def test_fit_to_a_data_set(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps(doc(point_names={"1": "a.jpg"})))
    corr = read_corrections(tmp_path / "c.json")
    check_fits(corr, 10, {"F1", "L1"}, against="links.h5", names=["x"] + ["a.jpg"] * 9)
    with pytest.raises(CfError, match="another data set"):
        check_fits(corr, 10, {"F2"}, against="links.h5")
    with pytest.raises(CfError, match="names point 3, which does not exist"):
        check_fits(corr, 3, {"F1"}, against="links.h5")
    with pytest.raises(CfError, match="was answered about as 'a.jpg' but is 'b.jpg'"):
        check_fits(corr, 10, {"F1"}, against="links.h5", names=["b.jpg"] * 10)
