"""Backend-independent parts of the crossbar handlers: argument checks, site
selection rules, the per-chip NumPy draws, and the bookkeeping of the chip's weights
that the adapters' routed layers look up (which site, which device, which layout)."""

from __future__ import annotations

import dataclasses
import warnings
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..core import crossbar as cx
from ..core.device import Device

__all__ = [
    "CHIP_SUFFIX",
    "LATENT_MARK",
    "REPROGRAM",
    "ChipWeight",
    "ConverterWarning",
    "CrossbarSpec",
    "CrossbarState",
    "SiteInfo",
    "check_latent_sites",
    "check_site",
    "chip_draws_numpy",
    "default_weight_sites",
    "innermost",
    "outside_inner_handlers",
    "plan_site",
    "resolve_device",
    "site_infos",
    "site_kind",
    "unknown_sites_error",
]

LATENT_MARK = "_ppl_hw_latent"
"""``msg["infer"]`` key set by the (innermost) handler on sites the model itself does
not observe: an outer ``condition`` (as Pyro's ``Predictive`` uses) makes a site look
observed, but it is still a weight."""

REPROGRAM = ("once", "per_sample")
MAX_CHIP_SEED = 2**64 - 1
"""The largest chip seed: chips are keyed by 64-bit seeds (NumPy's Philox key word),
so no two seeds in ``[0, MAX_CHIP_SEED]`` program the same chip."""
CHIP_SUFFIX = "_chip"
"""Suffix of the deterministic sites that ``record=True`` adds."""


class ConverterWarning(UserWarning):
    """A weight the crossbar programmed was used by an operation the handler does
    not route through the tile periphery: that product ran without the device's
    converters (DAC, ADC, output noise, IR drop)."""


@dataclasses.dataclass(frozen=True)
class SiteInfo:
    """What the dry trace learned about one latent site.

    :param eligible: real-valued or ``DiscreteWeight``.
    :param plates: names of the plates the site sits in.
    :param upstream: the other latent sites its distribution depends on (``None``:
        unknown).
    :param consumers: the other sites (sample or deterministic) whose distribution
        or value depends on it (``None``: unknown).
    """

    eligible: bool
    plates: frozenset[str]
    upstream: frozenset[str] | None = None
    consumers: frozenset[str] | None = None


def default_weight_sites(
    latent: Mapping[str, SiteInfo], observed_plates: Iterable[str]
) -> set[str]:
    """The sites ``sites=None`` programs: the model's **weights**.

    1. An *output* is a latent site that nothing else in the model depends on
       (no sample or deterministic site) while it depends on another latent site:
       the likelihood of ``y`` under ``Predictive`` with ``y=None``.
    2. A *data plate* is a plate that holds an observed site or an output.
    3. The weights are the eligible (real-valued or ``DiscreteWeight``) latent sites
       that are neither outputs nor inside a data plate (per-datum latents, as a
       VAE's codes, are not weights either).

    Where the dependencies are unknown (``consumers is None``), a latent site inside
    any plate counts as data.
    """
    data_plates = set(observed_plates)
    outputs = set()
    for name, info in latent.items():
        if info.consumers is None:
            data_plates |= info.plates
        elif not info.consumers and info.upstream:
            outputs.add(name)
            data_plates |= info.plates
    return {
        name
        for name, info in latent.items()
        if info.eligible and name not in outputs and not (info.plates & data_plates)
    }


def site_infos(
    latent: Mapping[str, tuple[bool, frozenset[str]]],
    deps: Mapping[str, frozenset[str]] | None,
) -> dict[str, SiteInfo]:
    """:class:`SiteInfo` per latent site from ``name -> (eligible, plates)`` and the
    provenance ``deps`` (per sample/deterministic site, the latent sites its
    log density or value depends on; ``None`` when unknown)."""
    out = {}
    for name, (eligible, plates) in latent.items():
        if deps is None:
            out[name] = SiteInfo(eligible, plates)
            continue
        upstream = frozenset(deps.get(name, frozenset()) & set(latent)) - {name}
        consumers = frozenset(d for d, ups in deps.items() if name in ups and d != name)
        out[name] = SiteInfo(eligible, plates, upstream, consumers)
    return out


