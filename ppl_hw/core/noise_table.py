r"""A measured noise shape as a standardised, tabulated density (Patel et al. 2025).

:func:`fit_noise_table` turns raw device-noise samples into a :class:`NoiseTable`
(NumPy, float64, once); :func:`table_log_prob`, :func:`table_cdf` and
:func:`table_icdf` evaluate it on any backend.

**The density.** The samples are pre-standardised, smoothed by a Gaussian kernel
density estimate (bandwidth :math:`h` by Silverman's rule,
:math:`h = 0.9\,\min(\hat\sigma, \mathrm{IQR}/1.349)\,n^{-1/5}`, or Scott's
:math:`1.06\,\hat\sigma\,n^{-1/5}`, or a given value) computed by linear binning and an
FFT convolution, and tabulated at :math:`K` knots of a uniform grid that extends
:data:`GRID_MARGIN` bandwidths beyond the extreme samples. The density :math:`g` *is*
the piecewise-linear interpolant of those knots, continued beyond the grid by
half-Gaussian tails of scale :math:`\tau = h`,

.. math::

    g(z) = g(z_0)\, e^{-(z - z_0)^2 / 2\tau^2} \ (z < z_0), \qquad
    g(z) = g(z_{K-1})\, e^{-(z - z_{K-1})^2 / 2\tau^2} \ (z > z_{K-1}),

whose mass is negligible (the kernel density is already ~φ(6) below its peak there).
Knot values are floored at :data:`DENSITY_FLOOR` times the peak so that
:math:`\log g` is finite everywhere, also between well-separated modes in float32.

**Exact standardisation.** The mass, mean and variance of that density are integrated
in closed form (piecewise polynomials plus half-Gaussian moments), and an exact affine
map of the grid makes the tabulated density integrate to one with mean 0 and
variance 1. The cumulative table is the exact integral of the interpolant, so the cdf
is piecewise quadratic, :math:`\mathrm d\,\mathrm{cdf}/\mathrm dz = g` holds exactly,
and the inverse cdf solves a quadratic in one cell. The differential entropy
:math:`H_0 = -\int g \log g` is computed once, by 16-point Gauss–Legendre quadrature on
every cell and in closed form on the tails.

Evaluation indexes the uniform grid directly (no search) for the density and the cdf;
the inverse cdf finds its cell by a binary search of the cumulative table.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.signal

from .backend import Special, uniform_cell

__all__ = [
    "DENSITY_FLOOR",
    "GRID_MARGIN",
    "MIN_SAMPLES",
    "NoiseTable",
    "as_sample_array",
    "fit_noise_table",
    "load_noise_samples",
    "table_cdf",
    "table_icdf",
    "table_log_prob",
    "table_moments",
]

MIN_SAMPLES = 100
"""Fewest noise samples accepted: a density estimate from fewer is mostly kernel."""

GRID_MARGIN = 6.0
"""The grid extends this many bandwidths beyond the smallest and largest sample."""

DENSITY_FLOOR = 1e-30
"""Knot densities are at least this fraction of the peak density (log stays finite)."""

_MAX_TAIL_Z = 1e18  # beyond this many tail scales the tail log-density is held
_SQRT_HALF_PI = math.sqrt(math.pi / 2.0)
_SQRT_2PI = math.sqrt(2.0 * math.pi)


@dataclass(frozen=True, eq=False)
class NoiseTable:
    """A standardised piecewise-linear density on a uniform grid (NumPy, float64).

    Equality and hashing are by identity, so a table can be static data of a jitted
    function.

    :ivar z0: the first knot.
    :ivar dz: the knot spacing.
    :ivar density: density at the knots, shape ``(K,)``.
    :ivar cumulative: the cdf at the knots, shape ``(K,)`` (exact integral).
    :ivar tail_scale: scale ``τ`` of the half-Gaussian tails.
    :ivar entropy: differential entropy ``H0`` in nats.
    :ivar loc: raw-sample value of ``z = 0`` (the fitted density's mean).
    :ivar scale: raw-sample units per unit of ``z`` (the fitted density's std).
    :ivar bandwidth: kernel bandwidth, in standardised units.
    :ivar num_samples: how many samples were fitted.
    """

    z0: float
    dz: float
    density: np.ndarray = field(repr=False)
    cumulative: np.ndarray = field(repr=False)
    tail_scale: float
    entropy: float
    loc: float
    scale: float
    bandwidth: float
    num_samples: int

    @property
    def num_knots(self) -> int:
        return int(self.density.shape[0])

    @property
    def z_last(self) -> float:
        return self.z0 + (self.num_knots - 1) * self.dz

    @property
    def left_mass(self) -> float:
        return float(self.density[0] * self.tail_scale * _SQRT_HALF_PI)

    @property
    def right_mass(self) -> float:
        return float(self.density[-1] * self.tail_scale * _SQRT_HALF_PI)

    @property
    def log_density_ends(self) -> tuple[float, float]:
        return float(np.log(self.density[0])), float(np.log(self.density[-1]))


def as_sample_array(samples: Any, name: str = "samples") -> np.ndarray:
    """``samples`` (NumPy, JAX or torch, any float or int dtype) as a float64 NumPy
    vector, checked: 1-D, at least :data:`MIN_SAMPLES` values, all finite, not all
    equal."""
    if hasattr(samples, "detach"):  # torch, without importing it
        samples = samples.detach().cpu().numpy()
    if isinstance(samples, str | bytes | os.PathLike):
        raise TypeError(
            f"{name} must be an array of noise samples, got {type(samples).__name__} "
            f"{samples!r}; use EmpiricalNoise.from_file for a file"
        )
    try:
        arr = np.asarray(samples)
    except Exception as err:  # e.g. ragged sequences
        raise TypeError(f"{name} must be a numeric array, got {samples!r}") from err
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size < MIN_SAMPLES:
        raise ValueError(
            f"{name} must hold at least {MIN_SAMPLES} values, got {arr.size}"
        )
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} must be finite, got {arr[i]} at index {i} "
            f"({int(bad.sum())} non-finite values)"
        )
    if arr.std() == 0.0:
        raise ValueError(f"{name} must not all be equal (zero variance), got {arr[0]}")
    return arr


def load_noise_samples(path: Any) -> np.ndarray:
    """Read a 1-D noise sample vector from a ``.npy`` or ``.csv`` file.

    A ``.csv`` file holds one number per line (a single column) or a single row;
    ``#`` starts a comment; no header.
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"path {path!r} is not an existing file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        try:
            data = np.load(path, allow_pickle=False)
        except Exception as err:
            raise ValueError(
                f"path {path!r} is not a readable .npy file: {err}"
            ) from err
    elif ext == ".csv":
        try:
            data = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
        except Exception as err:
            raise ValueError(
                f"path {path!r} is not a numeric .csv file: {err}"
            ) from err
        if 1 not in data.shape:
            raise ValueError(
                f"path {path!r} must hold one column or one row of numbers, "
                f"got a table of shape {data.shape}"
            )
        data = data.reshape(-1)
    else:
        raise ValueError(f"path {path!r} must end in .npy or .csv, got {ext!r}")
    return as_sample_array(data, name=f"samples in {path!r}")


def _bandwidth(e: np.ndarray, rule: Any, raw_std: float) -> float:
    """Bandwidth in the units of the pre-standardised samples ``e`` (std 1)."""
    n = e.size
    if isinstance(rule, str):
        if rule == "silverman":
            q75, q25 = np.percentile(e, [75, 25])
            spread = min(1.0, (q75 - q25) / 1.349) if q75 > q25 else 1.0
            return 0.9 * spread * n ** (-0.2)
        if rule == "scott":
            return 1.06 * n ** (-0.2)
        raise ValueError(f"bandwidth must be 'silverman', 'scott' or > 0, got {rule!r}")
    if isinstance(rule, bool) or not isinstance(rule, int | float | np.number):
        raise TypeError(f"bandwidth must be a str or a number, got {rule!r}")
    if not (np.isfinite(rule) and rule > 0):
        raise ValueError(f"bandwidth must be 'silverman', 'scott' or > 0, got {rule!r}")
    return float(rule) / raw_std


def fit_noise_table(
    samples: Any,
    *,
    bandwidth: Any = "silverman",
    num_knots: int = 2049,
) -> NoiseTable:
    """Fit a :class:`NoiseTable` to raw device-noise samples (see the module docs).

    :param samples: 1-D array of at least :data:`MIN_SAMPLES` finite values (NumPy,
        JAX or torch), not all equal.
    :param bandwidth: ``"silverman"`` (default), ``"scott"``, or a positive number in
        the units of ``samples``.
    :param num_knots: grid knots; raised automatically so that the spacing is at
        most a quarter of the bandwidth.
    """
    s = as_sample_array(samples)
    if isinstance(num_knots, bool) or not isinstance(num_knots, int | np.integer):
        raise TypeError(f"num_knots must be an int, got {num_knots!r}")
    if num_knots < 16:
        raise ValueError(f"num_knots must be >= 16, got {num_knots}")
    mean0, std0 = float(s.mean()), float(s.std())
    e = (s - mean0) / std0
    h = _bandwidth(e, bandwidth, std0)
    a = float(e.min()) - GRID_MARGIN * h
    b = float(e.max()) + GRID_MARGIN * h
    k = int(max(num_knots, math.ceil(4.0 * (b - a) / h) + 1))
    if k > 2**20 + 1:
        raise ValueError(
            f"bandwidth {h * std0:.3g} is too small for the sample range "
            f"{(b - a) * std0:.3g}: the grid would need {k} knots"
        )
    x = np.linspace(a, b, k)
    dx = x[1] - x[0]

    # Kernel density estimate at the knots: linear binning + FFT convolution.
    pos = (e - a) / dx
    i = np.clip(np.floor(pos).astype(np.int64), 0, k - 2)
    w = pos - i
    counts = np.bincount(i, weights=1.0 - w, minlength=k) + np.bincount(
        i + 1, weights=w, minlength=k
    )
    offsets = dx * np.arange(-(k - 1), k)
    kernel = np.exp(-0.5 * (offsets / h) ** 2) / (h * _SQRT_2PI)
    # 'same' keeps the k outputs aligned with the knots (kernel centred at k - 1)
    f = scipy.signal.fftconvolve(counts, kernel, mode="same")
    f = np.maximum(f / e.size, 0.0)  # FFT round-off can dip below zero
    f = np.maximum(f, DENSITY_FLOOR * f.max())

    # Exact mass, mean and variance of interpolant + tails (about 0, where e lives).
    f0, f1 = f[:-1], f[1:]
    xl = x[:-1]
    A, B = f0, f1 - f0
    m0 = dx * (A + B / 2.0)
    m1 = dx * (xl * (A + B / 2.0) + dx * (A / 2.0 + B / 3.0))
    m2 = dx * (
        xl**2 * (A + B / 2.0)
        + 2 * xl * dx * (A / 2.0 + B / 3.0)
        + dx**2 * (A / 3.0 + B / 4.0)
    )
    tau = h
    left, right = f[0] * tau * _SQRT_HALF_PI, f[-1] * tau * _SQRT_HALF_PI
    mass = m0.sum() + left + right
    first = m1.sum() + (a * left - f[0] * tau**2) + (b * right + f[-1] * tau**2)
    second = (
        m2.sum()
        + (a * a * left - 2 * a * f[0] * tau**2 + f[0] * tau**3 * _SQRT_HALF_PI)
        + (b * b * right + 2 * b * f[-1] * tau**2 + f[-1] * tau**3 * _SQRT_HALF_PI)
    )
    mu = first / mass
    sigma = math.sqrt(second / mass - mu * mu)

    # Exact affine map z = (x - mu) / sigma, density g(z) = sigma f(x) / mass.
    g = f * (sigma / mass)
    z0, dz, tau_z = (a - mu) / sigma, dx / sigma, tau / sigma
    left_z = g[0] * tau_z * _SQRT_HALF_PI
    cum = left_z + np.concatenate([[0.0], np.cumsum(dz * (g[:-1] + g[1:]) / 2.0)])

    return NoiseTable(
        z0=float(z0),
        dz=float(dz),
        density=g,
        cumulative=cum,
        tail_scale=float(tau_z),
        entropy=_entropy(g, dz, tau_z),
        loc=mean0 + std0 * mu,
        scale=std0 * sigma,
        bandwidth=float(h / sigma),
        num_samples=int(s.size),
    )


def _entropy(g: np.ndarray, dz: float, tau: float) -> float:
    """-∫ g log g: Gauss–Legendre on every cell, closed form on the two tails."""
    nodes, weights = np.polynomial.legendre.leggauss(16)
    t = (nodes + 1.0) / 2.0
    vals = g[:-1, None] + (g[1:] - g[:-1])[:, None] * t[None, :]
    cells = (vals * np.log(vals)) @ (weights / 2.0) * dz
    tails = 0.0
    for ge in (g[0], g[-1]):
        mass = ge * tau * _SQRT_HALF_PI
        tails += mass * math.log(ge) - mass / 2.0
    return float(-(cells.sum() + tails))


def table_log_prob(
    z: Any, table: NoiseTable, density: Any, *, xp: Any, special: Special
) -> Any:
    """log g(z) for standardised values ``z``; ``density`` is ``table.density`` as a
    backend array. Finite for every finite ``z``."""
    k, t, zc = uniform_cell(xp, z, table.z0, table.dz, table.num_knots)
    g0 = special.take(density, k)
    inside = g0 + (special.take(density, k + 1.0) - g0) * t
    # signed distance beyond the grid, held at _MAX_TAIL_Z tail scales so that the
    # square cannot overflow for huge finite z
    limit = _MAX_TAIL_Z * table.tail_scale
    out = xp.clip(z - zc, -limit, limit) * (1.0 / table.tail_scale)
    return xp.log(inside) - 0.5 * out * out


def table_cdf(
    z: Any,
    table: NoiseTable,
    density: Any,
    cumulative: Any,
    *,
    xp: Any,
    special: Special,
) -> Any:
    """The exact cdf of the tabulated density (piecewise quadratic, Gaussian tails)."""
    k, t, _ = uniform_cell(xp, z, table.z0, table.dz, table.num_knots)
    g0 = special.take(density, k)
    g1 = special.take(density, k + 1.0)
    inside = special.take(cumulative, k) + table.dz * (
        g0 * t + (g1 - g0) * (0.5 * t * t)
    )
    tau = table.tail_scale
    # Left tail: g0 τ √(2π) Φ((z - z0)/τ); right: C_last + R (2Φ((z - z_last)/τ) - 1).
    left = (2.0 * table.left_mass) * special.ndtr(
        xp.clip(z - table.z0, None, 0.0) / tau
    )
    right = float(table.cumulative[-1]) + table.right_mass * (
        2.0 * special.ndtr(xp.clip(z - table.z_last, 0.0, None) / tau) - 1.0
    )
    return xp.where(z < table.z0, left, xp.where(z > table.z_last, right, inside))


def table_icdf(
    u: Any,
    table: NoiseTable,
    density: Any,
    cumulative: Any,
    *,
    xp: Any,
    special: Special,
) -> Any:
    """The inverse of :func:`table_cdf` for ``u`` in (0, 1): a quadratic solved in the
    cell found by binary search; inverse Gaussian in the tails."""
    c_first, c_last = float(table.cumulative[0]), float(table.cumulative[-1])
    n = table.num_knots
    k = xp.clip(special.searchsorted(cumulative, u) - 1, 0, n - 2)
    k = xp.astype(k, u.dtype)
    g0 = special.take(density, k)
    g1 = special.take(density, k + 1.0)
    r = xp.clip((u - special.take(cumulative, k)) / table.dz, 0.0, None)
    # g0 t + (g1 - g0) t^2 / 2 = r, in the cancellation-free form of the root.
    disc = xp.clip(g0 * g0 + 2.0 * (g1 - g0) * r, 0.0, None)
    t = xp.clip(2.0 * r / (g0 + xp.sqrt(disc)), 0.0, 1.0)
    inside = table.z0 + (k + t) * table.dz
    tau = table.tail_scale
    tiny = 1e-300 if u.dtype == xp.float64 else 1e-37
    pl = xp.clip(u / (2.0 * table.left_mass), tiny, 0.5)
    left = table.z0 + tau * special.ndtri(pl)
    pr = xp.clip(0.5 + (u - c_last) / (2.0 * table.right_mass), 0.5, 1.0 - 1e-16)
    right = table.z_last + tau * special.ndtri(pr)
    return xp.where(u < c_first, left, xp.where(u > c_last, right, inside))


def table_moments(
    table: NoiseTable, orders: tuple[int, ...] = (1, 2, 3, 4)
) -> tuple[float, ...]:
    """Raw moments :math:`\\int z^m g(z)\\,dz` of the tabulated density, exactly:
    16-point Gauss–Legendre is exact on the polynomial cells (degree m + 1 <= 31), and
    the half-Gaussian tails are integrated in closed form. With orders (1, 2, 3, 4)
    of a standardised table this gives 0, 1, the skewness and the kurtosis."""
    nodes, weights = np.polynomial.legendre.leggauss(16)
    t = (nodes + 1.0) / 2.0
    g = table.density
    z = table.z0 + table.dz * (np.arange(table.num_knots - 1)[:, None] + t[None, :])
    vals = g[:-1, None] + (g[1:] - g[:-1])[:, None] * t[None, :]
    tau = table.tail_scale
    out = []
    for m in orders:
        cells = float((((z**m) * vals) @ (weights / 2.0)).sum() * table.dz)
        tails = 0.0
        for end, ge, sign in ((table.z0, g[0], -1.0), (table.z_last, g[-1], 1.0)):
            # int_0^inf (end + sign y)^m ge exp(-y^2 / 2 tau^2) dy, binomially expanded
            for j in range(m + 1):
                half_moment = (
                    2 ** ((j - 1) / 2) * math.gamma((j + 1) / 2) * tau ** (j + 1)
                )
                tails += math.comb(m, j) * end ** (m - j) * sign**j * ge * half_moment
        out.append(float(cells + tails))
    return tuple(out)
