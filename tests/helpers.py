"""Shared test helpers: run one core function on all three backends."""

from __future__ import annotations

import contextlib

import numpy as np

BACKENDS = ("numpy", "numpyro", "pyro")
# docs/architecture.md: parity between backends on the same inputs and noise.
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}


def get_backend(name):
    if name == "numpy":
        from ppl_hw.core import NUMPY

        return NUMPY
    if name == "numpyro":
        from ppl_hw.numpyro._backend import BACKEND

        return BACKEND
    if name == "pyro":
        from ppl_hw.pyro._backend import BACKEND

        return BACKEND
    raise ValueError(name)


@contextlib.contextmanager
def precision(name, dtype):
    """JAX needs x64 switched on for float64 arrays; the others need nothing."""
    if name == "numpyro" and dtype == np.float64:
        import jax

        with jax.enable_x64(True):
            yield
    else:
        yield


def to_backend(name, value, dtype):
    if np.isscalar(value) and not isinstance(value, np.ndarray):
        return value
    arr = np.asarray(value, dtype=dtype)
    if name == "numpyro":
        import jax.numpy as jnp

        return jnp.asarray(arr)
    if name == "pyro":
        import torch

        return torch.as_tensor(arr)
    return arr


def to_numpy(value):
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def call_on(name, fn, args, dtype, **kwargs):
    """``fn`` bound to backend ``name``, called on ``args`` cast to ``dtype``."""
    with precision(name, dtype):
        bound = get_backend(name).bind(fn)
        out = bound(*(to_backend(name, a, dtype) for a in args), **kwargs)
        out = to_numpy(out)
    return out
