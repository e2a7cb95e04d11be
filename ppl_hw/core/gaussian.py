r"""Gaussian helpers shared by the guides and the coder.

All functions are element-wise and broadcast their arguments. They are written once
against the array namespace ``xp`` (and the :class:`~ppl_hw.core.backend.Special`
shim where noted); bind them to a backend with
:meth:`~ppl_hw.core.backend.Backend.bind`.

The KL between two normals is written in the ratio form used by the Mean-KL
parameterisation (Lin, Flamich & Hernández-Lobato 2023):

.. math::

    \mathrm{KL}\big(\mathcal N(\mu, \sigma^2)\,\|\,\mathcal N(\nu, \rho^2)\big)
    = \tfrac12 \left(r - 1 - \log r + d\right),
    \qquad r = \sigma^2/\rho^2,\quad d = (\mu - \nu)^2/\rho^2 .
"""

from __future__ import annotations

import math
from typing import Any

from .backend import Special

__all__ = [
    "HALF_LOG_2PI",
    "kl_location_scale_normal",
    "kl_normal_normal",
    "normal_cdf",
    "normal_entropy",
    "normal_icdf",
    "normal_log_cdf",
    "normal_log_prob",
]

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
"""½ log(2π)."""


def normal_log_prob(x: Any, loc: Any, scale: Any, *, xp: Any) -> Any:
    r""":math:`\log \mathcal N(x; \mu, \sigma^2)`."""
    z = (x - loc) / scale
    return -0.5 * z * z - xp.log(scale) - HALF_LOG_2PI


def normal_entropy(scale: Any, *, xp: Any) -> Any:
    r"""Differential entropy (nats):
    :math:`\tfrac12 + \tfrac12\log(2\pi) + \log\sigma`."""
    return 0.5 + HALF_LOG_2PI + xp.log(scale)


def kl_normal_normal(
    loc_q: Any, scale_q: Any, loc_p: Any, scale_p: Any, *, xp: Any
) -> Any:
    r"""KL divergence between two normals, in nats:
    :math:`\mathrm{KL}(\mathcal N(\mu_q, \sigma_q^2) \| \mathcal N(\mu_p, \sigma_p^2))`.

    Computed as :math:`\tfrac12(r - 1 - \log r + d)` with :math:`\log r` formed from
    the log-scales, so it stays accurate (and non-negative up to rounding) for
    :math:`r` near 1 and for very small or large scale ratios.
    """
    log_r = 2.0 * (xp.log(scale_q) - xp.log(scale_p))
    dz = (loc_q - loc_p) / scale_p
    # r - 1 - log r = expm1(log r) - log r, exact near r = 1 where r - 1 cancels.
    return 0.5 * (xp.expm1(log_r) - log_r + dz * dz)


def normal_cdf(x: Any, loc: Any, scale: Any, *, xp: Any, special: Special) -> Any:
    r""":math:`\Phi((x - \mu)/\sigma)`."""
    return special.ndtr((x - loc) / scale)


def normal_log_cdf(x: Any, loc: Any, scale: Any, *, xp: Any, special: Special) -> Any:
    r""":math:`\log \Phi((x - \mu)/\sigma)`, accurate far into the lower tail."""
    return special.log_ndtr((x - loc) / scale)


def normal_icdf(p: Any, loc: Any, scale: Any, *, xp: Any, special: Special) -> Any:
    r""":math:`\mu + \sigma\,\Phi^{-1}(p)`."""
    return loc + scale * special.ndtri(p)


def kl_location_scale_normal(
    loc: Any, scale: Any, entropy0: Any, loc_p: Any, scale_p: Any, *, xp: Any
) -> Any:
    r"""KL from ``loc + scale * e`` to :math:`\mathcal N(\mu_p, \sigma_p^2)`, where the
    shape ``e`` has mean 0, variance 1 and entropy :math:`H_0` (nats):

    .. math::

        \mathrm{KL} = -H_0 - \log\sigma + \log(\sigma_p\sqrt{2\pi})
            + \frac{(\mu - \mu_p)^2 + \sigma^2}{2\sigma_p^2}.

    Only the first two moments of ``e`` enter the cross-entropy, so the gradients in
    ``loc`` and ``scale`` equal the Gaussian case; with the Gaussian's
    :math:`H_0 = \tfrac12\log(2\pi e)` this is :func:`kl_normal_normal`.
    """
    dz = (loc - loc_p) / scale_p
    rz = scale / scale_p
    return -entropy0 - xp.log(rz) + HALF_LOG_2PI + 0.5 * (dz * dz + rz * rz)
