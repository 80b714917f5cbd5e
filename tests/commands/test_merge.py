"""cf-merge: decode a links file into clusters (thresholds from the file, a flag or a
labelled calibration set, never the set itself), singleton policies reported, the next
round's labels from clusters + D_L, and cf-eval sweep as an oracle diagnosis."""

import json

import numpy as np
import pytest
from conftest import one_line_error, run_cmd

from cftools.core.calibration.thresholds import calibrate_thresholds
from cftools.core.decoding.decoders import decode
from cftools.core.decoding.weights import link_weights, reciprocal
from cftools.core.metrics import pairwise_scores
from cftools.core.neighbours.index import knn
from cftools.data.demo import make_demo_features, split_by_identity
from cftools.formats.artifacts import open_artifact
from cftools.formats.features import load_features, load_labels, write_features
from cftools.formats.thresholds import LINK_MODES
from cftools.formats.writing import create_rows, write_artifact


def write_links(path, indices, probs, features_id, method="cosine", thresholds=None):
    attrs = {"features_id": features_id, "method": method}
    if thresholds is not None:
        attrs["thresholds"] = thresholds
    with write_artifact(path, "links", attrs=attrs) as f:
        create_rows(f, "indices", indices.shape, np.int64, data=indices)
        create_rows(f, "probabilities", probs.shape, np.float32, data=probs)


@pytest.fixture(scope="module")
def rounds(tmp_path_factory):
    """A demo D_L / D_U pair: features files and cosine links of each."""
    d = tmp_path_factory.mktemp("merge")
    x, y = make_demo_features(1600, 32, seed=7)
    lab, unl = split_by_identity(y, 0.5, seed=0)
    names = np.array([f"img{i}.jpg" for i in range(len(y))])
    write_features(d / "fl.h5", x[lab], labels=y[lab], names=names[lab])
    write_features(d / "fu.h5", x[unl])  # unlabelled: no labels, no names
    out = {"dir": d, "yl": y[lab], "yu": y[unl], "names_l": names[lab]}
    for part, rows in (("l", lab), ("u", unl)):
        idx, sims = knn(x[rows], 20)
        fid = open_artifact(d / f"f{part}.h5", "features").id
        write_links(d / f"links_{part}.h5", idx, sims, fid)
        out[f"i{part}"], out[f"s{part}"], out[f"fid_{part}"] = idx, sims, fid
    np.save(d / "yl.npy", y[lab])
    np.save(d / "yu.npy", y[unl])
    return out


def read_clusters(path):
    with open_artifact(path, "clusters") as art:
        return art.read("labels"), dict(art.attrs)


def test_decode_is_the_default_and_matches_the_core(rounds, tmp_path):
    d = rounds["dir"]
    proc = run_cmd("merge", d / "links_u.h5", "-o", tmp_path / "c.h5", "--method", "components",
                   "--threshold", 0.7, "--reciprocal", check=True)
    labels, attrs = read_clusters(tmp_path / "c.h5")
    ref = decode("components", rounds["iu"], reciprocal(rounds["iu"], rounds["su"]), 0.7)
    assert np.array_equal(labels, ref)
    assert attrs["method"] == "components" and attrs["threshold"] == pytest.approx(0.7)
    assert attrs["link_mode"] == "reciprocal"
    assert attrs["threshold_source"] == "--threshold"
    assert attrs["features_id"] == rounds["fid_u"]
    counts = json.loads(attrs["singleton_counts"])
    assert counts["singletons"] == counts["kept"] == int((np.bincount(ref) == 1).sum())
    assert f"{counts['singletons']} found" in proc.stderr
    prov = json.loads(attrs["cftools_provenance"])
    assert "merge" in prov[-1]["command"] or "cf-merge" in prov[-1]["command"]
    # explicit subcommand gives the same
    run_cmd("merge", "decode", d / "links_u.h5", "-o", tmp_path / "c2.h5", "--method",
            "components", "--threshold", 0.7, "--reciprocal", "-q", check=True)
    assert np.array_equal(read_clusters(tmp_path / "c2.h5")[0], labels)
    # --directed decodes the links as given
    run_cmd("merge", d / "links_u.h5", "-o", tmp_path / "c3.h5", "--method", "components",
            "--threshold", 0.7, "--directed", "-q", check=True)
    labels, attrs = read_clusters(tmp_path / "c3.h5")
    assert attrs["link_mode"] == "directed"
    assert np.array_equal(labels, decode("components", rounds["iu"], rounds["su"], 0.7))
    # cosine links with no calibrated mode are decoded as given (averaging both directions
    # hurts cosine links of long-tailed faces)
    run_cmd("merge", d / "links_u.h5", "-o", tmp_path / "c4.h5", "--method", "components",
            "--threshold", 0.7, "-q", check=True)
    labels4, attrs = read_clusters(tmp_path / "c4.h5")
    assert attrs["link_mode"] == "directed" and np.array_equal(labels4, labels)


