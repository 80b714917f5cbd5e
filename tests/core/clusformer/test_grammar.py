"""The visual grammar (core.clusformer.grammar): centre first, masking, targets, the CDE."""

import numpy as np
import pytest
import torch

from cftools.core.clusformer.grammar import build_sequences, cosine_encoding, make_targets


def test_centre_first_even_when_a_duplicate_comes_first():
    # row 0: its twin 5 ties and comes first, the centre itself is at position 2
    idx = np.array([[5, 3, 0, 7], [1, 2, 3, 4]])
    sim = np.array([[1.0, 0.9, 1.0, 0.5], [1.0, 0.8, 0.7, 0.6]], dtype=np.float32)
    order, mask, _ = build_sequences(idx, sim, 4)
    assert order[0].tolist() == [0, 5, 3, 7]
    assert order[1].tolist() == [1, 2, 3, 4]
    assert mask.all()


def test_centre_missing_from_its_row_is_inserted():
    idx = np.array([[4, 3, 2]])
    sim = np.array([[0.9, 0.8, 0.7]], dtype=np.float32)
    order, mask, _ = build_sequences(idx, sim, 3, centres=np.array([9]))
    assert order[0].tolist() == [9, 4, 3]


def test_neighbours_sorted_by_falling_similarity():
    idx = np.array([[0, 1, 2, 3]])
    sim = np.array([[1.0, 0.2, 0.9, 0.5]], dtype=np.float32)
    order, _, _ = build_sequences(idx, sim, 4)
    assert order[0].tolist() == [0, 2, 3, 1]


def test_min_sim_masks_without_dropping_and_padding_is_masked():
    idx = np.array([[0, 1, 2, -1]])
    sim = np.array([[1.0, 0.9, 0.3, -np.inf]], dtype=np.float32)
    order, mask, _ = build_sequences(idx, sim, 4, min_sim=0.5)
    assert order[0].tolist() == [0, 1, 2, 0]  # 2 kept (masked), padding holds the centre
    assert mask[0].tolist() == [True, True, False, False]


def test_targets_one_zero_unknown():
    labels = np.array([7, 7, 8, -1, 7])
    order = np.array([[0, 1, 2, 3, 4], [3, 0, 1, 2, 4]])
    mask = np.array([[True, True, True, True, False], [True] * 5])
    t = make_targets(order, mask, labels)
    assert t[0].tolist() == [1, 1, 0, -1, -1]  # unknown neighbour, masked position
    assert t[1].tolist() == [-1] * 5  # unknown centre
    assert t.dtype == np.int8


def test_cosine_encoding_is_the_gram_matrix_with_masked_columns_zero():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(3, 5, 8, generator=g), dim=-1)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 3:] = False
    cde = cosine_encoding(x, mask)
    for b in range(3):
        for i in range(5):
            for j in range(5):
                want = float(x[b, i] @ x[b, j]) if mask[b, i] and mask[b, j] else 0.0
                assert abs(float(cde[b, i, j]) - want) < 1e-5
    assert torch.allclose(torch.diagonal(cde[0]), torch.ones(5))


@pytest.mark.parametrize("length", [3, 6, 9])
def test_rows_already_centre_first_and_falling_give_what_the_sort_gives(length):
    # cf-knn's rows (centre first, falling) skip the sort; a row that breaks the order
    # (here a swap in row 2) sends the block through the sort: the same sequences
    rng = np.random.default_rng(0)
    n, k = 40, 6
    idx = np.array([[i] + list(rng.choice([j for j in range(n) if j != i], k - 1, replace=False))
                    for i in range(n)])
    sims = np.sort(rng.random((n, k)).astype(np.float32), axis=1)[:, ::-1].copy()
    sims[:, 0] = 1.0
    fast = build_sequences(idx, sims, length, min_sim=0.3, labels=np.arange(n) % 5)
    swapped_idx, swapped_sims = idx.copy(), sims.copy()
    swapped_idx[2, [1, 2]] = idx[2, [2, 1]]
    swapped_sims[2, [1, 2]] = sims[2, [2, 1]]
    slow = build_sequences(swapped_idx, swapped_sims, length, min_sim=0.3,
                           labels=np.arange(n) % 5)
    for a, b in zip(fast, slow):
        assert np.array_equal(a, b)
