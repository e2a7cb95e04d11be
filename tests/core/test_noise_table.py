"""The tabulated noise density against independent references (float64 NumPy core).

The references never reuse the closed forms that built the tables: masses, moments
and entropies come from adaptive ``scipy.integrate.quad`` cell by cell, the kernel
density from ``scipy.stats.gaussian_kde``.
"""

import math

import numpy as np
import pytest
import scipy.integrate as si
import scipy.stats

from ppl_hw.core import NUMPY
from ppl_hw.core import noise_table as nt

from ..dist_cases import NOISE_NAMES, knots, noise_samples, noise_table

log_prob = NUMPY.bind(nt.table_log_prob)
cdf = NUMPY.bind(nt.table_cdf)
icdf = NUMPY.bind(nt.table_icdf)


def _density(table):
    return lambda z: float(np.exp(log_prob(np.asarray(z), table, table.cells)))


def _quad_all(table, fn):
    """∫ fn over the real line: adaptive quad with a breakpoint at every knot, plus
    the two tails."""
    edges = knots(table)
    inner = si.quad(
        fn, edges[0], edges[-1], points=edges[1:-1], limit=2 * edges.size, epsabs=1e-12
    )[0]
    return inner + si.quad(fn, -np.inf, edges[0])[0] + si.quad(fn, edges[-1], np.inf)[0]


@pytest.mark.parametrize(
    "name, num_knots",
    [("gaussian", 16), ("uniform", 16), ("mtj", 16), ("pcm", 16), ("mtj", 2049)],
)
def test_mass_mean_variance_entropy_by_independent_quadrature(name, num_knots):
    # num_knots=16 gives the coarsest grid the bandwidth allows (4 knots per
    # bandwidth, ~280 knots): fast quadrature; the default grid once, for mtj.
    t = nt.fit_noise_table(noise_samples(name), num_knots=num_knots)
    g = _density(t)
    assert _quad_all(t, g) == pytest.approx(1.0, abs=1e-5)
    assert _quad_all(t, lambda z: z * g(z)) == pytest.approx(0.0, abs=1e-6)
    assert _quad_all(t, lambda z: z * z * g(z)) == pytest.approx(1.0, abs=1e-6)
    h = _quad_all(t, lambda z: -g(z) * np.log(g(z)) if g(z) > 0 else 0.0)
    assert t.entropy == pytest.approx(h, abs=1e-6)
    # a Gaussian has the largest entropy at unit variance
    assert t.entropy <= 0.5 * np.log(2 * np.pi * np.e) + 1e-3


