"""ppl_hw.metrics against scikit-learn, SciPy and hand computations."""

import itertools

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import accuracy_score, log_loss

from ppl_hw import metrics


def _random_probs(rng, n=500, c=10, sharpness=3.0):
    logits = sharpness * rng.normal(size=(n, c))
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    p = _random_probs(rng)
    # labels drawn from the probabilities themselves (a calibrated model) ...
    y = np.array([rng.choice(10, p=pi) for pi in p])
    return p, y


def test_accuracy_against_sklearn(data):
    p, y = data
    assert metrics.accuracy(p, y) == pytest.approx(
        accuracy_score(y, p.argmax(-1)), abs=0
    )


def test_nll_against_sklearn_log_loss(data):
    p, y = data
    expected = log_loss(y, p, labels=np.arange(10))
    assert metrics.nll(p, y) == pytest.approx(expected, rel=1e-12)


def test_nll_zero_probability_is_finite():
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    value = metrics.nll(p, np.array([1, 0]))
    assert np.isfinite(value)
    expected = (-np.log(np.finfo(np.float64).tiny) - np.log(0.5)) / 2
    assert value == pytest.approx(expected)


def _ece_loop(p, y, num_bins):
    """Guo et al.'s reference loop: bins (lo, hi], weighted |accuracy - confidence|."""
    conf, pred = p.max(-1), p.argmax(-1)
    edges = np.linspace(0, 1, num_bins + 1)
    total = 0.0
    for b, (lo, hi) in enumerate(itertools.pairwise(edges)):
        in_bin = (conf > lo) & (conf <= hi)
        if b == 0:
            in_bin |= conf == 0
        if in_bin.any():
            total += in_bin.mean() * abs(
                (pred[in_bin] == y[in_bin]).mean() - conf[in_bin].mean()
            )
    return total


@pytest.mark.parametrize("num_bins", [1, 10, 15])
def test_ece_against_reference_loop(data, num_bins):
    p, y = data
    assert metrics.expected_calibration_error(p, y, num_bins) == pytest.approx(
        _ece_loop(p, y, num_bins), rel=1e-12
    )


def test_ece_hand_computed():
    # two inputs, confidence 0.9 (right) and 0.6 (wrong); 15 bins put them in bins
    # (0.8667, 0.9333] and (0.5333, 0.6]: ECE = 1/2 |1 - 0.9| + 1/2 |0 - 0.6| = 0.35
    p = np.array([[0.9, 0.1], [0.6, 0.4]])
    assert metrics.expected_calibration_error(p, np.array([0, 1])) == pytest.approx(
        0.35
    )


def test_ece_default_is_15_bins(data):
    p, y = data
    assert metrics.expected_calibration_error(p, y) == pytest.approx(
        _ece_loop(p, y, 15)
    )


def test_ece_bin_edge_goes_to_lower_bin():
    # confidence exactly 0.6 with 5 bins belongs to (0.4, 0.6], together with 0.5
    p = np.array([[0.6, 0.4], [0.5, 0.5]])
    y = np.array([0, 0])
    assert metrics.expected_calibration_error(p, y, 5) == pytest.approx(
        abs(1.0 - 0.55), rel=1e-12
    )


def test_predictive_entropy_against_scipy(data):
    p, _ = data
    p = p.copy()
    p[0] = np.eye(10)[3]  # 0 log 0 = 0
    np.testing.assert_allclose(
        metrics.predictive_entropy(p), scipy.stats.entropy(p, axis=-1), rtol=1e-12
    )


def test_mutual_information_against_scipy():
    rng = np.random.default_rng(3)
    samples = np.stack([_random_probs(rng, n=50, c=4) for _ in range(30)])
    expected = scipy.stats.entropy(samples.mean(0), axis=-1) - scipy.stats.entropy(
        samples, axis=-1
    ).mean(0)
    got = metrics.mutual_information(samples)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-14)
    assert np.all(got >= -1e-12)
    # identical samples carry no epistemic uncertainty
    same = np.repeat(samples[:1], 5, axis=0)
    np.testing.assert_allclose(metrics.mutual_information(same), 0.0, atol=1e-12)


@pytest.mark.parametrize("n, m", [(1, 1), (7, 13), (200, 150)])
def test_energy_distance_against_scipy_and_pairwise(n, m):
    rng = np.random.default_rng(n + m)
    x = rng.normal(size=n)
    y = rng.standard_t(3, size=m) + 0.3
    expected = scipy.stats.energy_distance(x, y)
    assert metrics.energy_distance(x, y) == pytest.approx(
        expected, rel=1e-10, abs=1e-14
    )
    # the defining expectation, by brute force over all pairs
    exy = np.abs(x[:, None] - y[None, :]).mean()
    exx = np.abs(x[:, None] - x[None, :]).mean()
    eyy = np.abs(y[:, None] - y[None, :]).mean()
    assert metrics.energy_distance(x, y) ** 2 == pytest.approx(
        2 * exy - exx - eyy, rel=1e-10
    )


