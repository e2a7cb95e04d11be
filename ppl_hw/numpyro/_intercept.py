"""Routing the layers of flax (linen and nnx) and equinox through the crossbar.

While a :class:`~ppl_hw.numpyro.handlers.crossbar` handler is active, the matrix
products of these layers whose weights the handler programmed go through the
device's tiles and converters (:meth:`~ppl_hw.common.handlers.CrossbarState.route`):

- flax linen ``Dense`` and ``Conv`` — by flax's own mechanism,
  :func:`flax.linen.intercept_methods`; any other linen module whose own parameters
  were programmed (``DenseGeneral``, ``Einsum``, ``ConvTranspose``, ``ConvLocal``,
  ``Embed``, ...) warns, naming the module (its product runs exactly);
- nnx ``Linear`` and ``Conv``, equinox ``Linear`` and ``Conv`` (``Conv1d/2d/3d``) —
  these libraries have no interception mechanism, so their ``__call__`` is wrapped
  while a handler is active (installed on entering the first handler, removed on
  leaving the last); without an active handler the original method runs.

Only libraries the user has already imported are touched. A programmed weight that
no routed product consumes is reported when the model run ends
(:class:`~ppl_hw.common.handlers.ConverterWarning`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
from jax import lax
from numpyro.primitives import _PYRO_STACK

from ..common.handlers import CrossbarState, innermost
from ..core import crossbar as cx

__all__ = ["conv_patches", "install", "route_conv", "uninstall"]

_SPATIAL = {1: "H", 2: "HW", 3: "DHW"}
_state: dict[str, Any] = {"count": 0, "patches": [], "linen": None}


def _active() -> Any:
    """The innermost active crossbar handler (any :class:`CrossbarState` on
    NumPyro's stack: this module sits below ``handlers``, which installs it)."""
    return innermost(_PYRO_STACK, CrossbarState)


def conv_patches(
    x: Any,
    ksize: tuple[int, ...],
    strides: Any,
    padding: Any,
    lhs_dilation: Any,
    rhs_dilation: Any,
    channels_last: bool,
) -> Any:
    """im2col of ``x`` (batched): ``(N, *out_spatial, C * prod(ksize))`` with the
    features in ``(C, *kernel)`` order (the rows of
    :func:`ppl_hw.core.crossbar.to_matrix`)."""
    sp = _SPATIAL[len(ksize)]
    lhs = f"N{sp}C" if channels_last else f"NC{sp}"
    patches = lax.conv_general_dilated_patches(
        x,
        tuple(ksize),
        tuple(strides),
        padding,
        lhs_dilation=tuple(lhs_dilation),
        rhs_dilation=tuple(rhs_dilation),
        dimension_numbers=(lhs, f"OI{sp}", lhs),
    )
    return patches if channels_last else jnp.moveaxis(patches, 1, -1)


def route_conv(
    cb: Any,
    entry: Any,
    x: Any,
    w: Any,
    layout: str,
    *,
    strides: Any,
    padding: Any,
    lhs_dilation: Any = None,
    rhs_dilation: Any = None,
    channels_last: bool,
) -> Any:
    """A convolution of batched ``x`` with the programmed kernel ``w`` (``layout``
    ``"kio"`` or ``"oi"``) as one routed matrix product per output position."""
    nsp = w.ndim - 2
    ksize = w.shape[:nsp] if layout == "kio" else w.shape[2:]
    ones = (1,) * nsp
    cols = conv_patches(
        x,
        ksize,
        strides,
        padding,
        lhs_dilation or ones,
        rhs_dilation or ones,
        channels_last,
    )
    y = cb.route(cols, cx.to_matrix(w, layout, xp=jnp), entry, layout)
    return y if channels_last else jnp.moveaxis(y, -1, 1)


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    if v is None:
        return (1,) * n
    return (v,) * n if isinstance(v, int) else tuple(v)


# -- flax linen ------------------------------------------------------------------


def _linen_interceptor(next_fun: Any, args: tuple, kwargs: dict, context: Any) -> Any:
    cb = _active()
    if cb is None or context.method_name != "__call__":
        return next_fun(*args, **kwargs)
    import flax.linen as nn

    module = context.module
    try:
        params = module.variables.get("params", {})
    except Exception:
        return next_fun(*args, **kwargs)
    programmed = {
        k: e
        for k, v in params.items()
        if not isinstance(v, Mapping) and (e := cb.chip_weight(v)) is not None
    }
    if not programmed:
        return next_fun(*args, **kwargs)
    where = f"flax {type(module).__name__} {'/'.join(module.scope.path)!r}"
    kernel = programmed.get("kernel")
    if kernel is not None and len(args) == 1 and not kwargs:
        if type(module) is nn.Dense:
            y = cb.route(args[0], kernel.value, kernel, "io")
            return y + params["bias"] if module.use_bias else y
        if type(module) is nn.Conv and _linen_conv_routable(module):
            return _linen_conv(cb, module, kernel, params, args[0])
    for entry in programmed.values():
        cb._unroutable(entry, where)
    return next_fun(*args, **kwargs)


def _linen_conv_routable(module: Any) -> bool:
    from flax.linen.linear import canonicalize_padding

    padding = canonicalize_padding(module.padding, len(module.kernel_size))
    return (
        module.mask is None
        and module.feature_group_count == 1
        and (not isinstance(padding, str) or padding in ("SAME", "VALID"))
        and len(module.kernel_size) in _SPATIAL
    )


def _flax_conv(cb: Any, entry: Any, module: Any, x: Any, padding: Any) -> Any:
    """A flax (linen or nnx) ``Conv`` of ``x`` (any batch axes, channels last) with
    its programmed HWIO kernel, as routed products."""
    w = entry.value
    nsp = w.ndim - 2
    batch = x.shape[: x.ndim - nsp - 1]
    xb = jnp.reshape(x, (-1, *x.shape[len(batch) :]))
    y = route_conv(
        cb,
        entry,
        xb,
        w,
        "kio",
        strides=_tuple(module.strides, nsp),
        padding=padding,
        lhs_dilation=_tuple(module.input_dilation, nsp),
        rhs_dilation=_tuple(module.kernel_dilation, nsp),
        channels_last=True,
    )
    return jnp.reshape(y, (*batch, *y.shape[1:]))


def _linen_conv(cb: Any, module: Any, kernel: Any, params: dict, x: Any) -> Any:
    from flax.linen.linear import canonicalize_padding

    padding = canonicalize_padding(module.padding, kernel.value.ndim - 2)
    y = _flax_conv(cb, kernel, module, x, padding)
    return y + params["bias"] if module.use_bias else y


# -- nnx and equinox: wrapped __call__ ---------------------------------------------


def _nnx_value(var: Any) -> Any:
    return var.get_value() if hasattr(var, "get_value") else var.value


def _nnx_linear(orig: Any) -> Any:
    def __call__(self: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        cb = _active()
        entry = None if cb is None else cb.chip_weight(_nnx_value(self.kernel))
        if entry is None:
            return orig(self, inputs, *args, **kwargs)
        if args or kwargs:
            cb._unroutable(entry, f"nnx {type(self).__name__} (extra arguments)")
            return orig(self, inputs, *args, **kwargs)
        y = cb.route(inputs, entry.value, entry, "io")
        return y if self.bias is None else y + _nnx_value(self.bias)

    return __call__


def _nnx_conv(orig: Any) -> Any:
    def __call__(self: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        cb = _active()
        entry = None if cb is None else cb.chip_weight(_nnx_value(self.kernel))
        if entry is None:
            return orig(self, inputs, *args, **kwargs)
        from flax.linen.linear import canonicalize_padding

        w = entry.value
        nsp = w.ndim - 2
        padding = canonicalize_padding(self.padding, nsp)
        if (
            args
            or kwargs
            or self.mask is not None
            or self.feature_group_count != 1
            or (isinstance(padding, str) and padding not in ("SAME", "VALID"))
        ):
            cb._unroutable(entry, f"nnx {type(self).__name__} (its options)")
            return orig(self, inputs, *args, **kwargs)
        y = _flax_conv(cb, entry, self, inputs, padding)
        return y if self.bias is None else y + _nnx_value(self.bias)

    return __call__


def _warn_vmapped_noise(x: Any, entry: Any) -> None:
    """Equinox layers take one example; under ``jax.vmap`` one call draws one
    output-noise sample for the whole vmapped batch (a key cannot be split per
    example inside vmap): say so when the device has output noise."""
    dev = entry.device
    if dev is not None and dev.out_noise and type(x).__name__ == "BatchTracer":
        import warnings

        from ..common.handlers import ConverterWarning

        warnings.warn(
            f"crossbar: site {entry.name!r} runs in an equinox layer under jax.vmap: "
            "its converters' output noise is one draw shared by every example of the "
            "vmapped batch (call the layer on a batch, e.g. with ppl_hw.numpyro.nn."
            "dense, for independent noise per example, or set out_noise=0)",
            ConverterWarning,
            stacklevel=4,
        )


def _eqx_linear(orig: Any) -> Any:
    def __call__(self: Any, x: Any, *, key: Any = None) -> Any:
        cb = _active()
        entry = None if cb is None else cb.chip_weight(self.weight)
        if entry is None:
            return orig(self, x, key=key)
        if self.in_features == "scalar" or self.out_features == "scalar":
            cb._unroutable(entry, "equinox Linear with scalar features")
            return orig(self, x, key=key)
        _warn_vmapped_noise(x, entry)
        y = cb.route(x, self.weight.T, entry, "oi")
        return y if self.bias is None else y + self.bias

    return __call__


def _eqx_conv(orig: Any) -> Any:
    def __call__(self: Any, x: Any, *, key: Any = None) -> Any:
        cb = _active()
        entry = None if cb is None else cb.chip_weight(self.weight)
        if entry is None:
            return orig(self, x, key=key)
        if self.groups != 1 or self.padding_mode != "ZEROS":
            cb._unroutable(entry, f"equinox {type(self).__name__} (groups/padding)")
            return orig(self, x, key=key)
        _warn_vmapped_noise(x, entry)
        y = route_conv(
            cb,
            entry,
            x[None],
            self.weight,
            "oi",
            strides=self.stride,
            padding=self.padding,
            rhs_dilation=self.dilation,
            channels_last=False,
        )[0]
        return y if not self.use_bias else y + self.bias

    return __call__


def _class_patches() -> list[tuple[type, Any]]:
    """``(class, wrapper factory)`` for the already-imported libraries."""
    out: list[tuple[type, Any]] = []
    if "flax.nnx" in sys.modules:
        from flax import nnx

        out += [(nnx.Linear, _nnx_linear), (nnx.Conv, _nnx_conv)]
    if "equinox" in sys.modules:
        import equinox as eqx

        out += [(eqx.nn.Linear, _eqx_linear), (eqx.nn.Conv, _eqx_conv)]
    return out


def install() -> int:
    """Enter one crossbar handler: on the first, install the interceptors of the
    libraries already imported. Returns a token for :func:`uninstall`."""
    if _state["count"] == 0:
        if "flax.linen" in sys.modules:
            import flax.linen as nn

            cm = nn.intercept_methods(_linen_interceptor)
            cm.__enter__()
            _state["linen"] = cm
        for cls, wrap in _class_patches():
            orig = cls.__dict__["__call__"]
            cls.__call__ = wrap(orig)
            _state["patches"].append((cls, orig))
    _state["count"] += 1
    return _state["count"]


def uninstall(token: int) -> None:
    """Leave one crossbar handler: on the last, restore everything."""
    del token
    _state["count"] -= 1
    if _state["count"] == 0:
        for cls, orig in reversed(_state["patches"]):
            cls.__call__ = orig
        _state["patches"] = []
        cm, _state["linen"] = _state["linen"], None
        if cm is not None:
            with contextlib.suppress(Exception):
                cm.__exit__(None, None, None)