@pytest.mark.parametrize("name", NOISE_NAMES)
def test_kde_against_scipy_gaussian_kde(name):
    s = noise_samples(name)
    t = noise_table(name)
    h_raw = t.bandwidth * t.scale
    kde = scipy.stats.gaussian_kde(s, bw_method=h_raw / s.std(ddof=1))
    z = knots(t)[:: max(1, t.num_knots // 400)]
    raw = t.loc + t.scale * z
    fitted = np.exp(log_prob(z, t, t.cells)) / t.scale  # density in raw units
    # binning error is O((dx/h)^2) with dx <= h/4: within 1 % of the peak
    np.testing.assert_allclose(fitted, kde(raw), atol=0.01 * kde(raw).max())


def test_gaussian_samples_give_the_normal_density():
    t = nt.fit_noise_table(np.random.default_rng(1).standard_normal(200_000))
    z = np.linspace(-3, 3, 61)
    # KDE bias h^2/2 |f''| <= 0.0013 (h = 0.078) and standard deviation
    # sqrt(f R(K) / (n h)) <= 0.0026 at n = 2e5: 0.015 is bias + 5 SD
    np.testing.assert_allclose(
        np.exp(log_prob(z, t, t.cells)), scipy.stats.norm.pdf(z), atol=0.015
    )
    assert t.entropy == pytest.approx(scipy.stats.norm.entropy(), abs=5e-3)


@pytest.mark.parametrize("name", NOISE_NAMES)
def test_cdf_derivative_is_the_density(name):
    t = noise_table(name)
    z = np.random.default_rng(0).uniform(t.z0 - 1, t.z_last + 1, 2000)
    eps = 1e-6
    dcdf = (
        cdf(z + eps, t, t.cells, t.cumulative) - cdf(z - eps, t, t.cells, t.cumulative)
    ) / (2 * eps)
    np.testing.assert_allclose(
        dcdf, np.exp(log_prob(z, t, t.cells)), rtol=1e-5, atol=1e-8
    )


@pytest.mark.parametrize("name", NOISE_NAMES)
def test_icdf_inverts_cdf(name):
    t = noise_table(name)
    z = np.linspace(-4, 4, 2001)
    u = cdf(z, t, t.cells, t.cumulative)
    bulk = (u > 1e-3) & (u < 1 - 1e-3)  # where rounding of u moves z by < 1e-13
    np.testing.assert_allclose(
        icdf(u, t, t.cells, t.cumulative)[bulk], z[bulk], atol=1e-8
    )
    uu = np.random.default_rng(3).uniform(1e-9, 1 - 1e-9, 5000)
    np.testing.assert_allclose(
        cdf(icdf(uu, t, t.cells, t.cumulative), t, t.cells, t.cumulative),
        uu,
        atol=1e-12,
    )


@pytest.mark.parametrize("name", NOISE_NAMES)
def test_tails_continue_the_density(name):
    t = noise_table(name)
    # continuous at both grid ends, monotone decreasing beyond
    for end, sign in ((t.z0, -1.0), (t.z_last, 1.0)):
        inside = log_prob(np.array([end - sign * 1e-9]), t, t.cells)
        outside = log_prob(np.array([end + sign * 1e-9]), t, t.cells)
        np.testing.assert_allclose(inside, outside, atol=1e-6)
        far = log_prob(end + sign * np.array([1.0, 2.0, 4.0]), t, t.cells)
        assert np.all(np.diff(far) < 0)
    # tail masses as integrated by the cdf
    assert cdf(np.array([t.z0]), t, t.cells, t.cumulative)[0] == pytest.approx(
        t.left_mass
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_prob_finite_for_every_finite_input(dtype):
    t = noise_table("mtj")
    big = np.finfo(dtype).max
    z = np.array([-big, -1e30, -1e10, -50.0, 0.0, 50.0, 1e10, 1e30, big], dtype=dtype)
    out = log_prob(z, t, t.cells_as(dtype))
    assert np.all(np.isfinite(out))
    # non-increasing away from the bulk (held constant beyond 1e18 tail scales)
    assert np.all(np.diff(out[:5]) >= 0) and np.all(np.diff(out[-5:]) <= 0)


def test_bandwidth_rules():
    s = noise_samples("mtj")
    e = (s - s.mean()) / s.std()
    q75, q25 = np.percentile(e, [75, 25])
    silverman = 0.9 * min(1.0, (q75 - q25) / 1.349) * s.size**-0.2
    t = nt.fit_noise_table(s)
    assert t.bandwidth * t.scale == pytest.approx(silverman * s.std(), rel=1e-12)
    t = nt.fit_noise_table(s, bandwidth="scott")
    assert t.bandwidth * t.scale == pytest.approx(
        1.06 * s.size**-0.2 * s.std(), rel=1e-12
    )
    t = nt.fit_noise_table(s, bandwidth=0.05)
    assert t.bandwidth * t.scale == pytest.approx(0.05, rel=1e-12)
    assert t.dz <= t.bandwidth / 4 + 1e-12


def test_standardisation_recovers_the_raw_affine_map():
    s = 3.0 + 0.2 * noise_samples("uniform")
    t = nt.fit_noise_table(s)
    # the fitted density's moments, not the raw sample's, but close to them
    assert t.loc == pytest.approx(s.mean(), abs=1e-3)
    assert t.scale == pytest.approx(
        np.sqrt(s.var() + (t.bandwidth * t.scale) ** 2), rel=1e-3
    )


def test_files(tmp_path):
    s = noise_samples("pcm")[:500]
    np.save(tmp_path / "a.npy", s)
    np.savetxt(tmp_path / "col.csv", s, delimiter=",")
    np.savetxt(tmp_path / "row.csv", s[None, :], delimiter=",")
    for f in ("a.npy", "col.csv", "row.csv"):
        np.testing.assert_allclose(nt.load_noise_samples(tmp_path / f), s, rtol=1e-15)


@pytest.mark.parametrize(
    "samples, exc, match",
    [
        (np.ones(10), ValueError, r"at least 100 values, got 10"),
        (np.ones(500), ValueError, r"zero variance\), got 1.0"),
        (np.r_[np.arange(200.0), np.nan], ValueError, r"finite, got nan at index 200"),
        (np.r_[np.arange(200.0), np.inf], ValueError, r"finite, got inf at index 200"),
        (np.ones((20, 20)), ValueError, r"1-D array, got shape \(20, 20\)"),
        (np.array(["a"] * 200), TypeError, r"real numeric array, got dtype <U1"),
        ("noise.csv", TypeError, r"use EmpiricalNoise.from_file"),
    ],
)
def test_bad_samples(samples, exc, match):
    with pytest.raises(exc, match=match):
        nt.fit_noise_table(samples)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"bandwidth": "isj"}, ValueError, r"'silverman', 'scott' or > 0, got 'isj'"),
        ({"bandwidth": -1.0}, ValueError, r"got -1.0"),
        ({"bandwidth": True}, TypeError, r"bandwidth must be a str or a number"),
        ({"num_knots": 4}, ValueError, r"num_knots must be >= 16 .*, got 4"),
        ({"bandwidth": 1e-9}, ValueError, r"too small for the sample range"),
    ],
)
def test_bad_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        nt.fit_noise_table(noise_samples("gaussian"), **kwargs)


