"""Bad inputs to the backend-neutral public modules (``ppl_hw.metrics``,
``ppl_hw.datasets``): one row per case — the call, the exception type, and words the
message must contain (the argument's name, and the value where it is a number).
Nothing here may pass silently (issue "Nothing silent")."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import softmax

from ppl_hw import datasets, metrics

P2 = np.array([[0.3, 0.7], [0.6, 0.4]])
Y2 = np.array([1, 0])

CASES = [
    # metrics: probabilities that are not probabilities
    (
        "nll unnormalised",
        lambda: metrics.nll(P2 * 0.5, Y2),
        ValueError,
        ["probs", "sum to 1", "0.5"],
    ),
    (
        "nll negative",
        lambda: metrics.nll(np.array([[-0.5, 1.5], [0.5, 0.5]]), Y2),
        ValueError,
        ["probs", "-0.5"],
    ),
    (
        "nll nan",
        lambda: metrics.nll(np.array([[np.nan, 0.5], [0.5, 0.5]]), Y2),
        ValueError,
        ["probs", "finite", "nan"],
    ),
    (
        "nll logits",
        lambda: metrics.nll(np.array([[2.0, -1.0], [0.1, 3.0]]), Y2),
        ValueError,
        ["probs", "2.0", "softmax"],
    ),
    (
        "nll empty",
        lambda: metrics.nll(np.zeros((0, 3)), np.zeros(0, int)),
        ValueError,
        ["probs", "at least one"],
    ),
    (
        "accuracy empty",
        lambda: metrics.accuracy(np.zeros((0, 3)), np.zeros(0, int)),
        ValueError,
        ["probs", "at least one"],
    ),
    (
        "accuracy nan logits",
        lambda: metrics.accuracy(np.array([[np.nan, 1.0], [0.0, 1.0]]), Y2),
        ValueError,
        ["probs", "finite"],
    ),
    (
        "accuracy inf logits",
        lambda: metrics.accuracy(np.array([[np.inf, 1.0], [0.0, 1.0]]), Y2),
        ValueError,
        ["probs", "inf"],
    ),
    (
        "ece > 1",
        lambda: metrics.expected_calibration_error(
            np.array([[2.0, -1.0], [0.5, 0.5]]), Y2
        ),
        ValueError,
        ["probs", "2.0"],
    ),
    (
        "ece rows sum 2",
        lambda: metrics.expected_calibration_error(P2 * 2, Y2),
        ValueError,
        ["probs", "1.4"],
    ),
    (
        "ece bins float",
        lambda: metrics.expected_calibration_error(P2, Y2, 2.5),
        TypeError,
        ["num_bins", "2.5"],
    ),
    (
        "entropy scalar",
        lambda: metrics.predictive_entropy(0.5),
        ValueError,
        ["probs", "shape ()"],
    ),
    (
        "entropy rows sum 15",
        lambda: metrics.predictive_entropy(np.full((2, 3), 5.0)),
        ValueError,
        ["probs", "5.0"],
    ),
    (
        "entropy unnormalised",
        lambda: metrics.predictive_entropy(np.full((2, 3), 0.5)),
        ValueError,
        ["probs", "sum to 1", "1.5"],
    ),
    (
        "entropy no classes",
        lambda: metrics.predictive_entropy(np.zeros((2, 0))),
        ValueError,
        ["probs", "(2, 0)"],
    ),
    (
        "mi > 1",
        lambda: metrics.mutual_information(np.full((2, 2, 2), 1.5)),
        ValueError,
        ["prob_samples", "1.5"],
    ),
    (
        "mi nan",
        lambda: metrics.mutual_information(np.full((2, 2, 2), np.nan)),
        ValueError,
        ["prob_samples", "nan"],
    ),
    (
        "mi no samples",
        lambda: metrics.mutual_information(np.zeros((0, 2, 2))),
        ValueError,
        ["prob_samples", "at least one"],
    ),
    (
        "labels float",
        lambda: metrics.nll(P2, np.array([0.5, 1.0])),
        ValueError,
        ["labels", "0.5"],
    ),
    (
        "labels nan",
        lambda: metrics.accuracy(P2, np.array([np.nan, 1.0])),
        ValueError,
        ["labels", "nan"],
    ),
    (
        "rmse nan mean",
        lambda: metrics.rmse(np.array([np.nan, 1.0]), np.ones(2)),
        ValueError,
        ["mean", "nan"],
    ),
    (
        "rmse inf targets",
        lambda: metrics.rmse(np.ones(2), np.array([1.0, np.inf])),
        ValueError,
        ["targets", "inf"],
    ),
    (
        "gnll inf variance",
        lambda: metrics.gaussian_nll(np.ones(2), np.array([1.0, np.inf]), np.ones(2)),
        ValueError,
        ["variance", "inf"],
    ),
    (
        "gnll negative variance",
        lambda: metrics.gaussian_nll(np.ones(2), np.array([1.0, -2.0]), np.ones(2)),
        ValueError,
        ["variance", "-2.0"],
    ),
    # datasets
    (
        "toy noise inf",
        lambda: datasets.make_toy_regression(noise_scale=math.inf),
        ValueError,
        ["noise_scale", "finite", "inf"],
    ),
    (
        "toy noise nan",
        lambda: datasets.make_toy_regression(noise_scale=math.nan),
        ValueError,
        ["noise_scale", "nan"],
    ),
    (
        "toy noise negative",
        lambda: datasets.make_toy_regression(noise_scale=-1.0),
        ValueError,
        ["noise_scale", "-1.0"],
    ),
    (
        "toy noise str",
        lambda: datasets.make_toy_regression(noise_scale="3"),
        TypeError,
        ["noise_scale", "'3'"],
    ),
    (
        "toy n_train float",
        lambda: datasets.make_toy_regression(n_train=2.5),
        TypeError,
        ["n_train", "2.5"],
    ),
    (
        "toy n_test zero",
        lambda: datasets.make_toy_regression(n_test=0),
        ValueError,
        ["n_test", "0"],
    ),
    (
        "toy range inf",
        lambda: datasets.make_toy_regression(train_range=(0.0, math.inf)),
        ValueError,
        ["train_range[1]", "inf"],
    ),
    (
        "toy range reversed",
        lambda: datasets.make_toy_regression(test_range=(1.0, 0.0)),
        ValueError,
        ["test_range", "low < high"],
    ),
    (
        "toy range scalar",
        lambda: datasets.make_toy_regression(train_range=3.0),
        TypeError,
        ["train_range", "3.0"],
    ),
    (
        "toy seed negative",
        lambda: datasets.make_toy_regression(seed=-1),
        ValueError,
        ["seed", "-1"],
    ),
    (
        "toy seed float",
        lambda: datasets.make_toy_regression(seed=1.5),
        TypeError,
        ["seed", "1.5"],
    ),
    (
        "sparse noise inf",
        lambda: datasets.make_sparse_regression(
            noise_scale=math.inf, num_features=5, n_train=4, n_test=4
        ),
        ValueError,
        ["noise_scale", "inf"],
    ),
    (
        "sparse seed float",
        lambda: datasets.make_sparse_regression(
            seed=2.9, num_features=5, n_train=4, n_test=4
        ),
        TypeError,
        ["seed", "2.9"],
    ),
    (
        "sparse size",
        lambda: datasets.make_sparse_regression("huge"),
        ValueError,
        ["size", "'huge'"],
    ),
    (
        "mnist1d empty train",
        lambda: datasets.make_mnist1d(num_samples=20, train_split=0.01),
        ValueError,
        ["train_split", "0.01", "0 training"],
    ),
    (
        "mnist1d split 1",
        lambda: datasets.make_mnist1d(train_split=1.0),
        ValueError,
        ["train_split", "1.0"],
    ),
    (
        "mnist1d seed",
        lambda: datasets.make_mnist1d(seed=-3),
        ValueError,
        ["seed", "-3"],
    ),
    (
        "digits test_size 0",
        lambda: datasets.load_digits(test_size=0.0),
        ValueError,
        ["test_size", "0.0"],
    ),
    (
        "digits test_size str",
        lambda: datasets.load_digits(test_size="0.2"),
        TypeError,
        ["test_size", "'0.2'"],
    ),
    (
        "digits random_state",
        lambda: datasets.load_digits(random_state=-1),
        ValueError,
        ["random_state", "-1"],
    ),
]


@pytest.mark.parametrize(
    "call, exc, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_refused_naming_the_argument(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)


def test_valid_probabilities_pass_and_score_as_the_reference():
    """float32 softmax rows (sums within ~1e-7 of 1) and probabilities rounded to
    three decimals (ten classes: within 5e-3) are accepted, with the value of the formula."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 10)).astype(np.float32)
    p32 = softmax(logits, axis=-1).astype(np.float32)
    y = rng.integers(0, 10, size=50)
    expected = -np.mean(np.log(p32.astype(np.float64)[np.arange(50), y]))
    assert metrics.nll(p32, y) == pytest.approx(expected, rel=1e-12)
    rounded = np.round(p32.astype(np.float64), 3)
    assert np.all(np.abs(rounded.sum(-1) - 1) <= metrics_atol())
    assert metrics.nll(rounded, y) == pytest.approx(
        -np.mean(np.log(np.maximum(rounded[np.arange(50), y], np.finfo(float).tiny))),
        rel=1e-12,
    )
    # accuracy takes logits as documented
    assert metrics.accuracy(logits, y) == np.mean(np.argmax(logits, -1) == y)


def metrics_atol() -> float:
    from ppl_hw.core.metrics import PROB_ATOL

    return PROB_ATOL


def test_mnist1d_smallest_valid_split_has_one_training_signal():
    pytest.importorskip("mnist1d")
    split = datasets.make_mnist1d(num_samples=20, train_split=0.05)
    # mnist1d's own rule: int(len * train_split) training signals
    assert split.x_train.shape[0] == int(20 * 0.05) == 1
    assert split.x_test.shape[0] == 19