def test_link_mode_follows_calibration(rounds, tmp_path):
    """The mode calibration chose for a decoder (link_mode_DECODER in the links' thresholds)
    is the default; model links with no recorded mode are weighed reciprocally."""
    for stored, method, want in (({"components": 0.7, "directed_components": 0.7,
                                   "link_mode_components": "reciprocal"}, "cosine", "reciprocal"),
                                 ({"components": 0.7, "directed_components": 0.7}, "model",
                                  "reciprocal"),
                                 ({"components": 0.7, "directed_components": 0.7,
                                   "link_mode_components": "directed"}, "model", "directed")):
        links = tmp_path / f"l_{method}_{want}.h5"
        write_links(links, rounds["iu"], rounds["su"], rounds["fid_u"], method=method,
                    thresholds=stored)
        run_cmd("merge", links, "-o", tmp_path / "c.h5", "--method", "components", "-q",
                check=True)
        assert read_clusters(tmp_path / "c.h5")[1]["link_mode"] == want, (stored, method)


def test_no_threshold_is_an_error_not_a_guess(rounds, tmp_path):
    line = one_line_error(run_cmd("merge", rounds["dir"] / "links_u.h5", "-o", tmp_path / "c.h5"))
    assert "--threshold" in line and "--calibrate" in line
    assert not (tmp_path / "c.h5").exists()


def test_decoders_training_did_not_calibrate_get_no_threshold(rounds, tmp_path):
    """Links of a model calibrated for some decoders only (cf-train --decoders): those take
    their thresholds, the others none from the link classifier's, and cf-merge asks for
    one in one line."""
    links = tmp_path / "l.h5"
    write_links(links, rounds["iu"], rounds["su"], rounds["fid_u"], method="model",
                thresholds={"link": 0.66, "infomap": 0.7, "directed_infomap": 0.72,
                            "link_mode_infomap": "directed"})
    run_cmd("merge", links, "-o", tmp_path / "i.h5", "--method", "infomap", "-q", check=True)
    assert read_clusters(tmp_path / "i.h5")[1]["threshold"] == pytest.approx(0.72)
    line = one_line_error(run_cmd("merge", links, "-o", tmp_path / "p.h5", "--method", "peaks"))
    assert "cf-train --decoders" in line and "--threshold" in line and "--calibrate" in line
    assert not (tmp_path / "p.h5").exists()


def test_pseudo_cuts_at_the_pseudo_label_threshold_the_links_carry(rounds, tmp_path):
    """--pseudo: Infomap at the links' pseudo_infomap threshold, in the link mode it was
    chosen in (the same clusters as --threshold there); refused in one line where the
    links carry none, beside --threshold, or under another link mode."""
    links, bare = tmp_path / "l.h5", tmp_path / "bare.h5"
    stored = {"infomap": 0.7, "directed_infomap": 0.72, "link_mode_infomap": "directed",
              "pseudo_infomap": 0.86}
    write_links(links, rounds["iu"], rounds["su"], rounds["fid_u"], method="model",
                thresholds=stored)
    run_cmd("merge", links, "-o", tmp_path / "p.h5", "--method", "infomap", "--pseudo", "-q",
            check=True)
    labels, attrs = read_clusters(tmp_path / "p.h5")
    assert attrs["threshold"] == pytest.approx(0.86) and attrs["link_mode"] == "directed"
    assert "pseudo_infomap" in attrs["threshold_source"], attrs["threshold_source"]
    run_cmd("merge", links, "-o", tmp_path / "t.h5", "--method", "infomap", "--threshold", 0.86,
            "--directed", "-q", check=True)
    assert np.array_equal(labels, read_clusters(tmp_path / "t.h5")[0])
    run_cmd("merge", links, "-o", tmp_path / "c.h5", "--method", "infomap", "-q", check=True)
    assert np.unique(read_clusters(tmp_path / "c.h5")[0]).size < np.unique(labels).size
    write_links(bare, rounds["iu"], rounds["su"], rounds["fid_u"], method="model",
                thresholds={k: v for k, v in stored.items() if k != "pseudo_infomap"})
    line = one_line_error(run_cmd("merge", bare, "-o", tmp_path / "n.h5", "--method",
                                  "infomap", "--pseudo"))
    assert "bare.h5" in line and "pseudo_infomap" in line and "--pseudo-threshold" in line
    for extra in (["--threshold", "0.8"], ["--reciprocal"]):
        r = run_cmd("merge", links, "-o", tmp_path / "u.h5", "--method", "infomap", "--pseudo",
                    *extra)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not any((tmp_path / n).exists() for n in ("n.h5", "u.h5"))


