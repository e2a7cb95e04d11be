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
the piecewise **log-linear** interpolant of those knots: in cell :math:`k`, at the
fraction :math:`t \in [0, 1]` of the way from knot :math:`k` to knot :math:`k + 1`,

.. math::

    \log g(z) = \ell_k + s_k\, t, \qquad s_k = \ell_{k+1} - \ell_k,

with :math:`\ell_k = \log g(z_k)`, so evaluating it costs one table lookup and one
multiply-add (no ``log`` of data). Beyond the grid it is continued by half-Gaussian
tails of scale :math:`\tau = h`,

.. math::

    g(z) = g(z_0)\, e^{-(z - z_0)^2 / 2\tau^2} \ (z < z_0), \qquad
    g(z) = g(z_{K-1})\, e^{-(z - z_{K-1})^2 / 2\tau^2} \ (z > z_{K-1}),

whose mass is negligible (the kernel density is already ~φ(6) below its peak there).
Knot values are floored at :data:`DENSITY_FLOOR` times the peak so that
:math:`\log g` is finite everywhere, also between well-separated modes in float32.

**Exact standardisation.** The mass, mean and variance of that density are integrated
in closed form (per cell :math:`\int_0^1 t^j e^{s t}\,dt`, by series for small
:math:`|s|` and by recursion otherwise, plus half-Gaussian moments), and an exact
affine map of the grid makes the tabulated density integrate to one with mean 0 and
variance 1. The cumulative table is the exact integral of the density, so in cell
:math:`k`

.. math::

    \mathrm{cdf}(z) = C_k + \Delta z\, e^{\ell_k}\, \frac{e^{s_k t} - 1}{s_k}
    \quad\Big(\to C_k + \Delta z\, e^{\ell_k}\, t \text{ as } s_k \to 0\Big),

:math:`\mathrm d\,\mathrm{cdf}/\mathrm dz = g` holds exactly, and the inverse cdf is
closed form in its cell, :math:`t = \log(1 + s_k r) / s_k` with
:math:`r = (u - C_k) / (\Delta z\, e^{\ell_k})` (``expm1`` and ``log1p``, and
series for :math:`|s_k| <` :data:`FLAT_SLOPE`, keep both accurate as the cell turns
flat). The differential entropy :math:`H_0 = -\int g \log g` is computed once, in
closed form.

The per-cell pairs :math:`(\ell_k, s_k)` are stored as one complex table
(:attr:`NoiseTable.cells`, real part :math:`\ell_k`, imaginary part :math:`s_k`):
one gather of a 64-bit (complex64) word fetches both. On XLA's CPU backend a gather
is a scalar load per value (the rest of the loop is vectorised), so the lookup, not
the arithmetic, is what ``log_prob`` costs; see :func:`table_log_prob`'s
``one_read``.

Evaluation indexes the uniform grid directly (no search) for the density and the cdf;
the inverse cdf finds its cell by a binary search of the cumulative table.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.signal

from .backend import Special, uniform_cell

