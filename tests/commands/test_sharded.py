"""cf-knn, cf-link and cf-embed extract under torchrun (2 processes, gloo on CPU) write
the artifact one process writes; a rank that dies leaves nothing published, no shards."""

import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from conftest import assert_same_neighbours, write_demo_sequences

from cftools.core.clusformer.model import Clusformer, make_config, save_model
from cftools.core.recognition.backbone import Backbone, BackboneConfig, save_backbone
from cftools.core.runtime.sharding import DIE_ENV, rank_rows
from cftools.data.demo import make_demo_features
from cftools.data.demo_images import make_demo
from cftools.formats.artifacts import open_artifact
from cftools.formats.features import write_features

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def one(module, *args, env=None):
    r = subprocess.run([sys.executable, "-m", f"cftools.commands.{module}", *map(str, args)],
                       capture_output=True, text=True, env={**ENV, **(env or {})})
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def torchrun(module, *args, env=None, ok=True):
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node=2", "-m", f"cftools.commands.{module}",
                        *map(str, args)],
                       capture_output=True, text=True, env={**ENV, **(env or {})}, timeout=300)
    if ok:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def leftovers(folder):
    """Temporary outputs and shard folders of cftools left in ``folder``."""
    return [p.name for p in folder.iterdir() if "cf-tmp" in p.name or "cf-shards" in p.name]


def same_artifact(a, b, kind, exact=("indices",), close=(), atol=0.0):
    """Two artifacts equal in their datasets and attributes (ids, times aside); the last
    provenance step records the same command line."""
    with open_artifact(a, kind) as x, open_artifact(b, kind) as y:
        for name in exact:
            assert np.array_equal(x.read(name), y.read(name)), name
        for name in close:
            np.testing.assert_allclose(x.read(name), y.read(name), atol=atol, rtol=0, err_msg=name)
        skip = {"cftools_id", "cftools_provenance"}
        ax = {k: v for k, v in x.attrs.items() if k not in skip}
        ay = {k: v for k, v in y.attrs.items() if k not in skip}
        assert ax.keys() == ay.keys()
        for k in ax:
            assert np.array_equal(ax[k], ay[k]) or ax[k] == ay[k], k
        px, py = x.provenance[-1], y.provenance[-1]
        assert px["inputs"] == py["inputs"] and px["output"] == x.id and py["output"] == y.id
        assert len(x.provenance) == len(y.provenance)


