"""Network primitives that know about the crossbar (NumPyro / JAX).

Outside a :class:`~ppl_hw.numpyro.handlers.crossbar` handler they compute exactly
(``x @ w + b``, ``lax.conv_general_dilated``); inside one whose device has converter
effects, every matrix-vector product goes through the tile periphery of
:func:`ppl_hw.core.crossbar.analog_matvec` (DAC, IR drop, output noise, ADC).
Layouts follow PyTorch on both backends: dense weights ``(in, out)``, images
``NCHW``, kernels ``OIHW``.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax import lax

from .._nn_common import conv_geometry
from ..core import nn as _core
from ._backend import BACKEND
from .handlers import active_crossbar

__all__ = ["binary_dense", "conv2d", "dense", "sign"]


def dense(x: Any, w: Any, b: Any = None) -> jnp.ndarray:
    """``x @ w + b``; through the crossbar's converters inside the handler.

    :param x: inputs, shape ``(..., in)``.
    :param w: weights, shape ``(in, out)``.
    :param b: optional bias, shape ``(out,)`` (added digitally).
    """
    cb = active_crossbar()
    if cb is not None and cb.device.converter_effects_on:
        y = cb.matvec(x, w)
    else:
        y = x @ w
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
    """
    strides, pads = conv_geometry(stride, padding)
    dims = ("NCHW", "OIHW", "NCHW")
    cb = active_crossbar()
    if cb is not None and cb.device.converter_effects_on:
        o, c, kh, kw = w.shape
        patches = lax.conv_general_dilated_patches(
            x, (kh, kw), strides, [(p, p) for p in pads], dimension_numbers=dims
        )  # (N, C*kh*kw, OH, OW), features ordered (C, kh, kw)
        cols = jnp.moveaxis(patches, 1, -1)
        y = cb.matvec(cols, w.reshape(o, c * kh * kw).T)
        y = jnp.moveaxis(y, -1, 1)
    else:
        y = lax.conv_general_dilated(
            x, w, strides, [(p, p) for p in pads], dimension_numbers=dims
        )
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def sign(x: Any) -> jnp.ndarray:
    """``sign(x)`` in {-1, +1} with the clipped straight-through gradient
    (:func:`ppl_hw.core.nn.sign_ste`)."""
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
    y = dense(x, sign(w)) * scale
    return y if b is None else y + b
