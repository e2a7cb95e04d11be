r"""The probabilistic forward pass (PFP; Roth & Pernkopf 2018/2019): moment rules.

Every activation is approximated by independent Gaussians with mean ``m`` and
variance ``v`` (:class:`Moments`); weights are independent with mean and variance
(e.g. of a :class:`~ppl_hw.numpyro.distributions.DiscreteWeight`). The rules:

* **linear** (dense or convolution, any bilinear ``op(x, w)`` that is linear in each
  argument and sums products): :math:`m' = \mathrm{op}(m, E[W])`,
  :math:`v' = \mathrm{op}(m^2, \mathrm{Var} W) + \mathrm{op}(v, E[W]^2) +
  \mathrm{op}(v, \mathrm{Var} W)` (exact for independent inputs and weights; a
  deterministic input has ``v = 0``), computed with two products for the variance,
  :math:`\mathrm{op}(m^2, \mathrm{Var} W) + \mathrm{op}(v, E[W^2])`; for ±1 inputs
  (:class:`BinaryMoments`, the output of a sign), where :math:`m^2 + v = 1`, the same
  variance is :math:`\mathrm{op}(1, \mathrm{Var} W) + \mathrm{op}(v, E[W]^2)`: one
  product with the data, the other on a single all-ones example;
* **sign**: :math:`m' = \mathrm{erf}(m/\sqrt{2v})`, :math:`v' = 1 - m'^2`, exact for a
  Gaussian input (``P(sign = +1) = Φ(m/√v)``);
* **batch norm** on moments: batch mean of the means, batch variance
  :math:`\sum (v + (m - \mu)^2)/(n - 1)`, then :math:`m' = a m + b`,
  :math:`v' = a^2 v` with :math:`a = \gamma/\sqrt{\sigma^2 + \varepsilon}`;
* **max pooling** (2×2, stride 2, NCHW): for ±1 inputs (after a sign) the exact
  :math:`P(\max = -1) = \prod_k (1 - m_k)/2`; for Gaussian inputs Clark's (1961)
  moment-matched :math:`\max(\max(x_1, x_2), \max(x_3, x_4))`;
* **average pooling** (k×k, stride k): means averaged, variances summed over
  :math:`k^4`;
* **dropout**: a mask multiplies both moments (the mask's own randomness is the
  caller's);
* **output**: the second-order expansion
  :math:`E[-\log \mathrm{softmax}_y(a)] \approx -\log \mathrm{softmax}_y(m)
  + \tfrac12 \sum_c s_c (1 - s_c) v_c`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from .backend import Special

__all__ = [
    "SIGN_EPS",
    "BinaryMoments",
    "Moments",
    "avg_pool_moments",
    "batch_norm_moments",
    "binary_max_pool_moments",
    "dropout_moments",
    "expected_nll_taylor",
    "gaussian_max_moments",
    "linear_moments",
    "max_pool_moments",
    "sign_moments",
]

SIGN_EPS = 1e-12


class _MomentsFields(NamedTuple):
    mean: Any
    var: Any


class Moments(_MomentsFields):
    """Independent Gaussian activations: elementwise ``mean`` and ``var``.

    Affine arithmetic works as on the random variables, so a model written for
    arrays also runs on moments: ``c * x`` and ``x / c`` for a constant scale
    (``var`` scales by ``c**2``), ``x + b`` / ``x - b`` for a constant shift, and
    ``x + y`` / ``x - y`` for independent Moments (variances add); ``-x`` negates the
    mean. (Tuple concatenation and repetition are therefore not available.)
    """

    __slots__ = ()
    __array_ufunc__ = None  # NumPy arrays defer to the reflected operators below

    def __add__(self, other: Any) -> Moments:
        if isinstance(other, Moments):
            return Moments(self.mean + other.mean, self.var + other.var)
        return Moments(self.mean + other, self.var)

    def __radd__(self, other: Any) -> Moments:
        return self.__add__(other)

    def __sub__(self, other: Any) -> Moments:
        if isinstance(other, Moments):
            return Moments(self.mean - other.mean, self.var + other.var)
        return Moments(self.mean - other, self.var)

    def __rsub__(self, other: Any) -> Moments:
        return Moments(other - self.mean, self.var)

    def __neg__(self) -> Moments:
        return Moments(-self.mean, self.var)

    def __mul__(self, c: Any) -> Moments:
        if isinstance(c, Moments):
            raise TypeError(
                "the product of two Moments is not Gaussian; use nn.dense / "
                "nn.conv2d for products with random weights"
            )
        return Moments(self.mean * c, self.var * c * c)

    def __rmul__(self, c: Any) -> Moments:
        return self.__mul__(c)

    def __truediv__(self, c: Any) -> Moments:
        if isinstance(c, Moments):
            raise TypeError("cannot divide by Moments")
        return Moments(self.mean / c, self.var / (c * c))


class BinaryMoments(Moments):
    """Moments of independent ±1 variables (the output of :func:`sign_moments` and
    :func:`binary_max_pool_moments`): ``var = 1 - mean**2``, which lets
    :func:`linear_moments` save one product. Arithmetic returns plain
    :class:`Moments` (a scaled or shifted ±1 variable is no longer ±1)."""

    __slots__ = ()


def linear_moments(
    x: Moments, w_mean: Any, w_var: Any, op: Callable[[Any, Any], Any]
) -> Moments:
    """Moments of ``op(X, W)`` for independent ``X`` and ``W`` (module docstring);
    ``x.var`` may be ``None`` for a deterministic input (its products are skipped).
    For :class:`BinaryMoments` with a batch axis 0, ``op`` is also applied to one
    all-ones example (shape ``(1, ...)``)."""
    m, v = x
    mean = op(m, w_mean)
    if v is None:  # a deterministic input (e.g. the data): one product less
        return Moments(mean, op(m * m, w_var))
    if isinstance(x, BinaryMoments) and len(m.shape) >= 2:
        # m^2 + v = 1: m^2 Var W + v E[W^2] = 1 Var W + v E[W]^2, a sum of
        # non-negative terms (no cancellation); the first is one all-ones example's
        # product (op of the ones keeps a convolution's zero padding right), which
        # broadcasts over the batch
        ones = m[:1] * 0.0 + 1.0
        return Moments(mean, op(v, w_mean * w_mean) + op(ones, w_var))
    # v E[W]^2 + v Var[W] as one product v E[W^2]: two products for the variance
    var = op(m * m, w_var) + op(v, w_mean * w_mean + w_var)
    return Moments(mean, var)


def sign_moments(x: Moments, *, xp: Any, special: Special) -> Moments:
    """Exact moments of ``sign(X)``, ``X ~ N(m, v)``, in {-1, +1}."""
    m, v = x
    mean = special.erf(m / xp.sqrt(2.0 * v + SIGN_EPS))
    # (1 - m')(1 + m') = 1 - m'^2 is >= 0 for |m'| <= 1 without a clip (whose
    # gradient made XLA's CPU step ~40 % slower) and keeps its precision near |m'| = 1
    return BinaryMoments(mean, (1.0 - mean) * (1.0 + mean))


def batch_norm_moments(
    x: Moments,
    gamma: Any = 1.0,
    beta: Any = 0.0,
    *,
    eps: float = 1e-5,
    xp: Any,
) -> Moments:
    """Batch normalisation of moments over the batch axis 0 (features on the
    others): the batch's statistics include the activations' own variance."""
    m, v = x
    n = m.shape[0]
    mu = xp.mean(m, axis=0)
    var = xp.sum(v + (m - mu) ** 2, axis=0) / max(n - 1, 1)
    a = gamma / xp.sqrt(var + eps)
    return Moments(a * (m - mu) + beta, a * a * v)


def _quads(a: Any) -> tuple[Any, Any, Any, Any]:
    """The four members of each 2×2 window of an NCHW array (stride 2)."""
    return (
        a[..., 0::2, 0::2],
        a[..., 0::2, 1::2],
        a[..., 1::2, 0::2],
        a[..., 1::2, 1::2],
    )


def binary_max_pool_moments(x: Moments) -> Moments:
    """2×2 max pooling of independent ±1 variables with means ``m``: exact."""
    p_all_minus = 1.0
    for q in _quads(x.mean):
        p_all_minus = p_all_minus * (1.0 - q) / 2.0
    mean = 1.0 - 2.0 * p_all_minus
    return BinaryMoments(mean, 1.0 - mean * mean)


def gaussian_max_moments(
    m1: Any, v1: Any, m2: Any, v2: Any, *, xp: Any, special: Special
) -> tuple[Any, Any]:
    """Clark's moments of ``max(X1, X2)`` for independent Gaussians (exact)."""
    a = xp.sqrt(v1 + v2 + SIGN_EPS)
    alpha = (m1 - m2) / a
    cdf, cdf_neg = special.ndtr(alpha), special.ndtr(-alpha)
    pdf = xp.exp(-0.5 * alpha * alpha) / (2.0 * 3.141592653589793) ** 0.5
    mean = m1 * cdf + m2 * cdf_neg + a * pdf
    second = (v1 + m1 * m1) * cdf + (v2 + m2 * m2) * cdf_neg + (m1 + m2) * a * pdf
    return mean, xp.clip(second - mean * mean, 0.0, None)


