r"""Device-noise sample generators (NumPy): the shapes the device-noise guides use.

Each generator returns ``n`` float64 samples from ``numpy.random.default_rng(seed)``.
Fit one with :class:`~ppl_hw.numpyro.distributions.EmpiricalNoise` (either backend),
which standardises it: only the *shape* of these samples matters there, not their
location or units.

========================  ==========================================================
generator                 shape
========================  ==========================================================
:func:`gaussian_noise`    standard normal: the usual variational family
:func:`uniform_noise`     uniform on ``[-√3, √3]`` (unit variance): flat, bounded
:func:`mtj_noise`         sum of binary (telegraph) switching contributions plus
                          thermal noise: multimodal and skewed ("Bayes-MTJ" style)
:func:`pcm_read_noise`    the conductance read from PCM devices programmed to one
                          level: programming noise, drift and 1/f read noise
========================  ==========================================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..core import NUMPY
from ..core import pcm as _pcm

__all__ = ["gaussian_noise", "mtj_noise", "pcm_read_noise", "uniform_noise"]


def _check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise TypeError(f"n must be an int, got {n!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return int(n)


def _rng(seed: object) -> np.random.Generator:
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int | np.integer)
    ):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    return np.random.default_rng(seed)


def gaussian_noise(n: int, seed: int | None = 0) -> np.ndarray:
    """``n`` standard normal samples: the Gaussian reference shape.

    :param n: number of samples.
    :param seed: seed of :func:`numpy.random.default_rng`.
    """
    return _rng(seed).standard_normal(_check_n(n))


def uniform_noise(n: int, seed: int | None = 0) -> np.ndarray:
    """``n`` samples uniform on ``[-√3, √3]`` (mean 0, variance 1): the flattest
    bounded shape, far from Gaussian in its tails.

    :param n: number of samples.
    :param seed: seed of :func:`numpy.random.default_rng`.
    """
    r = math.sqrt(3.0)
    return _rng(seed).uniform(-r, r, _check_n(n))


def mtj_noise(
    n: int,
    seed: int | None = 0,
    *,
    amplitudes: Sequence[float] = (1.0, 0.55, 0.3),
    switch_probs: Sequence[float] = (0.25, 0.5, 0.8),
    thermal_scale: float = 0.08,
) -> np.ndarray:
    r"""Stochastic-MTJ ("Bayes-MTJ" style) output noise: multimodal and skewed.

    A stochastic magnetic tunnel junction read by a sense amplifier gives an output
    that jumps between the levels of its parallel and anti-parallel states. We model
    one sample as the sum of ``K`` independent binary (random telegraph)
    contributions plus Gaussian thermal noise,

    .. math:: x = \sum_{k=1}^{K} a_k B_k + s\,\varepsilon,\qquad
              B_k \sim \mathrm{Bernoulli}(p_k),\ \varepsilon \sim \mathcal N(0, 1),

    which has up to :math:`2^K` modes; unequal switching probabilities make it skewed.
    The default parameters are ours (documented, not measured): three junctions of
    amplitudes (1, 0.55, 0.3), switching probabilities (0.25, 0.5, 0.8) and thermal
    noise 0.08 — up to eight modes, skewness about 0.6. The name follows the
    spintronic BNN hardware of the authors of Patel et al. (2025) (Frontiers in
    Nanotechnology, 2022).

    :param n: number of samples.
    :param seed: seed of :func:`numpy.random.default_rng`.
    :param amplitudes: ``a_k``, the level difference of each junction.
    :param switch_probs: ``p_k`` in (0, 1), the probability of the high state.
    :param thermal_scale: ``s >= 0``.
    """
    n = _check_n(n)
    a = np.asarray(amplitudes, dtype=np.float64)
    p = np.asarray(switch_probs, dtype=np.float64)
    if a.ndim != 1 or a.size < 1 or not np.all(np.isfinite(a)):
        raise ValueError(
            f"amplitudes must be a non-empty list of finite numbers, got {amplitudes!r}"
        )
    if p.shape != a.shape:
        raise ValueError(
            f"switch_probs must have one entry per amplitude ({a.size}), "
            f"got {switch_probs!r}"
        )
    if not np.all((p > 0) & (p < 1)):
        raise ValueError(f"switch_probs must lie in (0, 1), got {switch_probs!r}")
    if not (np.isfinite(thermal_scale) and thermal_scale >= 0):
        raise ValueError(f"thermal_scale must be >= 0, got {thermal_scale!r}")
    rng = _rng(seed)
    states = rng.random((n, a.size)) < p
    return states.astype(np.float64) @ a + thermal_scale * rng.standard_normal(n)


def pcm_read_noise(
    n: int,
    seed: int | None = 0,
    *,
    g_target: float = 0.1,
    t_inference: float = 86_400.0,
    gmax: float = _pcm.PCM_GMAX,
) -> np.ndarray:
    r"""Conductances (µS) read from ``n`` PCM devices programmed to one target level.

    Each device is programmed to ``g_target * gmax`` with aihwkit's PCM programming
    noise, drifts with its own exponent ν for ``t_inference`` seconds and is read once
    with the accumulated 1/f read noise — the statistical model of
    :mod:`ppl_hw.core.pcm` (Nandakumar et al. 2019, as in aihwkit's
    ``PCMLikeNoiseModel``). The spread of drift exponents makes the shape skewed
    (log-normal-like), more so at low conductance; the defaults (10 % of gmax, one
    day) give a skewness of about 0.6.

    :param n: number of devices (samples).
    :param seed: seed of :func:`numpy.random.default_rng`.
    :param g_target: programmed level as a fraction of ``gmax``, in (0, 1].
    :param t_inference: time since programming (s), ``>= 0``.
    :param gmax: largest conductance (µS), ``> 0``.
    """
    n = _check_n(n)
    if not (np.isfinite(g_target) and 0 < g_target <= 1):
        raise ValueError(f"g_target must be in (0, 1], got {g_target!r}")
    if not (np.isfinite(t_inference) and t_inference >= 0):
        raise ValueError(f"t_inference must be >= 0, got {t_inference!r}")
    if not (np.isfinite(gmax) and gmax > 0):
        raise ValueError(f"gmax must be > 0, got {gmax!r}")
    rng = _rng(seed)
    xi = rng.standard_normal((3, n))
    xp = NUMPY.xp
    g = np.full(n, g_target * gmax)
    g_prog = _pcm.pcm_program(g, xi[0], gmax=gmax, xp=xp)
    nu = _pcm.pcm_drift_nu(g, xi[1], gmax=gmax, xp=xp)
    g_drift = _pcm.pcm_drift(g_prog, nu, float(t_inference), xp=xp)
    return _pcm.pcm_read(g_drift, g_prog, xi[2], float(t_inference), gmax=gmax, xp=xp)