def test_thresholds_from_the_links_file(rounds, tmp_path):
    links = tmp_path / "l.h5"
    write_links(links, rounds["iu"], rounds["su"], rounds["fid_u"], method="model",
                thresholds={"link": 0.66, "peaks": 0.72, "directed_peaks": 0.75,
                            "directed_peaks_tolerance": 0.01})
    run_cmd("merge", links, "-o", tmp_path / "p.h5", "--method", "peaks", "-q", check=True)
    labels, attrs = read_clusters(tmp_path / "p.h5")
    assert attrs["threshold"] == pytest.approx(0.72) and "peaks" in attrs["threshold_source"]
    recip = reciprocal(rounds["iu"], rounds["su"])
    assert np.array_equal(labels, decode("peaks", rounds["iu"], recip, 0.72))
    assert attrs["peaks_tolerance"] == 0.0
    # each link mode takes its own calibrated values
    run_cmd("merge", links, "-o", tmp_path / "d.h5", "--method", "peaks", "--directed", "-q",
            check=True)
    labels, attrs = read_clusters(tmp_path / "d.h5")
    assert attrs["threshold"] == pytest.approx(0.75) and "directed_peaks" in attrs["threshold_source"]
    assert attrs["peaks_tolerance"] == pytest.approx(0.01)
    assert np.array_equal(labels, decode("peaks", rounds["iu"], rounds["su"], 0.75,
                                           peaks_tolerance=0.01))
    run_cmd("merge", links, "-o", tmp_path / "i.h5", "--method", "infomap", "-q", check=True)
    _, attrs = read_clusters(tmp_path / "i.h5")
    assert attrs["threshold"] == pytest.approx(0.66) and "link" in attrs["threshold_source"]
    # a flag overrides the file
    run_cmd("merge", links, "-o", tmp_path / "f.h5", "--method", "peaks", "--threshold", 0.8,
            "-q", check=True)
    assert read_clusters(tmp_path / "f.h5")[1]["threshold"] == pytest.approx(0.8)


def test_calibrate_on_labelled_links(rounds, tmp_path):
    d = rounds["dir"]
    run_cmd("merge", d / "links_u.h5", "-o", tmp_path / "c.h5", "--method", "infomap",
            "--calibrate", d / "links_l.h5", "--calibrate-truth", d / "yl.npy", "-q", check=True)
    labels, attrs = read_clusters(tmp_path / "c.h5")
    # both link modes are calibrated; the one whose clusters score better on D_L is kept
    found = {mode: calibrate_thresholds(rounds["il"], link_weights(rounds["il"], rounds["sl"],
                                                                       mode),
                                          rounds["yl"], decoders=("infomap",),
                                          return_scores=True)
             for mode in LINK_MODES}
    mode = max(found, key=lambda m: (found[m][1]["infomap"], m == "directed"))  # ties: directed
    want = found[mode][0]
    assert attrs["link_mode"] == mode
    assert attrs["threshold"] == pytest.approx(want["infomap"])
    assert "calibrated on" in attrs["threshold_source"]
    assert pairwise_scores(labels, rounds["yu"])["pairwise_f"] > 0.6
    # the truth may come from the labelled features file too
    run_cmd("merge", d / "links_u.h5", "-o", tmp_path / "c2.h5", "--method", "infomap",
            "--calibrate", d / "links_l.h5", "--calibrate-truth", d / "fl.h5", "-q", check=True)
    assert read_clusters(tmp_path / "c2.h5")[1]["threshold"] == pytest.approx(want["infomap"])