def max_pool_moments(x: Moments, *, xp: Any, special: Special) -> Moments:
    """2×2 max pooling (stride 2, NCHW) of Gaussian activations: Clark's rule
    applied as ``max(max(x1, x2), max(x3, x4))``."""
    (m1, m2, m3, m4), (v1, v2, v3, v4) = _quads(x.mean), _quads(x.var)
    ma, va = gaussian_max_moments(m1, v1, m2, v2, xp=xp, special=special)
    mb, vb = gaussian_max_moments(m3, v3, m4, v4, xp=xp, special=special)
    return Moments(*gaussian_max_moments(ma, va, mb, vb, xp=xp, special=special))


def avg_pool_moments(x: Moments, k: int, *, xp: Any) -> Moments:
    """k×k average pooling (stride k, NCHW) of independent activations."""
    m, v = x
    *lead, h, w = m.shape
    shape = (*lead, h // k, k, w // k, k)
    crop = (..., slice(0, h // k * k), slice(0, w // k * k))
    mean = xp.mean(xp.reshape(m[crop], shape), axis=(-3, -1))
    var = xp.sum(xp.reshape(v[crop], shape), axis=(-3, -1)) / float(k**4)
    return Moments(mean, var)


def dropout_moments(x: Moments, mask: Any) -> Moments:
    """A dropout mask (0/1, or scaled) applied to both moments."""
    return Moments(x.mean * mask, x.var * mask * mask)


def expected_nll_taylor(x: Moments, y: Any, *, xp: Any, special: Special) -> Any:
    """Second-order approximation of :math:`E[-\\log \\mathrm{softmax}_y(a)]` for
    logits :math:`a \\sim N(m, v)`, per example (classes on the last axis)."""
    m, v = x
    log_s = m - special.logsumexp(m, axis=-1, keepdims=True)
    s = xp.exp(log_s)
    onehot = xp.arange(m.shape[-1]) == y[..., None]
    picked = xp.sum(xp.where(onehot, log_s, 0.0), axis=-1)
    return -picked + 0.5 * xp.sum(s * (1.0 - s) * v, axis=-1)
