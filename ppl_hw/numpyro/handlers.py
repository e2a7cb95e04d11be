"""NumPyro effect handlers of ppl_hw: :class:`crossbar`."""

from __future__ import annotations

import functools
import warnings
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
from numpyro.distributions import constraints
from numpyro.primitives import _PYRO_STACK, Messenger

from ..common import handlers as cc
from ..core import crossbar as cx
from ..core.device import Device
from . import _intercept, _provenance
from ._backend import BACKEND
from .distributions import DiscreteWeight
from .distributions._base import WRAPPERS

__all__ = ["crossbar"]

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
    an outer ``condition`` or ``substitute`` still counts as latent), not enumerated."""
    return (
        msg["type"] == "sample"
        and (not msg["is_observed"] or bool(msg.get("infer", {}).get(_LATENT)))
        and not msg.get("infer", {}).get("enumerate")
    )


# The crossbar's pieces are jitted with the device as a static argument: called
# eagerly (an unjitted ``Predictive``, ``parallel=True`` included, which vmaps
# eagerly), each compiles once per site shape instead of dispatching (and compiling)
# every small operation of the chip model, ~240 compiles for the digits MLP (19 s
# before its first prediction; under an outer jit they are inlined as before).


@functools.partial(jax.jit, static_argnames=("names", "shape", "binary", "dtype"))
def _draws(
    key: Any, names: tuple[str, ...], shape: tuple[int, ...], binary: bool, dtype: Any
):
    shapes = cx.draw_shapes(names, shape, binary)
    keys = jax.random.split(key, max(len(shapes), 1))
    out = {}
    for k, (name, s) in zip(keys, shapes.items(), strict=False):
        if cx.DRAW_KINDS[name] == "normal":
            out[name] = jax.random.normal(k, s, dtype)
        else:
            out[name] = jax.random.uniform(k, s, dtype)
    return out


@functools.partial(jax.jit, static_argnames=("device", "t", "grid", "layout"))
def _crossbar_weights(
    value: Any,
    chip: dict,
    read: dict,
    *,
    device: Device,
    t: float,
    grid: Any,
    layout: Any,
) -> Any:
    return cx.crossbar_weights(
        value, device, t, chip, read, xp=_xp, special=_sp, grid=grid, layout=layout
    )


def _dependencies(fn: Any, args: tuple, kwargs: dict, tr: dict) -> dict | None:
    """:func:`~ppl_hw.numpyro._provenance.dependencies`, or ``None`` (with a
    warning) when the model cannot be traced abstractly."""
    try:
        return _provenance.dependencies(fn, args, kwargs, tr)
    except Exception as err:
        warnings.warn(
            "crossbar: could not trace which sites depend on which "
            f"({type(err).__name__}: {err}); sites=None takes the latent sites "
            "outside every plate. Pass sites= to choose explicitly.",
            cc.ConverterWarning,
            stacklevel=4,
        )
        return None


def _fast_tile(device: Device) -> Any:
    """One tile of :func:`~ppl_hw.core.crossbar.analog_matvec` that skips bound
    management's second product when it is provably unneeded
    (:func:`~ppl_hw.core.crossbar.tile_matvec_first_pass`), with the same values.

    The skip is a ``lax.cond``; under ``vmap`` (``Predictive`` vmaps its samples) a
    batched ``cond`` becomes a ``select`` that computes both branches, so the tile
    is a ``sequential_vmap``: one real ``cond`` per sample. ``sequential_vmap`` has
    no reverse-mode derivative, so the function is a ``custom_jvp`` whose
    derivative is that of the plain two-product tile (the same function)."""
    kw = dict(xp=_xp, special=_sp)

    def exact(x: Any, w: Any, draw: Any) -> Any:
        return cx.tile_matvec(x, w, device, draw, **kw)

    def one(x: Any, w: Any, draw: Any) -> Any:
        y, ok = cx.tile_matvec_first_pass(x, w, device, draw, **kw)
        return jax.lax.cond(ok, lambda: y, lambda: exact(x, w, draw))

    fast = jax.custom_jvp(jax.custom_batching.sequential_vmap(one))
    fast.defjvp(lambda primals, tangents: jax.jvp(exact, primals, tangents))

    def tile(x: Any, w: Any, draw: Any) -> Any:
        if draw is None:
            draw = jnp.zeros((), x.dtype)
        return fast(x, w, draw)

    return tile


@functools.partial(jax.jit, static_argnames=("device",))
def _analog_matvec(x: Any, w: Any, out: Any, *, device: Device) -> Any:
    tile = _fast_tile(device) if device.adc_bits else None
    return cx.analog_matvec(x, w, device, out, xp=_xp, special=_sp, tile=tile)


class crossbar(cc.CrossbarState, Messenger):
    r"""Run a model on a simulated analog crossbar.

    The value of each selected **latent** sample site — sampled, or set by an outer
    ``substitute`` / ``condition`` / ``Predictive`` — is replaced, as the model
    receives it, by what a programmed crossbar returns when read ``t_inference``
    seconds after programming (:func:`ppl_hw.core.crossbar.crossbar_weights`:
    differential-pair mapping, quantisation, stuck-at faults, programming noise,
    drift with optional compensation, read noise). Observed sites, plate index sites
    and deterministic sites are never touched.

    The site itself keeps the intended value in traces and log densities: the chip
    sits between the latent weights and the computation that uses them, so an ELBO
    under the handler is that of the model whose likelihood sees the chip (correct for
    hardware-aware training), and ``Predictive`` reports the posterior samples it was
    given. ``record=True`` adds a deterministic site ``"<name>_chip"`` with the weights
    the chip holds. Inside the handler, :func:`ppl_hw.numpyro.nn.dense` and
    :func:`~ppl_hw.numpyro.nn.conv2d` run through the converters of ``device``
    (:func:`~ppl_hw.core.crossbar.analog_matvec`); outside it they are exact.

    Wrap the **model**, not a whole ``Predictive``, so each model site is perturbed
    exactly once and guide sites never::

        chip = crossbar(model, device=devices.PCM(), t_inference=3600.0, seed=0)
        Predictive(chip, guide=guide, params=params, num_samples=100)(key, x_test)

    **Chip semantics.** Programming noise, stuck-at faults, drift exponents and MTJ
    write errors belong to one programmed chip: with ``reprogram="once"`` they are
    drawn from NumPy, keyed by ``seed`` and the site name (so the NumPyro and the Pyro
    handler program the same chip, and every read and posterior sample sees it); with
    ``"per_sample"`` they are drawn anew at every execution of the model (a new chip
    per posterior sample). Read noise, read disturbs and converter output noise are
    fresh at every read (every execution), from the enclosing ``seed`` handler (or
    ``Predictive``'s keys); where there is none (e.g. a potential function evaluated
    during initialisation), from a fixed key of ``seed`` and the site name.

    :param fn: the model (or ``None`` to use the handler as a context manager).
    :param device: the :class:`~ppl_hw.core.device.Device` (e.g.
        ``ppl_hw.devices.PCM()``).
    :param sites: which sites: ``None`` (every latent real-valued or
        ``DiscreteWeight`` site), a list of names, a dict name -> ``Device`` (per-site
        devices) or a callable ``(msg) -> Device | None`` like
        ``numpyro.handlers.reparam``'s ``config``.
    :param t_inference: seconds since programming, ``>= 0``.
    :param seed: the chip's seed, an int in [0, 2**64 - 1] (distinct seeds program
        distinct chips).
    :param reprogram: ``"once"`` or ``"per_sample"``.
    :param record: also record the chip's weights as deterministic sites
        ``"<name>_chip"``.

    Bad arguments raise at construction; unknown site names (the error lists the
    model's latent sites) and sites the device cannot hold (e.g. ``MTJ`` on a
    real-valued site without ``binarize``) raise at the first call, from a dry trace,
    before anything is sampled. ``applications`` counts, per site, how many times the
    handler perturbed it (at trace time, under ``jit`` / ``vmap``).
    """

    def __init__(
        self,
        fn: Any = None,
        *,
        device: Device,
        sites: Any = None,
        t_inference: float = 0.0,
        seed: int = 0,
        reprogram: str = "once",
        record: bool = False,
    ):
        self._init_state(device, sites, t_inference, seed, reprogram, record)
        super().__init__(fn)

    _site_kind = staticmethod(_site_kind)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self._checked and self.fn is not None:
            self._dry_run(args, kwargs)
        return super().__call__(*args, **kwargs)

    def _dry_run(self, args: tuple, kwargs: dict) -> None:
        """Trace the model once, invisibly: its latent sites (validated against
        ``sites``), which of them are weights (:func:`~ppl_hw.common.handlers.\
default_weight_sites`), and the layout of each layer that consumes one."""
        self._dry = True
        try:
            with (
                numpyro.handlers.block(),
                numpyro.handlers.trace() as tr,
                numpyro.handlers.seed(rng_seed=0),
                self,
            ):
                self.fn(*args, **kwargs)
        finally:
            self._dry = False
        latent = {n: s for n, s in tr.items() if _is_latent(s)}
        deps = _dependencies(self.fn, args, kwargs, tr)
        self._check(latent, *_site_infos(tr, latent, deps))

    def __enter__(self) -> crossbar:
        self._seen = set()
        self._begin_run()
        self._intercept = _intercept.install()
        return super().__enter__()

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        _intercept.uninstall(self._intercept)
        super().__exit__(exc_type, exc_value, traceback)
        self._end_run(exc_type is None)
        if not self._dry:
            self._after_block(exc_type is None)

    # -- the effect ------------------------------------------------------------
    def process_message(self, msg: dict) -> None:
        # innermost handler: is_observed still says what the model itself observed
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["infer"] = {**msg.get("infer", {}), _LATENT: True}

    def _key(self, name: str) -> Any:
        """A key from the enclosing seed handler; without one (e.g. a potential
        function evaluated for initialisation), a fixed key of the chip seed and the
        site name, so that the model still runs."""
        key = numpyro.prng_key()
        if key is None:
            seed = self.spec.seed
            key = jax.random.PRNGKey(seed & 0xFFFFFFFF)
            if seed >> 32:  # PRNGKey keeps 32 bits without x64: fold in the rest
                key = jax.random.fold_in(key, seed >> 32)
            key = jax.random.fold_in(key, zlib.crc32(name.encode()))
        return key

    def postprocess_message(self, msg: dict) -> None:
        if not _is_latent(msg):
            return
        if self._dry:
            self._register(msg["value"], msg["name"], None)
            return
        self._apply(msg, jnp.asarray(msg["value"]), _PYRO_STACK, numpyro.deterministic)

    def _program(self, name: str, value: Any, dev: Device, grid: Any) -> Any:
        shape, dtype = tuple(value.shape), value.dtype
        key = None
        if self.spec.reprogram == "per_sample" or dev.read_draws:
            key = self._key(name)
        if self.spec.reprogram == "once":
            chip = {
                k: jnp.asarray(v, dtype)
                for k, v in self._chip_numpy(name, shape, dev).items()
            }
        else:
            key, sub = jax.random.split(key)
            chip = _draws(sub, dev.chip_draws, shape, dev.binary, dtype)
        read = (
            _draws(key, dev.read_draws, shape, dev.binary, dtype)
            if dev.read_draws
            else {}
        )
        return _crossbar_weights(
            value,
            chip,
            read,
            device=dev,
            t=self.spec.t_inference,
            grid=grid,
            layout=self.layouts.get(name, "default"),
        )

    # -- used by the routed layers (ppl_hw.numpyro.nn, flax, nnx, equinox) -------
    def _normal(self, shape: tuple[int, ...], like: Any) -> Any:
        return jax.random.normal(self._key("matvec"), shape, jnp.result_type(like))

    def _matvec(self, x: Any, w: Any, draw: Any, device: Device) -> Any:
        return _analog_matvec(x, w, draw, device=device)


def active_crossbar() -> crossbar | None:
    """The innermost active :class:`crossbar` handler, if any."""
    return cc.innermost(_PYRO_STACK, crossbar)


def _site_infos(tr: dict, latent: dict, deps: dict | None) -> tuple[dict, set]:
    """:class:`~ppl_hw.common.handlers.SiteInfo` of each latent site and the plates
    that hold observed sites, from a dry trace and the dependencies."""
    observed_plates = {
        f.name
        for s in tr.values()
        if s["type"] == "sample" and s["is_observed"] and not _is_latent(s)
        for f in s["cond_indep_stack"]
    }
    return cc.site_infos(
        {
            n: (_site_kind(s)[0], frozenset(f.name for f in s["cond_indep_stack"]))
            for n, s in latent.items()
        },
        deps,
    ), observed_plates
