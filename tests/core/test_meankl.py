"""The Mean-KL solve, Lambert W and the blocks, against SciPy and the defining
equations (NumPy core, float64)."""

import math

import numpy as np
import pytest
import scipy.special as sps

from ppl_hw.core import NUMPY, coding, meankl

log_ratio = NUMPY.bind(meankl.log_ratio)
lambertw0 = NUMPY.bind(meankl.lambertw0)


def test_lambertw0_against_scipy():
    z = np.concatenate([np.linspace(-1 / np.e + 1e-6, 0, 200), np.logspace(-6, 6, 200)])
    np.testing.assert_allclose(
        lambertw0(z), sps.lambertw(z, 0).real, rtol=1e-12, atol=1e-14
    )
    assert lambertw0(np.array([-1 / np.e]))[0] == pytest.approx(-1.0, abs=1e-7)


def test_log_ratio_solves_the_kl_equation_and_matches_scipy_lambertw():
    s = np.concatenate([[0.0], np.logspace(-8, 1.5, 300)])
    t = log_ratio(s)
    # r - log r = 1 + s^2, i.e. e^t - 1 - t = s^2: checked with the Taylor series
    # where expm1(t) - t would cancel
    series = sum(t**k / math.factorial(k) for k in range(2, 8))
    lhs = np.where(np.abs(t) < 1e-2, series, np.expm1(t) - t)
    np.testing.assert_allclose(lhs, s * s, rtol=1e-10, atol=1e-300)
    assert np.all(t <= 0)
    # scipy's W0 is accurate away from the branch point, and underflows for big s
    ok = (s > 1e-2) & (s < 8)
    ref = np.log(-sps.lambertw(-np.exp(-(1 + s[ok] ** 2)), 0).real)
    np.testing.assert_allclose(t[ok], ref, rtol=1e-12)


def test_log_ratio_derivative_is_finite_and_right():
    s = np.array([0.0, 1e-12, 1e-6, 1e-3, 0.5, 3.0])
    t = log_ratio(s)
    g = NUMPY.bind(meankl.log_ratio_grad)(s, t)
    assert np.all(np.isfinite(g))
    assert g[0] == pytest.approx(-math.sqrt(2))  # the branch-point limit
    h = 1e-7
    fd = (log_ratio(s[3:] + h) - log_ratio(s[3:] - h)) / (2 * h)
    np.testing.assert_allclose(g[3:], fd, rtol=1e-6)


def test_meankl_kl_equals_kappa():
    rng = np.random.default_rng(0)
    m = rng.normal(size=500) * 3
    kappa = np.exp(rng.uniform(-10, 3, size=500))
    nu, rho = rng.normal(size=500), np.exp(rng.uniform(-2, 1, size=500))
    loc, scale = meankl.meankl_loc_scale(
        m, np.log(kappa), nu, rho, xp=np, log_ratio_fn=log_ratio
    )
    r, d = (scale / rho) ** 2, ((loc - nu) / rho) ** 2
    kl = 0.5 * (r - 1 - np.log(r) + d)
    np.testing.assert_allclose(kl, kappa, rtol=1e-10, atol=1e-14)
    assert np.all(np.abs(loc - nu) <= rho * np.sqrt(2 * kappa))


def test_blocks_are_a_balanced_reproducible_permutation():
    b = coding.make_blocks([100, 37, 5], 10.0, seed=3, total_bits=300)
    assert b.num_blocks == 30 and b.num_weights == 142
    assert sorted(b.order.tolist()) == list(range(142))
    counts = np.bincount(b.block_of, minlength=30)
    assert counts.min() >= 4 and counts.max() <= 5  # 142 / 30
    np.testing.assert_array_equal(b.members(0), b.order[:4])
    again = coding.make_blocks([100, 37, 5], 10.0, seed=3, total_bits=300)
    np.testing.assert_array_equal(again.order, b.order)
    other = coding.make_blocks([100, 37, 5], 10.0, seed=4, total_bits=300)
    assert not np.array_equal(other.order, b.order)
    assert b.budget_nats == pytest.approx(10 * math.log(2))
    # Philox-4x64 is a fixed algorithm: the first words of key 0 never change
    np.testing.assert_array_equal(
        coding.philox_raw(0, 2), np.random.Philox(key=0).random_raw(2)
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(sizes=[], bits_per_block=10, seed=0, total_bits=10),
            "sizes must be positive",
        ),
        (
            dict(sizes=[3], bits_per_block=0, seed=0, total_bits=10),
            "bits_per_block must be > 0",
        ),
        (
            dict(sizes=[3], bits_per_block=1, seed=0),
            "exactly one of total_bits or num_blocks",
        ),
        (
            dict(sizes=[3], bits_per_block=1, seed=0, num_blocks=5),
            r"num_blocks must be in \[1, 3\]",
        ),
        (
            dict(sizes=[3], bits_per_block=1, seed=-1, num_blocks=1),
            "seed must be an int >= 0",
        ),
    ],
)
def test_bad_blocks(kwargs, match):
    with pytest.raises(ValueError, match=match):
        coding.make_blocks(**kwargs)
