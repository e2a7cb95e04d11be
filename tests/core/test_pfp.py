"""The PFP moment rules against Monte Carlo (NumPy core, float64).

Each rule's mean and variance are compared with the sample moments of S draws
propagated exactly. Tolerances are CLT bounds: |mean - mean_mc| < 5 sd/sqrt(S) and
|var - var_mc| < 5 sqrt((mu4 - var^2)/S) element-wise (a Gaussian 5-sigma event has
probability 6e-7 per element; with a few hundred elements per test the false-alarm
rate stays below 1e-3), with fixed seeds.
"""

import numpy as np
import pytest
import scipy.special
import scipy.stats

from ppl_hw.core import NUMPY, pfp

SP = NUMPY.special
S = 200_000


def _check(samples, mean, var):
    """``samples``: (S, ...) draws of the propagated variable."""
    n = samples.shape[0]
    mc_mean = samples.mean(0)
    mc_var = samples.var(0)
    # the larger of the sample sd and the rule's sd: a sample can show no spread at
    # all where the variance is ~1e-8 (a sign that is almost surely +1)
    sd = np.maximum(np.sqrt(mc_var), np.sqrt(np.maximum(var, 0)))
    centred = samples - mc_mean
    mu4 = (centred**4).mean(0)
    np.testing.assert_array_less(np.abs(mean - mc_mean), 5 * sd / np.sqrt(n) + 1e-12)
    # the same floor for the variance: the fourth central moment of a variable with
    # variance V is at least V^2 and, for a rare +-1 outcome, of order V
    spread = np.maximum(mu4 - mc_var**2, np.maximum(var, 0))
    np.testing.assert_array_less(np.abs(var - mc_var), 5 * np.sqrt(spread / n) + 1e-12)


def _ternary(rng, shape):
    q = rng.dirichlet([1.0, 1.0, 1.0], size=shape)  # q(-1), q(0), q(+1)
    grid = np.array([-1.0, 0.0, 1.0])
    mean = q @ grid
    var = q @ grid**2 - mean**2
    return q, mean, var


def _sample_ternary(rng, q, n):
    u = rng.random((n, *q.shape[:-1]))
    c = np.cumsum(q, -1)
    return (u[..., None] > c[None, ..., :-1]).sum(-1) - 1.0


@pytest.mark.parametrize("deterministic_input", [True, False])
def test_dense_with_ternary_weights(deterministic_input):
    rng = np.random.default_rng(0)
    q, wm, wv = _ternary(rng, (6, 4))
    xm = rng.normal(size=(3, 6))
    xv = np.zeros_like(xm) if deterministic_input else rng.uniform(0.1, 1.0, (3, 6))
    got = pfp.linear_moments(pfp.Moments(xm, xv), wm, wv, np.matmul)
    n = 50_000
    w = _sample_ternary(rng, q, n)
    x = xm + np.sqrt(xv) * rng.normal(size=(n, 3, 6))
    samples = np.einsum("sbi,sio->sbo", x, w)
    _check(samples, got.mean, got.var)


def test_conv2d_rule_is_the_linear_rule_with_a_convolution():
    from scipy.signal import correlate

    rng = np.random.default_rng(1)
    q, wm, wv = _ternary(rng, (2, 5, 5))  # (C, kh, kw), one output channel
    xm = rng.normal(size=(2, 7, 7))
    xv = rng.uniform(0.1, 0.5, size=(2, 7, 7))

    def op(x, w):  # a valid 2-D cross-correlation summed over channels
        return sum(correlate(x[c], w[c], mode="valid") for c in range(x.shape[0]))

    got = pfp.linear_moments(pfp.Moments(xm, xv), wm, wv, op)
    n = 20_000
    w = _sample_ternary(rng, q, n)
    x = xm + np.sqrt(xv) * rng.normal(size=(n, 2, 7, 7))
    samples = np.stack([op(x[i], w[i]) for i in range(n)])
    _check(samples, got.mean, got.var)