def test_bad_files(tmp_path):
    (tmp_path / "bad.csv").write_text("1,2\n3,4\n" * 100)
    (tmp_path / "text.csv").write_text("a\nb\n")
    (tmp_path / "x.txt").write_text("1\n")
    (tmp_path / "trunc.npy").write_bytes(b"\x93NUMPY garbage")
    cases = [
        (tmp_path / "missing.npy", r"is not an existing file"),
        (
            tmp_path / "bad.csv",
            r"one column or one row of numbers, got a table of shape \(200, 2\)",
        ),
        (tmp_path / "text.csv", r"not a numeric .csv file"),
        (tmp_path / "x.txt", r"must end in .npy or .csv, got '.txt'"),
        (tmp_path / "trunc.npy", r"not a readable .npy file"),
    ]
    for path, match in cases:
        with pytest.raises(ValueError, match=match):
            nt.load_noise_samples(path)
    with pytest.raises(TypeError, match=r"path must be a str or os\.PathLike, got int"):
        nt.load_noise_samples(3)


# --- the piecewise log-linear model (issue 18) -------------------------------------

EPS32 = float(np.finfo(np.float32).eps)


@pytest.mark.parametrize("name", NOISE_NAMES)
def test_density_is_log_linear_between_knots(name):
    t = noise_table(name)
    k = np.arange(0, t.num_knots - 1, 97)
    for frac in (0.0, 0.3, 0.5, 1.0):
        z = t.z0 + (k + frac) * t.dz
        expected = (1 - frac) * np.log(t.density[k]) + frac * np.log(t.density[k + 1])
        np.testing.assert_allclose(log_prob(z, t, t.cells), expected, atol=1e-11)


@pytest.mark.parametrize("name", NOISE_NAMES)
def test_cdf_is_the_integral_of_the_density(name):
    # cdf(b) - cdf(a) against adaptive quadrature of exp(log_prob) (breakpoints at
    # the knots), on random intervals inside and across the grid and the tails
    t = nt.fit_noise_table(noise_samples(name), num_knots=16)  # coarsest: fast quad
    g = _density(t)
    edges = knots(t)
    rng = np.random.default_rng(7)
    for a, b in np.sort(rng.uniform(t.z0 - 1, t.z_last + 1, (8, 2)), axis=1):
        pts = edges[(edges > a) & (edges < b)]
        ref = si.quad(
            g,
            a,
            b,
            points=pts if pts.size else None,
            limit=4 * pts.size + 50,
            epsabs=1e-13,
        )[0]
        got = cdf(np.array([b]), t, t.cells, t.cumulative) - cdf(
            np.array([a]), t, t.cells, t.cumulative
        )
        assert got[0] == pytest.approx(ref, abs=1e-11)
    # and the total mass, tails included, is one
    assert t.cumulative[-1] + t.right_mass == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize("name", NOISE_NAMES)