__all__ = [
    "DENSITY_FLOOR",
    "FLAT_SLOPE",
    "GRID_MARGIN",
    "MAX_KNOTS",
    "MIN_RESOLUTION",
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

MAX_KNOTS = 2**20 + 1
"""Most grid knots (given as ``num_knots`` or needed for four knots per bandwidth
across the samples' range): 1 048 577 knots, 25 MB of tables in float64."""

MIN_RESOLUTION = 64
"""The samples' standard deviation must span at least this many float64 steps at
their largest magnitude (e.g. ``1e10 + 1e-3 * N(0, 1)`` spans 526): below that they
are rounded to a few levels per standard deviation (coarser than the kernel
bandwidth for large sample sizes), and a density fitted to them would describe the
rounding, not the noise."""

GRID_MARGIN = 6.0
"""The grid extends this many bandwidths beyond the smallest and largest sample."""

DENSITY_FLOOR = 1e-30
"""Knot densities are at least this fraction of the peak density (log stays finite)."""

FLAT_SLOPE = 1e-5
"""Cells whose log-density changes by less than this (nats, knot to knot) have their
cdf and inverse cdf evaluated by a three-term series (relative error < 3e-16)."""

_MAX_TAIL_Z = 1e18  # beyond this many tail scales the tail log-density is held
_SQRT_HALF_PI = math.sqrt(math.pi / 2.0)
_SQRT_2PI = math.sqrt(2.0 * math.pi)


@dataclass(frozen=True, eq=False)
class NoiseTable:
    """A standardised piecewise log-linear density on a uniform grid (NumPy, float64).

    Equality and hashing are by identity, so a table can be static data of a jitted
    function.

    :ivar z0: the first knot.
    :ivar dz: the knot spacing.
    :ivar density: density at the knots, shape ``(K,)``.
    :ivar cells: per cell ``k`` the complex number ``log g(z_k) + i s_k``, with
        ``s_k = log g(z_{k+1}) - log g(z_k)``, shape ``(K - 1,)`` (complex128).
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
    cells: np.ndarray = field(repr=False)
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

    def cells_as(self, dtype: Any) -> np.ndarray:
        """:attr:`cells` in the complex dtype that pairs with the real ``dtype``
        (complex64 for float32 and narrower, complex128 for float64)."""
        wide = np.dtype(dtype) == np.float64
        return self.cells.astype(np.complex128 if wide else np.complex64)


def _binary_exponent(arr: np.ndarray) -> int:
    """``p`` with ``max|arr| * 2**-p`` in [0.5, 1): scaling by ``2**-p`` is exact, so
    the location-scale fit is done on values of order 1 whatever the samples' units
    (no overflow near 1e308, no underflow near 1e-308)."""
    return int(np.frexp(np.max(np.abs(arr)))[1])


def as_sample_array(samples: Any, name: str = "samples") -> np.ndarray:
    """``samples`` (NumPy, JAX or torch, any float or int dtype) as a float64 NumPy
    vector, checked: 1-D, at least :data:`MIN_SAMPLES` values, all finite, not all
    equal, and spread over at least :data:`MIN_RESOLUTION` float64 steps (standard
    deviation) at their magnitude. Any units are accepted: ``1e-300 * N(0, 1)`` is
    as good as ``N(0, 1)``."""
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
    lo, hi = float(arr.min()), float(arr.max())
    if lo == hi:
        raise ValueError(
            f"{name} must not all be equal (zero variance), got {lo!r} "
            f"({arr.size} times)"
        )
    x = np.ldexp(arr, -_binary_exponent(arr))  # exact; max |x| in [0.5, 1)
    std = float(x.std())
    step = float(np.spacing(np.max(np.abs(x))))
    if std < MIN_RESOLUTION * step:
        raise ValueError(
            f"{name} vary too little for float64: their standard deviation "
            f"{float(np.ldexp(std, _binary_exponent(arr))):.3g} is "
            f"{std / step:.3g} float64 steps at their magnitude "
            f"{max(abs(lo), abs(hi)):.3g} (at least {MIN_RESOLUTION} needed), so they "
            "are rounded to a few levels and a fitted density would describe the "
            "rounding; record the noise relative to its nominal value (subtract the "
            "offset before rounding to float64)"
        )
    return arr


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _read_whole_file(path: str) -> bytes:
    """The file's bytes, read once; refused if the file changed while it was read
    (its size, modification time or inode differ before and after, or the bytes read
    are not its size), e.g. because another process is (re)writing it."""
    before = os.stat(path)
    data = _read_bytes(path)
    after = os.stat(path)
    key0 = (before.st_size, before.st_mtime_ns, before.st_ino)
    key1 = (after.st_size, after.st_mtime_ns, after.st_ino)
    if key0 != key1 or len(data) != after.st_size:
        raise ValueError(
            f"path {path!r} changed while it was read (size {before.st_size} -> "
            f"{after.st_size} bytes, read {len(data)}; modified "
            f"{'again' if key0[1:] != key1[1:] else 'in place'}): another process "
            "is writing it; read it once the writer has finished (write to a "
            "temporary file and rename it into place)"
        )
    return data


def _parse_csv(data: bytes, path: str) -> np.ndarray:
    """A one-column or one-row ``.csv`` of numbers, validated field by field: every
    row has the same number of fields, every field is a finite number; ``#`` starts
    a comment; blank lines are skipped. Errors name the line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"path {path!r} is not a text .csv file: byte {err.start} is not UTF-8"
        ) from err
    rows: list[list[float]] = []
    width = None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split(",")]
        if width is None:
            width = len(fields)
        elif len(fields) != width:
            raise ValueError(
                f"path {path!r}: line {number} has {len(fields)} fields, the rows "
                f"before it {width}; every row must have the same number of fields"
            )
        row = []
        for j, field_text in enumerate(fields, start=1):
            try:
                value = float(field_text)
            except ValueError:
                raise ValueError(
                    f"path {path!r} is not a numeric .csv file: line {number}, "
                    f"field {j} is {field_text!r}, not a number"
                ) from None
            if not math.isfinite(value):
                raise ValueError(
                    f"path {path!r}: line {number}, field {j} is {field_text!r}; "
                    "samples must be finite"
                )
            row.append(value)
        rows.append(row)
    if not rows:
        raise ValueError(f"path {path!r} holds no numbers")
    table = np.array(rows, dtype=np.float64)
    if 1 not in table.shape:
        raise ValueError(
            f"path {path!r} must hold one column or one row of numbers, "
            f"got a table of shape {table.shape}"
        )
    return table.reshape(-1)


