"""ppl_hw.datasets against scikit-learn and the defining formulas."""

import numpy as np
import pytest
import scipy.stats
from sklearn.datasets import load_digits as sk_load_digits
from sklearn.model_selection import train_test_split

from ppl_hw import datasets


def test_load_digits_is_sklearns_fixed_split():
    d = datasets.load_digits()
    raw = sk_load_digits()
    x_tr, _, _, y_te = train_test_split(
        raw.data / 16.0, raw.target, test_size=0.25, random_state=0
    )
    assert d.x_train.shape == (1347, 64) and d.x_test.shape == (450, 64)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    np.testing.assert_array_equal(d.x_train, x_tr.astype(np.float32))
    np.testing.assert_array_equal(d.y_test, y_te)
    assert d.x_train.min() == 0.0 and d.x_train.max() == 1.0
    # unpacks as a 4-tuple and is deterministic
    x_train, _, _, _ = datasets.load_digits()
    np.testing.assert_array_equal(x_train, d.x_train)


def test_toy_regression_formula_and_noise():
    d = datasets.make_toy_regression(n_train=4000, n_test=50, seed=3)
    assert d.x_train.shape == (4000, 1) and d.y_train.shape == (4000,)
    assert d.x_train.min() >= -4 and d.x_train.max() <= 4
    np.testing.assert_allclose(
        d.x_test[:, 0], np.linspace(-6, 6, 50).astype(np.float32)
    )
    np.testing.assert_allclose(
        d.y_test, d.x_test[:, 0].astype(np.float64) ** 3, rtol=1e-6
    )
    resid = d.y_train.astype(np.float64) - d.x_train[:, 0].astype(np.float64) ** 3
    # residuals are N(0, 3^2): KS test, false-alarm rate 1e-3 under the formula
    assert scipy.stats.kstest(resid / 3.0, "norm").pvalue > 1e-3
    assert scipy.stats.kstest((d.x_train[:, 0] + 4) / 8, "uniform").pvalue > 1e-3


@pytest.mark.parametrize("size", ["smoke", "full"])
def test_sparse_regression_sizes(size):
    p, ntr, nte = datasets.SPARSE_REGRESSION_SIZES[size]
    d = datasets.make_sparse_regression(size)
    assert d.x_train.shape == (ntr, p) and d.x_test.shape == (nte, p)
    assert d.y_train.shape == (ntr,) and d.y_train.dtype == np.float32
    assert datasets.SPARSE_REGRESSION_SIZES == {
        "smoke": (100, 2048, 512),
        "full": (1000, 10_240, 1_024),
    }


def test_sparse_regression_formula():
    d = datasets.make_sparse_regression("smoke", seed=1)
    x = np.concatenate([d.x_train, d.x_test]).astype(np.float64)
    y = np.concatenate([d.y_train, d.y_test]).astype(np.float64)
    x1, x2, x3, x4, x5 = x[:, :5].T
    mean = (
        np.tanh(2 * np.tanh(2 * x1 - x2))
        + 2 * np.tanh(np.tanh(x3 - 2 * x4))
        - np.tanh(2 * x5)
    )
    resid = y - mean
    # noise is N(0, 1): KS test with false-alarm rate 1e-3
    assert scipy.stats.kstest(resid, "norm").pvalue > 1e-3
    # x_j = (z0 + z_j)/sqrt(2): unit variance, pairwise correlation 1/2. With
    # n = 2560 the mean correlation has a standard error below 0.01 and a sample
    # std one of 1/sqrt(2n) = 0.014: bounds of 5 SE (false alarm < 1e-5 each).
    corr = np.corrcoef(x[:, :20].T)[np.triu_indices(20, 1)]
    assert abs(corr.mean() - 0.5) < 0.05
    assert np.all(np.abs(x.std(0) - 1) < 5 / np.sqrt(2 * x.shape[0]))


def test_sparse_regression_seeded():
    a = datasets.make_sparse_regression("smoke", seed=2)
    b = datasets.make_sparse_regression("smoke", seed=2)
    c = datasets.make_sparse_regression("smoke", seed=3)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)


def test_mnist1d_generated_locally_and_rng_state_kept():
    pytest.importorskip("mnist1d")
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    d = datasets.make_mnist1d()
    assert np.array_equal(np.random.get_state()[1], before)  # noqa: NPY002
    assert d.x_train.shape == (4000, 40) and d.x_test.shape == (1000, 40)
    assert set(np.unique(d.y_train)) == set(range(10))
    np.testing.assert_array_equal(datasets.make_mnist1d().x_test, d.x_test)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (
            lambda: datasets.load_digits(test_size=1.5),
            ValueError,
            "test_size must be in",
        ),
        (
            lambda: datasets.make_toy_regression(0),
            ValueError,
            "n_train must be >= 1, got 0",
        ),
        (
            lambda: datasets.make_toy_regression(2.5),
            TypeError,
            "n_train must be an int",
        ),
        (
            lambda: datasets.make_toy_regression(train_range=(1, -1)),
            ValueError,
            "train_range",
        ),
        (
            lambda: datasets.make_sparse_regression("huge"),
            ValueError,
            "size must be one of",
        ),
        (
            lambda: datasets.make_sparse_regression(num_features=3),
            ValueError,
            "num_features must be >= 5, got 3",
        ),
        (
            lambda: datasets.make_sparse_regression(noise_scale=-1),
            ValueError,
            "noise_scale",
        ),
        (lambda: datasets.make_mnist1d(train_split=1.0), ValueError, "train_split"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
