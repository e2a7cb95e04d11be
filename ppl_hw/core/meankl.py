r"""The Mean-KL parameterisation of a Gaussian posterior (Lin, Flamich &
Hernández-Lobato 2023) and the principal branch of the Lambert W function.

A weight's posterior :math:`Q = \mathcal N(\mu, \sigma^2)` is parameterised by its
KL divergence :math:`\kappa > 0` to the coding distribution
:math:`P = \mathcal N(\nu, \rho^2)` (the model's prior) and an unconstrained mean
parameter :math:`m`:

.. math::

    \mu = \nu + \rho\sqrt{2\kappa}\,\tanh m, \qquad
    \mathrm{KL}(Q\|P) = \tfrac12(r - 1 - \log r + d) = \kappa, \qquad
    r = \sigma^2/\rho^2,\quad d = (\mu-\nu)^2/\rho^2 = 2\kappa\tanh^2 m,

so :math:`r - \log r = 1 + s^2` with :math:`s = \sqrt{2\kappa}\,\mathrm{sech}\, m`,
whose solution in :math:`r \le 1` is
:math:`r = -W_0(-e^{-(1 + s^2)})` (principal branch). The mean constraint
:math:`d \le 2\kappa` holds by construction.

**Solving it.** :func:`log_ratio` returns :math:`t = \log r` by Newton's method on
:math:`e^t - t = 1 + s^2`, written as :math:`e^t - 1 - t = s^2` with the left side
from its Taylor series near the branch point :math:`s = 0` (no cancellation),
started from the branch-point series
:math:`1 - r = \sqrt2 s - \tfrac23 s^2 + \tfrac{\sqrt2}{18} s^3` for small ``s`` and
from :math:`t = -(1 + s^2)` for large ``s``. Its derivative
:math:`\mathrm dt/\mathrm ds = 2s/\mathrm{expm1}(t)` tends to :math:`-\sqrt 2` at
``s = 0`` — finite, where the naive :math:`W'(z) = W/(z(1+W))` gives
:math:`0\cdot\infty`; the adapters wrap it in their own custom-derivative mechanism.
Writing :math:`s` and the mean through :math:`\sqrt{\kappa}` computed as
``exp(0.5 * log_kappa)`` and a stable ``sech`` keeps every gradient finite at
:math:`\kappa \to 0` and :math:`\tanh m \to \pm 1`.
"""

from __future__ import annotations

import math
from typing import Any

from .backend import Special

__all__ = [
    "LOG_RATIO_ITERATIONS",
    "MAX_BITS_PER_WEIGHT",
    "SIGMA_FLOOR",
    "block_log_kappa",
    "lambertw0",
    "log_kappa",
    "log_ratio",
    "log_ratio_grad",
    "meankl_loc_scale",
    "sech",
]

LOG_RATIO_ITERATIONS = 6
"""Newton steps of :func:`log_ratio` (quadratic convergence from a start accurate
to ~1e-3 relative: machine precision after 3–4)."""

SIGMA_FLOOR = 1e-18
r"""The floor of the posterior scale :math:`\sigma` and of :math:`\sigma/\rho`: their
squares stay normal float32 numbers (above 1.2e-38, with a factor 80 to spare), so
log-densities and the hosts' closed-form KLs (which square :math:`\sigma/\rho`) stay
finite. A weight whose KL share would need less (:math:`\kappa \gtrsim 41` nats,
59 bits, for :math:`\rho \ge 1`; :math:`41 + \log\rho` nats below) gets the floor,
and its KL is then below its share.
"""

MAX_BITS_PER_WEIGHT = 48.0
r"""The largest KL budget per weight (bits, on average) a Mean-KL guide accepts: at
48 bits an equal share keeps :math:`\sigma \ge` :data:`SIGMA_FLOOR` for every prior
scale :math:`\rho \ge 10^{-3}`. (A float32 weight holds 32 bits: more carries no
information.)"""

_LOG_SIGMA_FLOOR = math.log(SIGMA_FLOOR)
_SQRT2 = math.sqrt(2.0)
_INV_E = math.exp(-1.0)


