"""core.neighbours.tiled: exact kNN by tiled products in torch gives faiss's exact
neighbours (ids equal except among equal similarities, similarities within 1e-5) on
clustered data, for N not a multiple of the tile, with queries from another set, in fp32
and with fp16/bf16 products re-scored in fp32; the re-score's check sends the rows it
cannot vouch for back to fp32."""

import faiss
import numpy as np
import pytest
import torch
from conftest import assert_same_neighbours, unit_rows

from cftools.core.neighbours.tiled import (
    TiledSearch,
    margin,
    product_error,
    resolve_precision,
    tiled_knn,
)
from cftools.data.demo import make_demo_features


def faiss_exact(base, queries, k):
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    sims, ids = index.search(queries, k)
    return ids, sims


@pytest.fixture(scope="module")
def clustered():
    x, _ = make_demo_features(3001, 32, seed=7)
    return x


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("tile, block", [(700, 256), (65536, 1024)])
def test_self_search_equals_faiss_exact(clustered, precision, tile, block):
    x = clustered  # 3001 points: not a multiple of 700 (nor of 256 queries a block)
    ref_i, ref_s = faiss_exact(x, x, 25)
    found = tiled_knn(x, 25, precision=precision, tile=tile, query_block=block, group=4)
    assert found.precision == precision
    assert_same_neighbours(found.indices, found.similarities, ref_i, ref_s)
    assert found.candidates == (25 if precision == "fp32" else 25 + margin(25))


def test_queries_against_another_set_equal_faiss(clustered):
    queries, _ = make_demo_features(333, 32, seed=8)
    ref_i, ref_s = faiss_exact(clustered, queries, 10)
    for precision in ("fp32", "fp16"):
        found = tiled_knn(clustered, 10, queries=queries, precision=precision, tile=1000,
                          query_block=100)
        assert_same_neighbours(found.indices, found.similarities, ref_i, ref_s)


def test_groups_and_plain_topk_agree(clustered):
    a = tiled_knn(clustered, 12, tile=1000, group=1)
    b = tiled_knn(clustered, 12, tile=1000, group=16)
    assert np.array_equal(a.indices, b.indices)
    assert np.array_equal(a.similarities, b.similarities)


def test_ties_come_by_rising_id():
    x = unit_rows(50, 8, seed=1)
    x[[3, 9, 40]] = x[20]  # four equal points: equal similarities to every query
    found = tiled_knn(x, 5, precision="fp32", tile=16)
    assert found.indices[20, :4].tolist() == [3, 9, 20, 40]
    np.testing.assert_allclose(found.similarities[20, :4], 1.0, atol=1e-6)


def test_rows_the_check_cannot_vouch_for_are_searched_again_in_fp32():
    # a tight crowd: hundreds of similarities within bf16's error band of the k-th, so
    # the check cannot vouch for the candidates; the rows come back exact all the same
    rng = np.random.default_rng(3)
    x = rng.standard_normal(32).astype(np.float32) + unit_rows(2000, 32, seed=3)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ref_i, ref_s = faiss_exact(x, x, 20)
    found = tiled_knn(x, 20, precision="bf16", tile=512)
    assert found.rescued > 0
    assert_same_neighbours(found.indices, found.similarities, ref_i, ref_s)


def test_every_point_a_candidate_needs_no_check():
    x = unit_rows(30, 4, seed=2)
    found = tiled_knn(x, 20, precision="bf16")  # c = min(n, k + margin) = n
    assert found.candidates == 30 and found.rescued == 0
    ref_i, ref_s = faiss_exact(x, x, 20)
    assert_same_neighbours(found.indices, found.similarities, ref_i, ref_s)


def test_product_error_bounds_the_half_products():
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(200, 256), dim=1)
    b = torch.nn.functional.normalize(torch.randn(300, 256), dim=1)
    exact = (q.double() @ b.double().T)
    for precision, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        low = (q.to(dtype) @ b.to(dtype).T).double()
        assert (low - exact).abs().max().item() <= product_error(precision, 256)
    assert product_error("fp32", 256) == 0.0
    assert product_error("fp16", 256) < product_error("bf16", 256) / 7


def test_precision_auto_by_device():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", "cuda") == "fp16"
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp8", "cpu")


def test_record_says_how_it_searched(clustered):
    searcher = TiledSearch(clustered, 10, device="cpu", precision="fp16", tile=999)
    rec = searcher.search(clustered[:5]).record()
    assert rec["backend"] == "torch" and rec["precision"] == "fp16"
    assert rec["tile"] == 999 and rec["candidates"] == 10 + margin(10)
