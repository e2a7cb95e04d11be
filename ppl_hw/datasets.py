r"""Data sets that work offline: embedded or made by formula, never downloaded.

Each loader returns a :class:`Split` ``(x_train, y_train, x_test, y_test)`` of NumPy
arrays (inputs float32, class labels int64, regression targets float32), so it
unpacks directly::

    x_train, y_train, x_test, y_test = load_digits()

Convert with ``jnp.asarray`` / ``torch.as_tensor`` for a backend.
"""

from __future__ import annotations

import random
from typing import Any, NamedTuple

import numpy as np

from .core.checks import check_int, check_number

__all__ = [
    "SPARSE_REGRESSION_SIZES",
    "Split",
    "load_digits",
    "make_mnist1d",
    "make_sparse_regression",
    "make_toy_regression",
]


class Split(NamedTuple):
    """A train/test split of inputs and targets."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _check_int(name: str, value: object, low: int) -> int:
    return int(check_int(name, value, low=low))


def _check_seed(name: str, value: object) -> int:
    """A seed of :func:`numpy.random.default_rng` (an int >= 0, never truncated)."""
    return int(check_int(name, value, low=0))


def _check_range(name: str, value: Any) -> tuple[float, float]:
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (low, high), got {value!r}") from None
    lo = check_number(f"{name}[0]", lo)
    hi = check_number(f"{name}[1]", hi)
    if not lo < hi:
        raise ValueError(f"{name} must be (low, high) with low < high, got {value!r}")
    return lo, hi


def load_digits(*, test_size: float = 0.25, random_state: int = 0) -> Split:
    """The UCI 8×8 handwritten digits (1 797 images, 10 classes), embedded in
    scikit-learn, with a fixed split.

    Pixel intensities 0..16 are scaled to [0, 1] (float32, 64 features); the split is
    :func:`sklearn.model_selection.train_test_split` with ``test_size`` and
    ``random_state`` (default: 1 347 train / 450 test images).

    :param test_size: fraction of the images held out for testing, in (0, 1).
    :param random_state: seed of the split.
    """
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split

    check_number(
        "test_size",
        test_size,
        low=0,
        high=1,
        open_low=True,
        open_high=True,
        interval=True,
    )
    _check_seed("random_state", random_state)
    data = _load()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_size, random_state=random_state
    )
    return Split(x_tr, y_tr, x_te, y_te)


def make_toy_regression(
    n_train: int = 20,
    n_test: int = 200,
    *,
    noise_scale: float = 3.0,
    train_range: tuple[float, float] = (-4.0, 4.0),
    test_range: tuple[float, float] = (-6.0, 6.0),
    seed: int = 0,
) -> Split:
    r"""The 1-D regression toy of Hernández-Lobato & Adams (2015):

    .. math:: y = x^3 + \varepsilon,\quad \varepsilon \sim \mathcal N(0, s^2),

    with training inputs uniform on ``train_range`` and test inputs an evenly spaced
    grid on ``test_range`` (wider, so the predictive spread outside the data shows).
    Test targets are noise-free :math:`x^3`.

    :param n_train: number of training points.
    :param n_test: number of grid points.
    :param noise_scale: noise standard deviation ``s`` (default 3).
    :param train_range: interval of the training inputs.
    :param test_range: interval of the test grid.
    :param seed: seed of :func:`numpy.random.default_rng`.
    :returns: a :class:`Split` with inputs of shape ``(n, 1)``.
    """
    n_train = _check_int("n_train", n_train, 1)
    n_test = _check_int("n_test", n_test, 1)
    noise_scale = check_number("noise_scale", noise_scale, low=0)
    train_range = _check_range("train_range", train_range)
    test_range = _check_range("test_range", test_range)
    rng = np.random.default_rng(_check_seed("seed", seed))
    x_tr = rng.uniform(*train_range, size=n_train)
    y_tr = x_tr**3 + noise_scale * rng.standard_normal(n_train)
    x_te = np.linspace(*test_range, n_test)
    return Split(
        x_tr[:, None].astype(np.float32),
        y_tr.astype(np.float32),
        x_te[:, None].astype(np.float32),
        (x_te**3).astype(np.float32),
    )


SPARSE_REGRESSION_SIZES = {"smoke": (100, 2048, 512), "full": (1000, 10_240, 1_024)}
"""``(num_features, n_train, n_test)`` of :func:`make_sparse_regression` per size."""


def _sparse_regression_mean(x: np.ndarray) -> np.ndarray:
    x1, x2, x3, x4, x5 = (x[:, j] for j in range(5))
    return (
        np.tanh(2.0 * np.tanh(2.0 * x1 - x2))
        + 2.0 * np.tanh(np.tanh(x3 - 2.0 * x4))
        - np.tanh(2.0 * x5)
    )


def _truncated_standard_normal(
    rng: np.random.Generator, shape, bound: float
) -> np.ndarray:
    z = rng.standard_normal(shape)
    bad = np.abs(z) > bound
    while np.any(bad):  # rejection; at bound 10 this essentially never loops
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > bound
    return z


def make_sparse_regression(
    size: str = "smoke",
    *,
    num_features: int | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    noise_scale: float = 1.0,
    seed: int = 0,
) -> Split:
    r"""Ke & Fan's (2022) sparse regression, Example 1: five relevant inputs out of P.

    Inputs are correlated through a shared factor,
    :math:`x_j = (z_0 + z_j)/\sqrt 2` with :math:`z \sim \mathcal N(0, 1)` truncated to
    [-10, 10], and

    .. math::

        y = \tanh(2\tanh(2x_1 - x_2)) + 2\tanh(\tanh(x_3 - 2x_4)) - \tanh(2x_5)
            + \varepsilon,\quad \varepsilon \sim \mathcal N(0, 1),

    so only features 0..4 (``x1..x5``) matter. Test targets carry noise too (the
    authors' test MSE of 1.108 is measured against noisy targets, noise variance 1).

    :param size: ``"smoke"`` (P = 100, 2 048 train, 512 test) or ``"full"``
        (the paper's P = 1 000, 10 240 train, 1 024 test); see
        :data:`SPARSE_REGRESSION_SIZES`.
    :param num_features: override P (>= 5).
    :param n_train: override the number of training points.
    :param n_test: override the number of test points.
    :param noise_scale: standard deviation of ε (default 1).
    :param seed: seed of :func:`numpy.random.default_rng`.
    """
    if size not in SPARSE_REGRESSION_SIZES:
        raise ValueError(
            f"size must be one of {sorted(SPARSE_REGRESSION_SIZES)}, got {size!r}"
        )
    p0, ntr0, nte0 = SPARSE_REGRESSION_SIZES[size]
    p = _check_int("num_features", p0 if num_features is None else num_features, 5)
    ntr = _check_int("n_train", ntr0 if n_train is None else n_train, 1)
    nte = _check_int("n_test", nte0 if n_test is None else n_test, 1)
    noise_scale = check_number("noise_scale", noise_scale, low=0)
    rng = np.random.default_rng(_check_seed("seed", seed))
    n = ntr + nte
    z0 = _truncated_standard_normal(rng, (n, 1), 10.0)
    z = _truncated_standard_normal(rng, (n, p), 10.0)
    x = (z0 + z) / np.sqrt(2.0)
    y = _sparse_regression_mean(x) + noise_scale * rng.standard_normal(n)
    x, y = x.astype(np.float32), y.astype(np.float32)
    return Split(x[:ntr], y[:ntr], x[ntr:], y[ntr:])


def make_mnist1d(
    *, num_samples: int = 5000, train_split: float = 0.8, seed: int = 42
) -> Split:
    """MNIST-1D (Greydanus 2020), generated locally with ``mnist1d.make_dataset``.

    Needs the optional ``mnist1d`` package (``pip install "ppl_hw[mnist1d]"``); never
    downloads (``get_dataset`` is not used). Inputs are 40-sample float32 signals,
    labels 0..9; the default arguments give the standard 4 000 / 1 000 split. The
    global :mod:`random` and :mod:`numpy.random` states, which ``mnist1d`` reseeds,
    are restored afterwards.

    :param num_samples: total number of signals (a multiple of 10 is used exactly).
    :param train_split: fraction used for training, in (0, 1).
    :param seed: the generator's seed (42 is the published data set).
    """
    num_samples = _check_int("num_samples", num_samples, 10)
    train_split = check_number(
        "train_split",
        train_split,
        low=0,
        high=1,
        open_low=True,
        open_high=True,
        interval=True,
    )
    seed = _check_seed("seed", seed)
    n_total = 10 * (num_samples // 10)  # mnist1d makes num_samples // 10 per class
    n_train = int(n_total * train_split)
    if not 0 < n_train < n_total:
        raise ValueError(
            f"train_split={train_split!r} of num_samples={num_samples} leaves "
            f"{n_train} training and {n_total - n_train} test signals; both need "
            "at least one"
        )
    try:
        import mnist1d
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            'make_mnist1d needs the optional "mnist1d" package: '
            'pip install "ppl_hw[mnist1d]"'
        ) from err
    args = mnist1d.get_dataset_args()
    args.num_samples = num_samples
    args.train_split = float(train_split)
    args.seed = int(seed)
    # mnist1d seeds the global generators; put back what the caller had.
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        data = mnist1d.data.make_dataset(args)
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)
    return Split(
        data["x"].astype(np.float32),
        data["y"].astype(np.int64),
        data["x_test"].astype(np.float32),
        data["y_test"].astype(np.int64),
    )
