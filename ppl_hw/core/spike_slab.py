r"""The spike-and-slab prior (Ke & Fan 2022) as backend-neutral functions.

.. math::

    p(w) = \pi\,\mathcal N(w; 0, \sigma_1^2) + (1 - \pi)\,\mathcal N(w; 0, \sigma_0^2),
    \qquad \sigma_0 < \sigma_1,

with slab weight :math:`\pi` (``prob``), spike scale :math:`\sigma_0` and slab scale
:math:`\sigma_1`. The posterior slab probability of a value is Bayes' rule,
:math:`p^*(w) = \pi \mathcal N(w; 0, \sigma_1^2) / p(w)`. The cdf is the exact mixture
of normal cdfs; the inverse cdf is found by Newton's method safeguarded by bisection
inside the bracket formed by the two components' quantiles (the mixture's quantile lies
between them), and differentiated implicitly,
:math:`\partial x/\partial\theta = -(\partial F/\partial\theta)/p(x)`.
"""

from __future__ import annotations

from typing import Any

from .backend import Special
from .gaussian import HALF_LOG_2PI

__all__ = [
    "ICDF_ITERATIONS",
    "spike_slab_cdf",
    "spike_slab_cdf_grads",
    "spike_slab_icdf",
    "spike_slab_inclusion_prob",
    "spike_slab_log_prob",
    "spike_slab_log_terms",
    "spike_slab_variance",
]

ICDF_ITERATIONS = 40
"""Safeguarded Newton steps of :func:`spike_slab_icdf` (converged to rounding long
before: each step at least halves the bracket, and Newton converges quadratically)."""


def spike_slab_log_terms(
    x: Any, prob: Any, spike: Any, slab: Any, *, xp: Any
) -> tuple[Any, Any]:
    """``log π + log N(x; 0, slab²)`` and ``log(1 - π) + log N(x; 0, spike²)``."""
    z1, z0 = x / slab, x / spike
    slab_term = xp.log(prob) - 0.5 * z1 * z1 - xp.log(slab) - HALF_LOG_2PI
    spike_term = xp.log1p(-prob) - 0.5 * z0 * z0 - xp.log(spike) - HALF_LOG_2PI
    return slab_term, spike_term


def spike_slab_log_prob(x: Any, prob: Any, spike: Any, slab: Any, *, xp: Any) -> Any:
    """Log density of the mixture (log-sum-exp of the two weighted components)."""
    a, b = spike_slab_log_terms(x, prob, spike, slab, xp=xp)
    return xp.logaddexp(a, b)


def spike_slab_inclusion_prob(
    x: Any, prob: Any, spike: Any, slab: Any, *, xp: Any
) -> Any:
    r"""Posterior probability that ``x`` came from the slab:
    :math:`\sigma(\log\pi\mathcal N_1 - \log(1-\pi)\mathcal N_0)`."""
    a, b = spike_slab_log_terms(x, prob, spike, slab, xp=xp)
    return 1.0 / (1.0 + xp.exp(b - a))


def spike_slab_variance(prob: Any, spike: Any, slab: Any, *, xp: Any) -> Any:
    """Variance ``π slab² + (1 - π) spike²`` (the mean is 0)."""
    return prob * slab * slab + (1.0 - prob) * spike * spike


def spike_slab_cdf(
    x: Any, prob: Any, spike: Any, slab: Any, *, xp: Any, special: Special
) -> Any:
    """``π Φ(x/slab) + (1 - π) Φ(x/spike)``."""
    return prob * special.ndtr(x / slab) + (1.0 - prob) * special.ndtr(x / spike)


def spike_slab_cdf_grads(
    x: Any, prob: Any, spike: Any, slab: Any, *, xp: Any, special: Special
) -> tuple[Any, Any, Any, Any]:
    """Partial derivatives of the cdf at ``x``:
    ``(∂F/∂x, ∂F/∂π, ∂F/∂spike, ∂F/∂slab)``."""
    z1, z0 = x / slab, x / spike
    phi1 = xp.exp(-0.5 * z1 * z1 - HALF_LOG_2PI)
    phi0 = xp.exp(-0.5 * z0 * z0 - HALF_LOG_2PI)
    dx = prob * phi1 / slab + (1.0 - prob) * phi0 / spike
    dprob = special.ndtr(z1) - special.ndtr(z0)
    dspike = -(1.0 - prob) * phi0 * z0 / spike
    dslab = -prob * phi1 * z1 / slab
    return dx, dprob, dspike, dslab


def spike_slab_icdf(
    u: Any,
    prob: Any,
    spike: Any,
    slab: Any,
    *,
    xp: Any,
    special: Special,
    num_iter: int = ICDF_ITERATIONS,
) -> Any:
    """The quantile at ``u`` in (0, 1) (value only; adapters add the implicit
    derivative)."""
    q = special.ndtri(u)
    qa, qb = spike * q, slab * q
    lo, hi = xp.minimum(qa, qb), xp.maximum(qa, qb)
    x0 = prob * qb + (1.0 - prob) * qa  # inside [lo, hi]

    def step(i: int, carry: tuple[Any, Any, Any]) -> tuple[Any, Any, Any]:
        x, lo, hi = carry
        f = spike_slab_cdf(x, prob, spike, slab, xp=xp, special=special) - u
        lo = xp.where(f < 0, x, lo)
        hi = xp.where(f > 0, x, hi)
        dens = spike_slab_cdf_grads(x, prob, spike, slab, xp=xp, special=special)[0]
        newton = x - f / xp.where(dens > 0, dens, 1.0)
        ok = (newton > lo) & (newton < hi) & (dens > 0)
        x = xp.where(f == 0, x, xp.where(ok, newton, 0.5 * (lo + hi)))
        return x, lo, hi

    x, _, _ = special.fori_loop(num_iter, step, (x0, lo, hi))
    return x