def sech(x: Any, *, xp: Any) -> Any:
    """``1/cosh(x)`` as ``2 e^{-|x|} / (1 + e^{-2|x|})``: no overflow, finite
    gradient."""
    e = xp.exp(-xp.abs(x))
    return 2.0 * e / (1.0 + e * e)


def log_ratio(
    s: Any, *, xp: Any, special: Special, num_iter: int = LOG_RATIO_ITERATIONS
) -> Any:
    r""":math:`t = \log r` solving :math:`e^t - t = 1 + s^2` with :math:`t \le 0`
    (value only; see :func:`log_ratio_grad` for the derivative)."""
    s2 = s * s
    small = s < 1.0
    q0 = (
        _SQRT2 * s - (2.0 / 3.0) * s2 + (_SQRT2 / 18.0) * s2 * s
    )  # 1 - r, branch series
    t_small = xp.log1p(-xp.clip(q0, 0.0, 0.999))
    t_large = -(1.0 + s2)
    t0 = xp.where(small, t_small, t_large)

    def step(i: int, t: Any) -> Any:
        em1, f = _expm1_and_residual(t, xp=xp)
        fp = xp.where(em1 < 0, em1, -1e-30)  # e^t - 1 < 0 for t < 0
        return xp.clip(t - (f - s2) / fp, None, 0.0)

    return special.fori_loop(num_iter, step, t0)


_SERIES_CUT = 0.25
# 1/k! for k = 2..12: e^t - 1 - t = t^2 (1/2! + t (1/3! + ...))
_INV_FACT = tuple(1.0 / math.factorial(k) for k in range(2, 13))


def _expm1_and_residual(t: Any, *, xp: Any) -> tuple[Any, Any]:
    """``(e^t - 1, e^t - 1 - t)`` without cancellation: Taylor series (to ``t^12``,
    truncation error below 1e-16 relative) for ``|t| < 0.25``, ``exp(t) - 1``
    otherwise (where it loses no more than ~4 ulp). Written with ``exp`` because
    PyTorch's CPU ``expm1`` is scalar code, ~25× slower than its vectorised ``exp``
    on the 10⁴-weight sites of an SVI step."""
    poly = _INV_FACT[-1]
    for c in reversed(_INV_FACT[:-1]):
        poly = c + t * poly
    series = t * t * poly
    small = xp.abs(t) < _SERIES_CUT
    em1 = xp.exp(t) - 1.0
    return xp.where(small, t + series, em1), xp.where(small, series, em1 - t)


def log_ratio_grad(s: Any, t: Any, *, xp: Any) -> Any:
    r""":math:`\mathrm dt/\mathrm ds = 2s/\mathrm{expm1}(t)`, with its limit
    :math:`-\sqrt 2` at ``s = 0``."""
    em1, _ = _expm1_and_residual(t, xp=xp)
    ok = em1 < 0
    return xp.where(ok, 2.0 * s / xp.where(ok, em1, -1.0), -_SQRT2)


def meankl_loc_scale(
    m: Any,
    log_kappa: Any,
    prior_loc: Any,
    prior_scale: Any,
    *,
    xp: Any,
    log_ratio_fn: Any,
) -> tuple[Any, Any]:
    r""":math:`(\mu, \sigma)` of the Mean-KL parameterisation.

    :param m: unconstrained mean parameters.
    :param log_kappa: :math:`\log\kappa` of each weight (nats).
    :param prior_loc: :math:`\nu`.
    :param prior_scale: :math:`\rho`.
    :param log_ratio_fn: the backend's differentiable :func:`log_ratio` (``s -> t``).
    """
    root2k = _SQRT2 * xp.exp(0.5 * log_kappa)  # sqrt(2 kappa), finite gradient
    s = root2k * sech(m, xp=xp)
    t = log_ratio_fn(s)
    # sigma >= SIGMA_FLOOR and sigma / rho >= SIGMA_FLOOR: t = 2 log(sigma / rho) >=
    # 2 (log SIGMA_FLOOR - min(log rho, 0)). Only a KL share above ~41 nats reaches
    # it; below, the KL is exactly the share.
    rho = prior_scale + xp.zeros_like(t)  # an array even for a scalar rho
    t = xp.maximum(t, 2.0 * (_LOG_SIGMA_FLOOR - xp.log(rho) * (rho < 1.0)))
    loc = prior_loc + prior_scale * root2k * xp.tanh(m)
    scale = prior_scale * xp.exp(0.5 * t)
    return loc, scale


