"""The JAX array namespace and special-function shim for the core."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp

from ..core.backend import Backend, SpecialBase

__all__ = ["BACKEND", "JaxSpecial"]


class JaxSpecial(SpecialBase):
    """:class:`~ppl_hw.core.backend.Special` for JAX arrays (``jax.scipy.special``)."""

    xp = jnp
    erf = staticmethod(jsp.erf)
    ndtr = staticmethod(jsp.ndtr)
    ndtri = staticmethod(jsp.ndtri)

    @staticmethod
    def log_ndtr(x: Any) -> Any:
        # jax.scipy's log_ndtr takes log(ndtr(x)) up to x = 8 and loses relative
        # precision in the upper tail (7 % at x = 8 in float64); log1p(-ndtr(-x)) is
        # accurate there, and both branches are finite, so gradients stay clean.
        upper = jnp.log1p(-jsp.ndtr(-jnp.abs(x)))
        return jnp.where(x > 0, upper, jsp.log_ndtr(x))

    @staticmethod
    def logsumexp(x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        return jsp.logsumexp(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def take(table: Any, index: Any) -> Any:
        return table[jnp.asarray(index).astype(jnp.int32)]

    @staticmethod
    def searchsorted(sorted_table: Any, values: Any) -> Any:
        return jnp.searchsorted(sorted_table, values, side="right")

    stop_gradient = staticmethod(jax.lax.stop_gradient)

    @staticmethod
    def fori_loop(n: int, body: Callable[[int, Any], Any], init: Any) -> Any:
        return jax.lax.fori_loop(0, n, body, init)


BACKEND = Backend("numpyro", jnp, JaxSpecial())