def load_noise_samples(path: Any) -> np.ndarray:
    """Read a 1-D noise sample vector from a ``.npy`` or ``.csv`` file.

    A ``.csv`` file holds one number per line (a single column) or a single row;
    ``#`` starts a comment; no header. The file is read once, into memory, and
    refused if it changed while it was read (another process writing it); every
    field is validated before the samples are used.
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"path {path!r} is not an existing file")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npy", ".csv"):
        raise ValueError(f"path {path!r} must end in .npy or .csv, got {ext!r}")
    data = _read_whole_file(path)
    if ext == ".npy":
        try:
            samples = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as err:
            raise ValueError(
                f"path {path!r} is not a readable .npy file: {err}"
            ) from err
    else:
        samples = _parse_csv(data, path)
    return as_sample_array(samples, name=f"samples in {path!r}")


def _check_bandwidth(rule: Any) -> None:
    if isinstance(rule, str):
        if rule not in ("silverman", "scott"):
            raise ValueError(
                f"bandwidth must be 'silverman', 'scott' or > 0, got {rule!r}"
            )
        return
    if isinstance(rule, bool) or not isinstance(rule, int | float | np.number):
        raise TypeError(f"bandwidth must be a str or a number, got {rule!r}")
    if not (np.isfinite(rule) and rule > 0):
        raise ValueError(f"bandwidth must be 'silverman', 'scott' or > 0, got {rule!r}")


def _bandwidth(e: np.ndarray, rule: Any, std: float, exponent: int) -> float:
    """Bandwidth in the units of the pre-standardised samples ``e`` (std 1); the raw
    samples are ``2**exponent * (std * e + mean)``."""
    n = e.size
    if rule == "silverman":
        q75, q25 = np.percentile(e, [75, 25])
        spread = min(1.0, (q75 - q25) / 1.349) if q75 > q25 else 1.0
        return 0.9 * spread * n ** (-0.2)
    if rule == "scott":
        return 1.06 * n ** (-0.2)
    return float(np.ldexp(float(rule), -exponent)) / std


def _check_num_knots(num_knots: Any) -> None:
    if isinstance(num_knots, bool) or not isinstance(num_knots, int | np.integer):
        raise TypeError(f"num_knots must be an int, got {num_knots!r}")
    if not 16 <= num_knots <= MAX_KNOTS:
        raise ValueError(
            f"num_knots must be >= 16 and <= MAX_KNOTS = {MAX_KNOTS}, got {num_knots}"
        )


def fit_noise_table(
    samples: Any,
    *,
    bandwidth: Any = "silverman",
    num_knots: int = 2049,
) -> NoiseTable:
    """Fit a :class:`NoiseTable` to raw device-noise samples (see the module docs).

    :param samples: 1-D array of at least :data:`MIN_SAMPLES` finite values (NumPy,
        JAX or torch), not all equal, in any units (see :func:`as_sample_array`).
    :param bandwidth: ``"silverman"`` (default), ``"scott"``, or a positive number in
        the units of ``samples``.
    :param num_knots: grid knots, 16 to :data:`MAX_KNOTS`; raised automatically so
        that the spacing is at most a quarter of the bandwidth. If that needs more than
        :data:`MAX_KNOTS` knots (samples whose range is huge in bandwidths: heavy tails
        or outliers), the fit is refused with the bandwidth that would do.
    """
    _check_num_knots(num_knots)
    _check_bandwidth(bandwidth)
    s = as_sample_array(samples)
    # The fit is location-scale: it runs on the samples scaled by an exact power of
    # two (any units), and loc / scale are scaled back at the end.
    p = _binary_exponent(s)
    xs = np.ldexp(s, -p)
    mean0, std0 = float(xs.mean()), float(xs.std())
    e = (xs - mean0) / std0
    h = _bandwidth(e, bandwidth, std0, p)
    a = float(e.min()) - GRID_MARGIN * h
    b = float(e.max()) + GRID_MARGIN * h
    k = int(max(num_knots, math.ceil(4.0 * (b - a) / h) + 1))
    if k > MAX_KNOTS:
        _refuse_grid(s, e, h, std0, p, bandwidth, k)
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

    # Exact mass, mean and variance of the log-linear interpolant + tails (about 0,
    # where e lives): cell k holds dx f_k int_0^1 (x_k + dx t)^m e^{s_k t} dt.
    lf = np.log(f)
    i0, i1, i2 = _exp_moments(np.diff(lf), 2)
    xl = x[:-1]
    w = dx * f[:-1]
    m0 = w * i0
    m1 = w * (xl * i0 + dx * i1)
    m2 = w * (xl**2 * i0 + 2 * xl * dx * i1 + dx**2 * i2)
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

    # Exact affine map z = (x - mu) / sigma, density g(z) = sigma f(x) / mass; the
    # knot values are exp of the stored log-density, so cells, density, cumulative
    # and tails all describe the same function.
    lg = lf + math.log(sigma / mass)
    g = np.exp(lg)
    slope = np.diff(lg)
    z0, dz, tau_z = (a - mu) / sigma, dx / sigma, tau / sigma
    left_z = g[0] * tau_z * _SQRT_HALF_PI
    cell_mass = dz * g[:-1] * _exp_moments(slope, 0)[0]
    cum = left_z + np.concatenate([[0.0], np.cumsum(cell_mass)])

    with np.errstate(over="ignore"):
        loc = float(np.ldexp(mean0 + std0 * mu, p))
        scale = float(np.ldexp(std0 * sigma, p))
    if not (math.isfinite(loc) and math.isfinite(scale)):
        raise ValueError(
            f"samples are too large for float64: their fitted location {loc} and "
            f"scale {scale} overflow; rescale them (e.g. to other units) first"
        )
    return NoiseTable(
        z0=float(z0),
        dz=float(dz),
        density=g,
        cells=lg[:-1] + 1j * slope,
        cumulative=cum,
        tail_scale=float(tau_z),
        entropy=_entropy(g, lg, slope, dz, tau_z),
        loc=loc,
        scale=scale,
        bandwidth=float(h / sigma),
        num_samples=int(s.size),
    )


def _refuse_grid(
    s: np.ndarray, e: np.ndarray, h: float, std: float, p: int, rule: Any, k: int
) -> None:
    """The error for a grid of ``k > MAX_KNOTS`` knots, in the user's terms."""
    width = float(e.max() - e.min())  # standardised units
    with np.errstate(over="ignore"):
        raw = float(np.ldexp(std, p))  # raw units per standardised unit
    # 4 (width + 2 GRID_MARGIN h) / h + 1 <= MAX_KNOTS  <=>  h >= 4 width / (...)
    need = 4.0 * width / (MAX_KNOTS - 1 - 8 * GRID_MARGIN) * raw * (1 + 1e-9)
    digits = 2 - math.floor(math.log10(need))  # rounded up to 3 significant digits
    need = math.ceil(need * 10.0**digits) / 10.0**digits
    advice = f"pass bandwidth >= {need:.3g} (in the samples' units)"
    if not isinstance(rule, str):
        raise ValueError(
            f"bandwidth {rule!r} is too small for the sample range "
            f"{s.min():.6g} to {s.max():.6g} ({width / h:.3g} bandwidths): a grid of "
            f"4 knots per bandwidth would need {k} knots, more than MAX_KNOTS = "
            f"{MAX_KNOTS}; {advice}"
        )
    far = float(np.max(np.abs(e)))
    raise ValueError(
        f"samples are too spread out for a tabulated density: their range, "
        f"{s.min():.6g} to {s.max():.6g}, is {width / h:.3g} times the {rule!r} "
        f"bandwidth {h * raw:.3g} (from their bulk), so a grid of 4 knots per "
        f"bandwidth would need {k} knots, more than MAX_KNOTS = {MAX_KNOTS}. Heavy "
        f"tails or outliers (the farthest sample is {far:.3g} standard deviations "
        f"from the mean)? Clip or remove the outliers, or {advice}"
    )


