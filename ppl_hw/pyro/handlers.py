"""Pyro effect handlers of ppl_hw: :func:`crossbar` (:class:`CrossbarMessenger`)."""

from __future__ import annotations

import functools
import warnings
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
from . import _provenance
from ._backend import BACKEND
from ._intercept import ChipMode
from .distributions import DiscreteWeight
from .distributions._base import WRAPPERS

__all__ = ["ChipModel", "CrossbarMessenger", "active_crossbar", "crossbar"]

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
        self._mode_needed = False
        super().__init__()

    _site_kind = staticmethod(_site_kind)

    def __call__(self, fn: Any) -> Any:
        wrapped = super().__call__(fn)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            if not self._checked:
                self._dry_run(wrapped, args, kwargs)
            return wrapped(*args, **kwargs)

        return run

    def _dry_run(self, wrapped: Any, args: tuple, kwargs: dict) -> None:
        """Trace the model once, invisible to outer handlers and to the random
        stream: its latent sites (validated against ``sites``), which of them are
        weights (:func:`~ppl_hw.common.handlers.default_weight_sites`, from Pyro's
        provenance tracking), and the layout of each layer that consumes one."""
        state = pyro.util.get_rng_state()
        self._dry = True
        try:
            with pyro.poutine.block():
                try:
                    prov = _provenance.Provenance()
                    with torch.no_grad(), prov:
                        tr = pyro.poutine.trace(wrapped).get_trace(*args, **kwargs)
                    deps: dict | None = prov.deps
                except Exception as err:
                    warnings.warn(
                        "crossbar: could not trace which sites depend on which "
                        f"({type(err).__name__}: {err}); sites=None takes the latent "
                        "sites outside every plate. Pass sites= to choose explicitly.",
                        cc.ConverterWarning,
                        stacklevel=4,
                    )
                    pyro.util.set_rng_state(state)
                    self.layouts.clear()
                    tr = pyro.poutine.trace(wrapped).get_trace(*args, **kwargs)
                    deps = None
        finally:
            self._dry = False
            pyro.util.set_rng_state(state)
        latent = {n: s for n, s in tr.nodes.items() if _is_latent(s)}
        observed_plates = {
            f.name
            for s in tr.nodes.values()
            if s["type"] == "sample"
            and s["is_observed"]
            and not _is_latent(s)
            and not site_is_subsample(s)
            and not s["infer"].get("_deterministic")
            for f in s["cond_indep_stack"]
        }
        infos = cc.site_infos(
            {
                n: (_site_kind(s)[0], frozenset(f.name for f in s["cond_indep_stack"]))
                for n, s in latent.items()
            },
            deps,
        )
        self._check(latent, infos, observed_plates)

    def _routing(self) -> bool:
        """Whether products may need routing (a device with converters, or the dry
        trace that learns the layouts)."""
        spec = self.spec
        if self._dry:
            return True
        if self._checked and not self._mode_needed:
            # the dry trace saw no torch-level product of a chip weight (e.g. only
            # ppl_hw's nn layers, which route themselves): no per-op dispatch cost
            return False
        if callable(spec.sites) and not isinstance(spec.sites, dict):
            return True
        devs = [spec.device]
        if isinstance(spec.sites, dict):
            devs += [d for d in spec.sites.values() if d is not None]
        return any(d.converter_effects_on for d in devs)

    def __enter__(self) -> CrossbarMessenger:
        self._seen = set()
        self._begin_run()
        self._mode = ChipMode(self) if self._routing() else None
        out = super().__enter__()
        if self._mode is not None:
            self._mode.__enter__()
        return out

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        if self._mode is not None:
            self._mode.__exit__(exc_type, exc_value, traceback)
            self._mode = None
        super().__exit__(exc_type, exc_value, traceback)
        self._end_run(exc_type is None)
        if not self._dry:
            self._after_block(exc_type is None)

    def _pyro_sample(self, msg: dict) -> None:
        # innermost handler: is_observed still says what the model itself observed
        if not msg["is_observed"]:
            msg["infer"][_LATENT] = True

    def _pyro_post_sample(self, msg: dict) -> None:
        if not _is_latent(msg):
            return
        if self._dry:
            self._register(msg["value"], msg["name"], None)
            return
        self._apply(msg, msg["value"], _PYRO_STACK, pyro.deterministic)

    def _program(self, name: str, value: Any, dev: Device, grid: Any) -> Any:
        shape = tuple(value.shape)
        if self.spec.reprogram == "once":
            chip = {
                k: torch.as_tensor(v, dtype=value.dtype, device=value.device)
                for k, v in self._chip_numpy(name, shape, dev).items()
            }
        else:
            chip = _draws(dev.chip_draws, shape, dev.binary, value)
        read = _draws(dev.read_draws, shape, dev.binary, value)
        return cx.crossbar_weights(
            value,
            dev,
            self.spec.t_inference,
            chip,
            read,
            xp=_xp,
            special=_sp,
            grid=grid,
            layout=self.layouts.get(name, "default"),
        )

    # -- used by the routed products (ppl_hw.pyro.nn, torch via ChipMode) --------
    def _normal(self, shape: tuple[int, ...], like: Any) -> Any:
        return torch.randn(shape, dtype=like.dtype, device=like.device)

    def _matvec(self, x: Any, w: Any, draw: Any, device: Device) -> Any:
        return cx.analog_matvec(x, w, device, draw, xp=_xp, special=_sp)


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

    :param fn: the model — the result is then a :class:`ChipModel`, called as the
        model, with the handler's reports (``weight_sites``, ``routed``, ``layouts``)
        as attributes — or ``None`` for a :class:`CrossbarMessenger` to use as a
        context manager or decorator.
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
    return ChipModel(fn, msngr) if fn is not None else msngr


class ChipModel:
    """A model wrapped by :func:`crossbar`: call it as the model (it runs under the
    handler); the handler's reports — ``weight_sites``, ``routed``, ``layouts``,
    ``applications`` — are its attributes, as on NumPyro's handler, and ``handler``
    is the :class:`CrossbarMessenger` itself."""

    def __init__(self, fn: Any, handler: CrossbarMessenger):
        # not functools.wraps: it would copy a PyroModule's __dict__ (its modules
        # and parameters) onto the wrapper
        functools.update_wrapper(self, fn, updated=())
        self.handler = handler
        self._run = handler(fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._run(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.__dict__["handler"], name)


def active_crossbar() -> CrossbarMessenger | None:
    """The innermost active crossbar handler, if any."""
    return cc.innermost(_PYRO_STACK, CrossbarMessenger)
