"""ppl_hw for Pyro (PyTorch): the same public names as :mod:`ppl_hw.numpyro`.

Submodules: :mod:`~ppl_hw.pyro.distributions` (device noise, discrete weights,
spike-and-slab) and :mod:`~ppl_hw.pyro.models` (ready-made models).
"""

from . import distributions, models

__all__ = ["distributions", "models"]