@pytest.mark.parametrize("n, m", [(2, 3), (17, 9), (120, 200)])
def test_unbiased_energy_statistic_against_pairwise_u_statistics(n, m):
    rng = np.random.default_rng(10 * n + m)
    x = np.round(rng.normal(size=(n, 3)), 1)  # ties too
    y = np.round(rng.gamma(2.0, size=(m, 3)), 1)
    got = metrics.energy_distance(x, y, axis=0, squared=True, unbiased=True)
    for j in range(3):
        dxy = np.abs(x[:, None, j] - y[None, :, j]).mean()
        # within-sample means over i != j: the diagonal is zero, so divide by
        # n(n-1) instead of n^2
        dxx = np.abs(x[:, None, j] - x[None, :, j]).sum() / (n * (n - 1))
        dyy = np.abs(y[:, None, j] - y[None, :, j]).sum() / (m * (m - 1))
        assert got[j] == pytest.approx(2 * dxy - dxx - dyy, rel=1e-10, abs=1e-13)
    # the plug-in squared statistic is scipy's distance squared
    plug = metrics.energy_distance(x, y, axis=0, squared=True)
    expected = [scipy.stats.energy_distance(x[:, j], y[:, j]) ** 2 for j in range(3)]
    np.testing.assert_allclose(plug, expected, rtol=1e-10)


def test_unbiased_energy_statistic_needs_squared_and_two_samples():
    x = np.arange(4.0)
    with pytest.raises(ValueError, match="squared=True"):
        metrics.energy_distance(x, x, unbiased=True)
    with pytest.raises(ValueError, match="at least 2"):
        metrics.energy_distance(x[:1], x, squared=True, unbiased=True)


def test_energy_distance_batched_with_ties():
    rng = np.random.default_rng(11)
    x = np.round(rng.normal(size=(40, 6)), 1)  # ties within and across samples
    y = np.round(rng.normal(size=(30, 6)) * 1.5, 1)
    got = metrics.energy_distance(x, y, axis=0)
    expected = [scipy.stats.energy_distance(x[:, j], y[:, j]) for j in range(6)]
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    got_t = metrics.energy_distance(x.T, y.T, axis=-1)
    np.testing.assert_allclose(got_t, expected, rtol=1e-10)


def test_energy_distance_zero_for_identical_samples():
    x = np.random.default_rng(0).normal(size=100)
    assert metrics.energy_distance(x, x.copy()) == 0.0


def test_metrics_accept_backend_arrays(data):
    import jax.numpy as jnp
    import torch

    p, y = data
    ref = metrics.nll(p, y)
    assert metrics.nll(
        jnp.asarray(p, dtype=jnp.float32), jnp.asarray(y)
    ) == pytest.approx(ref, rel=1e-5)
    tp = torch.as_tensor(p, dtype=torch.float32).requires_grad_()
    assert metrics.nll(tp, torch.as_tensor(y)) == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: metrics.accuracy(np.ones(3), np.zeros(3)), "probs must have shape"),
        (
            lambda: metrics.nll(np.ones((3, 2)), np.zeros(4)),
            r"labels must have shape \(3,\)",
        ),
        (
            lambda: metrics.nll(np.ones((3, 2)), np.array([0, 1, 2])),
            r"labels must lie in",
        ),
        (lambda: metrics.nll(np.ones((2, 2)), np.array([0.5, 1])), "integer class"),
        (
            lambda: metrics.expected_calibration_error(
                np.ones((2, 2)), np.zeros(2, int), 0
            ),
            "num_bins must be >= 1, got 0",
        ),
        (lambda: metrics.mutual_information(np.ones((2, 2))), r"shape \(S, N, C\)"),
        (
            lambda: metrics.energy_distance(np.ones((3, 2)), np.ones((3, 3))),
            "must agree",
        ),
        (lambda: metrics.energy_distance(np.array([np.nan]), np.ones(2)), "finite"),
        (lambda: metrics.energy_distance(np.ones(0), np.ones(2)), "at least one"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_num_bins_type():
    with pytest.raises(TypeError, match=r"num_bins must be an int, got 2\.5"):
        metrics.expected_calibration_error(np.ones((2, 2)) / 2, np.zeros(2, int), 2.5)


def test_regression_metrics_against_scipy():
    rng = np.random.default_rng(11)
    mean, y = rng.normal(size=(2, 40, 3))
    var = rng.uniform(0.1, 2.0, size=(40, 3))
    assert metrics.rmse(mean, y) == pytest.approx(np.sqrt(np.mean((mean - y) ** 2)))
    expected = -scipy.stats.norm.logpdf(y, mean, np.sqrt(var)).mean()
    assert metrics.gaussian_nll(mean, var, y) == pytest.approx(expected, rel=1e-12)
    # a zero variance is floored: finite where the mean hits the target
    assert np.isfinite(metrics.gaussian_nll(y, np.zeros_like(y), y))
    with pytest.raises(ValueError, match="variance must be >= 0"):
        metrics.gaussian_nll(mean, -var, y)
    with pytest.raises(ValueError, match="mean must have the shape of targets"):
        metrics.rmse(mean[:3], y)