def outside_inner_handlers(stack: list, handler: Any, fn: Any, *args: Any) -> Any:
    """Call ``fn(*args)`` (e.g. ``deterministic``) with only ``handler`` and the
    handlers outside it on the host's stack: a site recorded from a handler's
    postprocess keeps its name exactly (an inner ``scope`` would prefix it again)."""
    i = next(k for k, h in enumerate(stack) if h is handler)
    inner = stack[i + 1 :]
    del stack[i + 1 :]
    try:
        return fn(*args)
    finally:
        stack.extend(inner)


@dataclasses.dataclass(frozen=True)
class ChipWeight:
    """A weight array the handler gave the model: its site and device
    (``device is None`` during the dry trace, which only records layouts);
    ``transposed`` marks a transpose of the site's value (torch's ``w.T``)."""

    value: Any
    name: str
    device: Device | None
    transposed: bool = False


class CrossbarSpec:
    """The validated arguments of a crossbar handler."""

    def __init__(
        self,
        device: Any,
        sites: Any,
        t_inference: Any,
        seed: Any,
        reprogram: Any,
        record: Any = False,
    ):
        if not isinstance(device, Device):
            raise TypeError(
                "device must be a ppl_hw.config.Device (e.g. ppl_hw.devices.PCM()), "
                f"got {type(device).__name__}"
            )
        if isinstance(t_inference, bool) or not isinstance(t_inference, int | float):
            raise TypeError(
                f"t_inference must be a number of seconds, got {t_inference!r}"
            )
        if not (np.isfinite(t_inference) and t_inference >= 0):
            raise ValueError(f"t_inference must be >= 0 seconds, got {t_inference!r}")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise TypeError(f"seed must be an int, got {seed!r}")
        if not 0 <= seed <= MAX_CHIP_SEED:
            raise ValueError(
                f"seed must be an int in [0, 2**64 - 1] (a chip's 64-bit key), "
                f"got {seed!r}"
            )
        if reprogram not in REPROGRAM:
            raise ValueError(
                f"reprogram must be one of {list(REPROGRAM)}, got {reprogram!r}"
            )
        if sites is None or callable(sites):
            pass
        elif isinstance(sites, Mapping):
            for name, dev in sites.items():
                if not isinstance(name, str):
                    raise TypeError(
                        f"sites keys must be site names (str), got {name!r}"
                    )
                if dev is not None and not isinstance(dev, Device):
                    raise TypeError(
                        f"sites[{name!r}] must be a Device or None, "
                        f"got {type(dev).__name__}"
                    )
        elif isinstance(sites, list | tuple | set | frozenset):
            bad = [s for s in sites if not isinstance(s, str)]
            if bad:
                raise TypeError(f"sites must be site names (str), got {bad!r}")
        else:
            raise TypeError(
                "sites must be None, a list of names, a dict name -> Device or a "
                f"callable(msg) -> Device | None, got {type(sites).__name__}"
            )
        if not isinstance(record, bool):
            raise TypeError(f"record must be a bool, got {record!r}")
        self.device = device
        self.record = record
        self.sites = sites
        self.t_inference = float(t_inference)
        self.seed = int(seed)
        self.reprogram = reprogram

    @property
    def named_sites(self) -> tuple[str, ...]:
        if isinstance(self.sites, Mapping | list | tuple | set | frozenset):
            return tuple(self.sites)
        return ()


def resolve_device(
    spec: CrossbarSpec, name: str, msg: Any, default_eligible: bool
) -> Device | None:
    """The device a latent site maps onto, or ``None`` for "leave it alone".

    ``default_eligible`` says whether the site is one of the model's weights (see
    :func:`default_weight_sites`; the sites taken when ``sites`` is ``None``).
    """
    sites = spec.sites
    if sites is None:
        return spec.device if default_eligible else None
    if callable(sites) and not isinstance(sites, Mapping):
        dev = sites(msg)
        if dev is not None and not isinstance(dev, Device):
            raise TypeError(
                f"sites({name!r}) must return a Device or None, "
                f"got {type(dev).__name__}"
            )
        return dev
    if isinstance(sites, Mapping):
        return sites.get(name)
    return spec.device if name in sites else None


