"""Backend-neutral maths of ppl_hw, one module per concept.

Functions here take the array namespace ``xp`` (and, where needed, the
:class:`~ppl_hw.core.backend.Special` shim) as keyword arguments, receive pre-drawn
standard noise instead of drawing it, and are shared by the NumPyro and Pyro
adapters. NumPy in float64 (:data:`~ppl_hw.core.backend.NUMPY`) is the oracle.
"""

from . import backend, gaussian
from .backend import NUMPY, Backend, Special

__all__ = ["NUMPY", "Backend", "Special", "backend", "gaussian"]