def test_icdf_inverts_cdf_to_float32_rounding(name):
    # In float32, icdf(cdf(z)) can only be as exact as u = cdf(z) is: one rounding
    # of u moves z by eps u / g(z); a few of those plus eps |z| is "float32 rounding".
    t = noise_table(name)
    c32, cum32 = t.cells_as(np.float32), t.cumulative.astype(np.float32)
    z = np.linspace(-8, 8, 40001).astype(np.float32)
    u = cdf(z, t, c32, cum32)
    back = icdf(u, t, c32, cum32)
    assert u.dtype == back.dtype == np.float32
    ok = (u > 1e-30) & (u < 1)  # u neither underflows nor rounds to one
    z, u, back = z[ok], u[ok], back[ok]
    g = np.exp(log_prob(z.astype(np.float64), t, t.cells))
    err = np.abs(back.astype(np.float64) - z)
    assert np.all(err <= 8 * EPS32 * (np.abs(z) + u / g))


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
@pytest.mark.parametrize("name", ["mtj", "pcm"])
def test_samples_pass_ks_against_the_cdf(backend, name):
    # Kolmogorov–Smirnov of 20 000 float32 draws against the float64 cdf: fails
    # with probability 1e-3 if the sampler is exact (a 0.1 % false-alarm rate);
    # the seeds are fixed, so the outcome is reproducible.
    t = noise_table(name)
    if backend == "numpyro":
        import jax

        from ppl_hw.numpyro.distributions import EmpiricalNoise

        x = np.asarray(
            EmpiricalNoise.from_table(t).sample(jax.random.PRNGKey(11), (20_000,))
        )
    else:
        import torch

        from ppl_hw.pyro.distributions import EmpiricalNoise

        torch.manual_seed(11)
        x = EmpiricalNoise.from_table(t).sample((20_000,)).numpy()
    assert x.dtype == np.float32 and np.all(np.isfinite(x))
    ref = lambda v: cdf(np.asarray(v, np.float64), t, t.cells, t.cumulative)  # noqa: E731
    assert scipy.stats.kstest(x, ref).pvalue > 1e-3


def _with_slope(t, k, s):
    """``t`` with the slope of cell ``k`` replaced by ``s`` and the cumulative table
    shifted beyond it by the change of that cell's mass (no longer normalised: only
    the in-cell shape of the cdf and its inverse is looked at)."""
    import dataclasses

    def mass(slope):
        return (
            t.dz
            * math.exp(t.cells[k].real)
            * (1.0 if slope == 0 else math.expm1(slope) / slope)
        )

    cells = t.cells.copy()
    cells[k] = cells[k].real + 1j * s
    cum = t.cumulative.copy()
    cum[k + 1 :] += mass(s) - mass(t.cells[k].imag)
    return dataclasses.replace(t, cells=cells, cumulative=cum)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flat_cells_are_stable(dtype):
    # slopes through and around the series threshold, and exactly zero: the in-cell
    # cdf is C_k + dz e^l expm1(s t)/s (-> t as s -> 0) and icdf inverts it
    t = noise_table("mtj")
    k = t.num_knots // 2
    fs = nt.FLAT_SLOPE
    slopes = [0.0, 1e-12, -1e-9, fs * 0.999, -fs * 0.999, fs * 1.001, -fs * 1.001]
    slopes += [1e-3, -0.5, 3.0]
    z = (t.z0 + (k + np.array([1e-6, 0.25, 0.5, 0.75, 0.99])) * t.dz).astype(dtype)
    tt = (z.astype(np.float64) - t.z0) / t.dz - k  # the cell fraction z really has
    eps = np.finfo(dtype).eps
    for s in slopes:
        ts = _with_slope(t, k, s)
        cells, cum = ts.cells_as(dtype), ts.cumulative.astype(dtype)
        u = cdf(z, ts, cells, cum)
        assert u.dtype == dtype and np.all(np.isfinite(u))
        m = t.dz * math.exp(ts.cells[k].real)
        exact = np.array([v if s == 0 else math.expm1(s * v) / s for v in tt])
        # float32: the table entries and the cell fraction carry float32 rounding
        tol = 4 * eps * (1 + (float(k) if dtype == np.float32 else 0.0) * m)
        np.testing.assert_allclose(u, ts.cumulative[k] + m * exact, rtol=tol, atol=0)
        back = icdf(u, ts, cells, cum)
        assert back.dtype == dtype and np.all(np.isfinite(back))
        # one rounding of u moves z by eps u / (density), density >= m e^-|s| / dz
        step = 8 * eps * (np.abs(z).max() + u.max() * t.dz * math.exp(abs(s)) / m)
        np.testing.assert_allclose(back, z, atol=step)


