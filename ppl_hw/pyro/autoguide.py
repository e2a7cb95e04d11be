"""ppl_hw's autoguides for Pyro (the same names and options as
:mod:`ppl_hw.numpyro.autoguide`): swap one for ``AutoNormal`` and change nothing else.

===========================  ===========================================================
:class:`AutoMeanKL`          Gaussian mean field parameterised by mean and KL: the total
                             KL to the model's Normal prior equals the budget by
                             construction
:class:`AutoDeviceNoise`     mean field with a measured device-noise shape
                             (:class:`~ppl_hw.pyro.distributions.DeviceNoise`)
:class:`AutoScaleDropout`    point estimates with scale dropout (MC-Scale-Dropout)
:class:`AutoDiscreteWeight`  categorical distributions over discrete weight grids,
                             trained through the probabilistic forward pass
                             (``PFP_ELBO``)
===========================  ===========================================================

Parameters live in Pyro's param store, under the guide's module names (e.g.
``"AutoMeanKL.ms.w0"``).
"""

from __future__ import annotations

import copy
import functools
import math
import operator
from collections.abc import Mapping
from contextlib import ExitStack
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import biject_to
from pyro.infer.autoguide import AutoGuide, init_to_median, init_to_uniform
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.infer.autoguide.utils import deep_setattr
from pyro.nn.module import PyroModule, PyroParam
from pyro.ops.tensor_utils import periodic_repeat
from pyro.poutine.util import site_is_subsample

from ..common import autoguide as gc
from ..core import gaussian as _gauss
from ..core import meankl as _mk
from . import _provenance
from ._backend import BACKEND, guard_finite
from .distributions import DeviceNoise, EmpiricalNoise
from .distributions._base import base_distribution

__all__ = ["AutoDeviceNoise", "AutoDiscreteWeight", "AutoMeanKL", "AutoScaleDropout"]

_xp, _sp = BACKEND.xp, BACKEND.special


class _LogRatio(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, s: torch.Tensor) -> torch.Tensor:
        t = _mk.log_ratio(s, xp=_xp, special=_sp)
        ctx.save_for_backward(s, t)
        return t

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        s, t = ctx.saved_tensors
        return grad * _mk.log_ratio_grad(s, t, xp=_xp)


def _is_real(site: dict) -> bool:
    support = site["fn"].support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


def _check_continuous(guide: str, site: dict) -> None:
    if site["fn"].support.is_discrete:
        raise ValueError(
            f"{guide} is a continuous guide; site {site['name']!r} is discrete "
            f"({type(site['fn']).__name__}): use a guide for discrete sites, or "
            "enumerate it out"
        )


def _normal_prior(site: dict, shape: torch.Size) -> tuple[np.ndarray, np.ndarray]:
    fn = base_distribution(site["fn"])
    if not isinstance(fn, torch.distributions.Normal):
        raise ValueError(
            "AutoMeanKL codes each weight against the model's Normal prior; site "
            f"{site['name']!r} has a {type(fn).__name__} prior"
        )
    nu = np.array(np.broadcast_to(fn.loc.detach().double().numpy(), tuple(shape)))
    rho = np.array(np.broadcast_to(fn.scale.detach().double().numpy(), tuple(shape)))
    return nu, rho


def _latent_sites(trace: Any) -> list[tuple[str, dict]]:
    return [
        (n, s) for n, s in trace.iter_stochastic_nodes() if not site_is_subsample(s)
    ]


