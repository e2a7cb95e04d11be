"""ppl_hw for NumPyro (JAX).

Submodules: :mod:`~ppl_hw.numpyro.models` (ready-made models).
"""

from . import models

__all__ = ["models"]
