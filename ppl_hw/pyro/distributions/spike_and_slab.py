"""``SpikeAndSlab``: the two-component Gaussian scale mixture prior (Pyro)."""

from __future__ import annotations

from typing import Any

import torch
from pyro.distributions import TorchDistribution, constraints

from ...core import spike_slab as ss
from ._base import BACKEND, broadcast_params, finite_positive, uniform_open

__all__ = ["SpikeAndSlab"]

_xp, _sp = BACKEND.xp, BACKEND.special


class _Icdf(torch.autograd.Function):
    """Quantile by safeguarded Newton; gradients by the implicit function theorem,
    dx = (du - Σ ∂F/∂θ dθ) / p(x)."""

    @staticmethod
    def forward(ctx: Any, u: Any, prob: Any, spike: Any, slab: Any) -> torch.Tensor:
        x = ss.spike_slab_icdf(u, prob, spike, slab, xp=_xp, special=_sp)
        ctx.save_for_backward(x, prob, spike, slab)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, prob, spike, slab = ctx.saved_tensors
        dens, fp, fs0, fs1 = ss.spike_slab_cdf_grads(
            x, prob, spike, slab, xp=_xp, special=_sp
        )
        g = grad / dens
        return g, -g * fp, -g * fs0, -g * fs1


class SpikeAndSlab(TorchDistribution):
    r"""Spike-and-slab prior: a mixture of a wide and a narrow zero-mean Gaussian.

    .. math::

        p(w) = \pi\,\mathcal N(w; 0, \sigma_1^2)
            + (1 - \pi)\,\mathcal N(w; 0, \sigma_0^2), \qquad
        p^*(w) = \frac{\pi\,\mathcal N(w; 0, \sigma_1^2)}{p(w)},

    element-wise, with slab weight :math:`\pi` = ``prob``, spike scale
    :math:`\sigma_0` (< slab scale :math:`\sigma_1` by convention; Ke & Fan 2022).
    ``log_prob`` is a log-sum-exp; :meth:`inclusion_prob` is the posterior slab
    probability :math:`p^*`; ``cdf`` is the mixture of normal cdfs and ``icdf`` a
    bracketed Newton solve with an implicit derivative, so ``rsample`` (inverse
    transform) is reparameterised in all three parameters.
    Grouping of weights belongs to the EM that uses this prior, not to the prior.

    As a prior for network weights, start inference away from zero (e.g. autoguides
    with ``init_loc_fn=init_to_uniform``): started at ``w = 0``, every weight sits in
    the spike, and the network can stay there (on the digits MLP, Pyro's default
    ``init_to_feasible`` ends at 10 % accuracy, ``init_to_uniform`` at 96 %).

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
    has_rsample = True

    def __init__(
        self,
        prob: Any,
        spike_scale: Any,
        slab_scale: Any,
        *,
        validate_args: bool | None = None,
    ):
        self.prob, self.spike_scale, self.slab_scale = broadcast_params(
            prob, spike_scale, slab_scale
        )
        super().__init__(self.prob.shape, torch.Size(), validate_args=validate_args)

    def _params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.prob, self.spike_scale, self.slab_scale

    def expand(self, batch_shape: Any, _instance: Any = None) -> SpikeAndSlab:
        new = self._get_checked_instance(SpikeAndSlab, _instance)
        batch_shape = torch.Size(batch_shape)
        new.prob = self.prob.expand(batch_shape)
        new.spike_scale = self.spike_scale.expand(batch_shape)
        new.slab_scale = self.slab_scale.expand(batch_shape)
        super(SpikeAndSlab, new).__init__(
            batch_shape, torch.Size(), validate_args=False
        )
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape: Any = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        u = uniform_open(shape, self.prob.dtype, self.prob.device)
        return self.icdf(u)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return ss.spike_slab_log_prob(value, *self._params(), xp=_xp)

    def inclusion_prob(self, value: torch.Tensor) -> torch.Tensor:
        r"""Posterior probability :math:`p^*(w)` that ``value`` came from the slab."""
        return ss.spike_slab_inclusion_prob(value, *self._params(), xp=_xp)

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return ss.spike_slab_cdf(value, *self._params(), xp=_xp, special=_sp)

    def icdf(self, value: Any) -> torch.Tensor:
        value = torch.as_tensor(value, dtype=self.prob.dtype, device=self.prob.device)
        return _Icdf.apply(*torch.broadcast_tensors(value, *self._params()))

    @property
    def mean(self) -> torch.Tensor:
        return torch.zeros_like(self.prob)

    @property
    def variance(self) -> torch.Tensor:
        return ss.spike_slab_variance(*self._params(), xp=_xp)
