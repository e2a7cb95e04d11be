"""``SpikeAndSlab``: the two-component Gaussian scale mixture prior (NumPyro)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax, random
from numpyro.distributions import constraints
from numpyro.distributions.batch_util import vmap_over
from numpyro.distributions.util import promote_shapes, validate_sample

from ...core import spike_slab as ss
from ._base import BACKEND, HwDistribution, finite_positive

__all__ = ["SpikeAndSlab"]

_xp, _sp = BACKEND.xp, BACKEND.special


_log_prob = jax.jit(BACKEND.bind(ss.spike_slab_log_prob))
_inclusion_prob = jax.jit(BACKEND.bind(ss.spike_slab_inclusion_prob))
_cdf = jax.jit(BACKEND.bind(ss.spike_slab_cdf))


@jax.custom_jvp
def _icdf_implicit(u: Any, prob: Any, spike: Any, slab: Any) -> Any:
    return ss.spike_slab_icdf(u, prob, spike, slab, xp=_xp, special=_sp)


@_icdf_implicit.defjvp
def _icdf_jvp(primals: Any, tangents: Any) -> Any:
    # Implicit function theorem on F(x; θ) = u: dx = (du - Σ ∂F/∂θ dθ) / p(x).
    u, prob, spike, slab = primals
    du, dprob, dspike, dslab = tangents
    x = _icdf_implicit(u, prob, spike, slab)
    dens, fp, fs0, fs1 = ss.spike_slab_cdf_grads(
        x, prob, spike, slab, xp=_xp, special=_sp
    )
    return x, (du - fp * dprob - fs0 * dspike - fs1 * dslab) / dens


_icdf = jax.jit(_icdf_implicit)


class SpikeAndSlab(HwDistribution):
    r"""Spike-and-slab prior: a mixture of a wide and a narrow zero-mean Gaussian.

    .. math::

        p(w) = \pi\,\mathcal N(w; 0, \sigma_1^2)
            + (1 - \pi)\,\mathcal N(w; 0, \sigma_0^2), \qquad
        p^*(w) = \frac{\pi\,\mathcal N(w; 0, \sigma_1^2)}{p(w)},

    element-wise, with slab weight :math:`\pi` = ``prob``, spike scale
    :math:`\sigma_0` (< slab scale :math:`\sigma_1` by convention; Ke & Fan 2022).
    ``log_prob`` is a log-sum-exp; :meth:`inclusion_prob` is the posterior slab
    probability :math:`p^*`; ``cdf`` is the mixture of normal cdfs and ``icdf`` a
    bracketed Newton solve with an implicit derivative, so samples (by inverse
    transform) are reparameterised in all three parameters.
    Grouping of weights belongs to the EM that uses this prior, not to the prior.

    As a prior for network weights, start inference away from zero (e.g. autoguides
    with ``init_loc_fn=init_to_uniform``, NumPyro's default): started at ``w = 0``,
    every weight sits in the spike, and the network can stay there (on the digits MLP,
    Pyro's default ``init_to_feasible`` ends at 10 % accuracy, ``init_to_uniform`` at
    96 %).

    :param prob: slab weight π in [0, 1].
    :param spike_scale: σ0 > 0 (finite), the spike's standard deviation.
    :param slab_scale: σ1 > 0 (finite), the slab's standard deviation; by convention
        σ1 > σ0, but the mixture is defined for any two positive scales, and
        :meth:`inclusion_prob` is always the probability of the ``slab_scale``
        component (``arg_constraints`` are the whole truth about valid values).
    """

    arg_constraints = {
        "prob": constraints.unit_interval,
        "spike_scale": finite_positive,
        "slab_scale": finite_positive,
    }
    support = constraints.real
    reparametrized_params = ["prob", "spike_scale", "slab_scale"]

    def __init__(
        self,
        prob: Any,
        spike_scale: Any,
        slab_scale: Any,
        *,
        validate_args: bool | None = None,
    ):
        self.prob, self.spike_scale, self.slab_scale = promote_shapes(
            prob, spike_scale, slab_scale
        )
        batch_shape = lax.broadcast_shapes(
            jnp.shape(prob), jnp.shape(spike_scale), jnp.shape(slab_scale)
        )
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    def _params(self) -> tuple[Any, Any, Any]:
        return self.prob, self.spike_scale, self.slab_scale

    def sample(self, key: Any, sample_shape: tuple[int, ...] = ()) -> jnp.ndarray:
        shape = tuple(sample_shape) + self.batch_shape
        dtype = jnp.result_type(self.slab_scale, float)
        u = random.uniform(
            key, shape, dtype=dtype, minval=jnp.finfo(dtype).tiny, maxval=1.0
        )
        return self.icdf(u)

    @validate_sample
    def log_prob(self, value: Any) -> jnp.ndarray:
        return _log_prob(value, *self._params())

    def inclusion_prob(self, value: Any) -> jnp.ndarray:
        r"""Posterior probability :math:`p^*(w)` that ``value`` came from the slab."""
        return _inclusion_prob(value, *self._params())

    def cdf(self, value: Any) -> jnp.ndarray:
        return _cdf(value, *self._params())

    def icdf(self, q: Any) -> jnp.ndarray:
        args = jnp.broadcast_arrays(jnp.asarray(q), *self._params())
        return _icdf(*args)

    @property
    def mean(self) -> jnp.ndarray:
        return jnp.zeros(self.batch_shape)

    @property
    def variance(self) -> jnp.ndarray:
        v = ss.spike_slab_variance(*self._params(), xp=_xp)
        return jnp.broadcast_to(v, self.batch_shape)


@vmap_over.register
def _vmap_over_spike_and_slab(
    dist: SpikeAndSlab, prob=None, spike_scale=None, slab_scale=None
):
    axes = SpikeAndSlab.__new__(SpikeAndSlab)
    axes.__dict__.update(dist.__dict__)
    axes.prob, axes.spike_scale, axes.slab_scale = prob, spike_scale, slab_scale
    return axes
