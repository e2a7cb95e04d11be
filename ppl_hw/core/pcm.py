r"""The statistical PCM model of aihwkit's ``PCMLikeNoiseModel`` (Nandakumar et al.,
ICECS 2019), as backend-neutral functions of pre-drawn standard normal noise.

Conductances are in µS; ``g = G / gmax`` is the conductance relative to the largest
programmable one. With :math:`\xi \sim \mathcal N(0, 1)` drawn by the caller:

.. math::

    \sigma_\mathrm{prog} &= (0.26348 + 1.9650\,g - 1.1731\,g^2)\, g_\max / 25, \qquad
        G_\mathrm{prog} = \max(0,\ G + \sigma_\mathrm{prog}\,\xi_1), \\
    \mu_\nu &= \mathrm{clip}(-0.0155 \ln g + 0.0244,\ 0.049,\ 0.1), \qquad
    \sigma_\nu = \mathrm{clip}(-0.0125 \ln g - 0.0059,\ 0.008,\ 0.045), \qquad
    \nu = |\mu_\nu + \sigma_\nu\,\xi_2|, \\
    G_\mathrm{drift} &= G_\mathrm{prog}\,\big((t + t_0)/t_0\big)^{-\nu}, \\
    Q &= \min\!\big(0.0088 / \max((|G_\mathrm{prog}|/g_\max)^{0.65},
        10^{-3}),\ 0.2\big),
    \qquad \sigma_\mathrm{read} = Q \sqrt{\ln\frac{t + t_0 + t_\mathrm{read}}
        {2 t_\mathrm{read}}}, \\
    G(t) &= \max(0,\ G_\mathrm{drift}
        + |G_\mathrm{drift}|\,\sigma_\mathrm{read}\,\xi_3),

with :math:`t_0 = 20` s, :math:`t_\mathrm{read} = 250` ns, :math:`g_\max = 25` µS,
and ``g`` clipped below at 1e-7 inside the logarithms, as in aihwkit.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "PCM_GMAX",
    "PCM_PROG_COEFF",
    "PCM_T0",
    "PCM_T_READ",
    "pcm_drift",
    "pcm_drift_nu",
    "pcm_drift_nu_moments",
    "pcm_program",
    "pcm_programming_sigma",
    "pcm_read",
    "pcm_read_sigma",
]

PCM_GMAX = 25.0
"""Largest programmable conductance (µS)."""
PCM_PROG_COEFF = (0.26348, 1.9650, -1.1731)
"""Programming-noise polynomial in g (µS at gmax = 25 µS)."""
PCM_T0 = 20.0
"""Time of the first read after programming (s), the drift reference."""
PCM_T_READ = 250e-9
"""Duration of one read (s), the 1/f noise integration constant."""

_ZERO_CLIP = 1e-7
_READ_G_FLOOR = 1e-3 ** (1.0 / 0.65)  # where g**0.65 reaches 1e-3


def pcm_programming_sigma(g_target: Any, *, gmax: float = PCM_GMAX, xp: Any) -> Any:
    """Standard deviation (µS) of the programming noise at target conductance (µS)."""
    g = g_target / gmax
    c0, c1, c2 = PCM_PROG_COEFF
    return (c0 + c1 * g + c2 * g * g) * (gmax / 25.0)


def pcm_program(
    g_target: Any, xi: Any, *, gmax: float = PCM_GMAX, scale: float = 1.0, xp: Any
) -> Any:
    """Programmed conductance ``max(0, G + scale σ_prog ξ)`` (µS)."""
    sigma = pcm_programming_sigma(g_target, gmax=gmax, xp=xp)
    return xp.clip(g_target + scale * sigma * xi, 0.0, None)


def pcm_drift_nu_moments(
    g_target: Any, *, gmax: float = PCM_GMAX, xp: Any
) -> tuple[Any, Any]:
    """Mean and standard deviation of the drift exponent's Gaussian before ``|.|``."""
    lg = xp.log(xp.clip(xp.abs(g_target / gmax), _ZERO_CLIP, None))
    mu = xp.clip(-0.0155 * lg + 0.0244, 0.049, 0.1)
    sd = xp.clip(-0.0125 * lg - 0.0059, 0.008, 0.045)
    return mu, sd


def pcm_drift_nu(
    g_target: Any, xi: Any, *, gmax: float = PCM_GMAX, scale: float = 1.0, xp: Any
) -> Any:
    """Drift exponent ``ν = scale |μ_ν + σ_ν ξ|`` of each device."""
    mu, sd = pcm_drift_nu_moments(g_target, gmax=gmax, xp=xp)
    return scale * xp.abs(mu + sd * xi)


def pcm_drift(g_prog: Any, nu: Any, t: float, *, t0: float = PCM_T0, xp: Any) -> Any:
    """Conductance after drifting for ``t`` seconds since programming."""
    if t <= 0.0:
        return g_prog
    return g_prog * xp.exp(-nu * math.log((t + t0) / t0))


def pcm_read_sigma(
    g_prog: Any,
    t: float,
    *,
    gmax: float = PCM_GMAX,
    t0: float = PCM_T0,
    t_read: float = PCM_T_READ,
    xp: Any,
) -> Any:
    """Relative standard deviation of the accumulated 1/f read noise at time ``t``."""
    # 0.0088 / max(g**0.65, 1e-3) as 0.0088 exp(-0.65 ln max(g, 1e-3**(1/0.65))):
    # the same value (the power is monotone), one log and one exp per device instead
    # of XLA's scalar ``pow`` (3x the cost of the whole read-noise formula), and no
    # log(0) (no NaN in gradients at g = 0)
    g = xp.clip(xp.abs(g_prog) / gmax, _READ_G_FLOOR, None)
    q = xp.clip(0.0088 * xp.exp(-0.65 * xp.log(g)), None, 0.2)
    return q * math.sqrt(math.log((t + t0 + t_read) / (2.0 * t_read)))


def pcm_read(
    g_drift: Any,
    g_prog: Any,
    xi: Any,
    t: float,
    *,
    gmax: float = PCM_GMAX,
    t0: float = PCM_T0,
    t_read: float = PCM_T_READ,
    scale: float = 1.0,
    xp: Any,
) -> Any:
    """One read ``max(0, G_drift + |G_drift| scale σ_read ξ)`` of a drifted device."""
    sigma = pcm_read_sigma(g_prog, t, gmax=gmax, t0=t0, t_read=t_read, xp=xp)
    return xp.clip(g_drift + xp.abs(g_drift) * (scale * sigma) * xi, 0.0, None)