def test_sign_moments_are_exact_for_gaussian_inputs():
    rng = np.random.default_rng(2)
    m = rng.normal(size=50) * 2
    v = rng.uniform(0.01, 3.0, size=50)
    got = pfp.sign_moments(pfp.Moments(m, v), xp=np, special=SP)
    # exact: P(X >= 0) = Phi(m / sqrt(v))
    p = scipy.stats.norm.cdf(m / np.sqrt(v))
    np.testing.assert_allclose(got.mean, 2 * p - 1, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.var, 1 - (2 * p - 1) ** 2, rtol=1e-9, atol=1e-12)
    x = m + np.sqrt(v) * rng.normal(size=(S, 50))
    _check(np.where(x >= 0, 1.0, -1.0), got.mean, got.var)


def test_gaussian_max_pool_against_monte_carlo():
    rng = np.random.default_rng(3)
    m = rng.normal(size=(2, 3, 4, 4))
    v = rng.uniform(0.05, 1.0, size=m.shape)
    got = pfp.max_pool_moments(pfp.Moments(m, v), xp=np, special=SP)
    x = m + np.sqrt(v) * rng.normal(size=(S // 10, *m.shape))
    pooled = np.maximum(
        np.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2]),
        np.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]),
    )
    # Clark's rule is exact for one max of two Gaussians; the max of two maxima
    # treats the inner maxima as Gaussian: an approximation, so the tolerances here
    # are the approximation's: means within 5 % of the sd, variances within 25 %
    # (measured: up to 21 %, where the two inner maxima are skewed)
    sd = pooled.std(0)
    np.testing.assert_array_less(np.abs(got.mean - pooled.mean(0)), 0.05 * sd)
    np.testing.assert_allclose(got.var, pooled.var(0), rtol=0.25)
    # one max of two Gaussians: exact
    mm, vv = pfp.gaussian_max_moments(
        m[..., 0], v[..., 0], m[..., 1], v[..., 1], xp=np, special=SP
    )
    pair = np.maximum(x[..., 0], x[..., 1])
    _check(pair, mm, vv)


def test_binary_max_pool_is_exact():
    rng = np.random.default_rng(4)
    m = rng.uniform(-0.9, 0.9, size=(2, 2, 4, 6))
    got = pfp.binary_max_pool_moments(pfp.Moments(m, 1 - m**2))
    x = np.where(rng.random((S // 10, *m.shape)) < (1 + m) / 2, 1.0, -1.0)
    pooled = np.maximum(
        np.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2]),
        np.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]),
    )
    _check(pooled, got.mean, got.var)