def lambertw0(z: Any, *, xp: Any, special: Special, num_iter: int = 8) -> Any:
    r"""The principal branch :math:`W_0(z)` for real :math:`z \ge -1/e`, by Halley's
    method (Corless et al. 1996) from the branch-point series near :math:`-1/e` and
    :math:`\log(1 + z)` elsewhere. Values below :math:`-1/e` are clamped to it."""
    z = xp.clip(z, -_INV_E, None)
    p = xp.sqrt(xp.clip(2.0 * (math.e * z + 1.0), 0.0, None))
    w_branch = -1.0 + p - p * p / 3.0 + (11.0 / 72.0) * p * p * p
    w_log = xp.log1p(xp.clip(z, 0.0, None))
    w_big = xp.log(xp.clip(z, 1.0, None)) - xp.log(xp.log(xp.clip(z, math.e, None)))
    w = xp.where(z < 0.3, w_branch, xp.where(z < 3.0, w_log * 0.7, w_big))

    def step(i: int, w: Any) -> Any:
        ew = xp.exp(w)
        f = w * ew - z
        wp1 = w + 1.0
        denom = ew * wp1 - (w + 2.0) * f / xp.where(wp1 != 0, 2.0 * wp1, 1.0)
        new = w - f / xp.where(denom != 0, denom, 1.0)
        return xp.where(wp1 > 0, xp.clip(new, -1.0, None), w)

    return special.fori_loop(num_iter, step, w)


def block_log_kappa(
    phi: Any, index: Any, pad: Any, block_of: Any, log_cb: float, *, special: Special
) -> Any:
    r""":math:`\log\kappa` of flat logits ``phi`` shared out block by block: weight
    :math:`j` of block :math:`b` gets :math:`\log C_b + \phi_j - \log\sum_{i \in b}
    e^{\phi_i}`, so every block's KL is :math:`C_b` by construction.

    :param index: ``(num_blocks, width)`` positions of each block's weights in
        ``phi`` (padded with the block's first weight).
    :param pad: ``(num_blocks, width)``: 0 for members, :math:`-\infty` for padding.
    :param block_of: the block of each weight.
    :param log_cb: :math:`\log C_b`, the same for every block.
    """
    lse = special.logsumexp(special.take(phi, index) + pad, axis=1)
    return log_cb + phi - special.take(lse, block_of)


def log_kappa(
    phi: Any,
    *,
    log_budget: float,
    num_weights: int,
    blocks: tuple[Any, Any, Any, float] | None = None,
    xp: Any,
    special: Special,
) -> Any:
    r""":math:`\log\kappa` of every weight (flat) for a KL budget :math:`C`
    (``log_budget`` = :math:`\log C`), by the guide's ``budget_split``:

    - ``phi is None`` (``"equal"``): :math:`\log C - \log d` for each of the
      :math:`d` = ``num_weights`` weights (a scalar, broadcast by the caller);
    - ``blocks is None`` (``"learned"``): a softmax of the logits over all weights,
      :math:`\log C + \phi_j - \log\sum_i e^{\phi_i}`;
    - else (``"blocks"``): :func:`block_log_kappa` with ``blocks = (index, pad,
      block_of, log_cb)``.

    The KL of the whole guide is :math:`\sum_j \kappa_j = C` in every case.
    """
    if phi is None:
        return log_budget - math.log(num_weights)
    if blocks is not None:
        return block_log_kappa(phi, *blocks, special=special)
    return log_budget + phi - special.logsumexp(phi, axis=0)