def test_calibrating_on_the_clustered_set_is_refused(rounds, tmp_path):
    d = rounds["dir"]
    line = one_line_error(run_cmd("merge", d / "links_u.h5", "-o", tmp_path / "c.h5",
                                  "--calibrate", d / "links_u.h5", "--calibrate-truth",
                                  d / "yu.npy"))
    assert "never on the set to cluster" in line
    other = tmp_path / "model_links.h5"
    write_links(other, rounds["il"], rounds["sl"], rounds["fid_l"], method="model")
    line = one_line_error(run_cmd("merge", d / "links_u.h5", "-o", tmp_path / "c.h5",
                                  "--calibrate", other, "--calibrate-truth", d / "yl.npy"))
    assert "thresholds do not transfer" in line
    line = one_line_error(run_cmd("merge", d / "links_u.h5", "-o", tmp_path / "c.h5",
                                  "--calibrate", d / "links_l.h5"))
    assert "--calibrate-truth" in line


def test_singleton_policies_reported(rounds, tmp_path):
    d = rounds["dir"]
    base = ["merge", d / "links_u.h5", "--method", "components", "--threshold", 0.75]
    run_cmd(*base, "-o", tmp_path / "k.h5", "-q", check=True)
    kept, _ = read_clusters(tmp_path / "k.h5")
    n_single = int((np.bincount(kept) == 1).sum())
    assert n_single > 10
    proc = run_cmd(*base, "-o", tmp_path / "u.h5", "--singletons", "unassign", check=True)
    un, attrs = read_clusters(tmp_path / "u.h5")
    assert int((un == -1).sum()) == n_single
    assert json.loads(attrs["singleton_counts"])["unassigned"] == n_single
    assert f"{n_single} unassigned" in proc.stderr
    line = one_line_error(run_cmd(*base, "-o", tmp_path / "a.h5", "--singletons", "attach"))
    assert "--attach-threshold" in line
    run_cmd(*base, "-o", tmp_path / "a.h5", "--singletons", "attach", "--attach-threshold", 0.5,
            "-q", check=True)
    att, attrs = read_clusters(tmp_path / "a.h5")
    c = json.loads(attrs["singleton_counts"])
    assert c["attached"] > 0 and c["attached"] + c["kept"] == n_single
    assert int((np.bincount(att) == 1).sum()) == c["kept"]


def test_bad_inputs_one_line(rounds, tmp_path):
    d = rounds["dir"]
    line = one_line_error(run_cmd("merge", d / "fu.h5", "-o", tmp_path / "c.h5", "--threshold", 1))
    assert "expected links" in line
    bad = tmp_path / "bad.h5"
    idx = rounds["iu"].copy()
    idx[3, 2] = idx.shape[0] + 5
    write_links(bad, idx, rounds["su"], rounds["fid_u"])
    assert "neighbour ids" in one_line_error(run_cmd("merge", bad, "-o", tmp_path / "c.h5",
                                                     "--threshold", 0.5))
    line = one_line_error(run_cmd("merge", d / "links_u.h5", "-o", d / "links_u.h5",
                                  "--threshold", 0.5))
    assert "also an input" in line


