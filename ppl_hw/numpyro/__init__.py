"""ppl_hw for NumPyro (JAX).

Submodules: :mod:`~ppl_hw.numpyro.distributions` (device noise, discrete weights,
spike-and-slab), :mod:`~ppl_hw.numpyro.handlers` (the crossbar handler),
:mod:`~ppl_hw.numpyro.nn` (crossbar-aware network primitives) and
:mod:`~ppl_hw.numpyro.models` (ready-made models).
"""

from . import autoguide, distributions, handlers, infer, models, nn

__all__ = ["autoguide", "distributions", "handlers", "infer", "models", "nn"]