def test_avg_pool_dropout_and_batch_norm():
    rng = np.random.default_rng(5)
    m = rng.normal(size=(2, 3, 4, 4))
    v = rng.uniform(0.05, 1.0, size=m.shape)
    got = pfp.avg_pool_moments(pfp.Moments(m, v), 2, xp=np)
    x = m + np.sqrt(v) * rng.normal(size=(S // 10, *m.shape))
    pooled = x.reshape(-1, 2, 3, 2, 2, 2, 2).mean(axis=(-3, -1))
    _check(pooled, got.mean, got.var)
    mask = (rng.random(m.shape) > 0.3) / 0.7
    d = pfp.dropout_moments(pfp.Moments(m, v), mask)
    np.testing.assert_allclose(d.mean, m * mask)
    np.testing.assert_allclose(d.var, v * mask**2)
    # batch norm: the normalised means have batch mean beta and the batch's total
    # variance (of m plus v) maps to gamma^2
    bm, bv = rng.normal(size=(32, 5)), rng.uniform(0.1, 1.0, (32, 5))
    out = pfp.batch_norm_moments(pfp.Moments(bm, bv), 2.0, 0.5, eps=0.0, xp=np)
    np.testing.assert_allclose(out.mean.mean(0), 0.5, atol=1e-12)
    total = ((out.mean - 0.5) ** 2 + out.var).sum(0) / 31
    np.testing.assert_allclose(total, 4.0, rtol=1e-10)


def test_expected_nll_taylor_against_monte_carlo_for_small_variance():
    rng = np.random.default_rng(6)
    m = rng.normal(size=(8, 5))
    v = rng.uniform(0.001, 0.01, size=(8, 5))
    y = rng.integers(0, 5, size=8)
    got = pfp.expected_nll_taylor(pfp.Moments(m, v), y, xp=np, special=SP)
    a = m + np.sqrt(v) * rng.normal(size=(S, 8, 5))
    nll = -(a - scipy.special.logsumexp(a, axis=-1, keepdims=True))[:, np.arange(8), y]
    # a second-order expansion: its error is O(v^2) ~ 1e-4 here
    np.testing.assert_allclose(got, nll.mean(0), atol=2e-4)


def test_numpyro_and_pyro_namespaces_agree_with_numpy():
    """Every rule on the JAX and torch namespaces of the adapters, float32, against
    the NumPy core (rtol 1e-5)."""
    import jax.numpy as jnp
    import torch

    from ppl_hw.numpyro._backend import BACKEND as JAX
    from ppl_hw.pyro._backend import BACKEND as TORCH

    rng = np.random.default_rng(7)
    m = rng.normal(size=(4, 2, 4, 4)).astype(np.float32)
    v = rng.uniform(0.05, 1.0, size=m.shape).astype(np.float32)
    wm = rng.uniform(-0.5, 0.5, size=(4, 3)).astype(np.float32)
    wv = rng.uniform(0.1, 0.6, size=(4, 3)).astype(np.float32)
    y = np.array([0, 2, 1, 1])

    def run(b, conv):
        mm, vv = conv(m), conv(v)
        x = pfp.Moments(mm, vv)
        flat = pfp.Moments(mm[:, 0, 0, :], vv[:, 0, 0, :])
        lin = pfp.linear_moments(flat, conv(wm), conv(wv), lambda a, w: a @ w)
        return [
            *lin,
            *pfp.sign_moments(x, xp=b.xp, special=b.special),
            *pfp.max_pool_moments(x, xp=b.xp, special=b.special),
            *pfp.binary_max_pool_moments(pfp.Moments(mm / 4, vv)),
            *pfp.avg_pool_moments(x, 2, xp=b.xp),
            *pfp.batch_norm_moments(flat, 1.5, 0.2, xp=b.xp),
            pfp.expected_nll_taylor(lin, conv(y), xp=b.xp, special=b.special),
        ]

    ref = run(NUMPY, np.asarray)
    for b, conv in ((JAX, jnp.asarray), (TORCH, torch.as_tensor)):
        for a, r in zip(run(b, conv), ref, strict=True):
            np.testing.assert_allclose(np.asarray(a), r, rtol=1e-5, atol=1e-6)


def test_moments_affine_arithmetic_matches_the_random_variables():
    rng = np.random.default_rng(8)
    a = pfp.Moments(rng.normal(size=4), rng.uniform(0.1, 1, 4))
    b = pfp.Moments(rng.normal(size=4), rng.uniform(0.1, 1, 4))
    shift, c = rng.normal(size=4), -2.5
    # by the definitions: E and Var of c X + shift, X + Y, X - Y (independent)
    for got, (mean, var) in (
        (c * a + shift, (c * a.mean + shift, c**2 * a.var)),
        (a * c - shift, (c * a.mean - shift, c**2 * a.var)),
        (shift - a / c, (shift - a.mean / c, a.var / c**2)),
        (a + b, (a.mean + b.mean, a.var + b.var)),
        (a - b, (a.mean - b.mean, a.var + b.var)),
        (-a, (-a.mean, a.var)),
    ):
        assert isinstance(got, pfp.Moments)
        np.testing.assert_allclose(got.mean, mean, rtol=1e-12)
        np.testing.assert_allclose(got.var, var, rtol=1e-12)
    with pytest.raises(TypeError, match="not Gaussian"):
        a * b