def _exp_moments(s: np.ndarray, order: int) -> tuple[np.ndarray, ...]:
    """``I_j(s) = int_0^1 t^j e^{s t} dt`` for ``j = 0..order``, elementwise, to
    float64 rounding: a Taylor series for ``|s| < 2`` (40 terms: the remainder is
    below 1e-35), else ``I_0 = expm1(s)/s`` and the upward recursion
    ``I_j = (e^s - j I_{j-1}) / s`` (stable there: the factor ``j/|s|`` stays small)."""
    s = np.asarray(s, dtype=np.float64)
    small = np.abs(s) < 2.0
    ss = np.where(small, s, 0.0)
    series = [np.zeros_like(s) for _ in range(order + 1)]
    term = np.ones_like(s)  # s^n / n!
    for n in range(40):
        for j in range(order + 1):
            series[j] += term / (n + j + 1)
        term = term * ss / (n + 1)
    sb = np.where(small, 1.0, s)
    es = np.exp(sb)
    rec = [np.expm1(sb) / sb]
    for j in range(1, order + 1):
        rec.append((es - j * rec[-1]) / sb)
    return tuple(np.where(small, series[j], rec[j]) for j in range(order + 1))


def _entropy(
    g: np.ndarray, lg: np.ndarray, slope: np.ndarray, dz: float, tau: float
) -> float:
    """-∫ g log g, in closed form: on cell k, log g = l_k + s_k t, so
    ∫ g log g = dz g_k (l_k I_0(s_k) + s_k I_1(s_k)); half-Gaussian tails."""
    i0, i1 = _exp_moments(slope, 1)
    cells = dz * g[:-1] * (lg[:-1] * i0 + slope * i1)
    tails = 0.0
    for ge, le in ((g[0], lg[0]), (g[-1], lg[-1])):
        mass = ge * tau * _SQRT_HALF_PI
        tails += mass * le - mass / 2.0
    return float(-(cells.sum() + tails))


