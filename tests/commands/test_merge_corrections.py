"""cf-merge --corrections and --previous, cf-merge add --corrections and --redecode,
cf-merge labels --corrections: answers honoured and recorded, ids kept, bad answers
refused with one line and nothing written. And exact duplicates added to a peaks or
intimacy clustering join their originals (issue 28, case 1)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from conftest import one_line_error, run_cmd

# every test reads a demo set linked by the commands (about 15 s to make) and runs several
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The set-up of issue 28: a demo set split by identity, cosine links of D_U (k = L =
    32) and D_L, peaks clusterings of both at threshold 0.6."""
    d = tmp_path_factory.mktemp("corr")
    run_cmd("data", "demo", d / "base.h5", "-n", 3000, "-d", 32, "--seed", 1, "-q", check=True)
    run_cmd("data", "split", d / "base.h5", "-L", d / "dl.h5", "-U", d / "du.h5", "-q",
            check=True)
    for p in ("dl", "du"):
        run_cmd("knn", d / f"{p}.h5", "-o", d / f"knn_{p}.h5", "-k", 32, "-q", check=True)
        run_cmd("seq", d / f"knn_{p}.h5", "--features", d / f"{p}.h5", "-o", d / f"seq_{p}.h5",
                "-L", 32, "-q", check=True)
        run_cmd("link", d / f"seq_{p}.h5", "--features", d / f"{p}.h5", "--method", "cosine",
                "-o", d / f"links_{p}.h5", "-q", check=True)
    run_cmd("merge", d / "links_du.h5", "-o", d / "c.h5", "--method", "peaks", "--threshold",
            0.6, "-q", check=True)
    with h5py.File(d / "du.h5") as f:
        np.save(d / "twins.npy", f["features"][:50])
    return d


def labels(path):
    with h5py.File(path) as f:
        return f["labels"][()]


def fid(path) -> str:
    with h5py.File(path) as f:
        return str(f.attrs.get("features_id", f.attrs["cftools_id"]))


def corrections(path, features_id, answers, n=1773):
    path.write_text(json.dumps({"cftools_kind": "corrections", "cftools_format": 1,
                                "features_id": features_id, "n_points": n,
                                "answers": answers}))
    return path


def largest(lab):
    big = np.bincount(lab[lab >= 0]).argmax()
    return big, np.flatnonzero(lab == big)


@pytest.mark.parametrize("method", ["peaks", "intimacy", "infomap", "components"])
def test_add_puts_exact_duplicates_with_their_originals(demo, tmp_path, method):
    """Issue 28 case 1: each twin's link to its original weighs 1.0 both ways; before the
    fix 5 of 50 (peaks) and 9 (intimacy) missed their original's cluster, 4 as singletons."""
    d = demo
    run_cmd("merge", d / "links_du.h5", "-o", tmp_path / "c.h5", "--method", method,
            "--threshold", 0.6, "-q", check=True)
    run_cmd("merge", "add", tmp_path / "c.h5", "--new", d / "twins.npy", "--links",
            d / "links_du.h5", "--features", d / "du.h5", "-o", tmp_path / "c2.h5",
            "--links-out", tmp_path / "l2.h5", "--features-out", tmp_path / "f2.h5", "-q",
            check=True)
    old, lab = labels(tmp_path / "c.h5"), labels(tmp_path / "c2.h5")
    n0 = old.size
    clustered = np.bincount(old)[old[:50]] >= 2  # originals in clusters of two or more
    assert (lab[n0:][clustered] == lab[:50][clustered]).all()
    sizes = np.bincount(lab)
    assert (sizes[lab[n0:]] >= 2).all()  # no twin left alone beside its original


