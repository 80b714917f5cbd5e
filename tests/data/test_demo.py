"""The demo generator (cftools.data.demo): long-tailed identities, hard and noisy samples,
splits by identity."""

import numpy as np

from cftools.data import demo


def test_demo_is_seeded_long_tailed_and_unit_norm():
    x, y = demo.make_demo_features(30000, 32, seed=3)
    x2, y2 = demo.make_demo_features(30000, 32, seed=3)
    assert (x == x2).all() and (y == y2).all()
    assert x.shape == (30000, 32) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    sizes = np.bincount(y)
    assert sizes.min() >= 1 and sizes.sum() == 30000
    assert (sizes <= 3).mean() > 0.5  # many tiny identities
    assert sizes.max() >= 100  # and a few with hundreds


def test_hard_and_noisy_samples_make_the_neighbours_imperfect():
    def rank1_precision(**kw):
        x, y = demo.make_demo_features(6000, 64, seed=1, **kw)
        sims = x @ x.T
        np.fill_diagonal(sims, -2)
        mates = np.bincount(y)[y] > 1
        return (y[sims.argmax(1)] == y)[mates].mean()

    assert rank1_precision(separable=True) == 1.0
    clean = rank1_precision(hard_fraction=0, noise_fraction=0)
    hard = rank1_precision(hard_fraction=0.3, noise_fraction=0.1)
    assert hard < clean - 0.05, (clean, hard)


def test_split_by_identity_has_no_identity_on_both_sides():
    y = np.repeat(np.arange(100), 3)
    lab, unl = demo.split_by_identity(y, 0.3, seed=0)
    assert len(np.intersect1d(y[lab], y[unl])) == 0
    assert len(np.unique(y[lab])) == 30 and len(lab) + len(unl) == 300