def _check_cells(cells: Any, xp: Any) -> None:
    if not xp.isdtype(cells.dtype, "complex floating"):
        raise TypeError(
            "cells must be the complex cell table (NoiseTable.cells as a backend "
            f"array), got dtype {cells.dtype}; the knot densities are no longer "
            "what the evaluators take"
        )


def table_log_prob(
    z: Any,
    table: NoiseTable,
    cells: Any,
    *,
    xp: Any,
    special: Special,
    one_read: bool = False,
) -> Any:
    """log g(z) for standardised values ``z``; ``cells`` is ``table.cells`` as a
    backend array (complex). One lookup and one multiply-add inside the grid, a
    quadratic beyond it. Finite for every finite ``z``.

    :param one_read: read the looked-up complex word once, as
        ``real(c (1 - i t)) = l_k + s_k t``, so that a tracing compiler (XLA) fuses
        the lookup into the element loop instead of materialising it for two
        readers; ``False`` reads the real and imaginary views, the cheaper form in
        eager torch and NumPy. Both give the same value.
    """
    _check_cells(cells, xp)
    k, t, zc = uniform_cell(xp, z, table.z0, table.dz, table.num_knots)
    c = special.take(cells, k)
    # signed distance beyond the grid, held at _MAX_TAIL_Z tail scales so that the
    # square cannot overflow for huge finite z
    limit = _MAX_TAIL_Z * table.tail_scale
    out = xp.clip(z - zc, -limit, limit) * (1.0 / table.tail_scale)
    inside = xp.real(c * (1.0 - 1j * t)) if one_read else xp.real(c) + xp.imag(c) * t
    return inside - 0.5 * out * out


def _flat(s: Any, xp: Any) -> tuple[Any, Any]:
    """Cells flat enough for the series, and ``s`` with those slopes set to 1 (so
    that neither branch of a ``where`` divides by zero, also under autodiff)."""
    flat = xp.abs(s) < FLAT_SLOPE
    return flat, xp.where(flat, xp.ones_like(s), s)