def check_site(
    name: str,
    device: Device,
    eligible: bool,
    grid: tuple[float, ...] | None,
    support: Any,
) -> None:
    """Raise a clear error when ``device`` cannot hold site ``name``."""
    if not eligible:
        raise ValueError(
            f"crossbar maps real-valued and DiscreteWeight sites; site {name!r} has "
            f"support {support}"
        )
    if device.binary:
        if grid is None and not device.binarize:
            raise ValueError(
                f"{device.name} has binary cells; site {name!r} is real-valued: "
                "give it a "
                "2-value DiscreteWeight prior or use binarize=True "
                f"(e.g. {device.name}(binarize=True))"
            )
        if grid is not None and len(grid) != 2:
            raise ValueError(
                f"{device.name} has binary cells; site {name!r} has a "
                f"{len(grid)}-value "
                f"grid {list(grid)}, it needs exactly 2 values"
            )


def unknown_sites_error(unknown: list[str], latent: list[str]) -> ValueError:
    """The error for ``sites=`` names that are not the model's latent sites."""
    return ValueError(
        f"crossbar got unknown site name(s) {sorted(unknown)}; "
        "the model's latent sites "
        f"are {sorted(latent)}"
    )


def chip_draws_numpy(
    spec: CrossbarSpec, name: str, shape: tuple[int, ...], device: Device
) -> dict[str, np.ndarray]:
    """The per-chip standard draws of a site, from NumPy, keyed by the seed and the
    site name: the same chip on both backends, for every read and posterior sample."""
    key = [spec.seed, zlib.crc32(name.encode())]  # Philox's two 64-bit key words
    rng = np.random.Generator(np.random.Philox(key=key))
    shapes = cx.draw_shapes(device.chip_draws, shape, device.binary)
    out = {}
    for draw, draw_shape in shapes.items():
        kind = cx.DRAW_KINDS[draw]
        out[draw] = (
            rng.standard_normal(draw_shape)
            if kind == "normal"
            else rng.random(draw_shape)
        )
    return out


def site_kind(
    msg: Any,
    *,
    wrappers: tuple[type, ...],
    discrete: type,
    independent: type,
    real: type,
) -> tuple[bool, tuple[float, ...] | None, Any]:
    """``(eligible, grid, support)`` of a sample site: eligible sites are real-valued
    or ``DiscreteWeight`` (``grid`` is then its value grid). Only ``to_event`` /
    ``expand`` / ``mask`` wrappers (``wrappers``) are looked through: a transformed
    distribution is not its base."""
    base = msg["fn"]
    while isinstance(base, wrappers):
        base = base.base_dist
    if isinstance(base, discrete):
        return True, base._values, base.support
    support = getattr(msg["fn"], "support", None)
    inner = support
    while isinstance(inner, independent):
        inner = inner.base_constraint
    return isinstance(inner, real), None, support


def plan_site(
    spec: CrossbarSpec,
    name: str,
    msg: Any,
    kind: tuple[bool, Any, Any],
    default: bool | None = None,
) -> tuple[Device, tuple[float, ...] | None] | None:
    """The device and grid for a latent site, or ``None`` to leave it alone; raises
    when the device cannot hold the site. ``default`` says whether ``sites=None``
    takes the site (``None``: whenever it is eligible)."""
    eligible, grid, support = kind
    dev = resolve_device(spec, name, msg, eligible if default is None else default)
    if dev is None or not (dev.weight_effects_on or dev.converter_effects_on):
        return None
    check_site(name, dev, eligible, grid, support)
    return dev, grid


def check_latent_sites(
    spec: CrossbarSpec,
    kinds: Mapping[str, tuple[Any, Any]],
    defaults: set[str] | None = None,
) -> None:
    """Validate a dry trace's latent sites (``name -> (msg, kind)``) against ``spec``:
    unknown names and sites the device cannot hold raise before any real sampling."""
    unknown = [n for n in spec.named_sites if n not in kinds]
    if unknown:
        raise unknown_sites_error(unknown, list(kinds))
    for name, (msg, kind) in kinds.items():
        plan_site(spec, name, msg, kind, None if defaults is None else name in defaults)