def test_decode_honours_answers_and_records_them(demo, tmp_path):
    d = demo
    lab = labels(d / "c.h5")
    big, members = largest(lab)
    single = np.flatnonzero(np.bincount(lab)[lab] == 1)[:2]
    corr = corrections(tmp_path / "c.json", fid(d / "links_du.h5"), [
        {"kind": "different", "a": [int(members[0])], "b": [int(members[1])]},
        {"kind": "same", "a": [int(single[0])], "b": [int(single[1])], "question": 3},
        {"kind": "name", "points": [int(members[1])], "name": "Ann"}])
    run_cmd("merge", d / "links_du.h5", "-o", tmp_path / "out.h5", "--method", "peaks",
            "--threshold", 0.6, "--corrections", corr, "--previous", d / "c.h5", check=True)
    out = labels(tmp_path / "out.h5")
    assert out[members[0]] != out[members[1]] and out[single[0]] == out[single[1]]
    with h5py.File(tmp_path / "out.h5") as f:
        answers = [json.loads(s) for s in f["answers"][()]]
        assert [a["answer"] for a in answers] == [1, 2, 3] and answers[1]["question"] == 3
        rec = json.loads(f.attrs["corrections"])
        assert rec["sha1"] and rec["answers"] == 3 and rec["split"][0]["id"] == big
        assert json.loads(f.attrs["cluster_names"]) == {str(out[members[1]]): "Ann"}
        prov = json.loads(f.attrs["cftools_provenance"])[-1]
        assert prov["inputs"]["corrections"] == f"corrections:{rec['sha1']}"
        changes = f["id_changes"][()]
        # the larger part of the split cluster keeps its id; the rest is recorded
        kept = np.bincount(out[members]).argmax()
        assert kept == big and (changes[:, 2] == big).any()
        assert int(f.attrs["next_id"]) > lab.max()
    # a re-run keeping these ids honours the answers it recorded, and changes nothing
    run_cmd("merge", d / "links_du.h5", "-o", tmp_path / "again.h5", "--method", "peaks",
            "--threshold", 0.6, "--previous", tmp_path / "out.h5", check=True)
    assert (labels(tmp_path / "again.h5") == out).all()
    with h5py.File(tmp_path / "again.h5") as f:
        assert f["id_changes"].shape[0] == 0


def test_previous_on_unchanged_links_gives_identical_ids(demo, tmp_path):
    d = demo
    base = labels(d / "c.h5")
    renumbered = base.max() - np.where(base >= 0, base, 0)  # the same clusters, other ids
    from cftools.formats.writing import write_artifact

    with write_artifact(tmp_path / "old.h5", "clusters",
                        attrs={"features_id": fid(d / "links_du.h5")}) as f:
        f.create_dataset("labels", data=renumbered)
    run_cmd("merge", d / "links_du.h5", "-o", tmp_path / "new.h5", "--method", "peaks",
            "--threshold", 0.6, "--previous", tmp_path / "old.h5", check=True)
    assert (labels(tmp_path / "new.h5") == renumbered).all()


@pytest.mark.parametrize("case", ["missing point", "must and cannot", "cannot in a chain",
                                  "other data set"])
def test_bad_answers_are_refused_with_one_line(demo, tmp_path, case):
    d = demo
    members = largest(labels(d / "c.h5"))[1].tolist()
    good = fid(d / "links_du.h5")
    answers, features_id = {
        "missing point": ([{"kind": "same", "a": [1], "b": [5000]}], good),
        "must and cannot": ([{"kind": "same", "a": [members[0]], "b": [members[1]]},
                             {"kind": "different", "a": [members[1]], "b": [members[0]]}], good),
        "cannot in a chain": ([{"kind": "same", "a": [1], "b": [2]},
                               {"kind": "same", "a": [2], "b": [3]},
                               {"kind": "different", "a": [3], "b": [1]}], good),
        "other data set": ([{"kind": "same", "a": [1], "b": [2]}], fid(d / "links_dl.h5")),
    }[case]
    corr = corrections(tmp_path / "c.json", features_id, answers)
    says = {"missing point": "names point 5000, which does not exist",
            "must and cannot": "contradictory answers", "cannot in a chain":
            "the 'same' answers 1, 2 join them", "other data set": "another data set"}[case]
    runs = {
        "decode": ("merge", d / "links_du.h5", "-o", tmp_path / "o.h5", "--threshold", 0.6,
                   "--corrections", corr),
        "labels": ("merge", "labels", d / "c.h5", "--unlabelled-features", d / "du.h5",
                   "--labelled-features", d / "dl.h5", "-o", tmp_path / "o.h5",
                   "--corrections", corr),
        "add": ("merge", "add", d / "c.h5", "--new", d / "twins.npy", "--links",
                d / "links_du.h5", "--features", d / "du.h5", "-o", tmp_path / "o.h5",
                "--links-out", tmp_path / "o2.h5", "--features-out", tmp_path / "o3.h5",
                "--corrections", corr),
        "review": ("eval", "review", d / "c.h5", "--links", d / "links_du.h5", "-o",
                   tmp_path / "q.json", "--corrections", corr),
    }
    for name, args in runs.items():
        line = one_line_error(run_cmd(*args))
        assert says in line and "c.json" in line, (name, line)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json"], name


