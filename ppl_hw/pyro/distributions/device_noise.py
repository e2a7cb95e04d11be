"""``DeviceNoise``: a location-scale family on a measured noise shape (Pyro)."""

from __future__ import annotations

from typing import Any

import torch
from pyro.distributions import TorchDistribution, constraints
from torch.distributions import Normal, register_kl

from ...core.gaussian import kl_location_scale_normal
from ._base import (
    BACKEND,
    broadcast_params,
    finite_positive,
    finite_real,
    uniform_open,
)
from .empirical_noise import EmpiricalNoise

__all__ = ["DeviceNoise"]

_xp = BACKEND.xp


class DeviceNoise(TorchDistribution):
    r"""``w = loc + scale * e`` with ``e`` drawn from a device's noise shape.

    .. math::

        \log q(w) = \log g\!\left(\frac{w - \mu}{\sigma}\right) - \log\sigma, \qquad
        \mathbb E[w] = \mu,\quad \mathrm{Var}[w] = \sigma^2,\quad
        H[q] = H_0 + \log\sigma,

    where ``g`` is the standardised density of ``noise``
    (:class:`~ppl_hw.pyro.distributions.EmpiricalNoise`, mean 0, variance 1,
    entropy :math:`H_0`). ``rsample`` is reparameterised in ``loc`` and ``scale``,
    and the KL divergence to a ``Normal`` has the closed form of
    :func:`~ppl_hw.core.gaussian.kl_location_scale_normal`, registered with
    ``torch.distributions.register_kl`` (so ``TraceMeanField_ELBO`` uses it; ``expand``
    returns a ``DeviceNoise``, so expanded guides keep it). This is the mean-field
    family of Patel et al. (2025): train means and variances, keep the device's shape.

    :param loc: location μ (the weight mean).
    :param scale: scale σ > 0, finite (the weight standard deviation).
    :param noise: the noise shape, an ``EmpiricalNoise``.
    """

    arg_constraints = {"loc": finite_real, "scale": finite_positive}
    support = constraints.real
    has_rsample = True

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
                "noise must be a ppl_hw.pyro.distributions.EmpiricalNoise, "
                f"got {type(noise).__name__}"
            )
        if noise.batch_shape:
            raise ValueError(
                f"noise must have batch_shape (), got {tuple(noise.batch_shape)}"
            )
        self.loc, self.scale = broadcast_params(loc, scale)
        self.noise = noise
        super().__init__(self.loc.shape, torch.Size(), validate_args=validate_args)

    @classmethod
    def infer_shapes(
        cls, loc: Any = (), scale: Any = (), noise: Any = ()
    ) -> tuple[torch.Size, torch.Size]:
        """``loc`` and ``scale`` broadcast; ``noise`` (a distribution) adds nothing."""
        return torch.broadcast_shapes(tuple(loc), tuple(scale)), torch.Size()

    def expand(self, batch_shape: Any, _instance: Any = None) -> DeviceNoise:
        new = self._get_checked_instance(DeviceNoise, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        new.scale = self.scale.expand(batch_shape)
        new.noise = self.noise
        super(DeviceNoise, new).__init__(batch_shape, torch.Size(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape: Any = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        u = uniform_open(shape, self.loc.dtype, self.loc.device)
        return self.loc + self.scale * self.noise.icdf(u)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return self.noise.log_prob((value - self.loc) / self.scale) - self.scale.log()

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return self.noise.cdf((value - self.loc) / self.scale)

    def icdf(self, value: torch.Tensor) -> torch.Tensor:
        return self.loc + self.scale * self.noise.icdf(value)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        return self.scale.pow(2)

    def entropy(self) -> torch.Tensor:
        return self.noise.table.entropy + self.scale.log()

    def with_noise(self, noise: EmpiricalNoise) -> DeviceNoise:
        """The same means and scales on another noise shape."""
        return DeviceNoise(
            self.loc, self.scale, noise, validate_args=self._validate_args
        )


@register_kl(DeviceNoise, Normal)
def _kl_device_noise_normal(p: DeviceNoise, q: Normal) -> torch.Tensor:
    return kl_location_scale_normal(
        p.loc, p.scale, p.noise.table.entropy, q.loc, q.scale, xp=_xp
    )