def test_next_round_labels(rounds, tmp_path):
    d = rounds["dir"]
    clusters = tmp_path / "c.h5"
    run_cmd("merge", d / "links_u.h5", "-o", clusters, "--method", "components",
            "--threshold", 0.72, "--singletons", "unassign", "-q", check=True)
    pred, _ = read_clusters(clusters)
    proc = run_cmd("merge", "labels", clusters, "--unlabelled-features", d / "fu.h5",
                   "--labelled-features", d / "fl.h5", "-o", tmp_path / "next.h5",
                   "--min-size", 3, "--meta", tmp_path / "next.meta", "--bin",
                   tmp_path / "next.bin", check=True)
    assert "pseudo-labelled rows" in proc.stderr
    nxt = load_features(tmp_path / "next.h5")
    with open_artifact(tmp_path / "next.h5", "features") as art:
        source, rows = art.read("source"), art.read("source_rows")
        attrs = dict(art.attrs)
        prov = json.loads(attrs["cftools_provenance"])
    fl, fu = load_features(d / "fl.h5"), load_features(d / "fu.h5")
    yl = rounds["yl"]
    sizes = np.bincount(pred[pred >= 0])
    keep_u = np.flatnonzero((pred >= 0) & (sizes[np.maximum(pred, 0)] >= 3))
    assert nxt.n == len(yl) + keep_u.size
    assert np.array_equal(rows[source == 0], np.arange(len(yl)))
    assert np.array_equal(rows[source == 1], keep_u)
    np.testing.assert_array_equal(nxt.features[source == 0], fl.features)
    np.testing.assert_array_equal(nxt.features[source == 1], fu.features[keep_u])
    assert np.array_equal(nxt.labels[source == 0], yl)
    pseudo = nxt.labels[source == 1]
    assert pseudo.min() == yl.max() + 1 == attrs["pseudo_label_offset"]
    # the same partition as the clusters, no pseudo-id below the minimum size
    assert np.unique(np.stack([pseudo, pred[keep_u]]), axis=1).shape[1] == np.unique(pseudo).size
    assert np.bincount(pseudo - pseudo.min()).min() >= 3
    # names: carried from D_L, made up as FILE#ROW for D_U
    assert list(nxt.names[source == 0]) == list(rounds["names_l"])
    assert nxt.names[source == 1][0] == f"{d / 'fu.h5'}#{keep_u[0]}"
    assert set(prov[-1]["inputs"]) == {"clusters", "unlabelled", "labelled"}
    # learn-to-cluster copies
    assert np.array_equal(load_labels(tmp_path / "next.meta"), nxt.labels)
    raw = np.fromfile(tmp_path / "next.bin", dtype=np.float32).reshape(nxt.n, -1)
    np.testing.assert_array_equal(raw, nxt.features)


def _components_of_u(rounds, tmp_path):
    """(the clusters file, its labels, its cluster sizes) of D_U's links by components."""
    clusters = tmp_path / "c.h5"
    run_cmd("merge", rounds["dir"] / "links_u.h5", "-o", clusters, "--method", "components",
            "--threshold", 0.6, "-q", check=True)
    pred, _ = read_clusters(clusters)
    return clusters, pred, np.bincount(pred[pred >= 0])


def test_next_round_labels_max_size(rounds, tmp_path):
    d = rounds["dir"]
    clusters, pred, sizes = _components_of_u(rounds, tmp_path)
    largest_l = int(np.bincount(np.unique(rounds["yl"], return_inverse=True)[1]).max())
    for arg, cap in (("auto", largest_l), ("3", 3), ("none", None)):
        out = tmp_path / f"next-{arg}.h5"
        proc = run_cmd("merge", "labels", clusters, "--unlabelled-features", d / "fu.h5",
                       "--labelled-features", d / "fl.h5", "-o", out, "--max-size", arg,
                       check=True)
        with open_artifact(out, "features") as art:
            source, rows, attrs = art.read("source"), art.read("source_rows"), dict(art.attrs)
        size = sizes[pred[rows[source == 1]]]
        keep = (pred >= 0) & (sizes[np.maximum(pred, 0)] >= 2)
        if cap is not None:
            keep &= sizes[np.maximum(pred, 0)] <= cap
            assert f"in clusters of more than {cap}" in proc.stderr
        assert np.array_equal(rows[source == 1], np.flatnonzero(keep))
        assert size.min() >= 2 and (cap is None or size.max() <= cap)
        assert attrs["max_size"] == (cap or 0)
        too_large = (pred >= 0) & (sizes[np.maximum(pred, 0)] > (cap or 10**9))
        assert attrs["dropped_large"] == int(too_large.sum())
    r = run_cmd("merge", "labels", clusters, "--unlabelled-features", d / "fu.h5",
                "--labelled-features", d / "fl.h5", "-o", tmp_path / "bad.h5", "--max-size", "x")
    assert r.returncode != 0 and "--max-size" in r.stderr