def test_floored_gaps_give_flat_cells_and_finite_values():
    # two clusters far apart: the knots between them sit at the density floor, so
    # their cells have slope exactly 0; everything stays finite and monotone there
    rng = np.random.default_rng(5)
    s = np.r_[rng.normal(-40, 1, 3000), rng.normal(40, 1, 3000)]
    t = nt.fit_noise_table(s, bandwidth=0.5)
    assert np.any(t.cells.imag == 0.0)
    z = np.linspace(t.z0 - 1, t.z_last + 1, 20001)
    for dtype in (np.float32, np.float64):
        zz = z.astype(dtype)
        cells, cum = t.cells_as(dtype), t.cumulative.astype(dtype)
        lp = log_prob(zz, t, cells)
        u = cdf(zz, t, cells, cum)
        assert lp.dtype == u.dtype == dtype
        assert np.all(np.isfinite(lp)) and np.all(np.isfinite(u))
        # monotone up to the rounding of the cumulative table where cells meet
        assert np.all(np.diff(u) >= -2 * np.finfo(dtype).eps * u[1:])
        back = icdf(np.linspace(1e-6, 1 - 1e-6, 5001).astype(dtype), t, cells, cum)
        assert back.dtype == dtype and np.all(np.isfinite(back))
        assert np.all(np.diff(back) >= 0)


def test_evaluators_refuse_the_old_density_argument():
    t = noise_table("mtj")
    with pytest.raises(TypeError, match=r"cells must be the complex cell table"):
        log_prob(np.zeros(3), t, t.density)


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_float32_stays_float32_and_gradients_are_finite(backend):
    # log_prob, cdf, icdf and samples of EmpiricalNoise and DeviceNoise in float32,
    # and d/d(loc, scale) of DeviceNoise's log_prob and reparameterised samples
    # finite everywhere, far tails included
    t = noise_table("mtj")
    big = np.array(
        [-1e30, -50.0, -6.0, -1.0, 0.0, 0.7, 3.0, 6.0, 50.0, 1e30], np.float32
    )
    u = np.array([1e-30, 1e-7, 0.01, 0.5, 0.99, 1 - 6e-8], np.float32)
    if backend == "numpyro":
        import jax
        import jax.numpy as jnp

        from ppl_hw.numpyro.distributions import DeviceNoise, EmpiricalNoise

        n = EmpiricalNoise.from_table(t)
        for out in (
            n.log_prob(jnp.asarray(big)),
            n.cdf(jnp.asarray(big)),
            n.icdf(jnp.asarray(u)),
            n.sample(jax.random.PRNGKey(0), (7,)),
        ):
            assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))

        def lp(loc, scale):
            return DeviceNoise(loc, scale, n).log_prob(jnp.asarray(big)).sum()

        def draw(loc, scale):
            return DeviceNoise(loc, scale, n).sample(jax.random.PRNGKey(1), (50,)).sum()

        for f in (lp, draw):
            g = jax.grad(f, argnums=(0, 1))(jnp.float32(0.3), jnp.float32(1.7))
            assert all(x.dtype == jnp.float32 and bool(jnp.isfinite(x)) for x in g)
    else:
        import torch

        from ppl_hw.pyro.distributions import DeviceNoise, EmpiricalNoise

        n = EmpiricalNoise.from_table(t)
        for out in (
            n.log_prob(torch.as_tensor(big)),
            n.cdf(torch.as_tensor(big)),
            n.icdf(torch.as_tensor(u)),
            n.sample((7,)),
        ):
            assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
        for what in ("log_prob", "rsample"):
            loc = torch.tensor(0.3, requires_grad=True)
            scale = torch.tensor(1.7, requires_grad=True)
            d = DeviceNoise(loc, scale, n)
            out = (
                d.log_prob(torch.as_tensor(big))
                if what == "log_prob"
                else d.rsample((50,))
            )
            out.sum().backward()
            for x in (loc.grad, scale.grad):
                assert x.dtype == torch.float32 and bool(torch.isfinite(x))


