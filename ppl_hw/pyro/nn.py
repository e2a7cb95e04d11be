"""Network primitives that know about the crossbar (Pyro / PyTorch).

Outside a :func:`~ppl_hw.pyro.handlers.crossbar` handler they compute exactly
(``x @ w + b``, ``torch.nn.functional.conv2d``); inside one, a product whose weights
the handler programmed goes through the tiles and periphery of the site's device
(:func:`ppl_hw.core.crossbar.analog_matvec`: DAC, IR drop, output noise, ADC). The
same names and layouts as :mod:`ppl_hw.numpyro.nn`: dense weights ``(in, out)``,
images ``NCHW``, kernels ``OIHW``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import _PYRO_STACK

from ..common import nn as nc
from ..common.handlers import innermost
from ..common.nn import conv_geometry
from ..core import nn as _core
from ..core import pfp as _pfp
from ._backend import BACKEND
from ._intercept import conv2d_routed
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

_xp = BACKEND.xp


class Moments(_pfp.Moments):
    """Gaussian activations ``(mean, var)`` for the probabilistic forward pass: the
    :class:`ppl_hw.core.pfp.Moments` of this backend (same fields and arithmetic).
    Build inputs with it; the primitives return the base class, so test outputs with
    ``isinstance(x, ppl_hw.core.pfp.Moments)``."""

    __slots__ = ()


def dense(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None
) -> torch.Tensor:
    """``x @ w + b``; through the crossbar's converters inside the handler; PFP
    moments of the output when any argument is :class:`Moments` (see
    :func:`ppl_hw.numpyro.nn.dense`).

    :param x: inputs, shape ``(..., in)``.
    :param w: weights, shape ``(in, out)``.
    :param b: optional bias, shape ``(out,)`` (added digitally).
    """
    if nc.is_moments(x, w, b):
        if active_crossbar() is not None:
            nc.no_pfp_rule("dense under the crossbar handler", x, w, b)
        return nc.linear_pfp(x, w, b, torch.matmul, lambda a: a, _xp)
    return _dense(x, w, b, w)


def _dense(x: Any, w: Any, b: Any, programmed: Any) -> Any:
    """``x @ w + b``, routed when ``programmed`` (``w`` itself, or the weights
    ``w`` was computed from) is a weight the active handler programmed."""
    cb = active_crossbar()
    entry = None if cb is None else cb.chip_weight(programmed)
    y = torch.matmul(x, w) if entry is None else cb.route(x, w, entry, "io")
    return y if b is None else y + b


def conv2d(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None = None,
    *,
    stride: Any = 1,
    padding: Any = 0,
) -> torch.Tensor:
    """2-D convolution (cross-correlation); through the crossbar's converters inside
    the handler (each input patch is one matrix-vector product).

    :param x: images, shape ``(N, C, H, W)``.
    :param w: kernels, shape ``(O, C, kh, kw)``.
    :param b: optional bias, shape ``(O,)``.
    :param stride: an int or ``(sh, sw)``.
    :param padding: an int or ``(ph, pw)`` of zeros on each side.

    Given :class:`Moments`, returns the PFP moments of the output.
    """
    strides, pads = conv_geometry(stride, padding)
    if nc.is_moments(x, w, b):
        if active_crossbar() is not None:
            nc.no_pfp_rule("conv2d under the crossbar handler", x, w, b)

        def op(a: Any, k: Any) -> Any:
            return F.conv2d(a, k, stride=strides, padding=pads)

        return nc.linear_pfp(x, w, b, op, lambda a: a.reshape(1, -1, 1, 1), _xp)
    cb = active_crossbar()
    entry = None if cb is None else cb.chip_weight(w)
    if entry is not None:
        y = conv2d_routed(cb, entry, x, w, strides, pads)
    else:
        y = F.conv2d(x, w, stride=strides, padding=pads)
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def sign(x: Any) -> Any:
    """``sign(x)`` in {-1, +1} with the clipped straight-through gradient
    (:func:`ppl_hw.core.nn.sign_ste`); on :class:`Moments` the exact moments of the
    sign of a Gaussian."""
    if nc.is_moments(x):
        return _pfp.sign_moments(x, xp=_xp, special=BACKEND.special)
    return _core.sign_ste(x, xp=BACKEND.xp, special=BACKEND.special)


def binary_dense(
    x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, b: torch.Tensor | None = None
) -> torch.Tensor:
    r"""Binary dense layer :math:`\alpha \odot (x\,\mathrm{sign}(W)) + b` (see
    :func:`ppl_hw.numpyro.nn.binary_dense`).

    :param x: inputs, shape ``(..., in)``.
    :param w: real weights, shape ``(in, out)``; only their signs are used.
    :param scale: per-output scale, shape ``(out,)``.
    :param b: optional bias, shape ``(out,)``.
    """
    nc.no_pfp_rule("binary_dense", x, w, scale, b)
    y = _dense(x, sign(w), None, w) * scale
    return y if b is None else y + b


def batch_norm(x: Any, gamma: Any = 1.0, beta: Any = 0.0, *, eps: float = 1e-5) -> Any:
    """Batch normalisation over axis 0 with the batch's statistics; see
    :func:`ppl_hw.numpyro.nn.batch_norm`."""
    return nc.batch_norm(x, gamma, beta, eps, _xp)


def max_pool(x: Any, *, binary: bool = False) -> Any:
    """2×2 max pooling, stride 2, NCHW; see :func:`ppl_hw.numpyro.nn.max_pool`."""
    return nc.max_pool(x, binary, _xp, BACKEND.special)


def avg_pool(x: Any, k: int = 2) -> Any:
    """k×k average pooling, stride k, NCHW, of images or their Moments."""
    return nc.avg_pool(x, k, _xp)


def dropout(x: Any, p: float) -> Any:
    """Inverted dropout (torch's global generator, ``pyro.set_rng_seed``); the same
    mask multiplies both :class:`Moments`; ``p = 0`` is the identity."""
    p = nc.check_dropout(p)
    if p == 0:
        return x
    ref = x.mean if nc.is_moments(x) else x
    keep = (torch.rand(ref.shape, dtype=ref.dtype) >= p).to(ref.dtype)
    return nc.apply_dropout(x, keep, p)


def flatten(x: Any) -> Any:
    """Reshape to ``(N, -1)``; Moments reshape both fields."""
    return nc.flatten(x, _xp)


def sample_logits(x: Any) -> Any:
    """The network's output as logits: tensors pass through; :class:`Moments` are
    sampled once, ``mean + sqrt(var) * eps`` with ``torch.randn`` (the local
    reparameterisation of ``PFP_ELBO``); under ``PFP_ELBO(output="taylor")`` the mean
    logits are returned. See :func:`ppl_hw.numpyro.nn.sample_logits`."""
    if not nc.is_moments(x):
        return x
    recorder = TaylorOutput.active()  # PFP_ELBO(output="taylor") takes the moments
    if recorder is not None:
        recorder.moments.append(x)
        return x.mean
    return x.mean + x.var.sqrt() * torch.randn_like(x.mean)


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
