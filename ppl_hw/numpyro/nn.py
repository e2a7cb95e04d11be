"""Network primitives that know about the crossbar (NumPyro / JAX).

Outside a :class:`~ppl_hw.numpyro.handlers.crossbar` handler they compute exactly
(``x @ w + b``, ``lax.conv_general_dilated``); inside one, a product whose weights
the handler programmed goes through the tiles and periphery of the site's device
(:func:`ppl_hw.core.crossbar.analog_matvec`: DAC, IR drop, output noise, ADC).
Layouts follow PyTorch on both backends: dense weights ``(in, out)``, images
``NCHW``, kernels ``OIHW``.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax import lax
from numpyro.primitives import _PYRO_STACK, Messenger

from ..common import nn as nc
from ..common.handlers import innermost
from ..common.nn import conv_geometry
from ..core import nn as _core
from ..core import pfp as _pfp
from ._backend import BACKEND
from ._intercept import route_conv
from .handlers import active_crossbar

__all__ = [
    "Moments",
    "TaylorOutput",
    "avg_pool",
    "batch_norm",
    "binary_dense",
    "conv2d",
    "dense",
    "dropout",
    "flatten",
    "max_pool",
    "sample_logits",
    "sign",
]


class Moments(_pfp.Moments):
    """Gaussian activations ``(mean, var)`` for the probabilistic forward pass: the
    :class:`ppl_hw.core.pfp.Moments` of this backend (same fields and arithmetic).
    Build inputs with it; the primitives return the base class, so test outputs with
    ``isinstance(x, ppl_hw.core.pfp.Moments)``."""

    __slots__ = ()


def dense(x: Any, w: Any, b: Any = None) -> jnp.ndarray:
    """``x @ w + b``; through the crossbar's converters inside the handler. Given
    :class:`Moments` for any argument (e.g. the mean and variance of discrete
    weights), returns the PFP moments of the output (:mod:`ppl_hw.core.pfp`).

    :param x: inputs, shape ``(..., in)``.
    :param w: weights, shape ``(in, out)``.
    :param b: optional bias, shape ``(out,)`` (added digitally).
    """
    if nc.is_moments(x, w, b):
        if active_crossbar() is not None:
            nc.no_pfp_rule("dense under the crossbar handler", x, w, b)
        return nc.linear_pfp(x, w, b, jnp.matmul, lambda a: a, jnp)
    return _dense(x, w, b, w)


def _dense(x: Any, w: Any, b: Any, programmed: Any) -> Any:
    """``x @ w + b``, routed when ``programmed`` (``w`` itself, or the weights
    ``w`` was computed from) is a weight the active handler programmed."""
    cb = active_crossbar()
    entry = None if cb is None else cb.chip_weight(programmed)
    y = x @ w if entry is None else cb.route(x, w, entry, "io")
    return y if b is None else y + b


def conv2d(
    x: Any, w: Any, b: Any = None, *, stride: Any = 1, padding: Any = 0
) -> jnp.ndarray:
    """2-D convolution (cross-correlation, as in PyTorch); through the crossbar's
    converters inside the handler (each input patch is one matrix-vector product).

    :param x: images, shape ``(N, C, H, W)``.
    :param w: kernels, shape ``(O, C, kh, kw)``.
    :param b: optional bias, shape ``(O,)``.
    :param stride: an int or ``(sh, sw)``.
    :param padding: an int or ``(ph, pw)`` of zeros on each side.

    Given :class:`Moments`, returns the PFP moments of the output.
    """
    strides, pads = conv_geometry(stride, padding)
    dims = ("NCHW", "OIHW", "NCHW")
    if nc.is_moments(x, w, b):
        if active_crossbar() is not None:
            nc.no_pfp_rule("conv2d under the crossbar handler", x, w, b)

        def op(a: Any, k: Any) -> Any:
            return lax.conv_general_dilated(
                a, k, strides, [(p, p) for p in pads], dimension_numbers=dims
            )

        return nc.linear_pfp(x, w, b, op, lambda a: a.reshape(1, -1, 1, 1), jnp)
    cb = active_crossbar()
    entry = None if cb is None else cb.chip_weight(w)
    if entry is not None:
        y = route_conv(
            cb,
            entry,
            x,
            w,
            "oi",
            strides=strides,
            padding=[(p, p) for p in pads],
            channels_last=False,
        )
    else:
        y = lax.conv_general_dilated(
            x, w, strides, [(p, p) for p in pads], dimension_numbers=dims
        )
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def sign(x: Any) -> Any:
    """``sign(x)`` in {-1, +1} with the clipped straight-through gradient
    (:func:`ppl_hw.core.nn.sign_ste`); on :class:`Moments` the exact moments of the
    sign of a Gaussian."""
    if nc.is_moments(x):
        return _pfp.sign_moments(x, xp=jnp, special=BACKEND.special)
    return _core.sign_ste(jnp.asarray(x), xp=BACKEND.xp, special=BACKEND.special)


def binary_dense(x: Any, w: Any, scale: Any, b: Any = None) -> jnp.ndarray:
    r"""Binary dense layer :math:`\alpha \odot (x\,\mathrm{sign}(W)) + b`: the weights
    are binarised with the straight-through :func:`sign`, the per-output-channel scale
    ``scale`` (the vector scale dropout drops) is applied after the product; through
    the crossbar's converters inside the handler.

    :param x: inputs, shape ``(..., in)`` (binary or real).
    :param w: real weights, shape ``(in, out)``; only their signs are used.
    :param scale: per-output scale :math:`\alpha`, shape ``(out,)`` (or broadcastable).
    :param b: optional bias, shape ``(out,)``.
    """
    nc.no_pfp_rule("binary_dense", x, w, scale, b)
    y = _dense(x, sign(w), None, w) * scale
    return y if b is None else y + b


def batch_norm(x: Any, gamma: Any = 1.0, beta: Any = 0.0, *, eps: float = 1e-5) -> Any:
    """Batch normalisation over axis 0 with the batch's own statistics (variance
    with ``n - 1``); on :class:`Moments` the activations' variances count in the batch
    variance (:func:`ppl_hw.core.pfp.batch_norm_moments`).

    :param x: activations ``(N, ...)`` or Moments.
    :param gamma: scale, broadcastable to one sample.
    :param beta: shift, broadcastable to one sample.
    :param eps: added to the batch variance.
    """
    return nc.batch_norm(x, gamma, beta, eps, jnp)


def max_pool(x: Any, *, binary: bool = False) -> Any:
    """2×2 max pooling, stride 2, of ``NCHW`` images; on :class:`Moments` Clark's
    Gaussian rule, or the exact rule for ±1 activations with ``binary=True`` (after
    :func:`sign`)."""
    return nc.max_pool(x, binary, jnp, BACKEND.special)


def avg_pool(x: Any, k: int = 2) -> Any:
    """k×k average pooling, stride k, of ``NCHW`` images or their Moments."""
    return nc.avg_pool(x, k, jnp)


def dropout(x: Any, p: float, *, rng_key: Any = None) -> Any:
    """Inverted dropout: each unit kept with probability ``1 - p`` and scaled by
    ``1/(1 - p)``; the same mask multiplies both :class:`Moments`. The key is
    ``rng_key`` or, inside a ``seed`` handler, ``numpyro.prng_key()``; ``p = 0`` is
    the identity.

    :param x: activations or Moments.
    :param p: drop probability in [0, 1).
    :param rng_key: a JAX key (optional).
    """
    import numpyro

    p = nc.check_dropout(p)
    if p == 0:
        return x
    key = rng_key
    if key is None:
        import warnings

        with warnings.catch_warnings():  # outside a seed handler: our error below
            warnings.simplefilter("ignore", UserWarning)
            key = numpyro.prng_key()
    if key is None:
        raise ValueError(
            "dropout needs a random key: pass rng_key= or run inside numpyro's "
            "seed handler"
        )
    shape = (x.mean if nc.is_moments(x) else jnp.asarray(x)).shape
    from jax import random

    keep = random.bernoulli(key, 1.0 - p, shape).astype(jnp.result_type(float))
    return nc.apply_dropout(x, keep, p)


def flatten(x: Any) -> Any:
    """Reshape to ``(N, -1)``; Moments reshape both fields."""
    return nc.flatten(x, jnp)


def sample_logits(x: Any, *, rng_key: Any = None) -> Any:
    """The network's output as logits: arrays pass through; :class:`Moments` are
    sampled once, ``mean + sqrt(var) * eps`` (the local reparameterisation of
    ``PFP_ELBO``), with ``rng_key`` or ``numpyro.prng_key()``; under
    ``PFP_ELBO(output="taylor")`` the mean logits are returned and the variances
    enter the ELBO's second-order term."""
    if not nc.is_moments(x):
        return x
    recorder = TaylorOutput.active()  # PFP_ELBO(output="taylor") takes the moments
    if recorder is not None:
        recorder.moments.append(x)
        return x.mean
    import numpyro
    from jax import random

    key = rng_key if rng_key is not None else numpyro.prng_key()
    if key is None:
        raise ValueError(
            "sample_logits needs a random key (rng_key= or a seed handler)"
        )
    eps = random.normal(key, jnp.shape(x.mean), jnp.result_type(x.mean))
    return x.mean + jnp.sqrt(x.var) * eps


class TaylorOutput(Messenger):
    """While active (``with TaylorOutput() as rec:``, on the host's handler stack),
    :func:`sample_logits` returns the mean logits and appends its :class:`Moments` to
    ``rec.moments``: how ``PFP_ELBO(output="taylor")`` receives the output moments for
    its second-order term (no module-level state)."""

    def __init__(self) -> None:
        super().__init__()
        self.moments: list = []

    @staticmethod
    def active() -> TaylorOutput | None:
        """The innermost active recorder, if any."""
        return innermost(_PYRO_STACK, TaylorOutput)
