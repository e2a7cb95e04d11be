"""ppl_hw for Pyro (PyTorch): the same public names as :mod:`ppl_hw.numpyro`.

Submodules: :mod:`~ppl_hw.pyro.distributions` (device noise, discrete weights,
spike-and-slab), :mod:`~ppl_hw.pyro.poutine` (the crossbar handler),
:mod:`~ppl_hw.pyro.nn` (crossbar-aware network primitives) and
:mod:`~ppl_hw.pyro.models` (ready-made models).
"""

from . import autoguide, distributions, infer, models, nn, poutine

__all__ = ["autoguide", "distributions", "infer", "models", "nn", "poutine"]
