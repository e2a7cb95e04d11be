"""ppl_hw for NumPyro (JAX).

Submodules: :mod:`~ppl_hw.numpyro.distributions` (device noise, discrete weights,
spike-and-slab) and :mod:`~ppl_hw.numpyro.models` (ready-made models).
"""

from . import distributions, models

__all__ = ["distributions", "models"]
