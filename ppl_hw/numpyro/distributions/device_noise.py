"""``DeviceNoise``: a location-scale family on a measured noise shape (NumPyro)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax import lax
from numpyro.distributions import Normal, constraints
from numpyro.distributions.batch_util import vmap_over
from numpyro.distributions.kl import kl_divergence
from numpyro.distributions.util import promote_shapes, validate_sample

from ...core.gaussian import kl_location_scale_normal
from ._base import HwDistribution, finite_positive
from .empirical_noise import EmpiricalNoise

__all__ = ["DeviceNoise"]


class DeviceNoise(HwDistribution):
    r"""``w = loc + scale * e`` with ``e`` drawn from a device's noise shape.

    .. math::

        \log q(w) = \log g\!\left(\frac{w - \mu}{\sigma}\right) - \log\sigma, \qquad
        \mathbb E[w] = \mu,\quad \mathrm{Var}[w] = \sigma^2,\quad
        H[q] = H_0 + \log\sigma,

    where ``g`` is the standardised density of ``noise``
    (:class:`~ppl_hw.numpyro.distributions.EmpiricalNoise`, mean 0, variance 1,
    entropy :math:`H_0`). Samples are reparameterised in ``loc`` and ``scale``
    (inverse-transform draws of ``e``), and the KL divergence to a ``Normal`` has the
    closed form of :func:`~ppl_hw.core.gaussian.kl_location_scale_normal`, registered
    with NumPyro's ``kl_divergence`` (so ``TraceMeanField_ELBO`` uses it). This is the
    mean-field family of Patel et al. (2025): train means and variances, keep the
    device's shape.

    :param loc: location μ (the weight mean).
    :param scale: scale σ > 0, finite (the weight standard deviation).
    :param noise: the noise shape, an ``EmpiricalNoise``.
    """

    arg_constraints = {"loc": constraints.real, "scale": finite_positive}
    support = constraints.real
    reparametrized_params = ["loc", "scale"]
    pytree_data_fields = ("loc", "scale", "noise")

    def __init__(
        self,
        loc: Any,
        scale: Any,
        noise: EmpiricalNoise,
        *,
        validate_args: bool | None = None,
    ):
        if not isinstance(noise, EmpiricalNoise):
            raise TypeError(
                "noise must be a ppl_hw.numpyro.distributions.EmpiricalNoise, "
                f"got {type(noise).__name__}"
            )
        if noise.batch_shape:
            raise ValueError(f"noise must have batch_shape (), got {noise.batch_shape}")
        self.loc, self.scale = promote_shapes(loc, scale)
        self.noise = noise
        batch_shape = lax.broadcast_shapes(jnp.shape(loc), jnp.shape(scale))
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    @classmethod
    def infer_shapes(
        cls, loc: tuple[int, ...] = (), scale: tuple[int, ...] = (), noise: Any = ()
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return lax.broadcast_shapes(tuple(loc), tuple(scale)), ()

    def sample(self, key: Any, sample_shape: tuple[int, ...] = ()) -> jnp.ndarray:
        e = self.noise.sample(key, tuple(sample_shape) + self.batch_shape)
        return self.loc + self.scale * e

    @validate_sample
    def log_prob(self, value: Any) -> jnp.ndarray:
        return self.noise.log_prob((value - self.loc) / self.scale) - jnp.log(
            self.scale
        )

    def cdf(self, value: Any) -> jnp.ndarray:
        return self.noise.cdf((value - self.loc) / self.scale)

    def icdf(self, q: Any) -> jnp.ndarray:
        return self.loc + self.scale * self.noise.icdf(q)

    @property
    def mean(self) -> jnp.ndarray:
        return jnp.broadcast_to(self.loc, self.batch_shape)

    @property
    def variance(self) -> jnp.ndarray:
        return jnp.broadcast_to(self.scale**2, self.batch_shape)

    def entropy(self) -> jnp.ndarray:
        return jnp.broadcast_to(
            self.noise.table.entropy + jnp.log(self.scale), self.batch_shape
        )

    def with_noise(self, noise: EmpiricalNoise) -> DeviceNoise:
        """The same means and scales on another noise shape."""
        return DeviceNoise(
            self.loc, self.scale, noise, validate_args=self._validate_args
        )


@vmap_over.register
def _vmap_over_device_noise(dist: DeviceNoise, loc=None, scale=None) -> DeviceNoise:
    axes = DeviceNoise.__new__(DeviceNoise)
    axes.__dict__.update(dist.__dict__)
    axes.loc = loc
    axes.scale = scale
    axes.noise = None
    return axes


@kl_divergence.register(DeviceNoise, Normal)
def _kl_device_noise_normal(p: DeviceNoise, q: Normal) -> jnp.ndarray:
    kl = kl_location_scale_normal(
        p.loc, p.scale, p.noise.table.entropy, q.loc, q.scale, xp=jnp
    )
    return jnp.broadcast_to(kl, lax.broadcast_shapes(p.batch_shape, q.batch_shape))
