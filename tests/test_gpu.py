"""GPU paths (pytest -m gpu; bench/gpu.sh runs them on an NVIDIA host): cf-knn's torch
backend on CUDA gives faiss's exact neighbours and is auto's choice where faiss has no GPU
build; faiss on the GPU gives the CPU's neighbours, link inference on CUDA gives the CPU's probabilities (in
cf-link and in cf-merge add), the backbone fine-tunes and extracts on CUDA as on the CPU,
and the sharded commands put each rank on its own GPU. Each test skips, saying why,
without one."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import unit_rows

from cftools.core.incremental.add import add_points
from cftools.core.incremental.links import link_rows
from cftools.core.neighbours.exact import exact_of, sample_rows
from cftools.core.neighbours.index import KnnParams, build_index, knn, set_nprobe
from cftools.core.neighbours.policy import max_nprobe, tune_ivf

pytestmark = pytest.mark.gpu


def _faiss_gpus() -> int:
    import faiss

    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    return int(faiss.get_num_gpus())


needs_faiss_gpu = pytest.mark.skipif(_faiss_gpus() == 0,
                                     reason="no faiss GPU build or no GPU (pip install -e .[gpu])")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU")


@needs_faiss_gpu
@pytest.mark.parametrize("shard", [False, True])
def test_faiss_gpu_exact_equals_cpu(shard):
    x = unit_rows(5000, 64, seed=1)
    cpu_i, cpu_s = knn(x, 10)
    gpu_i, gpu_s = knn(x, 10, params=KnnParams(use_gpu=True, gpu_shard=shard))
    np.testing.assert_allclose(gpu_s, cpu_s, atol=1e-4)
    assert (gpu_i[:, 0] == np.arange(5000)).all()
    assert (gpu_i == cpu_i).mean() > 0.99  # ties in float rounding may swap a few


@needs_faiss_gpu
def test_faiss_gpu_ivf_tunes_nprobe():
    from cftools.data.demo import make_demo_features

    x, _ = make_demo_features(20000, 64, seed=2)
    params = KnnParams(method="ivf", use_gpu=True)
    index = build_index(x, params, 20)
    rows = sample_rows(20000, 300, 0)
    exact = exact_of(x, x[rows], 20, centres=rows)
    def search_ids(q, p):
        set_nprobe(index, p, use_gpu=True)
        return index.search(q, 20)[1]

    tuning = tune_ivf(search_ids, x, x, 20,
                      max_nprobe(20000, params.resolved(20000, 20)["nlist"]), sample=300,
                      seed=0, centres=np.arange(20000))
    assert (tuning.exact_ids == exact).all()
    found, reached = tuning.nprobe, tuning.recall
    assert found is None or reached >= 0.95


@needs_cuda
def test_link_on_cuda_equals_cpu():
    from cftools.core.clusformer.grammar import build_sequences
    from cftools.core.clusformer.inference import run_batch
    from cftools.core.clusformer.model import Clusformer, make_config
    from cftools.core.clusformer.model import unit_rows as model_unit_rows

    x = unit_rows(500, 32, seed=3)
    idx, sim = knn(x, 16)
    order, mask, _ = build_sequences(idx, sim, 16, min_sim=-1.0)
    torch.manual_seed(0)
    model = Clusformer(make_config("small", 32, 16, width=64, ffn=128)).eval()
    o, m = torch.from_numpy(order), torch.from_numpy(mask)
    with torch.no_grad():
        xt = torch.from_numpy(x)
        # the presets add calibrated raw cosine to the logits: the unit rows go along
        cpu = run_batch(model, model.prepare(xt), o, m, None, model_unit_rows(xt))
        gm = model.to("cuda")
        gpu = run_batch(gm, gm.prepare(xt.cuda()), o.cuda(), m.cuda(), None,
                        model_unit_rows(xt.cuda()))
    np.testing.assert_allclose(np.asarray(gpu), np.asarray(cpu), atol=2e-3)


@needs_cuda
@needs_faiss_gpu
def test_sharded_knn_one_gpu_per_rank_equals_one_process(tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs for 2 ranks (one each, cuda:LOCAL_RANK)")
    from cftools.data.demo import make_demo_features
    from cftools.formats.artifacts import open_artifact
    from cftools.formats.features import write_features

    x, _ = make_demo_features(2000, 32, seed=4)
    write_features(tmp_path / "f.h5", x)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["-m", "cftools.commands.knn", str(tmp_path / "f.h5"), "-k", "10", "-q"]
    one = subprocess.run([sys.executable, *args, "-o", str(tmp_path / "k1.h5")],
                         capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node=2", *args, "-o", str(tmp_path / "k2.h5")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    with open_artifact(tmp_path / "k1.h5", "knn") as a, open_artifact(tmp_path / "k2.h5", "knn") as b:
        assert a.attrs["device"] == b.attrs["device"] == "GPU"
        assert (a.read("indices") == b.read("indices")).mean() > 0.99


@needs_cuda
@pytest.mark.parametrize("relink", ["mirror", "model"])
def test_add_with_model_links_on_cuda_equals_cpu(relink):
    from cftools.core.clusformer.grammar import build_sequences
    from cftools.core.clusformer.model import Clusformer, make_config
    from cftools.core.neighbours.index import knn

    x = unit_rows(900, 32, seed=5)
    n0 = 800
    idx, sim = knn(x[:n0], 12)
    order, mask, _ = build_sequences(idx, sim, 12, min_sim=-1.0)
    torch.manual_seed(0)
    model = Clusformer(make_config("small", 32, 12, width=64, ffn=128)).eval()
    probs = link_rows(x[:n0], order, mask, method="model", model=model, bf16=False)
    th = float(np.median(probs[:, 1:][mask[:, 1:]]))
    got = {}
    for dev in ("cpu", "cuda"):
        got[dev] = add_points(
            x[:n0], x[n0:], order, probs, np.arange(n0), link_method="model", model=model,
            decoder="components", threshold=th, mode="reciprocal", bf16=False, device=dev,
            relink=relink)
    cpu, gpu = got["cpu"], got["cuda"]
    assert (cpu.indices == gpu.indices).all()
    np.testing.assert_allclose(gpu.probabilities, cpu.probabilities, atol=2e-3)
    # a link within 2e-3 of the threshold may fall on the other side: labels nearly equal
    assert (cpu.labels == gpu.labels).mean() > 0.98


@needs_cuda
def test_backbone_fine_tunes_and_extracts_on_cuda(tmp_path):
    import json

    pytest.importorskip("PIL", reason="the demo images need Pillow (absent on this host)")

    import h5py
    from conftest import run_cmd

    from cftools.data.demo_images import make_demo

    demo = tmp_path / "demo"
    make_demo(demo, identities=6, image_size=12, seed=1, mean_images=5, test_identities=0)
    args = ["--width", "4", "--dim", "8", "--image-size", "12", "--batch-size", "4",
            "--workers", "0", "-q"]
    start, tuned = tmp_path / "start.h5", tmp_path / "tuned.h5"
    r = run_cmd("embed", "train", demo / "labelled", "-o", start, "--steps", "3",
                "--device", "cuda", *args)
    assert r.returncode == 0, r.stderr
    r = run_cmd("embed", "train", demo / "unlabelled", "--init", start, "-o", tuned,
                "--steps", "4", "--device", "cuda", *args)
    assert r.returncode == 0, r.stderr
    with h5py.File(tuned, "r") as f:
        assert json.loads(f.attrs["config"])["total_steps"] == 7
    feats = {}
    for dev in ("cpu", "cuda"):
        out = tmp_path / f"f-{dev}.h5"
        r = run_cmd("embed", "extract", tuned, demo / "unlabelled", "-o", out, "--device", dev,
                    "--workers", "0", "--precision", "fp32", "-q")
        assert r.returncode == 0, r.stderr
        with h5py.File(out, "r") as f:
            feats[dev] = f["features"][()]
    # cuDNN may convolve in TF32: agreement to a few thousandths on unit rows
    np.testing.assert_allclose(feats["cuda"], feats["cpu"], atol=5e-3)


@needs_cuda
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_torch_knn_on_cuda_equals_faiss_exact_on_the_cpu(precision):
    import faiss
    from conftest import assert_same_neighbours

    from cftools.core.neighbours.tiled import tiled_knn
    from cftools.data.demo import make_demo_features

    x, _ = make_demo_features(30011, 256, seed=6)  # not a multiple of the tile
    index = faiss.IndexFlatIP(256)
    index.add(x)
    ref_s, ref_i = index.search(x, 80)
    found = tiled_knn(x, 80, device="cuda", precision=precision, tile=8192)
    assert_same_neighbours(found.indices, found.similarities, ref_i, ref_s)
    assert found.rescued < 0.01 * len(x)  # the candidates' check seldom fails


@needs_cuda
def test_cf_knn_auto_picks_torch_on_cuda_without_a_faiss_gpu_build(tmp_path):
    import json

    from conftest import run_cmd

    from cftools.data.demo import make_demo_features
    from cftools.formats.artifacts import open_artifact

    if _faiss_gpus():
        pytest.skip("faiss has a GPU build here: auto keeps faiss")
    x, _ = make_demo_features(5000, 64, seed=7)
    np.save(tmp_path / "x.npy", x)
    run_cmd("knn", tmp_path / "x.npy", "-o", tmp_path / "k.h5", "-k", 20, "-q", check=True)
    with open_artifact(tmp_path / "k.h5", "knn") as art:
        params = json.loads(art.attrs["params"])
        assert params["backend"] == "torch" and params["precision"] == "fp16"
        assert art.attrs["device"] == "GPU" and art.attrs["method"] == "exact"
        assert (art.read("indices")[:, 0] == np.arange(5000)).all()