def test_moments_in_closed_form_against_quadrature():
    # table_moments (used by the demo) against adaptive quadrature of z^m exp(log_prob)
    t = nt.fit_noise_table(noise_samples("pcm"), num_knots=16)
    g = _density(t)
    for m, got in zip((1, 2, 3, 4), nt.table_moments(t), strict=True):
        assert got == pytest.approx(_quad_all(t, lambda z, m=m: z**m * g(z)), abs=1e-6)


# --- errors in the user's terms, any units, files read whole (issue 21) ------------


def _outlier_samples():
    rng = np.random.default_rng(21)
    return np.r_[rng.normal(size=1000), 1e6]


def test_num_knots_above_the_documented_maximum_is_refused_before_any_work():
    for bad in (10**9, nt.MAX_KNOTS + 1):
        # the samples are not even looked at: the option is checked first
        with pytest.raises(
            ValueError, match=rf"num_knots .*MAX_KNOTS = 1048577, got {bad}"
        ):
            nt.fit_noise_table(np.ones(3), num_knots=bad)


def test_outliers_are_named_and_the_advised_bandwidth_is_exact(monkeypatch):
    # a small MAX_KNOTS keeps the fits cheap; the arithmetic is the same
    monkeypatch.setattr(nt, "MAX_KNOTS", 4097)
    s = _outlier_samples()
    with pytest.raises(ValueError) as err:
        nt.fit_noise_table(s)
    msg = str(err.value)
    for words in (
        "samples are too spread out",
        "'silverman' bandwidth",
        "more than MAX_KNOTS = 4097",
        "Clip or remove the outliers",
    ):
        assert words in msg
    assert "bandwidth 0." not in msg.split("is")[0]  # no bandwidth blamed as the user's
    need = float(msg.rsplit("bandwidth >= ", 1)[1].split(" ")[0])
    # the advice is the least bandwidth (to its 3 digits) that fits in MAX_KNOTS knots
    table = nt.fit_noise_table(s, bandwidth=need)
    assert table.num_knots <= 4097
    with pytest.raises(
        ValueError, match=r"bandwidth [\d.]+ is too small for the sample range"
    ):
        nt.fit_noise_table(s, bandwidth=need * 0.99)


def test_heavy_tailed_cauchy_samples_get_the_spread_error():
    s = np.random.default_rng(3).standard_cauchy(100_000)
    with pytest.raises(ValueError, match=r"too spread out.*Heavy tails or outliers"):
        nt.fit_noise_table(s)


@pytest.mark.parametrize("exponent", [-1000, 1000])
def test_any_units_give_the_same_standardised_table(exponent):
    # scaling by a power of two is exact, so the fit must be bit-identical (the fit
    # is location-scale), with loc and scale in the samples' units; 2**1000 is near
    # the top of float64
    s = noise_samples("mtj")[:2000]
    ref = nt.fit_noise_table(s)
    t = nt.fit_noise_table(np.ldexp(s, exponent))
    for name in ("density", "cells", "cumulative"):
        np.testing.assert_array_equal(getattr(t, name), getattr(ref, name))
    assert (t.z0, t.dz, t.entropy, t.bandwidth) == (
        ref.z0,
        ref.dz,
        ref.entropy,
        ref.bandwidth,
    )
    assert t.loc == float(np.ldexp(ref.loc, exponent))
    assert t.scale == float(np.ldexp(ref.scale, exponent))


def test_tiny_distinct_samples_are_accepted():
    # the case of issue 21 (refused as "all equal" before): standardised like N(0, 1);
    # the FFT's round-off (~1e-17 of the peak) is the only difference
    s = np.random.default_rng(0).normal(size=1000)
    ref = nt.fit_noise_table(s)
    t = nt.fit_noise_table(s * 1e-300)
    np.testing.assert_allclose(t.density, ref.density, rtol=1e-9, atol=1e-15)
    assert t.scale == pytest.approx(ref.scale * 1e-300, rel=1e-12)
    # subnormal samples keep ~16 bits (2**-1074 steps at 2**-1058): still a density
    t = nt.fit_noise_table(np.ldexp(s, -1060))
    np.testing.assert_allclose(t.density, ref.density, rtol=0, atol=1e-3)