class CrossbarState:
    """Backend-independent state of a crossbar handler (a mixin of both backends'
    handler classes): the validated spec, per-site application counts, the per-chip
    draws, the validation of the model's latent sites, the default site set, and the
    registry of the chip's weights that routed layers look up."""

    def _init_state(
        self,
        device: Any,
        sites: Any,
        t_inference: Any,
        seed: Any,
        reprogram: Any,
        record: Any,
    ) -> None:
        self.spec = CrossbarSpec(device, sites, t_inference, seed, reprogram, record)
        self.applications: Counter[str] = Counter()
        self.layouts: dict[str, str] = {}
        """Per site, the layout (:data:`ppl_hw.core.crossbar.LAYOUTS`) of the layer
        that consumed it, learned from the dry trace (or the first run)."""
        self.routed: Counter[str] = Counter()
        """Per site, how many matrix products went through the converters."""
        self._chips: dict[Any, dict[str, np.ndarray]] = {}
        self._checked = False
        self._seen: set[str] = set()
        self._defaults: set[str] | None = None
        self._live: dict[int, ChipWeight] = {}
        self._used: set[str] = set()
        self._ndims: dict[str, int] = {}
        self._dry = False
        self._in_route = False

    @property
    def device(self) -> Device:
        """The handler's default device."""
        return self.spec.device

    @property
    def weight_sites(self) -> set[str] | None:
        """The sites ``sites=None`` selects (the model's weights, see
        :func:`default_weight_sites`), known after the first call (``None`` before,
        or when the handler is used as a context manager)."""
        return None if self._defaults is None else set(self._defaults)

    def _site_kind(self, msg: Any) -> tuple[bool, Any, Any]:  # pragma: no cover
        raise NotImplementedError

    def _check(
        self,
        latent: Mapping[str, Any],
        infos: Mapping[str, SiteInfo] | None = None,
        observed_plates: Iterable[str] = (),
    ) -> None:
        kinds = {name: (msg, self._site_kind(msg)) for name, msg in latent.items()}
        if infos is not None:
            self._defaults = default_weight_sites(infos, observed_plates)
        check_latent_sites(self.spec, kinds, self._defaults)
        self._checked = True

    def _plan(self, msg: Any) -> tuple[Device, tuple[float, ...] | None] | None:
        name = msg["name"]
        self._seen.add(name)
        kind = self._site_kind(msg)
        if self._defaults is not None:
            default = name in self._defaults
        else:  # no dry trace (a context manager): sites inside a plate are data
            default = kind[0] and not any(
                f.name for f in msg.get("cond_indep_stack", ())
            )
        return plan_site(self.spec, name, msg, kind, default)

    def _program(
        self, name: str, value: Any, dev: Device, grid: Any
    ) -> Any:  # pragma: no cover
        raise NotImplementedError

    def _apply(self, msg: Any, value: Any, stack: list, deterministic: Any) -> None:
        """The effect at a latent site (after the dry trace): program the site's
        value when its device has weight effects, register it for the routed
        layers, and record ``"<name>_chip"`` with the host's ``deterministic``
        (past the handlers inside this one, so the name stays exact)."""
        plan = self._plan(msg)
        if plan is None:
            return
        name, (dev, grid) = msg["name"], plan
        if dev.weight_effects_on:
            value = self._program(name, value, dev, grid)
            msg["value"] = value
            self.applications[name] += 1
        self._register(value, name, dev)
        if self.spec.record and dev.weight_effects_on:
            outside_inner_handlers(
                stack, self, deterministic, name + CHIP_SUFFIX, value
            )

    def _chip_numpy(self, name: str, shape: tuple[int, ...], device: Device) -> dict:
        key = (name, shape, device)
        if key not in self._chips:
            self._chips[key] = chip_draws_numpy(self.spec, name, shape, device)
        return self._chips[key]

    # -- the chip's weights, looked up by the routed layers ---------------------
    def _begin_run(self) -> None:
        self._live = {}
        self._used = set()

    def _register(self, value: Any, name: str, device: Device | None) -> None:
        self._live[id(value)] = ChipWeight(value, name, device)
        if device is None:  # the dry trace: the site's own rank, without batch axes
            self._ndims[name] = len(getattr(value, "shape", ()))

    def _register_view(self, value: Any, of: ChipWeight, transposed: bool) -> None:
        self._live[id(value)] = dataclasses.replace(
            of, value=value, transposed=transposed
        )

    def chip_weight(self, w: Any) -> ChipWeight | None:
        """The chip weight ``w`` is (its site, device and orientation), or ``None``
        when ``w`` is not a weight this handler gave the model."""
        entry = self._live.get(id(w))
        return entry if entry is not None and entry.value is w else None

    def _claim(self, entry: ChipWeight, layout: str) -> None:
        """A routed layer consumed ``entry`` as a crossbar in ``layout``."""
        self._used.add(entry.name)
        self.layouts.setdefault(entry.name, layout)
        if entry.device is not None:
            self.routed[entry.name] += 1

    def _end_run(self, ok: bool) -> None:
        """After a model execution: programmed weights whose converters never acted
        (a product the handler could not route) are reported."""
        if not ok or self._dry:
            return
        missed = sorted(
            {
                e.name
                for e in self._live.values()
                if e.device is not None
                and e.device.converter_effects_on
                and self._ndims.get(e.name, len(getattr(e.value, "shape", ()))) >= 2
                and e.name not in self._used
            }
        )
        self._live = {}
        if missed:
            warnings.warn(
                f"crossbar: the weights of site(s) {missed} were programmed, but no "
                "matrix product the handler routes consumed them, so the device's "
                "converters (DAC/ADC/output noise/IR drop) did not act on their "
                "products. Routed: ppl_hw's nn.dense/conv2d, flax Dense/Conv, nnx "
                "Linear/Conv, equinox Linear/Conv, torch F.linear/conv2d/matmul "
                "(see docs/crossbar.md); a plain jnp `x @ w` is not.",
                ConverterWarning,
                stacklevel=3,
            )

    def _normal(self, shape: tuple[int, ...], like: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    def _matvec(
        self, x: Any, w: Any, draw: Any, device: Device
    ) -> Any:  # pragma: no cover
        raise NotImplementedError

    def route(self, x: Any, w: Any, entry: ChipWeight, layout: str) -> Any:
        """``x @ w`` for the ``(inputs, outputs)`` matrix ``w`` of the chip weight
        ``entry`` (consumed in ``layout``): through the tiles and converters of the
        site's device (:func:`ppl_hw.core.crossbar.analog_matvec`), exact when the
        device has no converter effects (or in the dry trace)."""
        self._claim(entry, layout)
        self._in_route = True  # the products below are the route's own
        try:
            return self._route(x, w, entry.device)
        finally:
            self._in_route = False

    def _route(self, x: Any, w: Any, dev: Device | None) -> Any:
        if dev is None or not dev.converter_effects_on:
            return x @ w
        draw = None
        if dev.out_noise:
            draw = self._normal(
                cx.out_draw_shape(tuple(x.shape), tuple(w.shape), dev), x
            )
        return self._matvec(x, w, draw, dev)

    def _unroutable(self, entry: ChipWeight, what: str) -> None:
        """``what`` consumed a programmed weight and cannot be routed: warn now,
        naming the layer (the product runs exactly)."""
        self._used.add(entry.name)
        if entry.device is not None and entry.device.converter_effects_on:
            warnings.warn(
                f"crossbar: {what} consumed the programmed weights of site "
                f"{entry.name!r} but is not routed through the converters; its "
                "product runs without DAC/ADC/output noise (see docs/crossbar.md for "
                "the routed layers)",
                ConverterWarning,
                stacklevel=4,
            )

    def _after_block(self, ok: bool) -> None:
        """At the end of a ``with`` block: unknown names raise if no dry trace ran."""
        if ok and not self._checked:
            unknown = [n for n in self.spec.named_sites if n not in self._seen]
            if unknown:
                raise unknown_sites_error(unknown, sorted(self._seen))


def innermost(stack: list, cls: type) -> Any:
    """The innermost handler of type ``cls`` on a host's handler stack (NumPyro's or
    Pyro's ``_PYRO_STACK``), or ``None``."""
    for handler in reversed(stack):
        if isinstance(handler, cls):
            return handler
    return None
