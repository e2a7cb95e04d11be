"""ppl_hw for Pyro (PyTorch): the same public names as :mod:`ppl_hw.numpyro`.

Submodules: :mod:`~ppl_hw.pyro.models` (ready-made models).
"""

from . import models

__all__ = ["models"]