def test_adds_honour_answers_and_carry_them(demo, tmp_path):
    """An add honours --corrections and the answers its input recorded; --redecode may
    split an old cluster, and records every id change."""
    d = demo
    members = largest(labels(d / "c.h5"))[1]
    corr = corrections(tmp_path / "c.json", fid(d / "links_du.h5"), [
        {"kind": "different", "a": [int(members[0])], "b": [int(members[-1])]}])
    new = np.load(d / "twins.npy")
    np.save(tmp_path / "b1.npy", new[:25])
    np.save(tmp_path / "b2.npy", new[25:])

    def add(src, feats, links, batch, out, *extra):
        run_cmd("merge", "add", src, "--new", tmp_path / f"{batch}.npy", "--links", links,
                "--features", feats, "-o", tmp_path / f"{out}c.h5", "--links-out",
                tmp_path / f"{out}l.h5", "--features-out", tmp_path / f"{out}f.h5", "-q",
                *extra, check=True)
        return tmp_path / f"{out}c.h5"

    c1 = add(d / "c.h5", d / "du.h5", d / "links_du.h5", "b1", "one", "--corrections", corr)
    lab1 = labels(c1)
    assert lab1[members[0]] != lab1[members[-1]]
    c2 = add(c1, tmp_path / "onef.h5", tmp_path / "onel.h5", "b2", "two", "--redecode")
    lab2 = labels(c2)
    assert lab2[members[0]] != lab2[members[-1]]  # recorded in c1, honoured again
    with h5py.File(c2) as f:
        changes = f["id_changes"][()]
        assert json.loads(f.attrs["corrections"])["recorded_in"] == str(c1)
        assert json.loads(f.attrs["batches"])[-1]["redecode"] is True
        next_id = int(f.attrs["next_id"])
    # every old point whose id changed is counted, once
    moved = lab1 != lab2[:lab1.size]
    assert changes[changes[:, 0] == 2, 4].sum() == moved.sum()
    assert next_id > max(lab1.max(), lab2.max())


def test_labels_carry_names(demo, tmp_path):
    d = demo
    lab = labels(d / "c.h5")
    big, members = largest(lab)
    corr = corrections(tmp_path / "c.json", fid(d / "links_du.h5"), [
        {"kind": "name", "points": [int(members[0])], "name": "Ann"},
        {"kind": "different", "a": [int(members[0])], "b": [int(members[-1])]}])
    run_cmd("merge", "labels", d / "c.h5", "--unlabelled-features", d / "du.h5",
            "--labelled-features", d / "dl.h5", "-o", tmp_path / "r.h5", "--corrections", corr,
            check=True)
    with h5py.File(tmp_path / "r.h5") as f:
        names = json.loads(f.attrs["label_names"])
        rows, src, y = f["source_rows"][()], f["source"][()], f["labels"][()]
    pseudo = dict(zip(rows[src == 1].tolist(), y[src == 1].tolist()))
    assert names == {str(pseudo[int(members[0])]): "Ann"}
    assert pseudo[int(members[0])] != pseudo.get(int(members[-1]))