def table_cdf(
    z: Any,
    table: NoiseTable,
    cells: Any,
    cumulative: Any,
    *,
    xp: Any,
    special: Special,
) -> Any:
    """The exact cdf of the tabulated density (closed form per log-linear cell,
    Gaussian tails)."""
    _check_cells(cells, xp)
    k, t, _ = uniform_cell(xp, z, table.z0, table.dz, table.num_knots)
    c = special.take(cells, k)
    s = xp.imag(c)
    flat, s_safe = _flat(s, xp)
    st = s * t
    # int_0^t e^{s v} dv = expm1(s t) / s, or t (1 + s t / 2 + (s t)^2 / 6)
    frac = xp.where(
        flat, t * (1.0 + st * (0.5 + st / 6.0)), xp.expm1(s_safe * t) / s_safe
    )
    inside = special.take(cumulative, k) + (table.dz * xp.exp(xp.real(c))) * frac
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
    cells: Any,
    cumulative: Any,
    *,
    xp: Any,
    special: Special,
) -> Any:
    """The inverse of :func:`table_cdf` for ``u`` in (0, 1): closed form in the cell
    found by binary search, ``t = log1p(s r) / s``; inverse Gaussian in the tails."""
    _check_cells(cells, xp)
    c_first, c_last = float(table.cumulative[0]), float(table.cumulative[-1])
    n = table.num_knots
    k = xp.clip(special.searchsorted(cumulative, u) - 1, 0, n - 2)
    k = xp.astype(k, u.dtype)
    c = special.take(cells, k)
    s = xp.imag(c)
    flat, s_safe = _flat(s, xp)
    r = xp.clip(
        (u - special.take(cumulative, k)) / (table.dz * xp.exp(xp.real(c))), 0.0, None
    )
    wide = u.dtype == xp.float64
    # 1 + s r > 0 in exact arithmetic (r <= expm1(s)/s); hold it there under rounding
    sr = xp.clip(s_safe * r, -1.0 + (2.3e-16 if wide else 1.2e-7), None)
    y = s * r
    t = xp.where(flat, r * (1.0 - y * (0.5 - y / 3.0)), xp.log1p(sr) / s_safe)
    inside = table.z0 + (k + xp.clip(t, 0.0, 1.0)) * table.dz
    tau = table.tail_scale
    tiny = 1e-300 if wide else 1e-37
    pl = xp.clip(u / (2.0 * table.left_mass), tiny, 0.5)
    left = table.z0 + tau * special.ndtri(pl)
    pr = xp.clip(0.5 + (u - c_last) / (2.0 * table.right_mass), 0.5, 1.0 - 1e-16)
    right = table.z_last + tau * special.ndtri(pr)
    return xp.where(u < c_first, left, xp.where(u > c_last, right, inside))


def table_moments(
    table: NoiseTable, orders: tuple[int, ...] = (1, 2, 3, 4)
) -> tuple[float, ...]:
    """Raw moments :math:`\\int z^m g(z)\\,dz` of the tabulated density, in closed
    form: on cell k, :math:`z = z_k + \\Delta z\\, t` is expanded binomially against
    :math:`\\int_0^1 t^j e^{s_k t} dt`, and the half-Gaussian tails are integrated
    exactly. With orders (1, 2, 3, 4) of a standardised table this gives 0, 1, the
    skewness and the kurtosis."""
    g = table.density
    slope = table.cells.imag
    dz = table.dz
    zk = table.z0 + dz * np.arange(table.num_knots - 1)
    ij = _exp_moments(slope, max(orders))
    w = dz * g[:-1]
    tau = table.tail_scale
    out = []
    for m in orders:
        cells = sum(
            math.comb(m, j) * zk ** (m - j) * dz**j * ij[j] for j in range(m + 1)
        )
        tails = 0.0
        for end, ge, sign in ((table.z0, g[0], -1.0), (table.z_last, g[-1], 1.0)):
            # int_0^inf (end + sign y)^m ge exp(-y^2 / 2 tau^2) dy, binomially expanded
            for j in range(m + 1):
                half_moment = (
                    2 ** ((j - 1) / 2) * math.gamma((j + 1) / 2) * tau ** (j + 1)
                )
                tails += math.comb(m, j) * end ** (m - j) * sign**j * ge * half_moment
        out.append(float((w * cells).sum() + tails))
    return tuple(out)