def test_next_round_labels_from_each_cluster_s_core(rounds, tmp_path):
    """--cores STRICT: each cluster keeps its largest piece in a stricter clustering of the
    same points (keep_cores) before the size limits; the count and the stricter file's id
    are recorded; a clustering of other points is refused in one line naming it."""
    from cftools.core.pseudo_labels import keep_cores

    d = rounds["dir"]
    clusters, pred, _ = _components_of_u(rounds, tmp_path)
    strict = tmp_path / "strict.h5"
    run_cmd("merge", d / "links_u.h5", "-o", strict, "--method", "components", "--threshold",
            0.8, "-q", check=True)
    out = tmp_path / "cores.h5"
    proc = run_cmd("merge", "labels", clusters, "--unlabelled-features", d / "fu.h5",
                   "--labelled-features", d / "fl.h5", "-o", out, "--cores", strict, check=True)
    core = keep_cores(pred, read_clusters(strict)[0])
    sizes = np.bincount(core[core >= 0])
    want = np.flatnonzero((core >= 0) & (sizes[np.maximum(core, 0)] >= 2))
    with open_artifact(out, "features") as art, open_artifact(strict, "clusters") as s:
        source, rows, attrs = art.read("source"), art.read("source_rows"), dict(art.attrs)
        assert attrs["cores_id"] == s.id
    assert np.array_equal(rows[source == 1], want) and want.size
    assert attrs["outside_cores"] == int(((pred >= 0) & (core < 0)).sum()) > 0
    assert "outside their cluster's core" in proc.stderr
    other = tmp_path / "other.h5"
    write_links(tmp_path / "l3.h5", np.arange(3)[:, None], np.ones((3, 1), np.float32),
                rounds["fid_u"])
    run_cmd("merge", tmp_path / "l3.h5", "-o", other, "--method", "components", "--threshold",
            0.5, "-q", check=True)
    line = one_line_error(run_cmd("merge", "labels", clusters, "--unlabelled-features",
                                  d / "fu.h5", "--labelled-features", d / "fl.h5", "-o",
                                  tmp_path / "bad.h5", "--cores", other))
    assert "other.h5" in line and "same points" in line
    assert not (tmp_path / "bad.h5").exists()


def test_next_round_labels_trim_oversized_clusters(rounds, tmp_path):
    """--oversized trim: a cluster over --max-size keeps its --max-size members nearest its
    mean direction instead of being dropped; the others are kept as with drop."""
    d = rounds["dir"]
    clusters, pred, sizes = _components_of_u(rounds, tmp_path)
    assert (sizes > 3).any()  # something to trim
    out = tmp_path / "next.h5"
    proc = run_cmd("merge", "labels", clusters, "--unlabelled-features", d / "fu.h5",
                   "--labelled-features", d / "fl.h5", "-o", out, "--max-size", "3",
                   "--oversized", "trim", check=True)
    with open_artifact(out, "features") as art:
        source, rows, labels = art.read("source"), art.read("source_rows"), art.read("labels")
        attrs = dict(art.attrs)
    with open_artifact(d / "fu.h5", "features") as art:
        fu = art.read("features")
    kept = set(rows[source == 1].tolist())
    for c in np.flatnonzero(sizes >= 2):
        members = np.flatnonzero(pred == c)
        if members.size <= 3:
            assert set(members.tolist()) <= kept
            continue
        x = fu[members] / np.linalg.norm(fu[members], axis=1, keepdims=True)
        near = members[np.argsort(-(x @ x.mean(axis=0)), kind="stable")[:3]]
        assert set(members.tolist()) & kept == set(near.tolist()), c
    assert np.bincount(labels[source == 1]).max() <= 3
    assert attrs["oversized"] == "trim" and attrs["dropped_large"] == 0
    assert attrs["dropped_unassigned"] == int((pred < 0).sum())
    assert attrs["trimmed"] == int((sizes[sizes > 3] - 3).sum())
    assert "trimmed from clusters of more than 3" in proc.stderr


def test_labels_refuses_mismatched_inputs(rounds, tmp_path):
    d = rounds["dir"]
    clusters = tmp_path / "c.h5"
    run_cmd("merge", d / "links_u.h5", "-o", clusters, "--threshold", 0.7, "-q", check=True)
    # clusters of D_U with D_L's features as the unlabelled set
    line = one_line_error(run_cmd("merge", "labels", clusters, "--unlabelled-features",
                                  d / "fl.h5", "--labelled-features", d / "fu.h5", "-o",
                                  tmp_path / "n.h5"))
    assert "labels but the unlabelled features" in line or "other features" in line
    line = one_line_error(run_cmd("merge", "labels", clusters, "--unlabelled-features",
                                  d / "fu.h5", "--labelled-features", d / "fu.h5", "-o",
                                  tmp_path / "n.h5"))
    assert "no labels" in line or "same file" in line
    assert not (tmp_path / "n.h5").exists()


