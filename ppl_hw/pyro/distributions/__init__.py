"""ppl_hw's distributions for Pyro (the same names exist in
:mod:`ppl_hw.numpyro.distributions`).

=========================================  ===========================================
:class:`EmpiricalNoise`                    a measured noise shape (mean 0, variance 1)
:class:`DeviceNoise`                       ``loc + scale * e``, ``e ~ EmpiricalNoise``
:class:`DiscreteWeight`                    a categorical over a fixed real value grid
:class:`SpikeAndSlab`                      the spike-and-slab mixture prior
=========================================  ===========================================

Closed-form KL divergences ``DeviceNoise → Normal`` and
``DiscreteWeight → DiscreteWeight`` are registered with
:func:`torch.distributions.register_kl` on import.
"""

from .device_noise import DeviceNoise
from .discrete_weight import DiscreteWeight, FiniteSet
from .empirical_noise import EmpiricalNoise
from .spike_and_slab import SpikeAndSlab

__all__ = [
    "DeviceNoise",
    "DiscreteWeight",
    "EmpiricalNoise",
    "FiniteSet",
    "SpikeAndSlab",
]