class _Base(AutoGuide):
    """Prototype handling shared by the three guides (init values, event dims,
    subsampled plates), as Pyro's ``AutoNormal`` does it."""

    scale_constraint = constraints.softplus_positive

    def __init__(self, model: Any, *, init_loc_fn: Any, create_plates: Any = None):
        self.init_loc_fn = init_loc_fn
        super().__init__(InitMessenger(init_loc_fn)(model), create_plates=create_plates)

    def _init_values(self) -> dict[str, tuple[torch.Tensor, int]]:
        """``{site: (init value in unconstrained space, unconstrained event_dim)}``."""
        out = {}
        for name, site in _latent_sites(self.prototype_trace):
            init = biject_to(site["fn"].support).inv(site["value"].detach()).detach()
            event_dim = site["fn"].event_dim + init.dim() - site["value"].dim()
            for frame in site["cond_indep_stack"]:
                full = frame.full_size or frame.size
                if full != frame.size:
                    init = periodic_repeat(
                        init, full, frame.dim - event_dim
                    ).contiguous()
            out[name] = (init, event_dim)
        return out

    def _add_loc_scale(self, name: str, init: torch.Tensor, event_dim: int) -> None:
        """``AutoNormal``'s parameters of a site: ``locs.<site>`` (unconstrained) and
        ``scales.<site>`` (``scale_constraint``, from ``init_scale``)."""
        deep_setattr(self.locs, name, PyroParam(init, constraints.real, event_dim))
        scale = torch.full_like(init, self._init_scale)
        deep_setattr(
            self.scales, name, PyroParam(scale, self.scale_constraint, event_dim)
        )

    def _plates_for(self, site: dict, plates: dict, stack: ExitStack) -> None:
        for frame in site["cond_indep_stack"]:
            if frame.vectorized:
                stack.enter_context(plates[frame.name])