def test_sweep_is_an_oracle_diagnosis(rounds, tmp_path):
    d = rounds["dir"]
    proc = run_cmd("eval", "sweep", d / "links_u.h5", "--truth", d / "yu.npy", "--method",
                   "components", "--thresholds", "0.6:0.85:6", "--png", tmp_path / "s.png",
                   "--json", check=True)
    out = json.loads(proc.stdout)
    assert "oracle" in out["note"] and "oracle" in proc.stderr
    assert [r["threshold"] for r in out["rows"]] == pytest.approx(np.linspace(0.6, 0.85, 6))
    assert out["link_mode"] == "reciprocal"
    recip = reciprocal(rounds["iu"], rounds["su"])
    for r in out["rows"]:
        want = pairwise_scores(decode("components", rounds["iu"], recip, r["threshold"]),
                               rounds["yu"])["pairwise_f"]
        assert r["pairwise_f"] == pytest.approx(want)
    assert out["oracle_best"]["pairwise_f"] == max(r["pairwise_f"] for r in out["rows"])
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    line = one_line_error(run_cmd("eval", "sweep", d / "links_u.h5", "--truth", d / "yu.npy",
                                  "--thresholds", "0.6:0.8"))
    assert "A:B:N" in line


@pytest.mark.slow
def test_model_links_beat_cosine_components(tmp_path):
    """A small Clusformer trained on D_L (core API) links D_U. Infomap and peaks over those
    links (default, reciprocal weights) beat connected components over raw cosine links
    (--directed: the links as they are), every threshold calibrated on D_L (model links of
    D_L for the model, cosine links of D_L for the baseline); Infomap also at the
    thresholds training stored (file attr).

    Identities are capped at 60 points: with the demo's default cap of 300, one or two
    identities hold most same-identity pairs and pairwise F swings with a single merge."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _model_links_beat_cosine(torch, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _model_links_beat_cosine(torch, tmp_path):
    from cftools.core.clusformer.grammar import build_sequences
    from cftools.core.clusformer.inference import predict
    from cftools.core.clusformer.model import make_config
    from cftools.core.clusformer.sequences import SequenceData
    from cftools.core.clusformer.training import TrainConfig, train

    k = 16
    x, y = make_demo_features(3000, 32, seed=5, hard_fraction=0.2, noise_fraction=0.05,
                              max_size=60)
    lab, unl = split_by_identity(y, 0.5, seed=0)
    il, sl = knn(x[lab], k)
    iu, su = knn(x[unl], k)
    order, mask, targets = build_sequences(il, sl, k, labels=y[lab])
    config = make_config("small", 32, k, width=32, heads=2, encoder_layers=1, decoder_layers=1,
                         ffn=64)
    res = train(SequenceData(order, mask, targets, y[lab]), x[lab], config,
                TrainConfig(epochs=6, lr=2e-3, batch_size=64, seed=0),
                device=torch.device("cpu"), log=lambda *_: None)
    assert {"link", "peaks", "infomap", "directed_peaks", "directed_infomap"} <= set(res.thresholds)
    ou, mu, _ = build_sequences(iu, su, k)
    probs = predict(res.model, torch.from_numpy(x[unl]), ou, mu)
    write_links(tmp_path / "model.h5", ou, probs, "fu", method="model",
                thresholds=res.thresholds)
    write_links(tmp_path / "model_l.h5", order,
                predict(res.model, torch.from_numpy(x[lab]), order, mask), "fl", method="model")
    write_links(tmp_path / "cos_u.h5", iu, su, "fu")
    write_links(tmp_path / "cos_l.h5", il, sl, "fl")
    np.save(tmp_path / "yl.npy", y[lab])

    def score(*args):
        run_cmd("merge", *args, "-o", tmp_path / "c.h5", "-q", check=True)
        return pairwise_scores(read_clusters(tmp_path / "c.h5")[0], y[unl])["pairwise_f"]

    baseline = score(tmp_path / "cos_u.h5", "--method", "components", "--directed",
                     "--calibrate", tmp_path / "cos_l.h5", "--calibrate-truth",
                     tmp_path / "yl.npy")
    on_dl = ["--calibrate", tmp_path / "model_l.h5", "--calibrate-truth", tmp_path / "yl.npy"]
    infomap = score(tmp_path / "model.h5", "--method", "infomap", *on_dl)
    peaks = score(tmp_path / "model.h5", "--method", "peaks", *on_dl)
    assert infomap > baseline and peaks > baseline, (infomap, peaks, baseline)
    assert score(tmp_path / "model.h5", "--method", "infomap") > baseline