def test_samples_below_float_resolution_are_refused_with_the_reason():
    z = np.random.default_rng(0).normal(size=1000)
    # 1e-3 at 1e10: 526 float64 steps per standard deviation (>= 64): accepted
    assert nt.fit_noise_table(1e10 + 1e-3 * z).scale == pytest.approx(1e-3, rel=0.1)
    # 1e-5 at 1e10: 5 steps
    with pytest.raises(ValueError, match=r"vary too little for float64.*5\.\d+ float"):
        nt.fit_noise_table(1e10 + 1e-5 * z)
    with pytest.raises(ValueError, match=r"must not all be equal \(zero variance\)"):
        nt.fit_noise_table(np.full(200, 1e-300))


def test_samples_whose_scale_overflows_are_refused():
    s = np.r_[np.full(100, -1.75e308), np.full(100, 1.75e308)]
    with pytest.raises(ValueError, match=r"too large for float64"):
        nt.fit_noise_table(s, bandwidth="scott")


# --- files -------------------------------------------------------------------------


def test_csv_is_validated_field_by_field(tmp_path):
    good = np.arange(150.0) / 7
    text = "".join(f"{float(v)!r}\n" for v in good)
    cases = {
        "letters.csv": (text + "abc\n", r"line 151, field 1 is 'abc', not a number"),
        "nan.csv": (text + "nan\n", r"line 151, field 1 is 'nan'; .*finite"),
        "ragged.csv": ("1,2\n" + text, r"line 2 has 1 fields, the rows before it 2"),
        "partial.csv": (text + "1.5e", r"line 151, field 1 is '1.5e'"),
        "empty.csv": ("# only a comment\n\n", r"holds no numbers"),
    }
    for name, (content, match) in cases.items():
        (tmp_path / name).write_text(content)
        with pytest.raises(ValueError, match=rf"path '.*{name}'.*{match}"):
            nt.load_noise_samples(tmp_path / name)
    (tmp_path / "latin1.csv").write_bytes(text.encode() + b"\xe9\n")
    with pytest.raises(ValueError, match=r"byte \d+ is not UTF-8"):
        nt.load_noise_samples(tmp_path / "latin1.csv")
    # a stable file whose last line has no newline is complete: accepted
    (tmp_path / "no_newline.csv").write_text(text.rstrip("\n") + "  # end")
    np.testing.assert_array_equal(
        nt.load_noise_samples(tmp_path / "no_newline.csv"), good
    )


def _writer_during_read(monkeypatch, action):
    """Simulate another process: ``action(path)`` runs right after the file's bytes
    were read (deterministic, no threads or timing)."""
    read = nt._read_bytes

    def read_then_write(path):
        data = read(path)
        action(path)
        return data

    monkeypatch.setattr(nt, "_read_bytes", read_then_write)


@pytest.mark.parametrize("ext", [".csv", ".npy"])
def test_a_file_appended_while_read_is_refused(tmp_path, monkeypatch, ext):
    s = np.arange(200.0)
    path = tmp_path / f"noise{ext}"
    if ext == ".csv":
        path.write_text("".join(f"{v}\n" for v in s[:150]) + "15")  # partial row

        def finish(p):
            with open(p, "a") as f:
                f.write("0.0\n" + "".join(f"{v}\n" for v in s[151:]))

    else:
        np.save(path, s)
        path.write_bytes(path.read_bytes()[:-400])  # the writer is half-way

        def finish(p):
            np.save(p, s)

    _writer_during_read(monkeypatch, finish)
    with pytest.raises(
        ValueError, match=rf"path '.*noise{ext}' changed while it was read"
    ):
        nt.load_noise_samples(path)
    monkeypatch.undo()
    np.testing.assert_array_equal(nt.load_noise_samples(path), s)  # now complete


def test_a_file_replaced_while_read_is_refused(tmp_path, monkeypatch):
    # same size, new inode: a writer that renames a new version into place
    path, other = tmp_path / "noise.csv", tmp_path / "next.csv"
    path.write_text("".join(f"{v}\n" for v in range(100, 300)))
    other.write_text("".join(f"{v}\n" for v in range(300, 500)))
    _writer_during_read(monkeypatch, lambda p: other.replace(p))
    with pytest.raises(
        ValueError, match=r"changed while it was read .*size 800 -> 800"
    ):
        nt.load_noise_samples(path)
