"""The JAX array namespace and special-function shim for the core."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np

from ..common.autoguide import nonfinite_guide_error
from ..core.backend import Backend, SpecialBase

__all__ = ["BACKEND", "JaxSpecial", "guard_finite"]


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


def guard_finite(guide: str, values: dict[tuple[str, str], Any]) -> None:
    """Raise :func:`~ppl_hw.common.autoguide.nonfinite_guide_error` when one of
    ``values`` (``{(site, parameter): array}``, what a guide hands its sample sites)
    is not finite: SVI stops at the first step after a NaN loss instead of training
    on NaN. Eager values are checked here; under ``jit`` one scalar (``sum(v * 0)``
    is NaN exactly when some value is not finite) drives a ``lax.cond`` whose branch
    raises from a host callback (JAX re-raises it as a ``JaxRuntimeError`` carrying
    the message), so a finite step costs one reduction per parameter."""
    keys = list(values)
    if not keys:
        return
    arrays = [jnp.asarray(values[k]) for k in keys]

    def fail(*found: Any) -> None:
        bad = [
            (site, what, int(np.sum(~np.isfinite(a))), int(np.size(a)))
            for (site, what), a in zip(keys, map(np.asarray, found), strict=True)
            if not np.isfinite(a).all()
        ]
        if bad:  # under vmap both branches of a cond run
            raise nonfinite_guide_error(guide, bad)

    if not any(isinstance(a, jax.core.Tracer) for a in arrays):
        fail(*arrays)
        return
    bad = jnp.isnan(sum(jnp.sum(a * 0) for a in arrays))
    jax.lax.cond(bad, lambda: jax.debug.callback(fail, *arrays), lambda: None)
