"""ppl_hw for NumPyro (JAX).

Submodules: :mod:`~ppl_hw.numpyro.distributions` (device noise, discrete weights,
spike-and-slab), :mod:`~ppl_hw.numpyro.handlers` (the crossbar handler),
:mod:`~ppl_hw.numpyro.nn` (crossbar-aware network primitives) and
:mod:`~ppl_hw.numpyro.models` (ready-made models).
"""

# arviz and coding register this adapter with ppl_hw.arviz and ppl_hw.coding
from . import arviz, autoguide, coding, distributions, handlers, infer, models, nn  # noqa: F401

__all__ = ["autoguide", "distributions", "handlers", "infer", "models", "nn"]
