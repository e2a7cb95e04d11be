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


def _traceable(args: tuple) -> bool:
    """Whether a traced program may stand in for the eager core call: no gradient
    is asked of it (a traced graph would differentiate the same, but training keeps
    the plain eager path) and no outer ``torch.jit.trace`` is recording (it records
    the core's operations itself)."""
    if torch.jit.is_tracing():
        return False
    if torch.is_grad_enabled() and any(a.requires_grad for a in args):
        return False
    return all(type(a) is torch.Tensor and a.layout is torch.strided for a in args)


def _signature(args: tuple) -> tuple:
    return tuple((tuple(a.shape), a.stride(), a.dtype, a.device) for a in args)


def _weights_program(
    dev: Device,
    t: float,
    chip_names: tuple[str, ...],
    read_names: tuple[str, ...],
    grid: Any,
    layout: Any,
) -> Any:
    """:func:`~ppl_hw.core.crossbar.crossbar_weights` of one kind of site as a
    function of positional tensors ``(w, *chip draws, *read draws)``."""
    k = len(chip_names)

    def weights(w: torch.Tensor, *draws: torch.Tensor) -> torch.Tensor:
        return cx.crossbar_weights(
            w,
            dev,
            t,
            dict(zip(chip_names, draws[:k], strict=True)),
            dict(zip(read_names, draws[k:], strict=True)),
            xp=_xp,
            special=_sp,
            grid=grid,
            layout=layout,
        )

    return weights


def _matvec_program(dev: Device) -> Any:
    """:func:`~ppl_hw.core.crossbar.analog_matvec` of one device as a function of
    ``(x, w[, out_draw])``."""

    def matvec(x: torch.Tensor, w: torch.Tensor, *draw: torch.Tensor) -> torch.Tensor:
        return cx.analog_matvec(
            x, w, dev, draw[0] if draw else None, xp=_xp, special=_sp
        )

    return matvec


_EAGER = object()
"""A program key whose recording failed: the eager core call is used for it."""


def _trace(fn: Any, args: tuple) -> Any:
    """``fn`` recorded once with :func:`torch.jit.trace` on example ``args``: the
    same ATen operations, replayed without the Python and array-API dispatch of the
    core. The core's Python control flow depends only on the device, the time, the
    grid, the layout and the shapes (it is jitted by JAX on NumPyro, where nothing
    else can steer it), so a recording keyed by those (with dtypes and strides) is
    exact for every input of that key; torch's warnings about shapes read as Python
    numbers are therefore expected and silenced. Random draws stay outside the
    recording: the generator's stream is that of the eager path, and so is every
    value, bit for bit — checked once on the example (a recording that fails or
    differs returns ``_EAGER``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace's
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            with torch.no_grad():
                program = torch.jit.trace(fn, args, check_trace=False)
                same = torch.equal(program(*args), fn(*args))
        except Exception:  # any failure: keep the eager path
            return _EAGER
    return program if same else _EAGER


class _Programs:
    """Traced programs by key, shared by every handler (a program depends on the
    device, time, shapes and layout, not on the chip's seed: the chips of a
    deployment sweep share them); at most ``size`` (the oldest is dropped)."""

    def __init__(self, size: int = 256):
        self.size = size
        self._d: dict[Any, Any] = {}

    def get(self, key: Any) -> Any:
        return self._d.get(key)

    def put(self, key: Any, program: Any) -> Any:
        while len(self._d) >= self.size:
            self._d.pop(next(iter(self._d)))
        self._d[key] = program
        return program

    def __len__(self) -> int:
        return len(self._d)

    def clear(self) -> None:
        self._d.clear()


_PROGRAMS = _Programs()


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
        self._chip_seed = self.spec.seed
        self._chip_cache: dict[Any, dict[str, torch.Tensor]] = {}
        self._traced: set = set()  # keys of the shared programs this handler ran
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
            chip = self._chip_tensors(name, shape, dev, value)
        else:
            chip = _draws(dev.chip_draws, shape, dev.binary, value)
        read = _draws(dev.read_draws, shape, dev.binary, value)
        layout = self.layouts.get(name, "default")
        args = (value, *chip.values(), *read.values())

        def eager() -> Any:
            return cx.crossbar_weights(
                value,
                dev,
                self.spec.t_inference,
                chip,
                read,
                xp=_xp,
                special=_sp,
                grid=grid,
                layout=layout,
            )

        if not _traceable(args):
            return eager()
        key = (
            "weights",
            _signature(args),
            dev,
            self.spec.t_inference,
            grid,
            layout,
            tuple(chip),
            tuple(read),
        )
        program = _PROGRAMS.get(key)
        if program is None:
            fn = _weights_program(
                dev, self.spec.t_inference, tuple(chip), tuple(read), grid, layout
            )
            program = _PROGRAMS.put(key, _trace(fn, args))
        self._traced.add(key)
        if program is _EAGER:
            return eager()
        return program(*args)

    def _chip_tensors(
        self, name: str, shape: tuple[int, ...], dev: Device, like: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The chip's draws of a site as tensors of ``like``'s dtype and device,
        converted from NumPy once per chip (seed) and site, not at every model run."""
        seed = self.spec.seed
        if seed != self._chip_seed:
            # a re-seeded chip (``spec.seed`` changed): new NumPy draws and tensors
            self._chips.clear()
            self._chip_cache.clear()
            self._chip_seed = seed
        key = (name, shape, dev, like.dtype, like.device)
        out = self._chip_cache.get(key)
        if out is None:
            out = {
                k: torch.as_tensor(v, dtype=like.dtype, device=like.device)
                for k, v in self._chip_numpy(name, shape, dev).items()
            }
            self._chip_cache[key] = out
        return out

    # -- used by the routed products (ppl_hw.pyro.nn, torch via ChipMode) --------
    def _normal(self, shape: tuple[int, ...], like: Any) -> Any:
        return torch.randn(shape, dtype=like.dtype, device=like.device)

    def _matvec(self, x: Any, w: Any, draw: Any, device: Device) -> Any:
        args = (x, w) if draw is None else (x, w, draw)
        program = None
        if _traceable(args):
            key = ("matvec", _signature(args), device)
            program = _PROGRAMS.get(key)
            if program is None:
                program = _PROGRAMS.put(key, _trace(_matvec_program(device), args))
            self._traced.add(key)
        if program is None or program is _EAGER:
            return cx.analog_matvec(x, w, device, draw, xp=_xp, special=_sp)
        return program(*args)


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
    Per-chip work is done once per chip: the chip's draws become tensors once per
    site (again when ``seed`` changes), and outside autograd the core's weight
    effects and converter products are recorded once per kind of site and product
    (``torch.jit.trace``; keyed by device, ``t_inference``, shapes, dtype and layout,
    shared by every chip) and replayed at each sample — the same values, bit for bit,
    and the same random stream as the eager core.

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
    :param seed: the chip's seed, an int in [0, 2**64 - 1] (distinct seeds program
        distinct chips).
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