class AutoMeanKL(_Base):
    r"""Gaussian mean-field guide parameterised by mean and KL (Mean-KL; Lin, Flamich
    & Hernández-Lobato 2023) — see :class:`ppl_hw.numpyro.autoguide.AutoMeanKL` for
    the maths. The total KL to the model's ``Normal`` priors equals the budget by
    construction; sites sample a ``Normal`` so ``TraceMeanField_ELBO`` uses the
    closed-form KL.

    :param model: the model (``Normal`` priors with fixed loc and scale, real sites).
    :param kl_budget_bits: the total KL budget in bits (or ``kl_budget_nats``).
    :param kl_budget_nats: the total KL budget in nats.
    :param budget_split: ``"learned"``, ``"equal"`` or ``"blocks"`` (every coding
        block's KL fixed by construction).
    :param bits_per_block: ``"blocks"`` only: bits per coding block (default 16).
    :param block_seed: ``"blocks"`` only: the blocks' seed (default 0).
    :param init_scale: initial standard deviation used to share the budget.
    :param init_loc_fn: initial means (default ``init_to_uniform``, radius 2 as
        NumPyro's ``AutoNormal``; radius 1 with ``"blocks"``).
    """

    def __init__(
        self,
        model: Any,
        *,
        kl_budget_bits: float | None = None,
        kl_budget_nats: float | None = None,
        budget_split: str = "learned",
        bits_per_block: int | None = None,
        block_seed: int | None = None,
        init_scale: float = 0.1,
        init_loc_fn: Any = None,
        create_plates: Any = None,
    ):
        self.budget = gc.budget_nats(kl_budget_bits, kl_budget_nats)
        self.bits_per_block, self.block_seed = gc.check_meankl_split(
            budget_split, bits_per_block, block_seed
        )
        self.budget_split = budget_split
        self._block_split: gc.BlockSplit | None = None
        if init_loc_fn is None:
            radius = 1.0 if budget_split == "blocks" else 2.0
            init_loc_fn = functools.partial(init_to_uniform, radius=radius)
        self._init_scale = gc.check_init_scale(init_scale)
        super().__init__(model, init_loc_fn=init_loc_fn, create_plates=create_plates)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        self._event_dims: dict[str, int] = {}
        self._priors: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        latent = dict(_latent_sites(self.prototype_trace))
        for site in latent.values():
            _check_continuous("AutoMeanKL", site)
        try:
            deps = _provenance.dependencies(self.model, args, kwargs)
        except Exception as err:  # the host cannot trace this model abstractly
            gc.warn_untraceable(err)
            deps = {}
        _, self._outside = gc.meankl_sites(
            {
                n: (
                    type(base_distribution(s["fn"])).__name__,
                    isinstance(base_distribution(s["fn"]), torch.distributions.Normal),
                    _is_real(s),
                    deps.get(n, frozenset()) - {n},
                )
                for n, s in latent.items()
            }
        )
        self._transforms = {
            n: biject_to(latent[n]["fn"].support)
            for n in self._outside
            if not _is_real(latent[n])
        }
        init_values = self._init_values()
        locs = {}
        self.locs = PyroModule()
        self.scales = PyroModule()
        for name, (init, event_dim) in init_values.items():
            self._event_dims[name] = event_dim
            if name in self._outside:  # as AutoNormal
                self._add_loc_scale(name, init, event_dim)
                continue
            self._priors[name] = _normal_prior(latent[name], init.shape)
            locs[name] = init.double().numpy()
        dtype = torch.get_default_dtype()
        if self.budget_split == "blocks":
            self._block_split = bs = gc.BlockSplit(
                {k: max(1, v.size) for k, v in locs.items()},
                self.budget,
                self.bits_per_block,
                self.block_seed,
            )
            self._block_tensors = (
                torch.as_tensor(bs.index),
                torch.as_tensor(bs.pad, dtype=dtype),
                torch.as_tensor(bs.block_of),
            )
        m0, phi0 = gc.meankl_init(
            locs,
            self._priors,
            self.budget,
            self.budget_split,
            self._init_scale,
            self._block_split,
        )
        self.ms = PyroModule()
        self.phis = PyroModule()
        for name in locs:
            ev = self._event_dims[name]
            m = torch.as_tensor(m0[name], dtype=dtype)
            deep_setattr(self.ms, name, PyroParam(m, constraints.real, ev))
            if self.budget_split != "equal":
                phi = torch.as_tensor(phi0[name], dtype=dtype)
                deep_setattr(self.phis, name, PyroParam(phi, constraints.real, ev))
        self._num_weights = sum(int(np.size(v)) for v in locs.values())
        self._prior_tensors = {
            k: (torch.as_tensor(nu, dtype=dtype), torch.as_tensor(rho, dtype=dtype))
            for k, (nu, rho) in self._priors.items()
        }
        self._prior_flat = tuple(
            torch.cat([v[i].reshape(-1) for v in self._prior_tensors.values()])
            for i in (0, 1)
        )

    @property
    def budget_sites(self) -> list[str]:
        """The sites that carry the KL budget (fixed ``Normal`` priors on the real
        line: the weights), in trace order (empty before the first call)."""
        return list(getattr(self, "_priors", {}))

    @property
    def outside_sites(self) -> dict[str, str]:
        """``{site: reason}`` for the latent sites outside the budget; each has a
        mean-field ``Normal`` in unconstrained space as ``AutoNormal`` gives it
        (parameters ``locs.<site>`` and ``scales.<site>``)."""
        return dict(getattr(self, "_outside", {}))

    def param_names(self) -> dict[str, list[str]]:
        """``{site: [param store names]}`` of every latent site's parameters
        (``"<guide>.ms.<site>"``, ``"<guide>.phis.<site>"``; outside the budget
        ``"<guide>.locs.<site>"``, ``"<guide>.scales.<site>"``)."""
        if not self.budget_sites:
            raise gc.not_run_yet("AutoMeanKL")
        out = {}
        for name in self._event_dims:
            if name in self._outside:
                groups = ("locs", "scales")
            elif self.budget_split != "equal":
                groups = ("ms", "phis")
            else:
                groups = ("ms",)
            out[name] = [f"{self._pyro_name}.{g}.{name}" for g in groups]
        return out

    def _loc_scale(
        self, values: dict[str, torch.Tensor] | None = None
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        # all sites solved as one flat vector: eager PyTorch pays per operation;
        # values: {param store name: value} to read instead of the module's own
        names = list(self._priors)
        if values is None:
            ms = [operator.attrgetter(k)(self.ms) for k in names]
        else:
            ms = [values[f"{self._pyro_name}.ms.{k}"] for k in names]
        m = torch.cat([v.reshape(-1) for v in ms])
        phi = None
        if self.budget_split != "equal":
            if values is None:
                phis = [operator.attrgetter(k)(self.phis) for k in names]
            else:
                phis = [values[f"{self._pyro_name}.phis.{k}"] for k in names]
            phi = torch.cat([v.reshape(-1) for v in phis])
        blocks = None
        if self._block_split is not None:
            index, pad, block_of = self._block_tensors
            blocks = (index, pad.to(m), block_of, self._block_split.log_cb)
        log_kappa = _mk.log_kappa(
            phi,
            log_budget=math.log(self.budget),
            num_weights=self._num_weights,
            blocks=blocks,
            xp=_xp,
            special=_sp,
        )
        if phi is None:
            log_kappa = torch.full_like(m, log_kappa)
        nu, rho = (a.to(m) for a in self._prior_flat)
        loc, scale = _mk.meankl_loc_scale(
            m, log_kappa, nu, rho, xp=_xp, log_ratio_fn=_LogRatio.apply
        )
        sizes = [v.numel() for v in ms]
        return {
            k: (a.reshape(v.shape), b.reshape(v.shape))
            for k, v, a, b in zip(
                names, ms, loc.split(sizes), scale.split(sizes), strict=True
            )
        }

    def _outside_loc_scale(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {
            k: (operator.attrgetter(k)(self.locs), operator.attrgetter(k)(self.scales))
            for k in self._outside
        }

    def _site_dist(self, name: str, loc: torch.Tensor, scale: torch.Tensor) -> Any:
        fn = dist.Normal(loc, scale).to_event(self._event_dims[name])
        if name in self._transforms:
            fn = dist.TransformedDistribution(fn, self._transforms[name])
        return fn

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        plates = self._create_plates(*args, **kwargs)
        loc_scale = self._loc_scale()
        loc_scale.update(self._outside_loc_scale())
        guard_finite(
            "AutoMeanKL",
            {
                (n, w): v
                for n, ls in loc_scale.items()
                for w, v in zip(("loc", "scale"), ls, strict=True)
            },
        )
        result = {}
        for name, site in _latent_sites(self.prototype_trace):
            loc, scale = loc_scale[name]
            with ExitStack() as stack:
                self._plates_for(site, plates, stack)
                result[name] = pyro.sample(name, self._site_dist(name, loc, scale))
        return result

    def loc_scale(
        self, params: Any = None
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{site: (mu, sigma)}`` of the budgeted sites, from ``params``
        (``{param store name: value}``, e.g. ``dict(pyro.get_param_store().items())``)
        or, with ``None``, the param store's current values (after
        ``pyro.get_param_store().load(path)`` too, before the guide runs again)."""
        with torch.no_grad():
            return self._loc_scale(_read_params(self, params))

    @property
    def priors(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{site: (nu, rho)}``: the coding distribution (the model's prior) of the
        budgeted sites."""
        return dict(self._priors)

    @property
    def blocks(self) -> Any:
        """The coding blocks (:class:`ppl_hw.core.coding.Blocks`) of
        ``budget_split="blocks"`` (``None`` otherwise or before the first call)."""
        return None if self._block_split is None else self._block_split.blocks

    @torch.no_grad()
    def kl(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        r"""``(total, {site: KL})`` in nats of the **budgeted** sites, recomputed from
        :math:`(\mu, \sigma)`; the other sites: :meth:`kl_outside`."""
        per_site = {}
        for name, (loc, scale) in self._loc_scale().items():
            nu, rho = (a.to(loc) for a in self._prior_tensors[name])
            per_site[name] = _gauss.kl_normal_normal(loc, scale, nu, rho, xp=_xp).sum()
        return sum(per_site.values()), per_site

    @torch.no_grad()
    def kl_outside(
        self, *args: Any, num_samples: int = 1000, **kwargs: Any
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{site: (estimate, standard error)}`` in nats of the KL of each site
        outside the budget, by Monte Carlo over ``num_samples`` draws of the guide
        (torch's generator), the model run on each draw so a hierarchical prior is
        evaluated at the drawn parents — see
        :meth:`ppl_hw.numpyro.autoguide.AutoMeanKL.kl_outside`. Pass the model's
        arguments."""
        num_samples = gc.check_num_samples(num_samples)
        if self.prototype_trace is None:
            raise gc.not_run_yet("AutoMeanKL")
        names = list(self._outside)
        if not names:
            return {}
        terms = torch.empty(num_samples, len(names))
        for i in range(num_samples):
            with pyro.poutine.block():
                g = pyro.poutine.trace(self).get_trace(*args, **kwargs)
                m = pyro.poutine.trace(
                    pyro.poutine.replay(self.model, trace=g)
                ).get_trace(*args, **kwargs)
            for j, n in enumerate(names):
                terms[i, j] = _site_log_prob(g.nodes[n]) - _site_log_prob(m.nodes[n])
        mean = terms.mean(0)
        se = terms.std(0) / math.sqrt(num_samples)
        return {n: (mean[j], se[j]) for j, n in enumerate(names)}

    def _constrained(self, latent: dict) -> dict:
        return {
            k: (self._transforms[k](v) if k in self._transforms else v).detach()
            for k, v in latent.items()
        }

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        latent = {k: loc for k, (loc, _) in self._loc_scale().items()}
        latent.update({k: loc for k, (loc, _) in self._outside_loc_scale().items()})
        return self._constrained(latent)

    @torch.no_grad()
    def quantiles(
        self, quantiles: Any, *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        latent = self._loc_scale()
        latent.update(self._outside_loc_scale())
        out = {}
        for name, (loc, scale) in latent.items():
            q = torch.as_tensor(quantiles, dtype=loc.dtype).reshape(
                (-1,) + (1,) * loc.dim()
            )
            out[name] = dist.Normal(loc, scale).icdf(q)
        return self._constrained(out)


def _site_log_prob(site: dict) -> torch.Tensor:
    """A trace site's summed log density, with its plates' subsampling scale."""
    return site["fn"].log_prob(site["value"]).sum() * site["scale"]


def _read_params(
    guide: Any, params: Any, wanted: dict[str, list[str]] | None = None
) -> dict[str, torch.Tensor]:
    """``{param store name: value}`` of the parameters ``wanted`` (``{site: names}``,
    default ``guide.param_names()``) of a trained guide, from ``params`` (a mapping)
    or, with ``None``, the param store's current values; a missing one raises naming
    its site."""
    if wanted is None:
        wanted = guide.param_names()
    if params is None:
        store = pyro.get_param_store()
        source: Any = {
            n: store[n] for names in wanted.values() for n in names if n in store
        }
        where = "the param store"
    elif isinstance(params, Mapping):
        source, where = params, "params"
    else:
        raise TypeError(
            "params must be None (the param store) or a mapping of param store "
            f"names to values, got {type(params).__name__}"
        )
    missing = {
        site: [n for n in names if n not in source]
        for site, names in wanted.items()
        if any(n not in source for n in names)
    }
    if missing:
        absent = [n for v in missing.values() for n in v]
        raise ValueError(
            f"{where} lacks the {type(guide).__name__} guide's parameters of sites "
            f"{sorted(missing)} (names {absent[:8]}); pass "
            "dict(pyro.get_param_store().items()) after training or loading, or "
            "run the guide"
        )
    return {
        n: torch.as_tensor(source[n]).detach()
        for names in wanted.values()
        for n in names
    }


class AutoDeviceNoise(_Base):
    r"""Mean-field guide with a measured device-noise shape (Patel et al. 2025): like
    ``AutoNormal`` with :class:`~ppl_hw.pyro.distributions.DeviceNoise` at each site
    (constrained sites through the same bijection); with ``Normal`` priors,
    ``TraceMeanField_ELBO`` uses the closed-form KL. See
    :class:`ppl_hw.numpyro.autoguide.AutoDeviceNoise`.

    :param model: the model (continuous latent sites).
    :param noise: the shape, a :class:`~ppl_hw.pyro.distributions.EmpiricalNoise`.
    :type noise: ~ppl_hw.pyro.distributions.EmpiricalNoise
    :param init_scale: initial ``scale`` of every site.
    :param init_loc_fn: initial locations (``init_to_uniform``).
    """

    def __init__(
        self,
        model: Any,
        *,
        noise: EmpiricalNoise,
        init_scale: float = 0.1,
        init_loc_fn: Any = init_to_uniform,
        create_plates: Any = None,
    ):
        if not isinstance(noise, EmpiricalNoise):
            raise TypeError(
                "noise must be a ppl_hw.pyro.distributions.EmpiricalNoise, "
                f"got {type(noise).__name__}"
            )
        self.noise = noise
        self._init_scale = gc.check_init_scale(init_scale)
        super().__init__(model, init_loc_fn=init_loc_fn, create_plates=create_plates)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        self._event_dims: dict[str, int] = {}
        self.locs = PyroModule()
        self.scales = PyroModule()
        for _, site in _latent_sites(self.prototype_trace):
            _check_continuous("AutoDeviceNoise", site)
        for name, (init, event_dim) in self._init_values().items():
            self._event_dims[name] = event_dim
            self._add_loc_scale(name, init, event_dim)

    def _loc_scale(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return operator.attrgetter(name)(self.locs), operator.attrgetter(name)(
            self.scales
        )

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        plates = self._create_plates(*args, **kwargs)
        result = {}
        for name, site in _latent_sites(self.prototype_trace):
            loc, scale = self._loc_scale(name)
            guard_finite(
                "AutoDeviceNoise", {(name, "loc"): loc, (name, "scale"): scale}
            )
            fn = DeviceNoise(loc, scale, self.noise).to_event(self._event_dims[name])
            if not _is_real(site):
                fn = dist.TransformedDistribution(fn, biject_to(site["fn"].support))
            with ExitStack() as stack:
                self._plates_for(site, plates, stack)
                result[name] = pyro.sample(name, fn)
        return result

    def with_noise(self, noise: EmpiricalNoise) -> AutoDeviceNoise:
        """The same guide (the same parameters in the param store) on another noise
        shape.

        :param noise: the new shape.
        :type noise: ~ppl_hw.pyro.distributions.EmpiricalNoise
        """
        if not isinstance(noise, EmpiricalNoise):
            raise TypeError(
                f"noise must be an EmpiricalNoise, got {type(noise).__name__}"
            )
        new = copy.copy(self)
        new.noise = noise
        return new

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """``loc + scale * icdf(1/2)`` of the shape, constrained."""
        return self._quantile(torch.tensor(0.5))

    @torch.no_grad()
    def quantiles(
        self, quantiles: Any, *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        q = torch.as_tensor(quantiles, dtype=torch.get_default_dtype())
        return self._quantile(q, batch=True)

    def _quantile(
        self, q: torch.Tensor, batch: bool = False
    ) -> dict[str, torch.Tensor]:
        out = {}
        for name, site in _latent_sites(self.prototype_trace):
            loc, scale = self._loc_scale(name)
            qq = q.reshape((-1,) + (1,) * loc.dim()) if batch else q
            value = DeviceNoise(loc, scale, self.noise).icdf(qq.to(loc.dtype))
            out[name] = biject_to(site["fn"].support)(value)
        return out


class AutoScaleDropout(_Base):
    r"""Point estimates with scale dropout: MC-Scale-Dropout (Ahmed et al. 2023) — see
    :class:`ppl_hw.numpyro.autoguide.AutoScaleDropout`. Masks are drawn from torch's
    generator once per forward pass (one per scale site, or one for the model with
    ``share_across_layers``) and recorded in the scale sites' ``infer`` dict
    (``"scale_dropout"``).

    :param model: the model.
    :param p: drop probability in [0, 1).
    :param dropped: ``"one"`` (default: a dropped scale is bypassed, 1) or
        ``"zero"`` (inverted dropout, :math:`b\alpha/(1-p)`).
    :param share_across_batch: must be ``True`` (one draw per forward pass).
    :param share_across_layers: one draw shared by all scale sites.
    :param scale_sites: ``None`` (names containing ``"scale"``), names or a callable.
    :param init_loc_fn: initial values (default: scales at their prior median, the
        rest ``init_to_uniform``).
    """

    def __init__(
        self,
        model: Any,
        *,
        p: float,
        dropped: str = "one",
        share_across_batch: bool = True,
        share_across_layers: bool = False,
        scale_sites: Any = None,
        init_loc_fn: Any = None,
        create_plates: Any = None,
    ):
        self.p = gc.check_scale_dropout(
            p, dropped, share_across_batch, share_across_layers
        )
        self.dropped = dropped
        self.share_across_layers = share_across_layers
        self._is_scale = gc.scale_site_selector(scale_sites)
        if init_loc_fn is None:
            is_scale = self._is_scale

            def init_loc_fn(site: dict) -> torch.Tensor:
                # scales at their prior median, everything else spread out
                return (
                    init_to_median(site)
                    if is_scale(site["name"])
                    else init_to_uniform(site)
                )

        super().__init__(model, init_loc_fn=init_loc_fn, create_plates=create_plates)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        latent = _latent_sites(self.prototype_trace)
        for _, site in latent:
            _check_continuous("AutoScaleDropout", site)
        self._scale_names = [n for n, _ in latent if self._is_scale(n)]
        if not self._scale_names:
            raise ValueError(
                "AutoScaleDropout found no scale sites among "
                f"{[n for n, _ in latent]}; "
                "pass scale_sites=[...] (default: names containing 'scale')"
            )
        self.values = PyroModule()
        for name, site in latent:
            value = site["value"].detach()
            for frame in site["cond_indep_stack"]:
                full = frame.full_size or frame.size
                if full != frame.size:
                    dim = frame.dim - site["fn"].event_dim
                    value = periodic_repeat(value, full, dim).contiguous()
            deep_setattr(
                self.values,
                name,
                PyroParam(value, site["fn"].support, site["fn"].event_dim),
            )

    def _masks(self, dtype: torch.dtype) -> dict[str, tuple[torch.Tensor, int]]:
        if self.p == 0.0:
            return {}
        units = 1 if self.share_across_layers else len(self._scale_names)
        keep = (torch.rand(units) >= self.p).to(dtype)
        return {
            name: (
                keep[0 if self.share_across_layers else i],
                0 if self.share_across_layers else i,
            )
            for i, name in enumerate(self._scale_names)
        }

    def _drop(self, value: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.dropped == "zero":
            return value * (b / (1.0 - self.p))
        return b * value + (1.0 - b)

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        plates = self._create_plates(*args, **kwargs)
        masks = self._masks(torch.get_default_dtype())
        result = {}
        for name, site in _latent_sites(self.prototype_trace):
            value = operator.attrgetter(name)(self.values)
            guard_finite("AutoScaleDropout", {(name, "value"): value})
            infer = {}
            if name in masks:
                b, unit = masks[name]
                value = self._drop(value, b.to(value.dtype))
                infer = {"scale_dropout": {"mask": b, "unit": unit}}
            with ExitStack() as stack:
                self._plates_for(site, plates, stack)
                result[name] = pyro.sample(
                    name, dist.Delta(value, event_dim=site["fn"].event_dim), infer=infer
                )
        return result

    def without_dropout(self) -> AutoScaleDropout:
        """The same guide (same parameters) with ``p = 0``: the deterministic
        network."""
        new = copy.copy(self)
        new.p = 0.0
        return new

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The point estimates, undropped."""
        return {
            n: operator.attrgetter(n)(self.values).detach()
            for n, _ in _latent_sites(self.prototype_trace)
        }

    def num_stochastic_units(self, *args: Any, **kwargs: Any) -> int:
        """How many Bernoulli draws one forward pass makes, counted from a trace."""
        with torch.no_grad():
            tr = pyro.poutine.trace(self).get_trace(*args, **kwargs)
        units = {
            s["infer"]["scale_dropout"]["unit"]
            for s in tr.nodes.values()
            if s["type"] == "sample" and "scale_dropout" in s["infer"]
        }
        return len(units)


from ._pfp import AutoDiscreteWeight  # noqa: E402  (defined with PFP_ELBO)