def test_rank_rows_cover_every_row_once():
    for n in (0, 1, 7, 100, 101):
        for world in (1, 2, 3, 8):
            parts = [rank_rows(n, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            sizes = [b - a for a, b in parts]
            assert max(sizes) - min(sizes) <= 1


@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sharded")
    x, y = make_demo_features(3001, 32, seed=2)  # odd: ranks get 1501 and 1500 rows
    write_features(tmp / "f.h5", x, labels=y)
    return tmp


@pytest.mark.slow
@pytest.mark.parametrize("method", ["exact", "ivf", "auto"])
def test_knn_two_ranks_equal_one_process(feats, method):
    tmp = feats
    args = [tmp / "f.h5", "-k", 12, "--method", method, "--recall-sample", 300,
            "--exact-below", 1000, "-q"]
    one("knn", *args, "-o", tmp / f"k1-{method}.h5")
    torchrun("knn", *args, "-o", tmp / f"k2-{method}.h5")
    same_artifact(tmp / f"k1-{method}.h5", tmp / f"k2-{method}.h5", "knn",
                  exact=("indices", "similarities"))
    if method == "ivf":
        with open_artifact(tmp / f"k2-{method}.h5", "knn") as a:
            assert 0 < a.attrs["recall_at_k"] <= 1
    if method == "auto":  # rank 0's tuning, the same as one process's (attributes equal)
        with open_artifact(tmp / f"k2-{method}.h5", "knn") as a:
            assert a.json_attr("auto")["trials"]
    assert not leftovers(tmp)


@pytest.mark.slow
def test_knn_torch_backend_two_ranks_equal_faiss_exact(feats):
    """--backend torch under a 2-process torchrun: each rank multiplies its share of the
    queries with the whole base, tile by tile (300 rows: 3001 is no multiple); the one
    file equals a single process's and holds faiss's exact neighbours."""
    tmp = feats
    args = [tmp / "f.h5", "-k", 12, "--backend", "torch", "--tile", 300, "-q"]
    one("knn", *args, "-o", tmp / "kt1.h5")
    torchrun("knn", *args, "-o", tmp / "kt2.h5")
    one("knn", tmp / "f.h5", "-k", 12, "--backend", "faiss", "--method", "exact", "-q", "-o",
        tmp / "kf.h5")
    same_artifact(tmp / "kt1.h5", tmp / "kt2.h5", "knn", exact=(), close=("similarities",),
                  atol=1e-6)
    with open_artifact(tmp / "kt2.h5", "knn") as a, open_artifact(tmp / "kf.h5", "knn") as f:
        assert json.loads(a.attrs["params"])["backend"] == "torch"
        ids, sims = a.read("indices"), a.read("similarities")
        assert (ids[:, 0] == np.arange(3001)).all()
        assert_same_neighbours(ids, sims, f.read("indices"), f.read("similarities"))
    with open_artifact(tmp / "kt1.h5", "knn") as one_process:
        assert_same_neighbours(ids, sims, one_process.read("indices"),
                               one_process.read("similarities"), tol=1e-6)
    assert not leftovers(tmp)


@pytest.mark.slow
def test_knn_npz_two_ranks_equal_one_process(feats):
    tmp = feats
    one("knn", tmp / "f.h5", "-k", 6, "-o", tmp / "k1.npz", "-q")
    torchrun("knn", tmp / "f.h5", "-k", 6, "-o", tmp / "k2.npz", "-q")
    with np.load(tmp / "k1.npz") as a, np.load(tmp / "k2.npz") as b:
        assert np.array_equal(a["data"], b["data"])


@pytest.fixture(scope="module")
def linkset(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shardlink")
    write_demo_sequences(tmp, 401)
    torch.manual_seed(0)
    save_model(tmp / "m.h5", Clusformer(make_config("small", 16, 8, width=32, ffn=64)),
               thresholds={"link": 0.3})
    return tmp


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["--bf16", "--no-bf16"])
def test_link_two_ranks_equal_one_process(linkset, precision):
    from cftools.core.runtime.precision import cpu_bf16_supported

    if precision == "--bf16" and not cpu_bf16_supported():
        pytest.skip("this CPU has no bfloat16 support (cf-link --bf16 refuses it)")
    tmp = linkset
    args = [tmp / "seq.h5", "--features", tmp / "f.h5", "--model", tmp / "m.h5",
            "--batch-size", 64, precision, "-q"]
    one("link", *args, "-o", tmp / "l1.h5")
    torchrun("link", *args, "-o", tmp / "l2.h5")
    # other batch boundaries on the second rank: equal within bf16 rounding (2^-8)
    atol = 2 ** -7 if precision == "--bf16" else 1e-5
    same_artifact(tmp / "l1.h5", tmp / "l2.h5", "links", close=("probabilities",), atol=atol)
    assert not leftovers(tmp)


@pytest.mark.slow
def test_link_cosine_two_ranks_equal_one_process(linkset):
    tmp = linkset
    args = [tmp / "seq.h5", "--features", tmp / "f.h5", "--method", "cosine", "-q"]
    one("link", *args, "-o", tmp / "c1.h5")
    torchrun("link", *args, "-o", tmp / "c2.h5")
    same_artifact(tmp / "c1.h5", tmp / "c2.h5", "links", close=("probabilities",), atol=1e-6)


@pytest.mark.slow
def test_extract_two_ranks_equal_one_process(tmp_path):
    root = tmp_path / "images"
    make_demo(root, identities=4, image_size=16, seed=1, mean_images=4)
    labelled = root / "labelled"
    # an unreadable image in the second rank's share: skipped there, counted by all
    last = sorted(p for p in labelled.iterdir())[-1]
    (last / "zz-corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
    torch.manual_seed(0)
    save_backbone(tmp_path / "bb.h5", Backbone(BackboneConfig(depth=18, width=4, dim=16,
                                                              image_size=16)).eval())
    args = [tmp_path / "bb.h5", labelled, "--workers", 0, "--batch-size", 5, "-q"]
    one("embed", "extract", *args, "-o", tmp_path / "e1.h5")
    r = torchrun("embed", "extract", *args, "-o", tmp_path / "e2.h5")
    assert "zz-corrupt.png" in r.stderr
    same_artifact(tmp_path / "e1.h5", tmp_path / "e2.h5", "features", exact=("labels", "names"),
                  close=("features",), atol=1e-5)
    with h5py.File(tmp_path / "e2.h5") as f:
        assert f.attrs["skipped_images"] == 1
        names = [n.decode() for n in f["names"][()]]
    assert len(names) == len(list(labelled.rglob("*.png"))) - 1
    assert not leftovers(tmp_path)


# Each rank reports the threads it still runs once it has left the process group. gloo's
# threads left to the interpreter's exit can abort it there (SIGABRT after the output is
# written: a failed run, one time in tens); torch._dynamo imported after joining keeps
# the group alive past destroy_process_group (a meta-device randn in a model loader, or
# torch.optim in a trainer, imports it).
TEARDOWN = {
    "sharded": """
from cftools.core.clusformer.model import load_model
from cftools.core.recognition.backbone import load_backbone
from cftools.core.runtime import sharding
sh = sharding.join()
load_model(sys.argv[1])
load_backbone(sys.argv[2])
sh.sum([1.0])
sharding.leave(sh)
""",
    "trainer": """
import torch
from cftools.core.runtime.distributed import join_process_group, leave_process_group
d = join_process_group(use_cuda=False)
torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())
torch.distributed.all_reduce(torch.ones(1))
leave_process_group(d)
""",
}


@pytest.mark.slow
@pytest.mark.parametrize("who", sorted(TEARDOWN))
def test_leaving_the_process_group_stops_its_threads(linkset, tmp_path, who):
    torch.manual_seed(0)
    save_backbone(tmp_path / "bb.h5", Backbone(BackboneConfig(depth=18, width=4, dim=16,
                                                              image_size=16)))
    script = tmp_path / "leave.py"
    script.write_text("import os, sys\n" + TEARDOWN[who] + (
        "names = [open(f'/proc/self/task/{t}/comm').read().strip()"
        " for t in os.listdir('/proc/self/task')]\n"
        "open(sys.argv[3] + os.environ['RANK'], 'w').write(' '.join(names))\n"))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node=2", str(script), linkset / "m.h5", tmp_path / "bb.h5",
                        tmp_path / "threads-"], capture_output=True, text=True, env=ENV,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for rank in (0, 1):  # the main thread alone
        assert len((tmp_path / f"threads-{rank}").read_text().split()) == 1, rank


def test_the_shards_are_removed_before_sigterm_interrupts(tmp_path, monkeypatch):
    """A survivor of a killed rank gets torchrun's SIGTERM while it removes its shards:
    the interruption waits until they are gone, then comes."""
    import signal
    import threading

    from cftools.core.runtime.sharding import Dist, ShardedOutput, Sharding

    out = ShardedOutput(tmp_path / "o.h5", "knn", Sharding(Dist()))
    out.shard_dir = tmp_path / ".o.h5.cf-shards-x"
    out.shard_dir.mkdir()
    (out.shard_dir / "rank00000.h5").write_bytes(b"x")
    real_rmtree = shutil.rmtree

    def rmtree_interrupted(path, **kw):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives as the removal starts
        real_rmtree(path, **kw)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", rmtree_interrupted)
    before = signal.signal(signal.SIGTERM, interrupt)
    awake = threading.Event()  # another thread, as torch's and gloo's: the signal may reach it
    helper = threading.Thread(target=awake.wait, daemon=True)
    helper.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            out._cleanup()
    finally:
        signal.signal(signal.SIGTERM, before)
        awake.set()
    assert not out.shard_dir.exists()


@pytest.mark.slow
@pytest.mark.parametrize("module, dead", [("knn", "1"), ("knn", "0"), ("link", "1")])
def test_a_killed_rank_leaves_nothing_published(feats, linkset, module, dead):
    if module == "knn":
        tmp = feats
        args = [tmp / "f.h5", "-k", 12, "-o", tmp / "killed.h5"]
    else:
        tmp = linkset
        args = [tmp / "seq.h5", "--features", tmp / "f.h5", "--model", tmp / "m.h5",
                "-o", tmp / "killed.h5"]
    # the rank kills itself (SIGKILL) after writing its shard, before the ranks agree
    r = torchrun(module, *args, env={DIE_ENV: dead}, ok=False)
    assert r.returncode != 0
    assert "SIGKILL" in r.stderr or "-9" in r.stderr
    assert not (tmp / "killed.h5").exists()
    assert not leftovers(tmp), leftovers(tmp)
