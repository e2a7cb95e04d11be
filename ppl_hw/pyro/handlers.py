"""Pyro effect handlers of ppl_hw: :func:`crossbar` (:class:`CrossbarMessenger`)."""

from __future__ import annotations

import functools
from typing import Any

import pyro
import torch
from pyro.distributions import constraints
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.util import site_is_subsample

from ..common import handlers as cc
from ..core import crossbar as cx
from ..core.device import Device
from ._backend import BACKEND
from .distributions import DiscreteWeight
from .distributions._base import WRAPPERS

__all__ = ["CrossbarMessenger", "active_crossbar", "crossbar"]

_xp, _sp = BACKEND.xp, BACKEND.special


def _site_kind(msg: dict) -> tuple[bool, tuple[float, ...] | None, Any]:
    return cc.site_kind(
        msg,
        wrappers=WRAPPERS,
        discrete=DiscreteWeight,
        independent=constraints.independent,
        real=type(constraints.real),
    )


_LATENT = cc.LATENT_MARK


def _is_latent(msg: dict) -> bool:
    """A latent site of the model: not observed by the model itself (a value given by
    an outer ``condition``, as ``Predictive`` does, still counts), not a subsample
    site, not enumerated."""
    return (
        msg["type"] == "sample"
        and (not msg["is_observed"] or bool(msg["infer"].get(_LATENT)))
        and not site_is_subsample(msg)
        and not msg["infer"].get("enumerate")
    )


def _draws(
    names: tuple[str, ...], shape: tuple[int, ...], binary: bool, like: torch.Tensor
):
    out = {}
    for name, s in cx.draw_shapes(names, shape, binary).items():
        if cx.DRAW_KINDS[name] == "normal":
            out[name] = torch.randn(s, dtype=like.dtype, device=like.device)
        else:
            out[name] = torch.rand(s, dtype=like.dtype, device=like.device)
    return out


class CrossbarMessenger(cc.CrossbarState, Messenger):
    r"""The Pyro handler behind :func:`crossbar` (see there)."""

    def __init__(
        self,
        *,
        device: Device,
        sites: Any = None,
        t_inference: float = 0.0,
        seed: int = 0,
        reprogram: str = "once",
        record: bool = False,
    ):
        self._init_state(device, sites, t_inference, seed, reprogram, record)
        super().__init__()

    _site_kind = staticmethod(_site_kind)

    def __call__(self, fn: Any) -> Any:
        wrapped = super().__call__(fn)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            if not self._checked:
                # a dry trace, invisible to outer handlers and to the random stream
                state = pyro.util.get_rng_state()
                try:
                    with pyro.poutine.block():
                        tr = pyro.poutine.trace(fn).get_trace(*args, **kwargs)
                finally:
                    pyro.util.set_rng_state(state)
                self._check({n: s for n, s in tr.nodes.items() if _is_latent(s)})
            return wrapped(*args, **kwargs)

        return run

    def __enter__(self) -> CrossbarMessenger:
        self._seen = set()
        return super().__enter__()

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        super().__exit__(exc_type, exc_value, traceback)
        self._after_block(exc_type is None)

    def _pyro_sample(self, msg: dict) -> None:
        # innermost handler: is_observed still says what the model itself observed
        if not msg["is_observed"]:
            msg["infer"][_LATENT] = True

    def _pyro_post_sample(self, msg: dict) -> None:
        if not _is_latent(msg):
            return
        plan = self._plan(msg)
        if plan is None:
            return
        name, (dev, grid) = msg["name"], plan
        value = msg["value"]
        shape = tuple(value.shape)
        if self.spec.reprogram == "once":
            chip = {
                k: torch.as_tensor(v, dtype=value.dtype, device=value.device)
                for k, v in self._chip_numpy(name, shape, dev).items()
            }
        else:
            chip = _draws(dev.chip_draws, shape, dev.binary, value)
        read = _draws(dev.read_draws, shape, dev.binary, value)
        msg["value"] = cx.crossbar_weights(
            value,
            dev,
            self.spec.t_inference,
            chip,
            read,
            xp=_xp,
            special=_sp,
            grid=grid,
        )
        self.applications[name] += 1
        if self.spec.record:
            pyro.deterministic(name + cc.CHIP_SUFFIX, msg["value"])

    def matvec(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``x @ w`` through the converters of ``device`` (fresh output noise)."""
        dev = self.spec.device
        out = None
        if dev.out_noise:
            shape = (*x.shape[:-1], w.shape[-1])
            out = torch.randn(shape, dtype=torch.result_type(x, w), device=x.device)
        return cx.analog_matvec(x, w, dev, out, xp=_xp, special=_sp)


def crossbar(
    fn: Any = None,
    *,
    device: Device,
    sites: Any = None,
    t_inference: float = 0.0,
    seed: int = 0,
    reprogram: str = "once",
    record: bool = False,
) -> Any:
    r"""Run a model on a simulated analog crossbar (Pyro).

    The same handler as :class:`ppl_hw.numpyro.handlers.crossbar`, in Pyro's idiom:
    each selected **latent** sample site's value is replaced, as the model receives it,
    by what a programmed crossbar returns at time ``t_inference`` (observed, subsample
    and deterministic sites are never touched; traces keep the intended value, and
    ``record=True`` adds ``"<name>_chip"`` deterministic sites), and
    :func:`ppl_hw.pyro.nn.dense` /
    :func:`~ppl_hw.pyro.nn.conv2d` go through the device's converters inside it.
    Chip draws (``reprogram="once"``) come from NumPy keyed by ``seed`` and the site
    name — the same chip as the NumPyro handler programs; read noise and output noise
    come from torch's generator (``pyro.set_rng_seed``), fresh at every execution.

    Wrap the **model**::

        chip = crossbar(model, device=devices.PCM(), t_inference=3600.0, seed=0)
        Predictive(chip, guide=guide, num_samples=100)(x_test)

    :param fn: the model, or ``None`` for a :class:`CrossbarMessenger` to use as a
        context manager.
    :param device: the :class:`~ppl_hw.core.device.Device`.
    :param sites: ``None``, a list of names, a dict name -> ``Device`` or a callable
        ``(msg) -> Device | None``.
    :param t_inference: seconds since programming, ``>= 0``.
    :param seed: the chip's seed.
    :param reprogram: ``"once"`` or ``"per_sample"``.
    :param record: also record the chip's weights as deterministic sites
        ``"<name>_chip"``.
    """
    msngr = CrossbarMessenger(
        device=device,
        sites=sites,
        t_inference=t_inference,
        seed=seed,
        reprogram=reprogram,
        record=record,
    )
    return msngr(fn) if fn is not None else msngr


def active_crossbar() -> CrossbarMessenger | None:
    """The innermost active crossbar handler, if any."""
    return cc.innermost(_PYRO_STACK, CrossbarMessenger)
