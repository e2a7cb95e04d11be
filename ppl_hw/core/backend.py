"""The array namespace and ``special`` shim that core functions receive.

Every function in :mod:`ppl_hw.core` is written once against the `array API
<https://data-apis.org/array-api/latest/>`_ namespace ``xp`` it is given (``numpy``
through :mod:`array_api_compat`, :mod:`jax.numpy`, or ``torch`` through
:mod:`array_api_compat`) and, where it needs special functions, a small
:class:`Special` shim. The backend adapters (:mod:`ppl_hw.numpyro`,
:mod:`ppl_hw.pyro`) supply their own ``xp`` and ``special``; the NumPy pair defined
here is the float64 oracle the tests compare both adapters against.

Core functions never draw random numbers: they receive pre-drawn standard noise, so
the same noise can be pushed through all three backends and the results compared.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import array_api_compat.numpy as np_xp
import numpy as np
import scipy.special as sps

__all__ = ["NUMPY", "Backend", "NumpySpecial", "Special"]


class Special(Protocol):
    """Special functions a backend supplies to the core (element-wise unless noted)."""

    def erf(self, x: Any) -> Any:
        """Error function."""

    def ndtr(self, x: Any) -> Any:
        """Standard normal cdf Φ(x)."""

    def ndtri(self, p: Any) -> Any:
        """Inverse of the standard normal cdf, Φ⁻¹(p)."""

    def log_ndtr(self, x: Any) -> Any:
        """log Φ(x), accurate in the lower tail."""

    def logsumexp(self, x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        """log Σ exp(x) along ``axis``, without overflow."""

    def interp_uniform(self, x: Any, x0: float, dx: float, fp: Any) -> Any:
        """Piecewise-linear interpolation of the knots ``(x0 + k dx, fp[k])``.

        ``x`` is clamped to ``[x0, x0 + (len(fp) - 1) dx]``; the knot is found by
        direct indexing (no search), so the cost is O(1) per value.
        """


def _uniform_knot(xp: Any, x: Any, x0: float, dx: float, n: int) -> tuple[Any, Any]:
    """Index of the knot left of ``x`` (as float) and the fraction into its cell."""
    t = xp.clip((x - x0) / dx, 0.0, float(n - 1))
    k = xp.clip(xp.floor(t), 0.0, float(n - 2))
    return k, t - k


class NumpySpecial:
    """The :class:`Special` shim for NumPy arrays (SciPy's special functions)."""

    erf = staticmethod(sps.erf)
    ndtr = staticmethod(sps.ndtr)
    ndtri = staticmethod(sps.ndtri)
    log_ndtr = staticmethod(sps.log_ndtr)

    @staticmethod
    def logsumexp(x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        return sps.logsumexp(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def interp_uniform(x: Any, x0: float, dx: float, fp: Any) -> Any:
        fp = np.asarray(fp)
        k, frac = _uniform_knot(np_xp, np.asarray(x), x0, dx, fp.shape[-1])
        i = k.astype(np.intp)
        return fp[i] + (fp[i + 1] - fp[i]) * frac


@dataclass(frozen=True)
class Backend:
    """An array namespace with its special-function shim.

    :param name: ``"numpy"``, ``"numpyro"`` or ``"pyro"``.
    :param xp: the array-API namespace.
    :param special: the :class:`Special` shim for that namespace.
    """

    name: str
    xp: Any
    special: Special

    def bind(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` with this backend's ``xp`` (and ``special``, if it takes one) bound.

        >>> from ppl_hw.core import gaussian
        >>> kl = NUMPY.bind(gaussian.kl_normal_normal)
        >>> float(kl(0.0, 1.0, 0.0, 1.0))
        0.0
        """
        params = inspect.signature(fn).parameters
        bound = {"xp": self.xp}
        if "special" in params:
            bound["special"] = self.special
        return functools.wraps(fn)(functools.partial(fn, **bound))


NUMPY = Backend("numpy", np_xp, NumpySpecial())
"""The NumPy backend: the float64 oracle for both adapters."""
