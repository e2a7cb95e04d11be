"""Backend-independent parts of the crossbar handlers: argument checks, site
selection rules and the per-chip NumPy draws."""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..core import crossbar as cx
from ..core.device import Device

__all__ = [
    "CHIP_SUFFIX",
    "LATENT_MARK",
    "REPROGRAM",
    "CrossbarSpec",
    "CrossbarState",
    "check_latent_sites",
    "check_site",
    "chip_draws_numpy",
    "innermost",
    "plan_site",
    "resolve_device",
    "site_kind",
    "unknown_sites_error",
]

LATENT_MARK = "_ppl_hw_latent"
"""``msg["infer"]`` key set by the (innermost) handler on sites the model itself does
not observe: an outer ``condition`` (as Pyro's ``Predictive`` uses) makes a site look
observed, but it is still a weight."""

REPROGRAM = ("once", "per_sample")
CHIP_SUFFIX = "_chip"
"""Suffix of the deterministic sites that ``record=True`` adds."""


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

    ``default_eligible`` says whether the site is real-valued or a ``DiscreteWeight``
    (the sites taken when ``sites`` is ``None``).
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
    key = [spec.seed & 0xFFFFFFFF, zlib.crc32(name.encode())]
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
    spec: CrossbarSpec, name: str, msg: Any, kind: tuple[bool, Any, Any]
) -> tuple[Device, tuple[float, ...] | None] | None:
    """The device and grid for a latent site, or ``None`` to leave it alone; raises
    when the device cannot hold the site."""
    eligible, grid, support = kind
    dev = resolve_device(spec, name, msg, eligible)
    if dev is None or not dev.weight_effects_on:
        return None
    check_site(name, dev, eligible, grid, support)
    return dev, grid


def check_latent_sites(
    spec: CrossbarSpec, kinds: Mapping[str, tuple[Any, Any]]
) -> None:
    """Validate a dry trace's latent sites (``name -> (msg, kind)``) against ``spec``:
    unknown names and sites the device cannot hold raise before any real sampling."""
    unknown = [n for n in spec.named_sites if n not in kinds]
    if unknown:
        raise unknown_sites_error(unknown, list(kinds))
    for name, (msg, kind) in kinds.items():
        plan_site(spec, name, msg, kind)


class CrossbarState:
    """Backend-independent state of a crossbar handler (a mixin of both backends'
    handler classes): the validated spec, per-site application counts, the per-chip
    draws, and the validation of the model's latent sites."""

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
        self._chips: dict[Any, dict[str, np.ndarray]] = {}
        self._checked = False
        self._seen: set[str] = set()

    @property
    def device(self) -> Device:
        """The handler's default device (its converters act at ``nn.dense``)."""
        return self.spec.device

    def _site_kind(self, msg: Any) -> tuple[bool, Any, Any]:  # pragma: no cover
        raise NotImplementedError

    def _check(self, latent: Mapping[str, Any]) -> None:
        kinds = {name: (msg, self._site_kind(msg)) for name, msg in latent.items()}
        check_latent_sites(self.spec, kinds)
        self._checked = True

    def _plan(self, msg: Any) -> tuple[Device, tuple[float, ...] | None] | None:
        name = msg["name"]
        self._seen.add(name)
        return plan_site(self.spec, name, msg, self._site_kind(msg))

    def _chip_numpy(self, name: str, shape: tuple[int, ...], device: Device) -> dict:
        key = (name, shape, device)
        if key not in self._chips:
            self._chips[key] = chip_draws_numpy(self.spec, name, shape, device)
        return self._chips[key]

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
