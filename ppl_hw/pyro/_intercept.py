"""Routing torch's matrix products through the crossbar.

While a :func:`~ppl_hw.pyro.handlers.crossbar` handler is active, a
:class:`torch.overrides.TorchFunctionMode` (torch's own interception mechanism) sees
every torch function; a product whose weight operand is a weight the handler
programmed goes through the device's tiles and converters
(:meth:`~ppl_hw.common.handlers.CrossbarState.route`):

- ``F.linear`` (``nn.Linear``, ``PyroModule[nn.Linear]``): weights ``(out, in)``;
- ``F.conv2d`` (``nn.Conv2d``) with integer or ``"valid"`` padding, any stride and
  dilation, ``groups=1``: im2col (``F.unfold``) and one routed product per output
  position;
- ``x @ w``, ``torch.matmul``, ``torch.mm`` with a programmed 2-D ``w`` (``(in,
  out)``) or its transpose ``w.T`` / ``w.t()`` / ``w.transpose(0, 1)`` / ``w.mT``
  (``(out, in)``), and ``w @ x`` likewise.

Any other product that consumes a programmed weight (``conv1d``, ``conv3d``,
``conv_transpose*``, ``einsum``, ``bmm``, ``bilinear``, ``tensordot``, ``addmm``,
``F.conv2d`` with ``groups > 1`` or ``padding="same"``, ...) runs exactly and warns,
naming the operation (:class:`~ppl_hw.common.handlers.ConverterWarning`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["ChipMode", "conv2d_routed"]

_PASS = object()

_MATMULS = (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm)
_RMATMUL = (torch.Tensor.__rmatmul__,)
_TRANSPOSES = (
    torch.t,
    torch.Tensor.t,
    torch.Tensor.T.__get__,
    torch.Tensor.mT.__get__,
    torch.transpose,
    torch.Tensor.transpose,
)
_UNROUTED = {
    F.conv1d: "F.conv1d",
    F.conv3d: "F.conv3d",
    F.conv_transpose1d: "F.conv_transpose1d",
    F.conv_transpose2d: "F.conv_transpose2d",
    F.conv_transpose3d: "F.conv_transpose3d",
    torch.einsum: "torch.einsum",
    torch.bmm: "torch.bmm",
    torch.Tensor.bmm: "Tensor.bmm",
    torch.tensordot: "torch.tensordot",
    torch.addmm: "torch.addmm",
    torch.baddbmm: "torch.baddbmm",
    F.bilinear: "F.bilinear",
    torch.mv: "torch.mv",
    torch.Tensor.mv: "Tensor.mv",
    F.embedding: "F.embedding",
}


def conv2d_routed(
    cb: Any,
    entry: Any,
    x: torch.Tensor,
    w: torch.Tensor,
    stride: Any,
    padding: Any,
    dilation: Any = 1,
) -> torch.Tensor:
    """``F.conv2d(x, w)`` (NCHW, OIHW, no bias) as routed products, one per output
    position (im2col with ``F.unfold``)."""
    from ..core import crossbar as cx
    from ._backend import BACKEND

    n, _, h, wd = x.shape
    o, _, kh, kw = w.shape
    st = (stride, stride) if isinstance(stride, int) else tuple(stride)
    pd = (padding, padding) if isinstance(padding, int) else tuple(padding)
    dl = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
    cols = F.unfold(x, (kh, kw), dilation=dl, padding=pd, stride=st)
    y = cb.route(
        cols.transpose(1, 2), cx.to_matrix(w, "oi", xp=BACKEND.xp), entry, "oi"
    )
    oh = (h + 2 * pd[0] - dl[0] * (kh - 1) - 1) // st[0] + 1
    ow = (wd + 2 * pd[1] - dl[1] * (kw - 1) - 1) // st[1] + 1
    return y.transpose(1, 2).reshape(n, o, oh, ow)


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


class ChipMode(TorchFunctionMode):
    """The torch function mode of one crossbar handler ``cb`` (see the module)."""

    def __init__(self, cb: Any):
        super().__init__()
        self.cb = cb

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        out = self._dispatch(func, args, kwargs or {})
        return func(*args, **(kwargs or {})) if out is _PASS else out

    def _dispatch(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """The routed result, or ``_PASS`` to run ``func`` as is."""
        cb = self.cb
        if cb._in_route or not (
            func is F.linear
            or func is F.conv2d
            or func in _MATMULS
            or func in _RMATMUL
            or func in _TRANSPOSES
            or func in _UNROUTED
        ):
            return _PASS
        out = self._routed(func, args, kwargs)
        if cb._dry and out is not _PASS:
            cb._mode_needed = True  # a torch-level product consumed a chip weight
        return out

    def _routed(self, func: Any, args: tuple, kwargs: dict) -> Any:
        cb = self.cb
        if func is F.linear:
            x, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
            entry = cb.chip_weight(w)
            if entry is not None:
                b = _arg(args, kwargs, 2, "bias")
                layout = "io" if entry.transposed else "oi"
                y = cb.route(x, w.mT, entry, layout)
                return y if b is None else y + b
        elif func is F.conv2d:
            w = _arg(args, kwargs, 1, "weight")
            entry = cb.chip_weight(w)
            if entry is not None:
                padding = _arg(args, kwargs, 4, "padding", 0)
                groups = _arg(args, kwargs, 6, "groups", 1)
                if padding == "valid":
                    padding = 0
                if (
                    groups == 1
                    and not isinstance(padding, str)
                    and not entry.transposed
                ):
                    y = conv2d_routed(
                        cb,
                        entry,
                        _arg(args, kwargs, 0, "input"),
                        w,
                        _arg(args, kwargs, 3, "stride", 1),
                        padding,
                        _arg(args, kwargs, 5, "dilation", 1),
                    )
                    b = _arg(args, kwargs, 2, "bias")
                    return y if b is None else y + b.reshape(1, -1, 1, 1)
                cb._unroutable(entry, "F.conv2d with groups > 1 or string padding")
                return func(*args, **kwargs)
        elif func in _MATMULS or func in _RMATMUL:
            a, b = args[0], args[1]
            if func in _RMATMUL:
                a, b = b, a
            eb, ea = cb.chip_weight(b), cb.chip_weight(a)
            if eb is not None and b.ndim == 2:  # x @ w
                return cb.route(a, b, eb, "oi" if eb.transposed else "io")
            if ea is not None and a.ndim == 2 and b.ndim in (1, 2):  # w @ x
                layout = "io" if ea.transposed else "oi"
                if b.ndim == 1:
                    return cb.route(b, a.mT, ea, layout)
                return cb.route(b.mT, a.mT, ea, layout).mT
        elif func in _TRANSPOSES:
            entry = cb.chip_weight(args[0])
            if entry is not None and args[0].ndim == 2:
                out = func(*args, **kwargs)
                cb._register_view(out, entry, not entry.transposed)
                return out
        else:  # _UNROUTED
            hits = [
                e
                for a in (*args, *kwargs.values())
                if isinstance(a, torch.Tensor) and (e := cb.chip_weight(a)) is not None
            ]
            for entry in hits:
                cb._unroutable(entry, _UNROUTED[func])
            if hits:
                return func(*args, **kwargs)
        return _PASS
