"""The JAX array namespace and special-function shim for the core."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import jax.scipy.special as jsp

from ..core.backend import Backend, _uniform_knot

__all__ = ["BACKEND", "JaxSpecial"]


class JaxSpecial:
    """:class:`~ppl_hw.core.backend.Special` for JAX arrays (``jax.scipy.special``)."""

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
    def interp_uniform(x: Any, x0: float, dx: float, fp: Any) -> Any:
        k, frac = _uniform_knot(jnp, x, x0, dx, fp.shape[-1])
        i = k.astype(jnp.int32)
        lo = fp[i]
        return lo + (fp[i + 1] - lo) * frac


BACKEND = Backend("numpyro", jnp, JaxSpecial())
