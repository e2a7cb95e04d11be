"""The common layer of MIRACLE coding (:mod:`ppl_hw.coding`): the registries the
adapters fill (``numpyro/coding.py``, ``pyro/coding.py``) and the checks and messages
both share."""

from __future__ import annotations

from typing import Any

from ..core.checks import check_int
from .registry import Registry

__all__ = [
    "ARRAYS",
    "GAUSSIANS",
    "check_bits_per_block",
    "check_real_site",
    "not_gaussian",
    "not_run_yet",
]

#: guide class -> ``gaussians(guide, params)``, which returns
#: ``({site: (mu, sigma)}, {site: (nu, rho)})`` as float64 NumPy arrays: the
#: posterior and the Normal prior of every coded site
GAUSSIANS = Registry("reader of a guide's Gaussians")
#: backend name -> ``to_array(numpy_array)`` (the host's array type)
ARRAYS = Registry("array converter")


def check_bits_per_block(bits_per_block: Any) -> int:
    """The coder's range: an int in 1..24 (a file may claim no more either: 2**24 is
    the spacing of the blocks' candidate streams, ``GENERATOR_VERSION`` in
    :mod:`ppl_hw.core.coding`)."""
    bits = check_int("bits_per_block", bits_per_block)
    if not 1 <= bits <= 24:
        raise ValueError(f"bits_per_block must be in 1..24, got {bits}")
    return bits


def not_gaussian(guide: Any) -> TypeError:
    """The error for a guide that has no Gaussian posterior to code."""
    return TypeError(
        "encode needs an AutoMeanKL or AutoNormal guide (NumPyro or Pyro), got "
        f"{type(guide).__name__}"
    )


def check_real_site(name: str, fn: Any, is_real: bool) -> None:
    """Refuse a site that is not real-valued: MIRACLE codes real sites only."""
    if not is_real:
        raise ValueError(
            f"site {name!r} is not real-valued ({type(fn).__name__}): MIRACLE codes "
            "real sites against Normal priors"
        )


def not_run_yet(what: str) -> ValueError:
    """The error for a guide that has not been run (it has no sites yet)."""
    return ValueError(f"the {what} guide has not been run yet (train it first)")
