"""The array namespace and ``special`` shim that core functions receive.

Every function in :mod:`ppl_hw.core` is written once against the `array API
<https://data-apis.org/array-api/latest/>`_ namespace ``xp`` it is given (``numpy``
through :mod:`array_api_compat`, :mod:`jax.numpy`, or ``torch`` through
:mod:`array_api_compat`) and, where it needs more than the array API offers, a small
:class:`Special` shim. The backend adapters (:mod:`ppl_hw.numpyro`, :mod:`ppl_hw.pyro`)
supply their own ``xp`` and ``special``; the NumPy pair defined here is the float64
oracle the tests compare both adapters against.

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

__all__ = ["NUMPY", "Backend", "NumpySpecial", "Special", "SpecialBase"]


class Special(Protocol):
    """What a backend supplies to the core beyond the array API (element-wise unless
    noted)."""

    def erf(self, x: Any) -> Any:
        """Error function."""

    def ndtr(self, x: Any) -> Any:
        """Standard normal cdf Φ(x), with the lower tail accurate in relative terms."""

    def ndtri(self, p: Any) -> Any:
        """Inverse of the standard normal cdf, Φ⁻¹(p)."""

    def log_ndtr(self, x: Any) -> Any:
        """log Φ(x), accurate in both tails."""

    def logsumexp(self, x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        """log Σ exp(x) along ``axis``, without overflow."""

    def take(self, table: Any, index: Any) -> Any:
        """``table[index]`` for a 1-D ``table`` and an array of integral indices
        (of any float or integer dtype, any shape)."""

    def searchsorted(self, sorted_table: Any, values: Any) -> Any:
        """Indices ``i`` with ``sorted_table[i-1] <= v < sorted_table[i]`` (NumPy's
        ``side="right"``), for a 1-D ascending ``sorted_table``."""

    def interp_uniform(self, x: Any, x0: float, dx: float, fp: Any) -> Any:
        """Piecewise-linear interpolation of the knots ``(x0 + k dx, fp[k])``.

        ``x`` is clamped to ``[x0, x0 + (len(fp) - 1) dx]``; the knot is found by
        direct indexing (no search), so the cost is O(1) per value.
        """

    def fori_loop(self, n: int, body: Callable[[int, Any], Any], init: Any) -> Any:
        """``for i in range(n): carry = body(i, carry)`` (``lax.fori_loop`` on JAX)."""

    def stop_gradient(self, x: Any) -> Any:
        """``x``, with no gradient flowing through it (identity on NumPy)."""


def uniform_cell(xp: Any, x: Any, x0: float, dx: float, n: int) -> tuple[Any, Any, Any]:
    """For knots ``x0 + k dx`` (``k < n``): the index ``k`` (as float) of the cell that
    holds ``x``, the fraction ``t`` in [0, 1] into it, and ``x`` clamped to the grid
    (clamping first keeps ``(x - x0) / dx`` finite for huge finite ``x``)."""
    xc = xp.clip(x, x0, x0 + (n - 1) * dx)
    t = (xc - x0) * (1.0 / dx)
    k = xp.minimum(xp.floor(t), float(n - 2))
    return k, t - k, xc


class SpecialBase:
    """The backend-independent parts of a :class:`Special` shim.

    Subclasses set ``xp`` and define the element-wise special functions and
    :meth:`take`.
    """

    xp: Any

    def take(self, table: Any, index: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def interp_uniform(self, x: Any, x0: float, dx: float, fp: Any) -> Any:
        k, frac, _ = uniform_cell(self.xp, x, x0, dx, fp.shape[-1])
        lo = self.take(fp, k)
        return lo + (self.take(fp, k + 1.0) - lo) * frac

    def fori_loop(self, n: int, body: Callable[[int, Any], Any], init: Any) -> Any:
        carry = init
        for i in range(n):
            carry = body(i, carry)
        return carry


class NumpySpecial(SpecialBase):
    """The :class:`Special` shim for NumPy arrays (SciPy's special functions)."""

    xp = np_xp
    erf = staticmethod(sps.erf)
    ndtr = staticmethod(sps.ndtr)
    ndtri = staticmethod(sps.ndtri)
    log_ndtr = staticmethod(sps.log_ndtr)

    @staticmethod
    def logsumexp(x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        return sps.logsumexp(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def take(table: Any, index: Any) -> Any:
        return np.asarray(table)[np.asarray(index).astype(np.intp)]

    @staticmethod
    def searchsorted(sorted_table: Any, values: Any) -> Any:
        return np.searchsorted(sorted_table, values, side="right")

    @staticmethod
    def stop_gradient(x: Any) -> Any:
        return x


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
