"""The tabulated noise density against independent references (float64 NumPy core).

The references never reuse the closed forms that built the tables: masses, moments
and entropies come from adaptive ``scipy.integrate.quad`` cell by cell, the kernel
density from ``scipy.stats.gaussian_kde``.
"""

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
    return lambda z: float(np.exp(log_prob(np.asarray(z), table, table.density)))


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
    fitted = np.exp(log_prob(z, t, t.density)) / t.scale  # density in raw units
    # binning error is O((dx/h)^2) with dx <= h/4: within 1 % of the peak
    np.testing.assert_allclose(fitted, kde(raw), atol=0.01 * kde(raw).max())


def test_gaussian_samples_give_the_normal_density():
    t = nt.fit_noise_table(np.random.default_rng(1).standard_normal(200_000))
    z = np.linspace(-3, 3, 61)
    # KDE bias h^2/2 |f''| <= 0.0013 (h = 0.078) and standard deviation
    # sqrt(f R(K) / (n h)) <= 0.0026 at n = 2e5: 0.015 is bias + 5 SD
    np.testing.assert_allclose(
        np.exp(log_prob(z, t, t.density)), scipy.stats.norm.pdf(z), atol=0.015
    )
    assert t.entropy == pytest.approx(scipy.stats.norm.entropy(), abs=5e-3)


@pytest.mark.parametrize("name", NOISE_NAMES)
def test_cdf_derivative_is_the_density(name):
    t = noise_table(name)
    z = np.random.default_rng(0).uniform(t.z0 - 1, t.z_last + 1, 2000)
    eps = 1e-6
    dcdf = (
        cdf(z + eps, t, t.density, t.cumulative)
        - cdf(z - eps, t, t.density, t.cumulative)
    ) / (2 * eps)
    np.testing.assert_allclose(
        dcdf, np.exp(log_prob(z, t, t.density)), rtol=1e-5, atol=1e-8
    )


@pytest.mark.parametrize("name", NOISE_NAMES)
def test_icdf_inverts_cdf(name):
    t = noise_table(name)
    z = np.linspace(-4, 4, 2001)
    u = cdf(z, t, t.density, t.cumulative)
    bulk = (u > 1e-3) & (u < 1 - 1e-3)  # where rounding of u moves z by < 1e-13
    np.testing.assert_allclose(
        icdf(u, t, t.density, t.cumulative)[bulk], z[bulk], atol=1e-8
    )
    uu = np.random.default_rng(3).uniform(1e-9, 1 - 1e-9, 5000)
    np.testing.assert_allclose(
        cdf(icdf(uu, t, t.density, t.cumulative), t, t.density, t.cumulative),
        uu,
        atol=1e-12,
    )


@pytest.mark.parametrize("name", NOISE_NAMES)
def test_tails_continue_the_density(name):
    t = noise_table(name)
    # continuous at both grid ends, monotone decreasing beyond
    for end, sign in ((t.z0, -1.0), (t.z_last, 1.0)):
        inside = log_prob(np.array([end - sign * 1e-9]), t, t.density)
        outside = log_prob(np.array([end + sign * 1e-9]), t, t.density)
        np.testing.assert_allclose(inside, outside, atol=1e-6)
        far = log_prob(end + sign * np.array([1.0, 2.0, 4.0]), t, t.density)
        assert np.all(np.diff(far) < 0)
    # tail masses as integrated by the cdf
    assert cdf(np.array([t.z0]), t, t.density, t.cumulative)[0] == pytest.approx(
        t.left_mass
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_prob_finite_for_every_finite_input(dtype):
    t = noise_table("mtj")
    big = np.finfo(dtype).max
    z = np.array([-big, -1e30, -1e10, -50.0, 0.0, 50.0, 1e10, 1e30, big], dtype=dtype)
    out = log_prob(z, t, t.density.astype(dtype))
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
        ({"num_knots": 4}, ValueError, r"num_knots must be >= 16, got 4"),
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
